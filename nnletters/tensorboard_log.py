"""TensorBoard event files of a run, written through the training hooks.

``train.tensorboard: true`` (or ``nnletters train --tensorboard``) adds a ``TensorBoardLog``
callback that writes RUN/tensorboard/:

    scalars     every number of each epoch's metrics row, step = epoch: loss/train,
                loss/val, accuracy/train, accuracy/val, lr, time/epoch_seconds and the
                per-layer diagnostics (grad_norm/l, weight_norm/l, dead/l, saturated/l);
                test/accuracy and test/loss once at the end
    histograms  each Dense layer's weights, biases and weight gradient (the diagnostics
                batch's, else the last training step's) at epoch 1, every HISTOGRAM_EVERY
                epochs and epoch train.epochs
    images      the first GRID_IMAGES training images as the network sees them (after
                augmentation), and as they are on disk, once
    hparams     the run's config (flattened) with the final figures, so that
                ``tensorboard --logdir runs/`` compares runs in its HPARAMS tab

A resumed run continues the same curves: its writer starts with a purge at the first epoch it
trains (tensorboardX's ``purge_step``), and TensorBoard drops whatever the stopped process
had written from that epoch on, so no step appears twice.

The writer is tensorboardX's ``SummaryWriter`` (the 'tensorboard' extra): about 3.4 MB with
protobuf, where the ``tensorboard`` package's own writer logs scalars only (histograms, images
and hparams need TensorFlow or torch there).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nnletters.callbacks import Callback
from nnletters.config import to_dict
from nnletters.errors import NNLettersError

F32 = NDArray[np.float32]

LOG_DIR = "tensorboard"
HISTOGRAM_EVERY = 5
GRID_IMAGES = 64
# metrics.jsonl key -> TensorBoard tag; a '/' groups tags into one section of the page.
TAGS = {"train_loss": "loss/train", "val_loss": "loss/val",
        "train_accuracy": "accuracy/train", "val_accuracy": "accuracy/val",
        "lr": "lr", "epoch_seconds": "time/epoch_seconds"}
HPARAM_METRICS = ("accuracy/val", "loss/val", "accuracy/train", "loss/train",
                  "test/accuracy", "test/loss")
EXTRA_MESSAGE = ("train.tensorboard needs the 'tensorboard' extra: "
                 "pip install 'nnletters[tensorboard]'")


def tag(key: str) -> str:
    """The TensorBoard tag of a metrics-row key (diagnostics keys are tags already)."""
    return TAGS.get(key, key)


def require_tensorboard() -> Any:
    """tensorboardX's SummaryWriter class, or the one-line error naming the extra."""
    try:
        with _without_torch():
            from tensorboardX import SummaryWriter
    except ImportError:
        raise NNLettersError(EXTRA_MESSAGE) from None
    return SummaryWriter


def open_writer(writer_class: Any, log_dir: Path, purge_step: int | None) -> Any:
    """A SummaryWriter on a file of its own. tensorboardX names the file by second and host
    and opens it with "wb", so a resume started within the same second as the run it goes
    on from would truncate that run's file; the process id in the name prevents it."""
    return writer_class(str(log_dir), purge_step=purge_step, flush_secs=30,
                        filename_suffix=f".{os.getpid()}")


@contextlib.contextmanager
def _without_torch() -> Iterator[None]:
    """tensorboardX imports torch when it is installed, only to accept its tensors (import
    tensorboardX took 8.8-10.2 s with torch, 1.5-1.9 s without, on a busy 2-core machine);
    nnletters hands it NumPy arrays. A ``None`` in sys.modules makes that optional import
    fail as if torch were absent, just for this import (a process that has imported torch
    already keeps it, and one that imports it later gets it)."""
    if "torch" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        del sys.modules["torch"]


class TensorBoardLog(Callback):
    """Writes RUN/tensorboard/ (see the module docstring). ``diagnostics``: the Diagnostics
    callback whose gradients the histograms show (it must come before this one)."""

    def __init__(self, diagnostics: Any = None, histogram_every: int = HISTOGRAM_EVERY) -> None:
        self.writer_class = require_tensorboard()  # fail before any training, naming the extra
        self.diagnostics, self.histogram_every = diagnostics, histogram_every
        self.writer: Any = None

    def on_train_begin(self, trainer: Any) -> None:
        super().on_train_begin(trainer)
        log_dir = Path(trainer.run_dir) / LOG_DIR
        fresh = not any(log_dir.glob("events.out.tfevents.*"))
        start = trainer.state.epoch + 1  # the first epoch this process trains
        self.writer = open_writer(self.writer_class, log_dir, None if fresh else start)
        if fresh:
            self._write_hparams_start()
            self._write_inputs()
        self.writer.flush()

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        epoch = row["epoch"]
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float):
                self.writer.add_scalar(tag(key), float(value), epoch)
        last = self.trainer.cfg.train.epochs
        if epoch == 1 or epoch % self.histogram_every == 0 or epoch == last:
            self._write_histograms(epoch)
        self.writer.flush()

    def on_train_end(self, summary: dict[str, Any]) -> None:
        step = summary["epochs_run"]
        for key in ("accuracy", "loss"):
            if summary.get(f"test_{key}") is not None:
                self.writer.add_scalar(f"test/{key}", float(summary[f"test_{key}"]), step)
        self._write_hparams_end()
        self._close()

    def on_exception(self, exc: BaseException) -> None:
        self._close()  # what was written so far reaches the disk

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # ------------------------------------------------------------------ pieces

    def _write_histograms(self, epoch: int) -> None:
        model = self.trainer.model
        grads = self.diagnostics.gradients if self.diagnostics is not None else []
        for i, dense in enumerate(model.dense_layers(), start=1):
            self.writer.add_histogram(f"weights/{i}", dense.W, epoch)
            if dense.b is not None:
                self.writer.add_histogram(f"biases/{i}", dense.b, epoch)
            grad = grads[i - 1] if len(grads) >= i else dense.dW
            self.writer.add_histogram(f"gradients/{i}", grad, epoch)

    def _write_inputs(self) -> None:
        """The first GRID_IMAGES training images, augmented as training will augment them.

        The augmenter draws from the run's generator: its state is put back afterwards, so
        training draws exactly what it would have drawn without this picture."""
        t = self.trainer
        X = t.train.X[:GRID_IMAGES]
        if X.shape[0] == 0:
            return
        size = t.cfg.data.image_size
        self.writer.add_image("inputs/original", image_grid(X, size), 0, dataformats="HW")
        if t.transform is None:
            return
        state = t.rng.bit_generator.state
        try:
            seen = np.array(t.transform(X.copy()), dtype=np.float32)
        finally:
            t.rng.bit_generator.state = state
        self.writer.add_image("inputs/augmented", image_grid(seen, size), 0, dataformats="HW")

    def _write_hparams_start(self) -> None:
        from tensorboardX.summary import hparams

        exp, ssi, _ = hparams(hparam_values(to_dict(self.trainer.cfg)),
                              dict.fromkeys(HPARAM_METRICS, 0.0))
        self.writer.file_writer.add_summary(exp)
        self.writer.file_writer.add_summary(ssi)

    def _write_hparams_end(self) -> None:
        from tensorboardX.summary import hparams

        _, _, sei = hparams({}, {})  # status: success
        self.writer.file_writer.add_summary(sei)


def hparam_values(cfg: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """The config flattened to dotted keys; lists and None become strings, so that every run
    declares the same hyperparameters with the same types (TensorBoard compares them)."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            flat.update(hparam_values(value, f"{prefix}{key}."))
        elif isinstance(value, bool | int | float | str):
            flat[prefix + key] = value
        else:
            flat[prefix + key] = str(value)
    return flat


def image_grid(X: F32, image_size: int, columns: int = 8, scale: int = 2) -> F32:
    """(N, S*S) float32 images in [0, 1] -> one (H, W) float32 picture, ``columns`` images a
    row, each enlarged ``scale`` times, with a mid-grey line between them."""
    n, s = X.shape[0], image_size
    rows = -(-n // columns)
    cell = s * scale + 1
    grid = np.full((rows * cell + 1, columns * cell + 1), 0.5, dtype=np.float32)
    images = np.clip(X.reshape(n, s, s), 0.0, 1.0)
    big = images.repeat(scale, axis=1).repeat(scale, axis=2)
    for k in range(n):
        r, c = divmod(k, columns)
        grid[1 + r * cell:r * cell + cell, 1 + c * cell:c * cell + cell] = big[k]
    return grid

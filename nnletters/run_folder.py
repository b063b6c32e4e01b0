"""A run folder from start to end: create or resume it, lock it, load the data, build the
model, train, test, and write the summary. The loop itself is ``nnletters.training``.

    runs/<name>-<timestamp>/
        config.yaml      the resolved config (every key, defaults filled in)
        metrics.jsonl    one JSON object per epoch
        metrics.csv      the same rows as CSV
        last.npz         model + optimiser + RNG state after the last completed epoch
        best.npz         the model (and metadata) at the best epoch of the monitored metric
        summary.json     best epoch and metric, why it stopped, test accuracy and loss, sizes, times
        skipped.txt      unreadable input files and why (only when there were any)
        data.json        what identifies the data: a digest of each split, synthetic fonts
                         with their sha256 (eval/report/resume re-create exactly this data)
        fonts.txt        fonts used to render synthetic letters (synthetic data only)
        tensorboard/     TensorBoard event files (train.tensorboard only)
        .lock            held by the process training in the folder (gone when it ends)
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from nnletters.callbacks import Callback, EarlyStopping, EpochLog, MetricsFiles, ProgressBar
from nnletters.checkpoint import load_checkpoint
from nnletters.config import Config, load_config, to_dict, to_yaml
from nnletters.data import fingerprint
from nnletters.data.images import data_polarity, glyph_fill
from nnletters.diagnostics import Diagnostics
from nnletters.errors import CheckpointError, FolderBusy, NNLettersError
from nnletters.fileio import read_json, remove_temp_files, write_json, write_text
from nnletters.training import (
    Trainer,
    build,
    check_resumable,
    finished,
    read_history,
    restore_trainer,
)

try:
    import fcntl
except ImportError:  # Windows has no flock: runs are not locked there
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


def new_run_dir(cfg: Config, out: str | Path | None, runs_root: str | Path = "runs") -> Path:
    """``out`` exactly, or runs/<name>-<timestamp>; refuses a folder that holds a run.

    The folder is only created by ``train_run``, which removes it again if the run fails
    before writing anything (a bad data path leaves nothing behind)."""
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(runs_root) / f"{cfg.name}-{stamp}"
        suffix = 1
        while run_dir.exists():
            suffix += 1
            run_dir = Path(runs_root) / f"{cfg.name}-{stamp}-{suffix}"
    else:
        run_dir = Path(out)
    refuse_a_run(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise NNLettersError(f"{run_dir}: exists and is not a folder; choose another --out")
    return run_dir


def refuse_a_run(run_dir: Path) -> None:
    """NNLettersError if ``run_dir`` already holds a run (a checkpoint of it)."""
    if (run_dir / "last.npz").exists() or (run_dir / "best.npz").exists():
        raise NNLettersError(f"{run_dir}: already holds a run; resume it with --resume "
                             f"{run_dir} or choose another --out")


def make_run_dir(run_dir: Path) -> bool:
    """Create ``run_dir`` (and its parents); -> whether it was created here."""
    existed = run_dir.is_dir()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NNLettersError(f"cannot create run folder {run_dir}: "
                             f"{exc.strerror or exc}") from None
    return not existed


def remove_if_empty(run_dir: Path) -> None:
    """Remove ``run_dir`` if nothing was written into it (a run that failed at once)."""
    with contextlib.suppress(OSError):
        if not any(run_dir.iterdir()):
            run_dir.rmdir()


# --------------------------------------------------------------------------- lock


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold RUN/.lock exclusively (``flock``) while this process trains in ``run_dir``.

    A second process fails at once with one line naming the holder's pid, before it touches
    any file. The kernel drops a flock when its process dies, even by SIGKILL, so a .lock
    file left behind blocks nobody. Nothing is locked where flock is missing (Windows, some
    network file systems) or the folder refuses the file (its first write will say why)."""
    path = run_dir / LOCK_NAME
    fd = _acquire_lock(path) if fcntl is not None else None
    try:
        yield
    finally:
        if fd is not None:
            # Unlinked while still held: a process that opened the old file sees it is gone
            # once it gets the lock, and tries again on a new one (see _acquire_lock).
            with contextlib.suppress(OSError):
                os.unlink(path)
            os.close(fd)  # releases the flock


def _acquire_lock(path: Path) -> int | None:
    """-> the descriptor holding the flock on ``path``, or None when it cannot be locked."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _lock_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None  # this file system does not do flock
            pid = f" (pid {holder})" if holder else ""
            raise FolderBusy(f"{path.parent}: another nnletters process{pid} is training "
                                 "in this folder; wait for it or choose another --out") from None
        if _is_file_at(fd, path):
            break
        os.close(fd)  # locked a file its holder had just removed: lock the one there now
    with contextlib.suppress(OSError):  # the pid only serves the message above
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _lock_holder(fd: int) -> int | None:
    """The pid written in a lock file (None before its holder has written it)."""
    try:
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _is_file_at(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


# --------------------------------------------------------------------------- training


@dataclass
class Run:
    """A run folder after training: where it is, summary.json's dict, the metrics rows."""

    path: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]]


def model_meta(cfg: Config, model, classes: list[str], train_X: np.ndarray) -> dict[str, Any]:
    """What eval and predict need to rebuild the model from a checkpoint alone, including
    how training glyphs look (polarity, share of the frame) so predict can match them."""
    light_on_dark = data_polarity(train_X, cfg.data.image_size)
    return {"name": cfg.name, "classes": classes, "image_size": cfg.data.image_size,
            "input_size": model.sizes[0], "layer_sizes": model.sizes,
            "activation": cfg.model.activation, "init": cfg.model.init,
            "dropout": cfg.model.dropout, "loss": cfg.model.loss,
            "label_smoothing": cfg.model.label_smoothing, "batch_norm": cfg.model.batch_norm,
            "light_on_dark": light_on_dark,
            "glyph_fill": round(glyph_fill(train_X, cfg.data.image_size, light_on_dark), 4)}


def train_run(cfg: Config, run_dir: Path, *, progress: bool = False,
              log: Callable[[str], None] = print, callbacks: Iterable[Callback] = ()) -> Run:
    """Train ``cfg`` into the new run folder ``run_dir``. The folder is locked against other
    nnletters processes meanwhile, and removed again if the run fails before writing."""
    created = make_run_dir(run_dir)
    try:
        with run_lock(run_dir):
            refuse_a_run(run_dir)  # again, now that no other process can start one here
            return _run(cfg, run_dir, progress, log, callbacks)
    finally:
        if created:  # bad data or a full disk leaves no empty run folder behind
            remove_if_empty(run_dir)


def resume_run(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = (),
               config_path: str | Path | None = None, *, progress: bool = False,
               log: Callable[[str], None] = print, callbacks: Iterable[Callback] = ()) -> Run:
    """Continue the run in ``run_dir`` from its last complete epoch.

    The config is the run's own config.yaml (or ``config_path``) with ``overrides``
    applied; ``--set train.epochs=N`` above the old value extends the run. A config that
    changes the architecture or the optimiser is refused. Resuming is exact: the finished
    run's weights are bit-identical to those of the same run never stopped. A run that has
    already finished is left exactly as it is."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder to resume")
    with run_lock(run_dir):
        ckpt, cfg = _resumable(run_dir, overrides, config_path)
        if finished(ckpt.meta, cfg) and (run_dir / "summary.json").exists():
            # Decided from the checkpoint alone: no data is loaded and no file is touched.
            log(f"resume: the run already finished at epoch {ckpt.meta['epoch']}; nothing "
                f"changed (to train on, raise train.epochs: --set train.epochs="
                f"{ckpt.meta['epoch'] + 10})")
            return Run(run_dir, read_json(run_dir / "summary.json"), read_history(run_dir))
        remove_temp_files(run_dir)  # left by a crash in the middle of a write
        return _run(cfg, run_dir, progress, log, callbacks, resume=ckpt)


def _run(cfg: Config, run_dir: Path, progress: bool, log: Callable[[str], None],
         callbacks: Iterable[Callback], resume=None) -> Run:
    """A run in a folder this process has locked; ``resume``: its last.npz to go on from."""
    t_start = time.perf_counter()
    if cfg.train.tensorboard:  # a missing extra is named before the data loads
        from nnletters.tensorboard_log import require_tensorboard

        require_tensorboard()
    if cfg.data.path:  # saved absolute, so eval/report find the data from any folder
        cfg = replace(cfg, data=replace(cfg.data, path=str(Path(cfg.data.path).resolve())))
    record = _data_to_resume_on(run_dir, cfg, resume, log)
    splits = _load_splits(cfg, progress, log, fingerprint.recorded_fonts(record, str(run_dir)))
    if record is not None:
        fingerprint.check_splits(record, splits, str(run_dir))
    trainer = _make_trainer(cfg, splits, run_dir, progress, log, callbacks)
    if resume is not None:
        schedule_note = restore_trainer(trainer, resume)
        log(f"resume: continuing after epoch {trainer.state.epoch} of {cfg.train.epochs} "
            f"from {resume.path}")
        if schedule_note:
            log(f"resume: {schedule_note}")
    write_text(run_dir / "config.yaml", to_yaml(cfg))  # a resume saves its new epochs
    record_inputs(run_dir, cfg, splits, log, replace_record=record is None)
    t_train = time.perf_counter()
    state = trainer.fit()
    if state.stop_reason:
        log(f"{state.stop_reason}; restoring the weights of epoch {state.best_epoch}")
    summary = _summarise(trainer, splits, time.perf_counter() - t_train, t_start, log)
    trainer.callbacks.on_train_end(summary)
    return Run(run_dir, summary, state.history)


def _data_to_resume_on(run_dir: Path, cfg: Config, resume, log: Callable[[str], None]
                       ) -> dict[str, Any] | None:
    """data.json of a resumed run whose data config is unchanged: the data it must train on
    again. None for a new run, a run without data.json, or one resumed with other data."""
    if resume is None:
        return None
    record = fingerprint.read_record(run_dir)
    if record is not None and to_dict(cfg.data) != resume.meta["config"].get("data"):
        log("resume: the data section of the config changed; training goes on with the new "
            f"data, recorded in {fingerprint.RECORD_NAME}")
        return None
    return record


def _load_splits(cfg: Config, progress: bool, log: Callable[[str], None],
                 fonts: list[Path] | None = None):
    from nnletters.data import load_splits

    t_start = time.perf_counter()
    splits = load_splits(cfg.data, cfg.seed, progress=progress, fonts=fonts)
    train, val, test = splits.train, splits.val, splits.test
    log(f"data: {len(splits.classes)} classes, {len(train.y)} train / {len(val.y)} val / "
        f"{len(test.y)} test images of {cfg.data.image_size}x{cfg.data.image_size} "
        f"({time.perf_counter() - t_start:.1f}s)")
    if cfg.data.dedup:
        log(f"dedup: dropped {splits.n_deduped} training image(s) pixel-identical to a "
            f"validation or test image")
    return splits


def _make_trainer(cfg: Config, splits, run_dir: Path, progress: bool,
                  log: Callable[[str], None], callbacks: Iterable[Callback]) -> Trainer:
    """Model, optimiser, schedule, augmentation and the callbacks, for ``cfg``."""
    from nnletters.data.augment import Augmenter

    train = splits.train
    rng = np.random.default_rng(cfg.seed)
    model, optimizer, schedule = build(cfg, train.X.shape[1], len(splits.classes), rng, log)
    meta = model_meta(cfg, model, splits.classes, train.X)
    log(f"model: {model.describe()}, {model.theta.size:,} parameters; optimiser "
        f"{cfg.optim.name} lr {cfg.optim.lr:g}; run folder {run_dir}")
    log(f"epoch lines: lr, then loss and accuracy on train and val; loss is "
        f"{_loss_name(cfg)}")
    trainer = Trainer(cfg, model, optimizer, schedule, rng, train, splits.val, run_dir, meta,
                      default_callbacks(cfg, progress, log, callbacks))
    # Pixels shifted in from outside the image take the background's value.
    augmenter = Augmenter(cfg.data.augment, cfg.data.image_size, rng,
                          fill=0.0 if meta["light_on_dark"] else 1.0, kernels=model.kernels)
    if augmenter.active:
        trainer.transform = augmenter
        log(f"augmentation: {augmenter.describe()}")
    if trainer.ema is not None:
        log(f"weights averaged (EMA decay {cfg.optim.ema:g}) for validation, best.npz and test")
    return trainer


def _loss_name(cfg: Config) -> str:
    if cfg.model.loss != "cross_entropy":
        return f"{cfg.model.loss} (mean over the batch)"
    if cfg.model.label_smoothing:
        return (f"cross-entropy against labels smoothed by {cfg.model.label_smoothing:g} "
                "(so it stays above 0 even when every answer is right)")
    return "cross-entropy"


def default_callbacks(cfg: Config, progress: bool, log: Callable[[str], None],
                      extra: Iterable[Callback] = ()) -> list[Callback]:
    """The progress bar, the per-layer diagnostics, the caller's callbacks, TensorBoard,
    early stopping, the metrics files and the epoch lines, in that order: a caller's
    callback sees the diagnostics in the metrics row and may add keys of its own."""
    es = cfg.train.early_stopping
    diagnostics = Diagnostics() if cfg.train.diagnostics else None
    tensorboard: list[Callback] = []
    if cfg.train.tensorboard:
        from nnletters.tensorboard_log import TensorBoardLog

        tensorboard.append(TensorBoardLog(diagnostics))
    return [*([ProgressBar()] if progress else []), *([diagnostics] if diagnostics else []),
            *extra, *tensorboard,
            *([EarlyStopping(es.monitor, es.patience)] if es.enabled else []),
            MetricsFiles(), EpochLog(log)]


def _summarise(trainer: Trainer, splits, train_seconds: float, t_start: float,
               log: Callable[[str], None]) -> dict[str, Any]:
    """Test the final (best) weights and write summary.json; -> its dict."""
    from nnletters.evaluation import evaluate

    cfg, state, run_dir, test = trainer.cfg, trainer.state, trainer.run_dir, splits.test
    result = evaluate(trainer.model, test.X, test.y, splits.classes) if len(test.y) else None
    summary = {
        "name": cfg.name, "epochs_run": state.epoch, "best_epoch": state.best_epoch,
        "monitor": cfg.train.early_stopping.monitor, "best_metric": state.best_metric,
        "stopped_early": state.stopped_early, "stop_reason": state.stop_reason,
        "test_accuracy": result["accuracy"] if result else None,
        "test_loss": result["loss"] if result else None,
        "n_train": int(len(splits.train.y)), "n_val": int(len(splits.val.y)),
        "n_test": int(len(test.y)), "n_deduped": int(splits.n_deduped),
        "classes": splits.classes, "skipped": len(splits.skipped),
        "train_seconds": round(train_seconds, 3),
        "total_seconds": round(time.perf_counter() - t_start, 3),
    }
    write_json(run_dir / "summary.json", summary)
    if result:
        log(f"test: accuracy {100 * result['accuracy']:.2f}%  loss {result['loss']:.4f}  "
            f"({len(test.y)} images, weights of epoch {state.best_epoch})")
    log(f"done in {summary['total_seconds']:.1f}s; run folder {run_dir}")
    return summary


def dry_run(cfg: Config, log: Callable[[str], None] = print) -> None:
    """``nnletters train --dry-run``: the resolved config, the data it names and a summary
    of the model (layer, output shape, parameters), like Keras' ``model.summary()``;
    nothing is trained or written."""
    log(to_yaml(cfg).rstrip())
    splits = _load_splits(cfg, False, log)
    rng = np.random.default_rng(cfg.seed)
    model, _, _ = build(cfg, splits.train.X.shape[1], len(splits.classes), rng, kernels="numpy")
    log(model_summary(model))


def model_summary(model) -> str:
    """One row per layer: its name, output shape and trainable parameters, then the total."""
    rows, width = [("layer", "output shape", "parameters")], model.sizes[0]
    for layer in model.layers:
        width = getattr(layer, "fan_out", width)
        name = type(layer).__name__
        detail = {"Activation": lambda x: f" ({x.name})", "Dropout": lambda x: f" ({x.p:g})",
                  "Dense": lambda x: f" ({x.fan_in} -> {x.fan_out})"}.get(name)
        params = sum(int(np.prod(shape)) for _, shape, _ in layer.param_specs)
        rows.append((name + (detail(layer) if detail else ""), f"(N, {width})", f"{params:,}"))
    rows.append(("total", "", f"{model.theta.size:,}"))
    widths = [max(len(r[k]) for r in rows) for k in range(3)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows)


# --------------------------------------------------------------------------- resume


def _resumable(run_dir: Path, overrides: list[str] | tuple[str, ...],
               config_path: str | Path | None) -> tuple[Any, Config]:
    """The run's last.npz and the config to go on with, both checked fit for a resume."""
    last = run_dir / "last.npz"
    if not last.exists():
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from (last.npz is "
                              "missing: no epoch of this run was completed)")
    ckpt = load_checkpoint(last)
    for key in ("epoch", "best_epoch", "rng_state", "schedule", "config"):
        if key not in ckpt.meta:
            raise CheckpointError(f"{last}: metadata lacks '{key}'; cannot resume from it")
    cfg = load_config(config_path if config_path is not None else run_dir / "config.yaml",
                      overrides)
    check_resumable(cfg, ckpt, run_dir)
    return ckpt, cfg


def record_inputs(run_dir: Path, cfg: Config, splits, log: Callable[[str], None],
                  replace_record: bool = True) -> None:
    """data.json (what identifies the data: digests of each split, the synthetic fonts with
    their hashes), skipped.txt (unreadable files) and fonts.txt (synthetic fonts)."""
    if replace_record or not (run_dir / fingerprint.RECORD_NAME).exists():
        fingerprint.write_record(run_dir, fingerprint.data_record(cfg.data, splits))
    if splits.skipped:
        write_text(run_dir / "skipped.txt",
                   "".join(f"{name}\t{reason}\n" for name, reason in splits.skipped))
        log(f"skipped {len(splits.skipped)} unreadable file(s), listed in "
            f"{run_dir / 'skipped.txt'}")
    if splits.fonts:
        write_text(run_dir / "fonts.txt", "".join(f"{f}\n" for f in splits.fonts))

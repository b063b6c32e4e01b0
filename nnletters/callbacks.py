"""Training hooks: everything that watches or steers training without living in the loop.

The trainer calls each callback, in list order, at these points (Keras' ``Callback`` and
Lightning's hooks are the models):

    on_train_begin(trainer)          before the first epoch (after a resume: the next one)
    on_epoch_begin(epoch)            epoch counts from 1
    on_batch_end(n, loss, correct)   after each optimiser step
    on_epoch_end(row)                the epoch's metrics row; a callback may add keys to it,
                                     and MetricsFiles (last by default) writes what it holds
    on_epoch_saved(row)              last.npz (and best.npz) of the epoch are on disk
    on_train_end(summary)            after the test figures; summary is summary.json's dict
    on_exception(exc)                training stopped by an error or an interrupt

A callback stops training by calling ``self.trainer.request_stop(reason)``: the epoch is
finished and saved, the run ends normally, and ``summary.json`` records ``stop_reason``.
Early stopping, a tuner's pruning and a time budget all stop this way.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from nnletters import metrics


class Callback:
    """Base class: every hook does nothing. ``self.trainer`` is set by on_train_begin."""

    trainer: Any = None

    def on_train_begin(self, trainer: Any) -> None:
        self.trainer = trainer

    def on_epoch_begin(self, epoch: int) -> None:
        pass

    def on_batch_end(self, n: int, loss: float, correct: int) -> None:
        pass

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        pass

    def on_epoch_saved(self, row: dict[str, Any]) -> None:
        pass

    def on_train_end(self, summary: dict[str, Any]) -> None:
        pass

    def on_exception(self, exc: BaseException) -> None:
        pass


class CallbackList(Callback):
    """Calls every hook of each callback in order."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)

    def on_train_begin(self, trainer: Any) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(trainer)

    def on_epoch_begin(self, epoch: int) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch)

    def on_batch_end(self, n: int, loss: float, correct: int) -> None:
        for cb in self.callbacks:
            cb.on_batch_end(n, loss, correct)

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(row)

    def on_epoch_saved(self, row: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_saved(row)

    def on_train_end(self, summary: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_train_end(summary)

    def on_exception(self, exc: BaseException) -> None:
        for cb in self.callbacks:
            cb.on_exception(exc)


class EarlyStopping(Callback):
    """Stop when the monitored metric has not improved for ``patience`` epochs.

    The trainer keeps the count (``state.bad_epochs``, saved with every checkpoint so a
    resume goes on counting); this callback only decides."""

    def __init__(self, monitor: str, patience: int) -> None:
        self.monitor, self.patience = monitor, patience

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        st = self.trainer.state
        if row.get(self.monitor) is not None and st.bad_epochs >= self.patience:
            self.trainer.request_stop(f"early stopping: {self.monitor} did not improve for "
                                      f"{self.patience} epochs")


class MetricsFiles(Callback):
    """metrics.jsonl and metrics.csv, rewritten whole and atomically after every epoch."""

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        metrics.write_history(self.trainer.run_dir, self.trainer.state.history)


class EpochLog(Callback):
    """One line per epoch through ``log`` (the CLI's echo; nothing with --quiet), once the
    epoch is saved: a line on the screen means a resume starts after that epoch."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log

    def on_epoch_saved(self, row: dict[str, Any]) -> None:
        st = self.trainer.state
        self.log(metrics.format_epoch(row, self.trainer.cfg.train.epochs,
                                      is_best=st.best_epoch == row["epoch"]))


class ProgressBar(Callback):
    """A tqdm bar over each epoch's images on stderr (running loss and accuracy)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.seen = {"n": 0, "loss": 0.0, "correct": 0, "steps": 0}

    def on_epoch_begin(self, epoch: int) -> None:
        from tqdm import tqdm  # here, not at module level: predict never loads tqdm

        t = self.trainer
        self.bar = tqdm(total=t.train.X.shape[0], desc=f"epoch {epoch}/{t.cfg.train.epochs}",
                        unit="img", leave=False, file=sys.stderr, dynamic_ncols=True)
        self.seen = {"n": 0, "loss": 0.0, "correct": 0, "steps": 0}

    def on_batch_end(self, n: int, loss: float, correct: int) -> None:
        s = self.seen
        s["n"] += n
        s["loss"] += loss * n
        s["correct"] += correct
        s["steps"] += 1
        self.bar.update(n)
        if s["steps"] % 20 == 0:
            self.bar.set_postfix(loss=f"{s['loss'] / s['n']:.4f}",
                                 acc=f"{s['correct'] / s['n']:.3f}", refresh=False)

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        self._close()

    def on_exception(self, exc: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

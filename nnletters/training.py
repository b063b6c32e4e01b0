"""The training loop: epochs of shuffled minibatches, validation, schedules, the best weights,
checkpoints, and all of resuming. ``Trainer.fit`` returns the state with the history, one
row per epoch; everything that only watches or steers (metrics files, progress lines, early
stopping, a tuner's pruning) is a callback (``nnletters.callbacks``).

One ``numpy.random.Generator`` drives everything random in a run (initial weights, the
shuffle order, dropout masks); its state is saved with every checkpoint, so a resumed run
draws exactly the numbers the uninterrupted run would have drawn.
"""

from __future__ import annotations

import contextlib
import math
import shlex
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nnletters import metrics
from nnletters.callbacks import Callback, CallbackList
from nnletters.checkpoint import load_checkpoint, save_checkpoint
from nnletters.config import Config, to_dict
from nnletters.errors import CheckpointError, ConfigError, NNLettersError, TrainingError
from nnletters.evaluation import evaluate_loss_accuracy
from nnletters.nn.ema import EMA, buffer_refs
from nnletters.nn.kernels import prepare as prepare_kernels
from nnletters.nn.kernels import resolve as resolve_kernels
from nnletters.nn.model import MLP
from nnletters.nn.optim import build_optimizer
from nnletters.nn.schedules import Schedule

F32 = NDArray[np.float32]

# A mean batch loss this large means the run has left the rails even while it is finite:
# cross-entropy starts near ln(classes) (3.3 for 26) and the quadratic loss is at most
# classes/2, so only diverging weights (logits ~1e4 apart) get here.
DIVERGED_LOSS = 1e4


@dataclass
class TrainState:
    """What the loop carries from epoch to epoch (and what a resume restores)."""

    epoch: int = 0                      # epochs completed
    best_metric: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0                 # epochs since the monitored metric last improved
    stop_reason: str | None = None      # why a callback ended the run before train.epochs
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stopped_early(self) -> bool:
        return self.stop_reason is not None

    def to_meta(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "best_metric": self.best_metric,
                "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                "stopped_early": self.stopped_early, "stop_reason": self.stop_reason}


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training between two steps. The unfinished epoch is dropped;
    the run folder keeps the checkpoint of the last complete epoch, ``saved_epoch``.

    A KeyboardInterrupt, so that no ``except Exception`` on the way up swallows it."""

    def __init__(self, signum: int, epoch: int, saved_epoch: int, run_dir: Path) -> None:
        self.signum, self.epoch, self.saved_epoch = signum, epoch, saved_epoch
        self.run_dir = run_dir
        super().__init__(self.message())

    @property
    def exit_code(self) -> int:
        """The shell's convention for death by signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum

    def message(self) -> str:
        if self.saved_epoch == 0:
            return (f"Interrupted in epoch {self.epoch}, before any epoch was saved; "
                    "nothing to resume, start the run again")
        return (f"Interrupted in epoch {self.epoch}; epoch {self.saved_epoch} is saved; "
                f"resume with: nnletters train --resume {shlex.quote(str(self.run_dir))}")


def train_epoch(model: MLP, optimizer, X: F32, y: NDArray[np.int64], batch_size: int,
                rng: np.random.Generator, lr: float, *, epoch: int = 1,
                on_batch: Callable[[int, float, int], None] | None = None,
                transform: Callable[[F32], F32] | None = None,
                after_step: Callable[[], None] | None = None) -> tuple[float, float]:
    """One pass over (X, y) in shuffled minibatches; returns (mean loss, accuracy).

    X: (N, D) float32, y: (N,) int64. The batch is gathered into one reused buffer;
    ``transform`` (augmentation) maps it to the batch trained on; ``after_step`` runs after
    every optimiser step (the weight average's update).
    Raises TrainingError at the first non-finite loss, naming epoch and step.
    """
    n = X.shape[0]
    order = rng.permutation(n)
    batch_buf = np.empty((min(batch_size, n), X.shape[1]), dtype=np.float32)
    total_loss, total_correct = 0.0, 0
    for step, start in enumerate(range(0, n, batch_size), start=1):
        idx = order[start:start + batch_size]
        # mode="clip": idx comes from a permutation, so never clips; with the default
        # "raise", NumPy gathers into a temporary buffer first and then copies it to out
        xb = np.take(X, idx, axis=0, out=batch_buf[:len(idx)], mode="clip")
        if transform is not None:
            xb = transform(xb)
        loss, correct = model.train_step(xb, y[idx])
        if not math.isfinite(loss) or loss > DIVERGED_LOSS:
            raise TrainingError(
                f"loss became {loss:.4g} at epoch {epoch}, step {step}: training diverged; "
                f"try a smaller learning rate (optim.lr={lr:g} now)")
        optimizer.step(lr)
        if after_step is not None:
            after_step()
        total_loss += loss * len(idx)
        total_correct += correct
        if on_batch is not None:
            on_batch(len(idx), loss, correct)
    return total_loss / n, total_correct / n


def build(cfg: Config, n_in: int, n_classes: int, rng: np.random.Generator,
          log: Callable[[str], None] = print, kernels: str | None = None
          ) -> tuple[MLP, Any, Schedule]:
    """Model, optimiser and schedule for ``cfg``: the same path ``nnletters train`` takes.
    With numba kernels (train.kernels, or ``kernels`` when given) they are compiled first,
    saying so in ``log``."""
    kernels = resolve_kernels(kernels or cfg.train.kernels, [n_in, *cfg.model.hidden, n_classes])
    if kernels == "numba":
        prepare_kernels(log)
    model = MLP.from_config(cfg.model, n_in, n_classes, rng, kernels=kernels)
    optimizer = build_optimizer(cfg.optim, model, kernels)
    mode = "min" if cfg.train.early_stopping.monitor == "val_loss" else "max"
    schedule = Schedule(cfg.schedule, cfg.optim.lr, cfg.train.epochs, mode)
    return model, optimizer, schedule


def improved(value: float, best: float | None, monitor: str, min_delta: float) -> bool:
    """Did the monitored metric improve by more than ``min_delta``?"""
    if best is None:
        return True
    if monitor == "val_loss":
        return value < best - min_delta
    return value > best + min_delta


class SignalGuard:
    """SIGINT and SIGTERM, noted while training and acted on between two steps, so a signal
    never lands inside an update or a write. A second signal stops at once (every file write
    is atomic, so that is safe too)."""

    def __init__(self, interrupted: Callable[[int], Interrupted]) -> None:
        self.interrupted = interrupted
        self.received: list[int] = []

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # Python lets only the main thread install handlers
            return

        def note(signum: int, _frame: Any) -> None:
            if self.received:
                raise self.interrupted(signum)
            self.received.append(signum)

        previous = [(s, signal.signal(s, note)) for s in STOP_SIGNALS]
        try:
            yield
        finally:
            for s, handler in previous:
                signal.signal(s, handler)

    def check(self) -> None:
        """Raise Interrupted if a signal came since training started."""
        if self.received:
            raise self.interrupted(self.received[0])


class BestWeights:
    """The weights that are evaluated (the EMA of the weights when optim.ema is on, else the
    weights themselves) and a copy of them at the best epoch so far."""

    def __init__(self, model: MLP, ema: EMA | None) -> None:
        self.model, self.ema = model, ema
        self.theta: F32 | None = None
        self.buffers: dict[str, np.ndarray] = {}  # batch-norm statistics of theta

    def evaluated(self) -> contextlib.AbstractContextManager:
        """Within this block the model holds the weights that are validated, saved as best
        and returned."""
        return self.ema.applied() if self.ema else contextlib.nullcontext()

    def keep(self) -> None:
        with self.evaluated():
            self.keep_current()

    def keep_current(self) -> None:
        """Copy the model's weights and buffers as they are now (no EMA swap), into the
        previous best's array when there is one."""
        if self.theta is None or self.theta.shape != self.model.theta.shape:
            self.theta = self.model.theta.copy()
        else:
            np.copyto(self.theta, self.model.theta)
        self.buffers = {key: getattr(layer, name).copy()
                        for key, layer, name in buffer_refs(self.model)}

    def load(self) -> None:
        """Put the kept weights into the model (the run ends with them)."""
        self.model.theta[...] = self.theta
        for key, layer, name in buffer_refs(self.model):
            if key in self.buffers:  # absent after a resume: theta only
                getattr(layer, name)[...] = self.buffers[key]


class Trainer:
    """Runs the epochs of one run folder: builds nothing itself, writes every file
    atomically, and hands every epoch to its callbacks."""

    def __init__(self, cfg: Config, model: MLP, optimizer, schedule: Schedule,
                 rng: np.random.Generator, train, val, run_dir: Path,
                 meta: dict[str, Any], callbacks: Iterable[Callback] = ()) -> None:
        self.cfg, self.model, self.optimizer, self.schedule = cfg, model, optimizer, schedule
        self.rng, self.train, self.val = rng, train, val
        self.run_dir, self.meta_base = Path(run_dir), meta
        self.callbacks = CallbackList(callbacks)
        self.state = TrainState()
        self.transform: Callable[[F32], F32] | None = None  # augmentation of each batch
        # optim.ema: the averaged weights are the ones validated, kept as best, and returned.
        self.ema = EMA(model, cfg.optim.ema, optimizer) if cfg.optim.ema else None
        self.best = BestWeights(model, self.ema)
        self.signals = SignalGuard(self._interrupted)
        self._saved_epoch = 0  # epoch of the newest complete checkpoint on disk
        self._stop: str | None = None

    def request_stop(self, reason: str) -> None:
        """End the run after the current epoch is saved (for callbacks)."""
        self._stop = reason

    def evaluated_weights(self) -> contextlib.AbstractContextManager:
        return self.best.evaluated()

    # ------------------------------------------------------------------ the loop

    def fit(self) -> TrainState:
        """Train until cfg.train.epochs or a callback's stop. SIGINT/SIGTERM end the run
        between two steps with ``Interrupted``; a diverged loss with TrainingError. Either
        way the files on disk are those of the last complete epoch."""
        try:
            # Overflow is how divergence starts: it is reported as one TrainingError below,
            # not as a stream of NumPy RuntimeWarnings.
            with self.signals.installed(), np.errstate(over="ignore", invalid="ignore"):
                return self._fit()
        except TrainingError as exc:
            kept = (f"last.npz keeps epoch {self._saved_epoch}" if self._saved_epoch
                    else "no epoch was saved")
            error = TrainingError(f"{exc}; {kept}")
            self.callbacks.on_exception(error)
            raise error from None
        except BaseException as exc:
            self.callbacks.on_exception(exc)
            raise

    def _fit(self) -> TrainState:
        st = self.state
        self.callbacks.on_train_begin(self)
        while st.epoch < self.cfg.train.epochs and not st.stopped_early:
            self.signals.check()
            row = self._run_epoch(st.epoch + 1)
            self._end_epoch(row)
        if self.best.theta is not None:
            self.best.load()  # finish with the best weights
        return st

    def _run_epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch and validate; -> its metrics row."""
        lr = self.schedule.lr(epoch - 1)
        self.callbacks.on_epoch_begin(epoch)
        t0 = time.perf_counter()
        train_loss, train_acc = train_epoch(
            self.model, self.optimizer, self.train.X, self.train.y, self.cfg.train.batch_size,
            self.rng, lr, epoch=epoch, on_batch=self._on_batch, transform=self.transform,
            after_step=self.ema.update if self.ema else None)
        seconds = time.perf_counter() - t0
        has_val = self.val.X.shape[0] > 0
        with self.evaluated_weights():
            val_loss, val_acc = evaluate_loss_accuracy(self.model, self.val.X, self.val.y)
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss,
               "train_accuracy": train_acc,
               "val_loss": val_loss if has_val else None,
               "val_accuracy": val_acc if has_val else None,
               "epoch_seconds": round(seconds, 4)}
        self._check_finite(row)
        return row

    def _on_batch(self, n: int, loss: float, correct: int) -> None:
        self.signals.check()  # between steps: the update just made is complete
        self.callbacks.on_batch_end(n, loss, correct)

    def _end_epoch(self, row: dict[str, Any]) -> None:
        """Best weights, schedule, callbacks, then the epoch's files."""
        st, es = self.state, self.cfg.train.early_stopping
        has_val = row["val_loss"] is not None
        st.history.append(row)
        st.epoch = row["epoch"]
        monitored = row[es.monitor] if has_val else -row["train_loss"]
        is_best = improved(monitored, st.best_metric, es.monitor if has_val else "max",
                           es.min_delta)
        if is_best:
            st.best_metric, st.best_epoch, st.bad_epochs = monitored, st.epoch, 0
            self.best.keep()
        else:
            st.bad_epochs += 1
        self.schedule.observe(row[es.monitor] if has_val else None)
        self.callbacks.on_epoch_end(row)
        st.stop_reason = self._stop
        self._save_epoch(is_best)
        self.callbacks.on_epoch_saved(row)

    def _check_finite(self, row: dict[str, Any]) -> None:
        """After an epoch: a non-finite validation loss or weight means the run diverged
        (train_epoch already stops at the first non-finite training loss)."""
        bad = next((k for k in ("train_loss", "val_loss")
                    if row[k] is not None and not math.isfinite(row[k])), None)
        if bad is None and np.isfinite(self.model.theta).all():
            return
        what = f"{bad} became {row[bad]}" if bad else "the weights became non-finite"
        raise TrainingError(f"{what} at epoch {row['epoch']}: training diverged; try a "
                            f"smaller learning rate (optim.lr={row['lr']:g} now)")

    def _interrupted(self, signum: int) -> Interrupted:
        return Interrupted(signum, self.state.epoch + 1, self._saved_epoch, self.run_dir)

    # ------------------------------------------------------------------ files

    def checkpoint_meta(self) -> dict[str, Any]:
        return {**self.meta_base, **self.state.to_meta(),
                "monitor": self.cfg.train.early_stopping.monitor,
                "rng_state": self.rng.bit_generator.state,
                "schedule": self.schedule.state_dict(),
                "config": to_dict(self.cfg)}

    def _save_epoch(self, is_best: bool) -> None:
        """last.npz, then best.npz (metrics files were written by the MetricsFiles callback
        before): each write is atomic, and the order keeps a crash between two of them
        recoverable. metrics.jsonl is never behind last.npz (a resume drops its rows after
        the checkpoint's epoch), and best.npz is behind only when last.npz itself holds the
        best weights (its best_epoch equals its epoch)."""
        meta = self.checkpoint_meta()
        ema = ({f"ema/{k}": v for k, v in self.ema.state_dict(copy=False).items()}
               if self.ema else {})
        save_checkpoint(self.run_dir / "last.npz", self.model, meta, self.optimizer, extra=ema)
        if is_best:
            with self.evaluated_weights():  # eval and predict read best.npz
                save_checkpoint(self.run_dir / "best.npz", self.model, meta)
        self._saved_epoch = self.state.epoch

    # ------------------------------------------------------------------ resume

    def restore(self, ckpt, history: list[dict[str, Any]]) -> None:
        """Continue from ``ckpt``, a last.npz of this run: weights, optimiser state, schedule,
        early-stopping counters, epoch, the generator's state, the metrics rows so far and
        (from best.npz) the best weights.

        The generator is restored in place: the dropout layers (and augmentation) hold this
        same object, so from here on they draw exactly what the uninterrupted run drew."""
        m = ckpt.meta
        try:
            self.model.load_state_dict(ckpt.model_state)
            self.optimizer.load_state_dict(ckpt.optim_state)
            self.schedule.load_state_dict(m["schedule"])
            if self.ema is not None:  # the weight average goes on from where it was
                self.ema.load_state_dict(ckpt.ema_state)
            self.rng.bit_generator.state = m["rng_state"]
            reason = m.get("stop_reason") or (
                "stopped early" if m["stopped_early"] else None)
            self.state = TrainState(epoch=int(m["epoch"]), best_metric=m["best_metric"],
                                    best_epoch=int(m["best_epoch"]),
                                    bad_epochs=int(m["bad_epochs"]), stop_reason=reason,
                                    history=history)
        except (KeyError, ValueError, TypeError) as exc:
            detail = exc.args[0] if exc.args else exc
            raise CheckpointError(f"{ckpt.path}: cannot resume from it ({type(exc).__name__}: "
                                  f"{detail})") from None
        self._saved_epoch = self.state.epoch
        self._restore_best(ckpt)

    def _restore_best(self, last) -> None:
        """The best weights as the uninterrupted run held them after ``last``.

        best.npz is behind last.npz only when the process died between the two writes; then
        the best epoch is last.npz's own, so the best weights are the ones just restored, and
        best.npz is written again (the same arrays and metadata the lost write held)."""
        st, path = self.state, self.run_dir / "best.npz"
        if not st.best_epoch:
            return
        if st.best_epoch == st.epoch:
            self.best.keep()
            if not _holds_epoch(path, st.epoch):
                with self.evaluated_weights():
                    save_checkpoint(path, self.model, self.checkpoint_meta())
            return
        best = load_checkpoint(path)
        if best.meta.get("epoch") != st.best_epoch:
            raise CheckpointError(f"{path}: holds epoch {best.meta.get('epoch')}, but "
                                  f"{last.path} names epoch {st.best_epoch} as the best")
        try:
            self.model.load_state_dict(best.model_state)
            self.best.keep_current()
            self.model.load_state_dict(last.model_state)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: {exc.args[0] if exc.args else exc}") from None


def _holds_epoch(path: Path, epoch: int) -> bool:
    try:
        return load_checkpoint(path).meta.get("epoch") == epoch
    except CheckpointError:
        return False


# --------------------------------------------------------------------------- resume


def check_resumable(cfg: Config, ckpt, run_dir: Path) -> None:
    """ConfigError unless ``cfg`` builds the model and optimiser ``ckpt`` was saved from and
    asks for at least as many epochs as were completed."""
    m = ckpt.meta
    trained_optim = (m["config"].get("optim") or {}).get("name", cfg.optim.name)
    same = {"data.image_size": (cfg.data.image_size, m["image_size"]),
            "model.hidden": (list(cfg.model.hidden), list(m["layer_sizes"][1:-1])),
            "model.activation": (cfg.model.activation, m["activation"]),
            "model.loss": (cfg.model.loss, m["loss"]),
            "model.batch_norm": (cfg.model.batch_norm, m.get("batch_norm", False)),
            "optim.name": (cfg.optim.name, trained_optim)}
    for key, (now, then) in same.items():
        if now != then:
            raise ConfigError(f"{run_dir}: {key} is {now!r} but the run was trained with "
                              f"{then!r}; a resume keeps the architecture and optimiser "
                              "(start a new run to change them)")
    if cfg.train.epochs < m["epoch"]:
        raise ConfigError(f"{run_dir}: train.epochs is {cfg.train.epochs} but the run "
                          f"already completed {m['epoch']} epochs")


def restore_trainer(trainer: Trainer, ckpt) -> str | None:
    """Put ``trainer`` back in the state ``ckpt`` (the run's last.npz) was saved in.

    When ``train.epochs`` differs from the length the saved schedule was planned for, the
    schedule is fitted to the new length without raising the rate (``Schedule.replan``);
    returns its one-line description then, else None."""
    m, cfg = ckpt.meta, trainer.cfg
    for key in ("classes", "input_size"):
        if key in m and m[key] != trainer.meta_base[key]:
            raise CheckpointError(f"{ckpt.path}: the run was trained with {key} {m[key]}, "
                                  f"the data now gives {trainer.meta_base[key]}")
    epoch = int(m["epoch"])
    history = [row for row in read_history(trainer.run_dir)
               if isinstance(row, dict) and isinstance(row.get("epoch"), int)
               and row["epoch"] <= epoch]
    trainer.restore(ckpt, history)
    st = trainer.state
    trained_epochs = _trained_epochs(m, cfg)
    if st.stopped_early and cfg.train.epochs > trained_epochs:
        st.stop_reason, st.bad_epochs = None, 0  # asked for more: a fresh patience window
    schedule = trainer.schedule
    if "epochs" not in m["schedule"]:  # saved before schedules recorded their length
        schedule.epochs = trained_epochs
    if schedule.epochs == cfg.train.epochs:
        return None
    return schedule.replan(st.epoch, cfg.train.epochs)


def _trained_epochs(meta: dict[str, Any], cfg: Config) -> int:
    return int((meta["config"].get("train") or {}).get("epochs", cfg.train.epochs))


def finished(meta: dict[str, Any], cfg: Config) -> bool:
    """Would resuming the checkpoint with metadata ``meta`` under ``cfg`` train nothing?
    True when its epochs are done, or it stopped early and ``cfg`` asks for no more."""
    stopped = bool(meta.get("stop_reason") or meta.get("stopped_early"))
    return int(meta["epoch"]) >= cfg.train.epochs or (
        stopped and cfg.train.epochs <= _trained_epochs(meta, cfg))


def read_history(run_dir: Path) -> list:
    """metrics.jsonl's rows, or NNLettersError naming the file when it is unreadable."""
    try:
        return metrics.read_history(run_dir)
    except (ValueError, OSError) as exc:
        raise NNLettersError(f"{run_dir / 'metrics.jsonl'}: cannot read the metrics so far "
                             f"({exc}); restore or delete the file to resume") from None

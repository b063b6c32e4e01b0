"""The learning-rate range test (Smith, 2015; fastai's and Lightning's ``lr_find``):
``nnletters lr-find``.

Train from the config's initial weights for up to ``steps`` mini-batches while the learning
rate grows exponentially from ``min_lr`` to ``max_lr``,

    lr_i = min_lr * (max_lr / min_lr) ** (i / (steps - 1)),

and record the loss of every batch. Too small a rate barely moves the loss; a good one makes
it fall fast; too large a one makes it climb or explode (or, for saturating sigmoids, freezes
it). The suggestion is where the smoothed loss falls fastest per decade of lr. The smoothing is
a centred moving average, so that it does not lag behind the lr as a running average does
(with beta 0.98 over 200 steps, fastai's, the curve trails the batch losses by ~2 decades).
The test stops once the loss explodes: non-finite or above ``training.DIVERGED_LOSS``, or a
running average (beta ``SMOOTHING``) above ``EXPLODE_FACTOR`` times its minimum.

It uses the same model, optimiser, seed and batches as ``nnletters train`` (``training.build``,
``MLP.train_step``, ``optimizer.step``), and leaves nothing behind but the picture: the
weights it trains are thrown away.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from nnletters.config import Config
from nnletters.errors import NNLettersError
from nnletters.fileio import make_dir, write_with
from nnletters.training import DIVERGED_LOSS, SignalGuard, build

F32 = NDArray[np.float32]
SMOOTHING = 0.9        # beta of the running average that watches for the explosion
EXPLODE_FACTOR = 4.0   # running average this many times its minimum: the loss has exploded
WINDOW = 1 / 40        # the plotted curves average over this share of the steps, centred
PICTURE = "lr_find.png"


class RangeTestInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the range test between two steps; nothing was written."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM


@dataclass
class RangeTest:
    """What the test saw: per step the lr, the batch loss and accuracy, and their centred
    moving averages; why it stopped; the suggested lr (None when the loss never fell)."""

    name: str
    config_lr: float
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    smoothed_accuracy: list[float] = field(default_factory=list)
    running: list[float] = field(default_factory=list)  # the watch for the explosion
    stop_reason: str = ""
    suggestion: float | None = None
    steps: int = 0
    loss_name: str = "cross_entropy"


def lr_at(step: int, min_lr: float, max_lr: float, steps: int) -> float:
    """The lr of 0-based ``step``: geometric growth from min_lr (step 0) to max_lr (the last)."""
    return min_lr * (max_lr / min_lr) ** (step / max(steps - 1, 1))


def range_test(cfg: Config, min_lr: float = 1e-6, max_lr: float = 10.0, steps: int = 200, *,
               splits=None, progress: bool = False,
               log: Callable[[str], None] = print) -> RangeTest:
    """Run the range test for ``cfg`` (data loaded here unless ``splits`` is given)."""
    if not 0 < min_lr < max_lr:
        raise NNLettersError(f"lr-find: expected 0 < --min < --max, got {min_lr:g} and "
                             f"{max_lr:g}")
    if splits is None:
        from nnletters.data import load_splits

        splits = load_splits(cfg.data, cfg.seed, progress=progress)
    train = splits.train
    rng = np.random.default_rng(cfg.seed)  # the run's own draws: the same initial weights
    model, optimizer, _ = build(cfg, train.X.shape[1], len(splits.classes), rng)
    transform = _augmenter(cfg, train.X, rng)
    batches = _batches(train.X, train.y, cfg.train.batch_size, rng)
    result = RangeTest(cfg.name, cfg.optim.lr, steps=steps, loss_name=cfg.model.loss)
    guard = SignalGuard(RangeTestInterrupted)
    with guard.installed(), np.errstate(over="ignore", invalid="ignore"), \
            _progress_bar(progress, steps) as bar:
        # Said once the signal handlers are in place: from here on Ctrl-C stops cleanly.
        log(f"lr-find: {model.describe()}; {cfg.optim.name}, batch {cfg.train.batch_size}; "
            f"lr {min_lr:g} -> {max_lr:g} over up to {steps} steps on {len(train.y)} images")
        for step in range(steps):
            guard.check()
            lr = lr_at(step, min_lr, max_lr, steps)
            xb, yb = next(batches)
            loss, correct = model.train_step(transform(xb) if transform else xb, yb)
            if _exploded(result, loss, correct / len(yb), lr):
                break
            optimizer.step(lr)
            bar.update(1)
        else:
            result.stop_reason = f"reached --max {max_lr:g} after {steps} steps"
    half = max(2, round(steps * WINDOW))
    result.smoothed = centred_mean(result.losses, half)
    result.smoothed_accuracy = centred_mean(result.accuracy, half)
    result.suggestion = suggest(result.lrs, result.smoothed)
    return result


def centred_mean(values: list[float], half: int) -> list[float]:
    """Each value replaced by the mean of the values within ``half`` steps on either side
    (fewer at the two ends)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return []
    csum = np.concatenate([[0.0], np.cumsum(v)])
    i = np.arange(v.size)
    lo, hi = np.maximum(i - half, 0), np.minimum(i + half + 1, v.size)
    return list((csum[hi] - csum[lo]) / (hi - lo))


def _exploded(result: RangeTest, loss: float, accuracy: float, lr: float) -> bool:
    """Record one step; True (with the reason set) when the loss has exploded."""
    if not math.isfinite(loss) or loss > DIVERGED_LOSS:
        result.stop_reason = (f"the loss became {loss:.4g} at lr {lr:.3g} (step "
                              f"{len(result.lrs) + 1})")
        return True
    n = len(result.lrs) + 1
    # The bias-corrected running average: (1 - beta^n) undoes its start from zero.
    prev = result.running[-1] * (1 - SMOOTHING ** (n - 1)) if result.running else 0.0
    result.running.append((SMOOTHING * prev + (1 - SMOOTHING) * loss) / (1 - SMOOTHING ** n))
    result.lrs.append(lr)
    result.losses.append(loss)
    result.accuracy.append(accuracy)
    if n > 10 and result.running[-1] > EXPLODE_FACTOR * min(result.running):
        result.stop_reason = (f"the loss passed {EXPLODE_FACTOR:g}x its lowest running "
                              f"average at lr {lr:.3g} (step {n})")
        return True
    return False


def _batches(X: F32, y: NDArray[np.int64], batch_size: int, rng: np.random.Generator):
    """Endless shuffled mini-batches, a fresh permutation each pass (as train_epoch)."""
    n = X.shape[0]
    buf = np.empty((min(batch_size, n), X.shape[1]), dtype=np.float32)
    while True:
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            yield np.take(X, idx, axis=0, out=buf[:len(idx)], mode="clip"), y[idx]


def _augmenter(cfg: Config, X: F32, rng: np.random.Generator):
    """The run's augmentation of each batch (None when off), as ``nnletters train``."""
    from nnletters.data.augment import Augmenter
    from nnletters.data.images import data_polarity

    if not cfg.data.augment.enabled:
        return None
    light_on_dark = data_polarity(X, cfg.data.image_size)
    augmenter = Augmenter(cfg.data.augment, cfg.data.image_size, rng,
                          fill=0.0 if light_on_dark else 1.0)
    return augmenter if augmenter.active else None


class _NoBar:
    def update(self, _n: int) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *_exc: object) -> None:
        pass


def _progress_bar(progress: bool, steps: int):
    if not progress:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=steps, desc="lr-find", unit="step", leave=False)


# --------------------------------------------------------------------------- the suggestion


def suggest(lrs: list[float], smoothed: list[float]) -> float | None:
    """The lr where the smoothed loss falls fastest per decade, before its minimum.

    The first steps are skipped (the average has seen too few batches to mean much); None
    when the loss never fell."""
    if len(lrs) < 5:
        return None
    loss = np.asarray(smoothed)
    skip = max(2, len(loss) // 20)
    end = int(np.argmin(loss)) + 1
    if end - skip < 3:
        return None
    slope = np.gradient(loss[skip:end], np.log10(np.asarray(lrs[skip:end])))
    best = int(np.argmin(slope))
    return float(lrs[skip + best]) if slope[best] < 0 else None


def format_lr(lr: float) -> str:
    """3.2e-3 style: two significant figures, no zero-padded exponent."""
    mantissa, exponent = f"{lr:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def suggestion_line(result: RangeTest) -> str:
    if result.suggestion is None:
        return ("no suggestion: the smoothed loss never fell; widen the range "
                "(--min, --max) or raise --steps")
    return (f"suggested optim.lr: {format_lr(result.suggestion)} (steepest descent of the "
            "smoothed loss)")


# --------------------------------------------------------------------------- the picture


def lr_find_png(result: RangeTest) -> bytes:
    """Loss (raw and smoothed) and smoothed batch accuracy against lr on a log axis, with the
    suggestion and the config's lr marked."""
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.8), dpi=100, layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(result.lrs, result.losses, color="0.75", linewidth=0.8, label="batch loss")
    ax_loss.plot(result.lrs, result.smoothed, color="tab:blue", linewidth=2,
                 label="smoothed loss")
    ax_acc.plot(result.lrs, [100 * a for a in result.accuracy], color="0.75", linewidth=0.8,
                label="batch accuracy")
    ax_acc.plot(result.lrs, [100 * a for a in result.smoothed_accuracy], color="tab:orange",
                linewidth=2, label="smoothed batch accuracy")
    _mark_lrs(result, ax_loss, ax_acc)
    if result.smoothed:  # the spike at the end would flatten everything else
        low = min(result.losses)
        high = max(result.smoothed[: max(1, len(result.smoothed) // 10)])
        pad = 0.05 * max(high - low, 1e-12)
        ax_loss.set_ylim(low - pad, min(max(result.losses), high + 4 * pad) + pad)
    for ax, ylabel in ((ax_loss, f"{result.loss_name.replace('_', '-')} loss"),
                       (ax_acc, "accuracy (%)")):
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best")
    fig.suptitle(f"{result.name}: learning-rate range test, {len(result.lrs)} steps; "
                 f"{result.stop_reason}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return buf.getvalue()


def _mark_lrs(result: RangeTest, *axes) -> None:
    """Dashed lines at the suggestion (red) and at the config's optim.lr (green)."""
    if result.suggestion is not None:
        i = result.lrs.index(result.suggestion)
        for ax in axes:
            ax.axvline(result.suggestion, color="tab:red", linestyle="--", linewidth=1.2,
                       label=f"suggested {format_lr(result.suggestion)}")
        axes[0].plot([result.suggestion], [result.smoothed[i]], "o", color="tab:red")
    if result.lrs and result.lrs[0] <= result.config_lr <= result.lrs[-1]:
        for ax in axes:
            ax.axvline(result.config_lr, color="tab:green", linestyle=":", linewidth=1.5,
                       label=f"config optim.lr {result.config_lr:g}")


def write_lr_find(result: RangeTest, out: str | Path = ".") -> Path:
    """lr_find.png in ``out`` (created if needed), written atomically."""
    folder = make_dir(out)
    data = lr_find_png(result)
    path = folder / PICTURE
    write_with(path, lambda fh: fh.write(data))
    return path

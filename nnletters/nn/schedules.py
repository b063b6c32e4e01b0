"""Learning-rate schedules, stepped once per epoch.

``lr(epoch)`` gives the rate for a 0-based epoch; ``observe(metric)`` feeds the plateau
schedule the monitored validation metric after each epoch. A linear warm-up (from lr/10 up to
lr over ``warmup_epochs``) can precede any of them; the schedule proper then starts counting.

    constant:     lr
    step:         lr * gamma ** (epoch // step_size)
    exponential:  lr * gamma ** epoch
    cosine:       min_lr + (lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2
    plateau:      lr * factor ** (number of times the metric stalled for `patience` epochs)

Changing ``train.epochs`` at a resume (``--resume --set train.epochs=N``) never raises the
rate. Only cosine depends on the number of epochs; it keeps annealing from where it ended:
from the rate of the last epoch trained, the anneal down to ``min_lr`` is spread over the
epochs up to N (``replan``), so an extended finished run still learns, more and more slowly.
Step, exponential, plateau and constant go on exactly as before. With ``train.epochs``
unchanged a resume follows the same plan, bit for bit.
"""

from __future__ import annotations

import math


class Schedule:
    def __init__(self, cfg, base_lr: float, epochs: int, mode: str = "max") -> None:
        """cfg: a ScheduleConfig; mode 'max' when the monitored metric should grow."""
        self.cfg, self.base_lr, self.epochs, self.mode = cfg, base_lr, epochs, mode
        self.scale = 1.0            # plateau's accumulated decay
        self.best: float | None = None
        self.bad_epochs = 0
        # Set by replan: (post-warm-up epoch e0, cosine progress p0 at e0) where the plan
        # changed; None while the run follows its first plan.
        self.anchor: tuple[int, float] | None = None

    def lr(self, epoch: int) -> float:
        c = self.cfg
        if epoch < c.warmup_epochs:
            return self.base_lr * (0.1 + 0.9 * epoch / c.warmup_epochs)
        e = epoch - c.warmup_epochs
        span = max(1, self.epochs - c.warmup_epochs)
        if c.name == "constant":
            return self.base_lr
        if c.name == "step":
            return self.base_lr * c.gamma ** (e // c.step_size)
        if c.name == "exponential":
            return self.base_lr * c.gamma ** e
        if c.name == "cosine":
            angle = math.pi * e / span if self.anchor is None else math.pi * self._progress(e)
            return c.min_lr + (self.base_lr - c.min_lr) * (1 + math.cos(angle)) / 2
        if c.name == "plateau":
            return self.base_lr * self.scale
        raise ValueError(f"unknown schedule {c.name!r}")

    def _progress(self, e: int) -> float:
        """Share of the cosine anneal done at post-warm-up epoch ``e``, once replanned at
        (e0, p0): linear from 0 to p0 up to e0 (the first plan), then from p0 to 1 at the
        new end."""
        e0, p0 = self.anchor
        if e < e0:
            return p0 * e / e0
        rest = max(1, self.epochs - self.cfg.warmup_epochs) - e0
        return 1.0 if rest <= 0 else min(1.0, p0 + (1.0 - p0) * (e - e0) / rest)

    def replan(self, done: int, epochs: int) -> str:
        """A resume after ``done`` epochs asks for ``epochs`` in all instead of
        ``self.epochs``: the rest of the schedule is fitted to the new length without ever
        going up (see the module docstring). Returns one line saying what happens."""
        c, old = self.cfg, self.epochs
        last = done - 1 - c.warmup_epochs  # post-warm-up index of the last epoch trained
        if c.name == "cosine" and last >= 0:
            p0 = (last / max(1, old - c.warmup_epochs) if self.anchor is None
                  else self._progress(last))
            self.anchor = (last, p0)
        self.epochs = epochs
        change = f"train.epochs {old} -> {epochs}"
        if c.name != "cosine":
            return (f"{change}: the {c.name} schedule does not depend on the number of "
                    f"epochs and goes on as before (lr {self.lr(done):.2e} at epoch {done + 1})")
        if last < 0:
            return (f"{change}: the cosine anneal had not begun; it now runs to epoch "
                    f"{epochs}")
        return (f"{change}: the cosine anneal goes on down from lr {self.lr(done - 1):.2e} "
                f"(epoch {done}, the last trained) to min_lr {c.min_lr:g} at epoch {epochs}; "
                f"it is not restarted")

    def observe(self, metric: float | None) -> None:
        """After an epoch: the plateau schedule decays when the metric stopped improving."""
        if self.cfg.name != "plateau" or metric is None:
            return
        better = self.best is None or (metric > self.best if self.mode == "max"
                                       else metric < self.best)
        if better:
            self.best, self.bad_epochs = metric, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.cfg.patience:
            self.scale *= self.cfg.factor
            self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs,
                "epochs": self.epochs,
                "anchor": None if self.anchor is None else list(self.anchor)}

    def load_state_dict(self, state: dict) -> None:
        """Restore; ``epochs`` becomes the length the saved plan was for (when recorded), so
        that a resume can compare it with the length asked for now and ``replan``."""
        self.scale = float(state["scale"])
        self.best = None if state["best"] is None else float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.epochs = int(state.get("epochs", self.epochs))
        anchor = state.get("anchor")
        self.anchor = None if anchor is None else (int(anchor[0]), float(anchor[1]))

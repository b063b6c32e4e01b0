"""Learning-rate schedules, stepped once per epoch.

``lr(epoch)`` gives the rate for a 0-based epoch; ``observe(metric)`` feeds the plateau
schedule the monitored validation metric after each epoch. A linear warm-up (from lr/10 up to
lr over ``warmup_epochs``) can precede any of them; the schedule proper then starts counting.

    constant:     lr
    step:         lr * gamma ** (epoch // step_size)
    exponential:  lr * gamma ** epoch
    cosine:       min_lr + (lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2
    plateau:      lr * factor ** (number of times the metric stalled for `patience` epochs)
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
            return c.min_lr + (self.base_lr - c.min_lr) * (1 + math.cos(math.pi * e / span)) / 2
        if c.name == "plateau":
            return self.base_lr * self.scale
        raise ValueError(f"unknown schedule {c.name!r}")

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
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.scale = float(state["scale"])
        self.best = None if state["best"] is None else float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])

"""An exponential moving average (EMA) of the weights, used in place of the raw weights to
evaluate (Polyak averaging; the "shadow variables" of TensorFlow's ExponentialMovingAverage).

After every optimiser step

    theta_ema <- d theta_ema + (1 - d) theta,   d = min(decay, (1 + t) / (10 + t))

with t the number of updates so far. The average smooths out the step-to-step noise of the
last few hundred steps (1 / (1 - d) of them), which usually gives a model that generalises a
little better than the last iterate. The warm-up of d keeps the first averages from being
dominated by the random initial weights (with d = 0.999 from the start they would be).

Batch-norm running statistics (the model's buffers) are averaged the same way, so that the
averaged weights are evaluated with statistics that match them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]

# The update streams theta and the average through memory once per step; done in blocks of
# this many entries, its temporary stays in cache (a third faster at 1.3M weights).
BLOCK = 1 << 16


class EMA:
    """Shadow copy of ``model.theta`` (and its buffers), updated by ``update()``."""

    def __init__(self, model, decay: float, optimizer=None) -> None:
        """``optimizer``: when it is a fused one (nn/fused.py), it updates the average in its
        own pass over the weights, and ``update`` has nothing left to do."""
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.model, self.decay = model, decay
        self.theta: F32 = model.theta.copy()
        self.buffers: dict[str, F32] = {key: getattr(layer, name).copy()
                                        for key, layer, name in buffer_refs(model)}
        self.updates = 0
        self._scratch = np.empty(min(BLOCK, self.theta.size), self.theta.dtype)  # one block
        self.fused = hasattr(optimizer, "attach_ema")
        if self.fused:
            optimizer.attach_ema(self)

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    def update(self) -> None:
        """theta_ema += (1 - d) (theta - theta_ema): one step of the average, in place."""
        if self.fused:
            return  # the optimiser's step did it (and called advance)
        rate = self.advance()
        live, shadow = self.model.theta, self.theta
        for start in range(0, live.size, BLOCK):
            part = shadow[start:start + BLOCK]
            diff = np.subtract(live[start:start + BLOCK], part, out=self._scratch[:part.size])
            diff *= rate
            part += diff

    def advance(self) -> np.floating:
        """Count one update, average the buffers, and return the rate 1 - d (float32) with
        which the weights are to be averaged."""
        self.updates += 1
        rate = self.theta.dtype.type(1.0 - self.current_decay())
        for key, layer, name in buffer_refs(self.model):
            shadow = self.buffers[key]
            shadow += (getattr(layer, name) - shadow) * rate
        return rate

    def swap(self) -> None:
        """Exchange the model's weights (and buffers) with the averaged ones, a block at a
        time (no third copy of the weights)."""
        live, shadow = self.model.theta, self.theta
        for start in range(0, live.size, BLOCK):
            a, b = live[start:start + BLOCK], shadow[start:start + BLOCK]
            saved = self._scratch[:a.size]
            np.copyto(saved, a)
            np.copyto(a, b)
            np.copyto(b, saved)
        for key, layer, name in buffer_refs(self.model):
            live, shadow = getattr(layer, name), self.buffers[key]
            saved = live.copy()
            live[...] = shadow
            shadow[...] = saved

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block the model holds the averaged weights; the raw ones come back
        after it (training continues from the raw weights, never from the average)."""
        self.swap()
        try:
            yield
        finally:
            self.swap()

    def state_dict(self, copy: bool = True) -> dict[str, np.ndarray]:
        """Arrays only: ``theta`` (flat), ``updates`` (int64) and ``<i>/<buffer>``
        (``copy=False``: the live arrays, as ``MLP.state_dict``)."""
        arrays = {"theta": self.theta, **self.buffers}
        return {**{k: v.copy() if copy else v for k, v in arrays.items()},
                "updates": np.array(self.updates, np.int64)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for key, dst in [("theta", self.theta), *self.buffers.items()]:
            if key not in state:
                raise KeyError(f"EMA state lacks '{key}'")
            src = np.asarray(state[key])
            if src.shape != dst.shape:
                raise ValueError(f"EMA state {key}: shape {src.shape}, expected {dst.shape}")
            dst[...] = src
        self.updates = int(state["updates"])


def buffer_refs(model) -> list[tuple[str, object, str]]:
    """(state-dict key, layer, attribute) of every non-trainable array of the model, keyed
    as in ``MLP.state_dict`` (``<i>/<name>``)."""
    return [(f"{i}/{name}", layer, name)
            for i, layer in enumerate(model.stateful_layers())
            for name in layer.buffer_names]

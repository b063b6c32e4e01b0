"""Layers and optimisers that run the fused kernels of ``kernels.py`` (``train.kernels``).

Each class subclasses its NumPy reference and replaces only the elementwise passes: the
parameters, the state it saves and the random numbers it draws are the reference's, so a
checkpoint written by one path resumes on the other, and both train to the same weights.

    FusedDense + FusedActivation:  x W, then (+ b, f, dropout) in one pass; backward
                                   (dropout mask, f') in one pass
    FusedSGD / FusedMomentum / FusedAdam: weight decay + the rule + the weight average (EMA)
                                   in one pass over the parameters
"""

from __future__ import annotations

import sys

import numpy as np
from numpy.typing import NDArray

from nnletters.nn import kernels
from nnletters.nn.layers import Activation, Dense
from nnletters.nn.optim import SGD, Adam, Momentum

F32 = NDArray[np.float32]
F32_ = np.float32


class FusedDense(Dense):
    """Dense whose bias is added by the FusedActivation after it: z = x W only."""

    def forward(self, x: F32, train: bool) -> F32:
        self.x = x
        return np.matmul(x, self.W, out=self._buffer("z", (x.shape[0], self.fan_out)))


class FusedActivation(Activation):
    """+ b (of ``dense``, when given), activation and inverted dropout (p > 0) in one pass.

    Draws the same uniforms as layers.Dropout, from the same generator, at the same point of
    the forward pass."""

    def __init__(self, name: str, dense: Dense | None, p: float,
                 rng: np.random.Generator) -> None:
        kernels.prepare()
        super().__init__(name)
        self.dense, self.p, self.rng = dense, p, rng
        self.code = {"relu": kernels.RELU, "leaky_relu": kernels.LEAKY_RELU,
                     "tanh": kernels.IDENTITY, "sigmoid": kernels.SIGMOID_FROM_EXP}[name]
        self.mask: F32 | None = None
        keep = F32_(1.0 - p)
        self.kept_from, self.scale = keep_threshold(keep), F32_(1.0 / keep)  # once: 50 us

    def _dropout_mask(self, shape: tuple[int, int]) -> tuple[np.ndarray, F32]:
        """(bits, mask buffer) for one forward pass: the generator's draws for ``shape``."""
        bits = draw_uniform_bits(self.rng, self._buffer("bits", shape, np.uint32))
        return bits, self._buffer("mask", shape)

    def forward(self, z: F32, train: bool) -> F32:
        b = self.dense.b if self.dense is not None and self.dense.b is not None \
            else kernels.EMPTY_VECTOR
        if self.name == "tanh":  # NumPy's tanh: the kernel's libm tanh rounds differently
            if b.size:
                z += b
            np.tanh(z, out=z)
            b = kernels.EMPTY_VECTOR
        elif self.name == "sigmoid":  # -(z + b), then NumPy's exp, then 1 / (1 + e)
            kernels.negate_bias(z, b)
            with np.errstate(over="ignore"):
                np.exp(z, out=z)
            b = kernels.EMPTY_VECTOR
        self.a = z
        if not train or self.p == 0.0:
            self.mask = None
            kernels.activation_forward(z, b, self.code, kernels.EMPTY_BITS, np.uint32(0),
                                       F32_(0), kernels.EMPTY_MATRIX, kernels.EMPTY_MATRIX)
            return z
        bits, mask = self._dropout_mask(z.shape)
        out = self._buffer("out", z.shape)
        kernels.activation_forward(z, b, self.code, bits, self.kept_from, self.scale, mask, out)
        self.mask = mask
        return out

    def backward(self, da: F32) -> F32:
        mask = self.mask if self.mask is not None else kernels.EMPTY_MATRIX
        kernels.activation_backward(da, self.a, self.code, mask)
        return da


# --------------------------------------------------------------------------- dropout's draws

U24 = 1 << 24  # NumPy's float32 uniform: (32-bit draw >> 8) / 2^24


def keep_threshold(keep: np.float32) -> np.uint32:
    """The least k in [0, 2^24] with floor(float32(k / 2^24) + keep) >= 1: Dropout keeps a
    unit exactly when its uniform's 24 bits k reach it (float32 addition is monotone in k)."""
    low, high = 0, U24  # floor(1 + keep) >= 1, so the answer is at most 2^24
    while low < high:
        mid = (low + high) // 2
        if np.floor(F32_(mid) / F32_(U24) + keep) >= 1:
            high = mid
        else:
            low = mid + 1
    return np.uint32(low)


def draw_uniform_bits(rng: np.random.Generator, out: np.ndarray) -> np.ndarray:
    """Fill ``out`` (uint32) with the 32-bit draws ``rng.random(out.shape, float32)`` would
    turn into uniforms, leaving ``rng`` in the state that call leaves it in.

    NumPy's PCG64 makes 32-bit draws two at a time: the low half of a 64-bit output first,
    the high half kept (``has_uint32``) for the next. Reading the 64-bit outputs directly
    (``random_raw``) gives the same numbers for half the calls into the generator; the draws
    at either end go through ``integers``, so the half-word kept in the state is NumPy's.
    Other bit generators take NumPy's own route (the uniforms, whose 24 bits are exact)."""
    flat = out.reshape(-1)
    n = flat.size
    bitgen = rng.bit_generator
    if type(bitgen) is not np.random.PCG64 or n < 4 or sys.byteorder != "little":
        u = rng.random(n, dtype=np.float32)
        u *= F32_(U24)
        np.left_shift(u.astype(np.uint32), 8, out=flat)
        return out
    start = 0
    if bitgen.state["has_uint32"]:  # the kept high half comes first
        flat[:1] = rng.integers(0, 1 << 32, 1, dtype=np.uint32)
        start = 1
    tail = 2 if (n - start) % 2 == 0 else 1  # the last word goes through NumPy: its kept half
    words = (n - start - tail) // 2
    flat[start:start + 2 * words] = bitgen.random_raw(words).view(np.uint32)  # low half first
    flat[n - tail:] = rng.integers(0, 1 << 32, tail, dtype=np.uint32)
    return out


# --------------------------------------------------------------------------- optimisers


class FusedStep:
    """What every fused optimiser shares: the weight average it updates in its pass."""

    ema = None

    def __init__(self, *args, **kwargs) -> None:
        kernels.prepare()
        super().__init__(*args, **kwargs)

    def attach_ema(self, ema) -> None:
        """Update ``ema`` (an ema.EMA) inside ``step``; its own update then does nothing."""
        self.ema = ema

    def step(self, lr: float) -> None:
        shadow, rate = kernels.EMPTY_VECTOR, F32_(0)
        if self.ema is not None:
            rate = self.ema.advance()  # counts the update, averages the buffers
            if not self.max_norm:      # max-norm must act before the weights are averaged
                shadow = self.ema.theta
        self.fused_update(lr, shadow, rate)
        self.apply_max_norm()
        if self.ema is not None and self.max_norm:
            kernels.ema_step(self.theta, self.ema.theta, rate)

    def stretches(self) -> list[tuple[slice, bool]]:
        """(part of the parameters, weight decay on?): the weights theta[:n_decay], then the
        rest; the whole vector in one piece when there is no weight decay."""
        if not self.weight_decay:
            return [(slice(None), False)]
        return [(slice(0, self.n_decay), True), (slice(self.n_decay, None), False)]


class FusedSGD(FusedStep, SGD):
    def fused_update(self, lr: float, shadow: F32, rate: np.float32) -> None:
        for part, decay in self.stretches():
            kernels.sgd_step(self.theta[part], self.grad[part], decay,
                             F32_(self.weight_decay), F32_(lr), shadow[part], rate)


class FusedMomentum(FusedStep, Momentum):
    def fused_update(self, lr: float, shadow: F32, rate: np.float32) -> None:
        for part, decay in self.stretches():
            kernels.momentum_step(self.theta[part], self.grad[part], self.velocity[part], decay,
                                  F32_(self.weight_decay), F32_(lr), F32_(self.momentum),
                                  self.nesterov, shadow[part], rate)


class FusedAdam(FusedStep, Adam):
    def step(self, lr: float) -> None:
        self.count_step(lr)
        FusedStep.step(self, lr)

    def fused_update(self, lr: float, shadow: F32, rate: np.float32) -> None:
        for part, decay in self.stretches():
            kernels.adam_step(self.theta[part], self.grad[part], self.m[part], self.v[part],
                              decay and not self.decoupled, F32_(self.weight_decay),
                              decay and self.decoupled, F32_(1.0 - lr * self.weight_decay),
                              F32_(1.0 - self.beta1), F32_(1.0 - self.beta2),
                              F32_(self._eps_t), F32_(self._lr_t), shadow[part], rate)

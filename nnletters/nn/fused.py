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
            kernels.activation_forward(z, b, self.code, kernels.EMPTY_MATRIX, F32_(0), F32_(0),
                                       kernels.EMPTY_MATRIX)
            return z
        keep = F32_(1.0 - self.p)
        u = self.rng.random(z.shape, dtype=np.float32, out=self._buffer("mask", z.shape))
        out = self._buffer("out", z.shape)
        kernels.activation_forward(z, b, self.code, u, keep, F32_(1.0 / keep), out)
        self.mask = u
        return out

    def backward(self, da: F32) -> F32:
        mask = self.mask if self.mask is not None else kernels.EMPTY_MATRIX
        kernels.activation_backward(da, self.a, self.code, mask)
        return da


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

    def n_decayed(self) -> int:
        return self.n_decay if self.weight_decay else 0


class FusedSGD(FusedStep, SGD):
    def fused_update(self, lr: float, shadow: F32, rate: np.float32) -> None:
        kernels.sgd_step(self.theta, self.grad, self.n_decayed(), F32_(self.weight_decay),
                         F32_(lr), shadow, rate)


class FusedMomentum(FusedStep, Momentum):
    def fused_update(self, lr: float, shadow: F32, rate: np.float32) -> None:
        kernels.momentum_step(self.theta, self.grad, self.velocity, self.n_decayed(),
                              F32_(self.weight_decay), F32_(lr), F32_(self.momentum),
                              self.nesterov, shadow, rate)


class FusedAdam(FusedStep, Adam):
    def step(self, lr: float) -> None:
        self.count_step(lr)
        FusedStep.step(self, lr)

    def fused_update(self, lr: float, shadow: F32, rate: np.float32) -> None:
        n = self.n_decayed()
        n_l2, n_shrink = (0, n) if self.decoupled else (n, 0)
        kernels.adam_step(self.theta, self.grad, self.m, self.v, n_l2, F32_(self.weight_decay),
                          n_shrink, F32_(1.0 - lr * self.weight_decay),
                          F32_(1.0 - self.beta1), F32_(1.0 - self.beta2), F32_(self._eps_t),
                          F32_(self._lr_t), shadow, rate)

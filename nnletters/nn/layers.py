"""Layers: each keeps its forward pass next to its backward pass, micrograd-style.

A layer's ``forward(x, train)`` returns its output and remembers what ``backward`` will need;
``backward(dout)`` takes dL/d(output) and returns dL/d(input), filling the layer's parameter
gradients on the way. Shapes: x is (N, fan_in) float32, outputs (N, fan_out) float32.

Speed without losing the maths: outputs go into buffers that are reused every
step (no batch-sized allocation per step), bias-add happens in the matmul's output buffer, and
activations overwrite their input in place because their derivative needs only the output.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from nnletters.nn.functional import ACTIVATIONS, DERIVATIVES

F32 = NDArray[np.float32]


class Layer:
    """Base class. ``param_specs`` lists (name, shape, weight_decay?) of trainable arrays; the
    model allocates them as views into one flat buffer and binds ``name`` and ``d<name>``."""

    param_specs: list[tuple[str, tuple[int, ...], bool]] = []
    buffer_names: tuple[str, ...] = ()  # non-trainable state saved with the model

    dtype: type = np.float32  # float64 only for gradient checks

    def __init__(self) -> None:
        self._buffers: dict[tuple, F32] = {}

    def _buffer(self, tag: str, shape: tuple[int, ...], dtype: type | None = None) -> F32:
        """A scratch array of ``shape`` (the layer's dtype unless given) kept for reuse
        across steps: the first ``shape[0]`` rows of the largest one this tag has needed, so
        that training, validation and their last, smaller batches share one array."""
        key = (tag, shape[1:], dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.shape[0] < shape[0]:
            buf = self._buffers[key] = np.empty(shape, dtype=dtype or self.dtype)
        return buf[:shape[0]]

    def forward(self, x: F32, train: bool) -> F32:
        raise NotImplementedError

    def backward(self, dout: F32) -> F32:
        raise NotImplementedError


class Dense(Layer):
    """z = x W + b, with W (fan_in, fan_out) and b (fan_out,).

    Backward (chain rule for a matrix product):
        dW = x^T dz,   db = sum over the batch of dz,   dx = dz W^T

    ``bias=False`` drops b: before a batch-norm layer it would be subtracted away again with
    the batch mean (its gradient is exactly zero), and batch norm's own shift takes its role.
    """

    def __init__(self, fan_in: int, fan_out: int, init: str, rng: np.random.Generator,
                 needs_input_grad: bool = True, bias: bool = True) -> None:
        super().__init__()
        self.fan_in, self.fan_out = fan_in, fan_out
        self.needs_input_grad = needs_input_grad
        self.param_specs = [("W", (fan_in, fan_out), True)]
        self.W = init_weights(fan_in, fan_out, init, rng)
        self.dW = np.zeros_like(self.W)
        self.b: F32 | None = None
        if bias:
            self.param_specs.append(("b", (fan_out,), False))
            self.b = np.zeros(fan_out, dtype=np.float32)
            self.db = np.zeros_like(self.b)
        self.x: F32 | None = None

    def forward(self, x: F32, train: bool) -> F32:
        self.x = x
        z = np.matmul(x, self.W, out=self._buffer("z", (x.shape[0], self.fan_out)))
        if self.b is not None:
            z += self.b
        return z

    def backward(self, dz: F32) -> F32:
        np.matmul(self.x.T, dz, out=self.dW)
        if self.b is not None:
            np.sum(dz, axis=0, out=self.db)
        if not self.needs_input_grad:
            return dz  # the first layer: nobody upstream wants dx, so skip that matmul
        return np.matmul(dz, self.W.T, out=self._buffer("dx", (dz.shape[0], self.fan_in)))


class Activation(Layer):
    """a = f(z), elementwise, computed in place over z; backward: dz = da * f'(z) via a."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.f, self.f_backward = ACTIVATIONS[name], DERIVATIVES[name]
        self.a: F32 | None = None

    def forward(self, z: F32, train: bool) -> F32:
        self.a = self.f(z, out=z)
        return self.a

    def backward(self, da: F32) -> F32:
        return self.f_backward(self.a, da)


class Dropout(Layer):
    """Inverted dropout: in training keep each unit with probability 1 - p and scale kept
    units by 1 / (1 - p), so that evaluation needs no rescaling. Backward: dx = dout * mask.

    ``fixed_mask`` (set by gradient checks) replaces the random mask so that the loss is a
    deterministic function of the weights.
    """

    def __init__(self, p: float, rng: np.random.Generator) -> None:
        super().__init__()
        self.p, self.rng = p, rng
        self.mask: F32 | None = None
        self.fixed_mask: F32 | None = None

    def forward(self, x: F32, train: bool) -> F32:
        if not train or self.p == 0.0:
            self.mask = None
            return x
        if self.fixed_mask is not None:
            self.mask = self.fixed_mask
        else:
            keep = np.float32(1.0 - self.p)
            u = self.rng.random(x.shape, dtype=self.dtype, out=self._buffer("mask", x.shape))
            # floor(u + keep) is 1 with probability keep, else 0; then scale by 1/keep.
            np.add(u, keep, out=u)
            np.floor(u, out=u)
            u *= np.float32(1.0 / keep)
            self.mask = u
        return np.multiply(x, self.mask, out=self._buffer("out", x.shape))

    def backward(self, dout: F32) -> F32:
        if self.mask is None:
            return dout
        dout *= self.mask
        return dout


class BatchNorm(Layer):
    """Batch normalisation over the batch axis (Ioffe & Szegedy, 2015), between a Dense layer
    and its activation. x: (N, C) -> (N, C).

    Training: mu, var = mean and (biased) variance of x over the batch, per unit;
        xhat = (x - mu) / sqrt(var + eps),   out = gamma * xhat + beta
    and the running averages used at evaluation move towards mu and the unbiased variance:
        running <- (1 - momentum) running + momentum batch.
    Evaluation: out = gamma * (x - running_mean) / sqrt(running_var + eps) + beta.

    Backward (each xhat depends on every row through mu and var):
        dgamma = sum_n dout * xhat,   dbeta = sum_n dout
        dx = gamma / sqrt(var + eps) * (dout - (dbeta + xhat * dgamma) / N)
    """

    buffer_names = ("running_mean", "running_var")

    def __init__(self, width: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.width, self.momentum, self.eps = width, momentum, eps
        # gamma and beta are scale and shift, not weights: no weight decay on them.
        self.param_specs = [("gamma", (width,), False), ("beta", (width,), False)]
        self.gamma = np.ones(width, dtype=np.float32)
        self.beta = np.zeros(width, dtype=np.float32)
        self.dgamma = np.zeros_like(self.gamma)
        self.dbeta = np.zeros_like(self.beta)
        self.running_mean = np.zeros(width, dtype=np.float32)
        self.running_var = np.ones(width, dtype=np.float32)
        self.xhat: F32 | None = None
        self.inv_std: F32 | None = None

    def forward(self, x: F32, train: bool) -> F32:
        out = self._buffer("out", x.shape)
        if not train:
            # Fold the running statistics into one scale and shift per unit.
            scale = self.gamma / np.sqrt(self.running_var + self.eps)
            shift = self.beta - self.running_mean * scale
            np.multiply(x, scale.astype(self.dtype, copy=False), out=out)
            out += shift.astype(self.dtype, copy=False)
            return out
        n = x.shape[0]
        mean = x.mean(axis=0)
        xhat = np.subtract(x, mean, out=self._buffer("xhat", x.shape))
        var = np.einsum("ij,ij->j", xhat, xhat) / n
        self.inv_std = 1.0 / np.sqrt(var + self.eps)
        xhat *= self.inv_std
        self.xhat = xhat
        m = self.momentum
        self.running_mean *= 1.0 - m
        self.running_mean += m * mean
        self.running_var *= 1.0 - m
        self.running_var += m * var * (n / max(n - 1, 1))
        np.multiply(xhat, self.gamma, out=out)
        out += self.beta
        return out

    def backward(self, dout: F32) -> F32:
        xhat, n = self.xhat, dout.shape[0]
        np.einsum("ij,ij->j", dout, xhat, out=self.dgamma)
        np.sum(dout, axis=0, out=self.dbeta)
        dx = np.multiply(xhat, self.dgamma, out=self._buffer("dx", dout.shape))
        dx += self.dbeta
        dx *= -1.0 / n
        dx += dout
        dx *= self.gamma * self.inv_std
        return dx


def init_weights(fan_in: int, fan_out: int, init: str, rng: np.random.Generator) -> F32:
    """Draw a (fan_in, fan_out) float32 weight matrix.

    he:     N(0, 2 / fan_in), keeps ReLU activations' variance steady layer to layer.
    xavier: U(-r, r) with r = sqrt(6 / (fan_in + fan_out)), for tanh/sigmoid (Glorot).
    """
    if init == "he":
        w = rng.standard_normal((fan_in, fan_out), dtype=np.float32)
        w *= np.float32(np.sqrt(2.0 / fan_in))
        return w
    if init == "xavier":
        r = np.float32(np.sqrt(6.0 / (fan_in + fan_out)))
        w = rng.random((fan_in, fan_out), dtype=np.float32)
        w *= 2 * r
        w -= r
        return w
    raise ValueError(f"unknown init {init!r}")

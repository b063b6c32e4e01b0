"""Pure maths of the network: activations, their derivatives, and the losses.

Each activation is written as ``f(z, out)`` and its derivative as ``f'`` expressed through the
activation's *output* ``a = f(z)``, as scikit-learn's ``neural_network/_base.py`` does. That lets
the forward pass overwrite ``z`` with ``a`` in place (no second batch-sized array) and the
backward pass still find everything it needs:

    relu:        a = max(z, 0)            da/dz = [a > 0]
    leaky_relu:  a = z if z > 0 else s*z  da/dz = 1 if a > 0 else s
    tanh:        a = tanh(z)              da/dz = 1 - a^2
    sigmoid:     a = 1 / (1 + e^-z)       da/dz = a (1 - a)

Losses return ``(loss, dlogits)``: the mean loss over the batch and its gradient with respect
to the last layer's pre-activations ``z`` (the logits). For softmax + cross-entropy the chain
rule collapses to ``(softmax(z) - onehot(y)) / N``; for the seed's sigmoid + quadratic loss it is
``(a - onehot(y)) * a (1 - a) / N``, whose ``a (1 - a) <= 0.25`` factor is why it learns slowly.

Shapes: ``z`` and ``a`` are (N, C) float32, ``y`` is (N,) int64 class indices.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
# Python float constants keep an array's dtype (NEP 50): float32 stays float32, and the
# float64 twin used by gradient checks stays exact.
LEAKY_SLOPE = 0.01


# --------------------------------------------------------------------------- activations
# Each takes z and writes f(z) into out (which may be z itself) and returns out.


def relu(z: F32, out: F32 | None = None) -> F32:
    return np.maximum(z, 0.0, out=out)


def leaky_relu(z: F32, out: F32 | None = None) -> F32:
    # max(z, s*z) equals z for z > 0 and s*z otherwise, since 0 < s < 1.
    return np.maximum(z, z * LEAKY_SLOPE, out=out)


def tanh(z: F32, out: F32 | None = None) -> F32:
    return np.tanh(z, out=out)


def sigmoid(z: F32, out: F32 | None = None) -> F32:
    # 1 / (1 + exp(-z)), computed in place; exp overflow to inf gives the right limit 0.
    out = np.negative(z, out=out)
    with np.errstate(over="ignore"):
        np.exp(out, out=out)
    out += 1.0
    return np.reciprocal(out, out=out)


# --------------------------------------------------------------------------- derivatives
# Each takes the activation output a and the upstream gradient da (dL/da), and turns da into
# dL/dz = da * f'(z) in place: the chain rule through one activation.


def relu_backward(a: F32, da: F32) -> F32:
    da *= a > 0
    return da


def leaky_relu_backward(a: F32, da: F32) -> F32:
    one = a.dtype.type(1.0)
    da *= np.where(a > 0, one, a.dtype.type(LEAKY_SLOPE))
    return da


def tanh_backward(a: F32, da: F32) -> F32:
    da *= 1.0 - a * a
    return da


def sigmoid_backward(a: F32, da: F32) -> F32:
    da *= a * (1.0 - a)
    return da


ACTIVATIONS: dict[str, Callable[..., F32]] = {
    "relu": relu, "leaky_relu": leaky_relu, "tanh": tanh, "sigmoid": sigmoid,
}
DERIVATIVES: dict[str, Callable[[F32, F32], F32]] = {
    "relu": relu_backward, "leaky_relu": leaky_relu_backward,
    "tanh": tanh_backward, "sigmoid": sigmoid_backward,
}


# --------------------------------------------------------------------------- softmax


def log_softmax(z: F32) -> F32:
    """(N, C) -> (N, C): log of softmax, stable for any z (shifts by the row maximum)."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(z: F32) -> F32:
    """(N, C) -> (N, C) probabilities, each row summing to 1."""
    return np.exp(log_softmax(z))


# --------------------------------------------------------------------------- losses


def softmax_cross_entropy(z: F32, y: NDArray[np.int64], label_smoothing: float = 0.0,
                          out: F32 | None = None) -> tuple[float, F32]:
    """Mean cross-entropy of softmax(z) against the (optionally smoothed) one-hot targets.

    Target t = (1 - eps) onehot(y) + eps / C. Returns loss and dlogits = (softmax(z) - t) / N,
    written into ``out`` (which may be ``z`` itself, so the logits buffer is reused).
    """
    n, c = z.shape
    rows = np.arange(n)
    shifted = np.subtract(z, z.max(axis=1, keepdims=True), out=out)
    probs = np.exp(shifted)
    sum_exp = probs.sum(axis=1)
    log_sum_exp = np.log(sum_exp)
    # log p(y) = shifted[y] - lse; the smoothing term needs sum over classes of log p.
    log_p_y = shifted[rows, y] - log_sum_exp
    loss = -(1.0 - label_smoothing) * float(log_p_y.mean())
    if label_smoothing:
        sum_log_p = shifted.sum(axis=1) - c * log_sum_exp
        loss -= label_smoothing / c * float(sum_log_p.mean())
    dlogits = np.divide(probs, sum_exp[:, None], out=shifted)
    if label_smoothing:
        dlogits -= label_smoothing / c
    dlogits[rows, y] -= 1.0 - label_smoothing
    dlogits *= 1.0 / n
    return loss, dlogits


def sigmoid_quadratic(z: F32, y: NDArray[np.int64], label_smoothing: float = 0.0,
                      out: F32 | None = None) -> tuple[float, F32]:
    """The seed's loss: sigmoid outputs a, L = 1/(2N) * sum (a - onehot(y))^2.

    dL/dz = (a - t) * a (1 - a) / N: the output sigmoid's derivative stays in the chain.
    """
    n = z.shape[0]
    a = sigmoid(z, out=out)
    diff = a.copy()
    diff[np.arange(n), y] -= 1.0
    loss = 0.5 * float(np.einsum("ij,ij->", diff, diff)) / n
    diff *= 1.0 / n
    dlogits = sigmoid_backward(a, diff)
    return loss, dlogits


LOSSES: dict[str, Callable[..., tuple[float, F32]]] = {
    "cross_entropy": softmax_cross_entropy,
    "quadratic": sigmoid_quadratic,
}

def normalised_sigmoid(z: F32) -> F32:
    """(N, C) -> (N, C): sigmoid scores scaled to sum to one, for displaying predictions of
    a model trained with the quadratic loss (whose outputs are independent sigmoids)."""
    s = sigmoid(z.copy())
    return s / s.sum(axis=1, keepdims=True)


# What each loss turns logits into, for predictions.
OUTPUTS: dict[str, Callable[[F32], F32]] = {
    "cross_entropy": softmax,
    "quadratic": normalised_sigmoid,
}

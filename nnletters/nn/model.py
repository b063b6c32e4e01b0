"""The multilayer perceptron: a stack of layers, a loss, and one flat parameter buffer.

    x -> Dense -> activation [-> dropout] -> ... -> Dense -> logits -> loss

Every parameter array (each layer's W and b) is a view into one flat float32 vector
``theta``, and every gradient a view into ``grad``, weights first and then biases. Optimisers
therefore update the whole network with a few vector operations, and L2 weight decay touches
``theta[:n_decay]`` (the weights) and never the biases.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from nnletters.nn.functional import LOSSES, OUTPUTS, log_softmax, sigmoid
from nnletters.nn.layers import Activation, BatchNorm, Dense, Dropout, Layer

F32 = NDArray[np.float32]


class MLP:
    def __init__(self, sizes: list[int], activation: str = "relu", init: str = "he",
                 dropout: float = 0.0, loss: str = "cross_entropy",
                 rng: np.random.Generator | None = None, label_smoothing: float = 0.0,
                 batch_norm: bool = False, dtype: type = np.float32,
                 kernels: str = "numpy") -> None:
        """sizes = [n_in, hidden..., n_classes]; rng draws the initial weights and dropout.

        dtype is float32 for everything real; gradient checks build a float64 twin.
        kernels="numba" (float32 only) puts the fused layers of nn/fused.py after each hidden
        Dense layer: the same maths, parameters and random draws in fewer passes."""
        if rng is None:
            raise ValueError("MLP needs an explicit numpy.random.Generator")
        if kernels == "numba" and np.dtype(dtype) != np.float32:
            raise ValueError("the numba kernels are float32 only")
        if not 0.0 <= dropout < 1.0:  # p = 1 keeps no unit: scaling by 1 / (1 - p) fails
            raise ValueError(f"dropout is a rate in [0, 1), not {dropout}")
        self.kernels = kernels
        self.sizes = list(sizes)
        self.activation, self.init, self.dropout = activation, init, dropout
        self.loss_name, self.label_smoothing = loss, label_smoothing
        self.batch_norm = batch_norm
        self.loss_fn, self.output_fn = LOSSES[loss], OUTPUTS[loss]
        self.dtype = np.dtype(dtype)
        self.layers = self._build_layers(rng)
        for layer in self.layers:
            layer.dtype = self.dtype
        self._bind_params()

    @classmethod
    def from_config(cls, cfg, n_in: int, n_classes: int, rng: np.random.Generator,
                    dtype: type = np.float32, kernels: str = "numpy") -> MLP:
        """Build from a ``ModelConfig``."""
        return cls([n_in, *cfg.hidden, n_classes], cfg.activation, cfg.init, cfg.dropout,
                   cfg.loss, rng, cfg.label_smoothing, cfg.batch_norm, dtype, kernels)

    def _build_layers(self, rng: np.random.Generator) -> list[Layer]:
        layers: list[Layer] = []
        n_dense = len(self.sizes) - 1
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            last = i == n_dense - 1
            fused = self.kernels == "numba" and not last and not self.batch_norm
            if self.kernels == "numba":
                from nnletters.nn.fused import FusedActivation, FusedDense
            dense = (FusedDense if fused else Dense)(
                fan_in, fan_out, self.init, rng, needs_input_grad=i > 0,
                bias=last or not self.batch_norm)
            layers.append(dense)
            if last:
                break  # the last Dense gives the logits; the loss applies the output function
            if self.batch_norm:
                layers.append(BatchNorm(fan_out))
            if self.kernels == "numba":  # bias (unless batch norm), activation, dropout
                layers.append(FusedActivation(self.activation, dense if fused else None,
                                              self.dropout, rng))
                continue
            layers.append(Activation(self.activation))
            if self.dropout > 0:
                layers.append(Dropout(self.dropout, rng))
        return layers

    def _bind_params(self) -> None:
        """Move every parameter into views of one flat buffer (weights first, then the rest)."""
        specs = [(layer, name, shape, decay) for layer in self.layers
                 for name, shape, decay in layer.param_specs]
        specs.sort(key=lambda s: not s[3])  # stable: decayed weights first, in layer order
        total = sum(int(np.prod(shape)) for _, _, shape, _ in specs)
        self.theta = np.zeros(total, dtype=self.dtype)
        self.grad = np.zeros(total, dtype=self.dtype)
        self.n_decay = sum(int(np.prod(s)) for _, _, s, decay in specs if decay)
        offset = 0
        for layer, name, shape, _ in specs:
            size = int(np.prod(shape))
            view = self.theta[offset:offset + size].reshape(shape)
            view[...] = getattr(layer, name)
            setattr(layer, name, view)
            setattr(layer, "d" + name, self.grad[offset:offset + size].reshape(shape))
            offset += size

    # ----------------------------------------------------------------- forward / backward

    def forward(self, x: F32, train: bool = False) -> F32:
        """x: (N, n_in) float32 -> logits (N, n_classes) float32 (a reused buffer)."""
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, dlogits: F32) -> None:
        """Backpropagate dL/dlogits (N, n_classes) through every layer, filling ``grad``."""
        d = dlogits
        for layer in reversed(self.layers):
            d = layer.backward(d)

    def loss(self, logits: F32, y: NDArray[np.int64], out: F32 | None = None
             ) -> tuple[float, F32]:
        """Mean loss and dlogits for a batch (dlogits may overwrite ``out``)."""
        return self.loss_fn(logits, y, self.label_smoothing, out=out)

    def train_step(self, x: F32, y: NDArray[np.int64]) -> tuple[float, int]:
        """Forward, loss, backward for one batch; returns (mean loss, number correct)."""
        logits = self.forward(x, train=True)
        correct = int(np.count_nonzero(logits.argmax(axis=1) == y))
        loss, dlogits = self.loss(logits, y, out=logits)
        self.backward(dlogits)
        return loss, correct

    def input_gradient(self, x: F32, classes: NDArray[np.int64], score: str = "logit") -> F32:
        """d score[n, classes[n]] / d x[n]: how each input pixel moves one class's score.

        x: (N, n_in) -> (N, n_in), in the model's dtype. ``score`` is "logit" (the last
        layer's output z_c) or "log_prob" (the log of the probability predict shows). The
        same chain rule as ``backward``, in evaluation mode (dropout off, batch norm with its
        running statistics) and carried one step further, through the first layer's weights
        to the pixels; no parameter gradient is touched."""
        x = np.asarray(x, dtype=self.dtype)
        logits = self.forward(x, train=False).copy()
        d = score_gradient(logits, np.asarray(classes), score, self.loss_name)
        for layer in reversed(self.layers):
            d = _eval_input_backward(layer, d)
        return d

    def predict_proba(self, x: F32, batch_size: int = 1024) -> F32:
        """(N, n_in) -> (N, n_classes) float32 class probabilities, evaluated in batches."""
        out = np.empty((x.shape[0], self.sizes[-1]), dtype=self.dtype)
        for start in range(0, x.shape[0], batch_size):
            logits = self.forward(x[start:start + batch_size], train=False)
            out[start:start + batch_size] = self.output_fn(logits)
        return out

    def weight_l2(self) -> float:
        """0.5 * sum of squared weights (biases excluded): the L2 penalty per unit decay."""
        w = self.theta[:self.n_decay]
        return 0.5 * float(np.dot(w, w))

    # ----------------------------------------------------------------- parameters & state

    def dense_layers(self) -> list[Dense]:
        return [layer for layer in self.layers if isinstance(layer, Dense)]

    def params(self) -> list[F32]:
        return [getattr(layer, name) for layer in self.layers for name, _, _ in layer.param_specs]

    def grads(self) -> list[F32]:
        return [getattr(layer, "d" + name) for layer in self.layers
                for name, _, _ in layer.param_specs]

    def state_dict(self, copy: bool = True) -> dict[str, np.ndarray]:
        """Arrays only: ``{"<i>/<name>": array}`` for every parameter-holding layer i
        (``copy=False``: the live arrays, for a writer that is done before they change)."""
        state: dict[str, np.ndarray] = {}
        for i, layer in enumerate(self.stateful_layers()):
            for name in [n for n, _, _ in layer.param_specs] + list(layer.buffer_names):
                array = getattr(layer, name)
                state[f"{i}/{name}"] = array.copy() if copy else array
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into the existing parameters (keeping the flat buffer's views)."""
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state))
        if missing:
            raise KeyError(f"missing arrays: {', '.join(missing)}")
        for i, layer in enumerate(self.stateful_layers()):
            for name in [n for n, _, _ in layer.param_specs] + list(layer.buffer_names):
                src = state[f"{i}/{name}"]
                dst = getattr(layer, name)
                if src.shape != dst.shape:
                    raise ValueError(f"array {i}/{name}: shape {src.shape}, "
                                     f"model expects {dst.shape}")
                dst[...] = src

    def stateful_layers(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.param_specs or layer.buffer_names]

    def dropout_layers(self) -> list[Dropout]:
        return [layer for layer in self.layers if isinstance(layer, Dropout)]

    def describe(self) -> str:
        """e.g. '784-1024-512-10 relu, dropout 0.3'."""
        text = "-".join(map(str, self.sizes))
        text += f" {self.activation}" if len(self.sizes) > 2 else " (no hidden layer)"
        if self.dropout:
            text += f", dropout {self.dropout}"
        if self.batch_norm:
            text += ", batch norm"
        return text


def score_gradient(logits: F32, classes: NDArray[np.int64], score: str, loss: str) -> F32:
    """d score / d logits (N, C) for each row's class: the seed of ``input_gradient``.

    logit:     z_c,                     d/dz_j = [j = c]
    log_prob:  log softmax(z)_c,        d/dz_j = [j = c] - softmax(z)_j       (cross-entropy)
               log (s_c / sum_k s_k),   d/dz_j = [j = c] (1 - s_c) - s_j (1 - s_j) / sum_k s_k
               with s = sigmoid(z), the normalised sigmoid a quadratic-loss model shows."""
    n = logits.shape[0]
    rows = np.arange(n)
    onehot = np.zeros_like(logits)
    onehot[rows, classes] = 1.0
    if score == "logit":
        return onehot
    if score != "log_prob":
        raise ValueError(f"unknown score {score!r}: expected 'logit' or 'log_prob'")
    if loss == "cross_entropy":
        return onehot - np.exp(log_softmax(logits))
    s = sigmoid(logits.copy())
    d = -s * (1.0 - s) / s.sum(axis=1, keepdims=True)
    d[rows, classes] += 1.0 - s[rows, classes]
    return d


def _eval_input_backward(layer: Layer, d: F32) -> F32:
    """dL/d(input) of one layer after an evaluation-mode forward, from dL/d(output) ``d``."""
    if isinstance(layer, Dense):
        return d @ layer.W.T  # the first layer too: here the input gradient is the point
    if isinstance(layer, Activation):
        return layer.f_backward(layer.a, d)  # in place on d, which is this function's own
    if isinstance(layer, BatchNorm):
        # In evaluation batch norm is the affine map gamma (x - mean) / sqrt(var + eps) + beta
        # with the running statistics fixed, so its derivative is the per-unit scale.
        scale = layer.gamma / np.sqrt(layer.running_var + layer.eps)
        return d * scale.astype(d.dtype, copy=False)
    if isinstance(layer, Dropout):
        return d  # the identity in evaluation
    raise TypeError(f"no input gradient for layer {type(layer).__name__}")

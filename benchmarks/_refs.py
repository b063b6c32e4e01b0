"""Reference trainers that nnletters is measured against, all behind one small interface.

Every trainer is built from a ``Spec`` plus the training arrays ``X: (N, D) float32`` and
``y: (N,) int64``, and offers:

    train_range(lo, hi) -> float    one shuffled pass in mini-batches over samples lo..hi-1
                                    of its data (the whole epoch is lo=0, hi=N); mean loss
    predict_proba(x) -> (n, C)      class probabilities for one batch x: (n, D) float32

The trainers are written the way their users write them, so that the comparison says what a
reader gains by switching:

- ``TextbookMLP``: the float64 NumPy MLP a learner writes after a course (fresh arrays every
  step, ``np.maximum``, fancy-indexed batches), the baseline nnletters has to beat;
- ``TorchMLP``: ``torch.nn`` float32 with its own optimisers. It gets the fast data path
  (slicing a shuffled index tensor, not ``DataLoader``), so that we time PyTorch's compute and
  not its per-sample collation;
- ``SklearnMLP``: scikit-learn's ``MLPClassifier``, one ``partial_fit`` call per epoch.

Importing this module needs only NumPy; torch and scikit-learn are imported when their trainer
is built, so a missing one is reported as skipped and the rest still run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")


@dataclass(frozen=True)
class Spec:
    """What every trainer in one benchmark run shares.

    sizes: (n_in, *hidden, n_classes), ReLU between layers, softmax cross-entropy on top.
    """

    sizes: tuple[int, ...] = (784, 1024, 512, 10)
    batch: int = 128
    optimizer: str = "momentum"
    lr: float = 0.01
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    dropout: float = 0.0
    seed: int = 0
    threads: int = 1
    kernels: str | None = None  # nnletters' train.kernels (None: its default); others ignore it

    @property
    def layers(self) -> list[tuple[int, int]]:
        """(fan_in, fan_out) of every dense layer."""
        return list(zip(self.sizes[:-1], self.sizes[1:], strict=True))

    @property
    def n_params(self) -> int:
        return sum(i * o + o for i, o in self.layers)

    @property
    def flops_per_sample(self) -> int:
        """Training FLOPs per sample: 3 matmuls per layer (forward, dW, dx), 2 FLOPs per
        multiply-add, so 6 * sum(fan_in * fan_out). Elementwise work is not counted."""
        return 6 * sum(i * o for i, o in self.layers)

    @property
    def optimizer_slots(self) -> int:
        """Arrays of optimiser state per parameter (velocity; Adam's m and v)."""
        return {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2}[self.optimizer]


def he_weights(spec: Spec, rng: np.random.Generator, dtype: type) -> list[np.ndarray]:
    """He-normal (fan_in, fan_out) weights for every layer, drawn in ``dtype``."""
    return [(rng.standard_normal((i, o)) * np.sqrt(2.0 / i)).astype(dtype) for i, o in spec.layers]


# --------------------------------------------------------------------------- textbook NumPy


def softmax64(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class TextbookMLP:
    """The plain NumPy float64 MLP of a first course: clear, vectorised per batch, nothing
    reused between steps. Shapes: W[l] (fan_in, fan_out), activations (batch, width)."""

    name = "textbook"

    def __init__(self, spec: Spec, X: F32, y: NDArray[np.int64]) -> None:
        self.spec = spec
        self.rng = np.random.default_rng(spec.seed)
        self.X = X.astype(np.float64)  # what a learner's code does on load
        self.y = y
        self.n_classes = spec.sizes[-1]
        self.W = he_weights(spec, self.rng, np.float64)
        self.b = [np.zeros(o) for _, o in spec.layers]
        self.state = [[np.zeros_like(p) for p in self.W + self.b]
                      for _ in range(spec.optimizer_slots)]
        self.t = 0

    def forward(self, x: np.ndarray, train: bool) -> tuple[list[np.ndarray], list]:
        """Returns every layer's input (acts[0] = x, the last entry the probabilities) and the
        dropout masks, which backprop needs."""
        acts, masks = [x], []
        last = len(self.W) - 1
        for k, (W, b) in enumerate(zip(self.W, self.b, strict=True)):
            z = acts[-1] @ W + b
            if k == last:
                acts.append(softmax64(z))
                break
            a = np.maximum(z, 0)
            if train and self.spec.dropout > 0:
                keep = 1.0 - self.spec.dropout
                mask = (self.rng.random(a.shape) < keep) / keep
                a = a * mask
                masks.append(mask)
            acts.append(a)
        return acts, masks

    def backward(self, acts: list, masks: list, y: np.ndarray) -> list[np.ndarray]:
        """Gradients [dW..., db...] of the mean cross-entropy, by the chain rule."""
        n = y.shape[0]
        delta = acts[-1].copy()
        delta[np.arange(n), y] -= 1.0
        delta /= n  # dL/dz of the last layer: (softmax - onehot) / n
        dW, db = [None] * len(self.W), [None] * len(self.W)
        for k in reversed(range(len(self.W))):
            dW[k] = acts[k].T @ delta
            db[k] = delta.sum(axis=0)
            if k > 0:
                delta = delta @ self.W[k].T
                if masks:
                    delta = delta * masks[k - 1]
                delta = delta * (acts[k] > 0)
        return dW + db

    def update(self, grads: list[np.ndarray]) -> None:
        s, params = self.spec, self.W + self.b
        if s.optimizer == "adam":
            self.t += 1
            m, v = self.state
            for p, g, mi, vi in zip(params, grads, m, v, strict=True):
                mi[...] = s.beta1 * mi + (1 - s.beta1) * g
                vi[...] = s.beta2 * vi + (1 - s.beta2) * g ** 2
                m_hat = mi / (1 - s.beta1 ** self.t)
                v_hat = vi / (1 - s.beta2 ** self.t)
                p -= s.lr * m_hat / (np.sqrt(v_hat) + s.eps)
        elif s.optimizer in ("momentum", "nesterov"):
            for p, g, vel in zip(params, grads, self.state[0], strict=True):
                vel[...] = s.momentum * vel - s.lr * g
                p += s.momentum * vel - s.lr * g if s.optimizer == "nesterov" else vel
        else:
            for p, g in zip(params, grads, strict=True):
                p -= s.lr * g

    def train_range(self, lo: int, hi: int) -> float:
        order = lo + self.rng.permutation(hi - lo)
        losses = []
        for start in range(0, len(order), self.spec.batch):
            idx = order[start:start + self.spec.batch]
            xb, yb = self.X[idx], self.y[idx]
            acts, masks = self.forward(xb, train=True)
            losses.append(-np.mean(np.log(acts[-1][np.arange(len(yb)), yb] + 1e-12)))
            self.update(self.backward(acts, masks, yb))
        return float(np.mean(losses))

    def predict_proba(self, x: F32) -> np.ndarray:
        return self.forward(x.astype(np.float64), train=False)[0][-1]


# --------------------------------------------------------------------------- PyTorch


class TorchMLP:
    """``torch.nn.Sequential`` of Linear/ReLU[/Dropout], float32, ``F.cross_entropy``."""

    name = "torch"

    def __init__(self, spec: Spec, X: F32, y: NDArray[np.int64]) -> None:
        import torch

        self.torch, self.spec = torch, spec
        torch.set_num_threads(spec.threads)
        torch.manual_seed(spec.seed)  # dropout masks come from torch's own generator
        self.gen = torch.Generator().manual_seed(spec.seed)
        self.X = torch.from_numpy(X)  # shares memory with the NumPy array: no copy
        self.y = torch.from_numpy(y)
        self.model = self._build(he_weights(spec, np.random.default_rng(spec.seed), np.float32))
        self.opt = self._optimizer()

    def _build(self, weights: list[np.ndarray]):
        nn, layers = self.torch.nn, []
        for k, W in enumerate(weights):
            linear = nn.Linear(*W.shape)
            with self.torch.no_grad():
                linear.weight.copy_(self.torch.from_numpy(W.T))  # torch stores (out, in)
                linear.bias.zero_()
            layers.append(linear)
            if k < len(weights) - 1:
                layers.append(nn.ReLU())
                if self.spec.dropout > 0:
                    layers.append(nn.Dropout(self.spec.dropout))
        return nn.Sequential(*layers)

    def _optimizer(self):
        s, optim, params = self.spec, self.torch.optim, self.model.parameters()
        if s.optimizer == "adam":
            return optim.Adam(params, lr=s.lr, betas=(s.beta1, s.beta2), eps=s.eps)
        momentum = 0.0 if s.optimizer == "sgd" else s.momentum
        return optim.SGD(params, lr=s.lr, momentum=momentum,
                         nesterov=s.optimizer == "nesterov")

    def train_range(self, lo: int, hi: int) -> float:
        torch = self.torch
        F = torch.nn.functional
        self.model.train()
        total, batches = 0.0, 0
        for idx in (lo + torch.randperm(hi - lo, generator=self.gen)).split(self.spec.batch):
            loss = F.cross_entropy(self.model(self.X[idx]), self.y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            total += loss.item()
            batches += 1
        return total / batches

    def predict_proba(self, x: F32) -> np.ndarray:
        torch = self.torch
        self.model.eval()
        with torch.inference_mode():
            return torch.softmax(self.model(torch.from_numpy(x)), dim=1).numpy()


# --------------------------------------------------------------------------- scikit-learn


class SklearnMLP:
    """``sklearn.neural_network.MLPClassifier``; ``partial_fit`` runs one shuffled epoch in
    mini-batches with the solver's own update. No L2 (alpha=0) and no dropout: it has none."""

    name = "sklearn"

    def __init__(self, spec: Spec, X: F32, y: NDArray[np.int64]) -> None:
        if spec.dropout > 0:
            raise RuntimeError("MLPClassifier has no dropout")
        from sklearn.neural_network import MLPClassifier

        s = spec
        self.X, self.y, self.classes = X, y, np.arange(spec.sizes[-1])
        solver = "adam" if s.optimizer == "adam" else "sgd"
        self.model = MLPClassifier(
            hidden_layer_sizes=s.sizes[1:-1], activation="relu", solver=solver, alpha=0.0,
            batch_size=s.batch, learning_rate="constant", learning_rate_init=s.lr,
            momentum=0.0 if s.optimizer == "sgd" else s.momentum,
            nesterovs_momentum=s.optimizer == "nesterov", beta_1=s.beta1, beta_2=s.beta2,
            epsilon=s.eps, shuffle=True, random_state=s.seed)

    def train_range(self, lo: int, hi: int) -> float:
        self.model.partial_fit(self.X[lo:hi], self.y[lo:hi], classes=self.classes)
        return float(self.model.loss_)

    def predict_proba(self, x: F32) -> np.ndarray:
        return self.model.predict_proba(x)


REFERENCES = {"textbook": TextbookMLP, "torch": TorchMLP, "sklearn": SklearnMLP}

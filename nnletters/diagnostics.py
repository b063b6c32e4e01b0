"""Per-layer diagnostics after every epoch: is each layer still learning?

On one fixed batch of validation images (the first ``DIAG_BATCH``), for every Dense layer
l = 1..L (layer L gives the logits):

    grad_norm/l    ||dL/dW_l||, the Frobenius norm of the loss gradient of the layer's weights
    weight_norm/l  ||W_l||
    dead/l         ReLU layers: the share of units that output 0 for every image of the batch
                   (a dead ReLU's derivative is 0 on all of them, so its weights get no
                   gradient and it never comes back)
    saturated/l    sigmoid and tanh layers (and the sigmoid outputs of the quadratic loss):
                   the share of the layer's outputs on the batch that lie in the flat tails,
                   sigmoid a < 0.01 or a > 0.99, tanh |a| > 0.99, where f'(z) < 0.01

These keys join the epoch's metrics row (metrics.jsonl, TensorBoard, the report's
diagnostics.png).

Measuring must not change training: a seeded run gives bit-identical weights with and
without it. So the forward and backward pass run on a *twin* network that shares no array
with the model (the weights are copied in each epoch), has no dropout layers (nothing draws
from the run's generator) and whose batch-norm running statistics nobody reads. The twin
normalises with the batch's own statistics, as training does, and its gradient is that of
the data loss (label smoothing included, weight decay not). The weights measured are the ones
being trained, not their moving average (optim.ema).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nnletters.callbacks import Callback
from nnletters.nn.functional import sigmoid
from nnletters.nn.layers import Activation
from nnletters.nn.model import MLP

F32 = NDArray[np.float32]

DIAG_BATCH = 512  # images: enough to call a unit dead, one forward+backward of cost
SATURATION = 0.99  # |a| beyond this share of the range counts as saturated
SATURATING = ("sigmoid", "tanh")
DYING = ("relu",)  # leaky ReLU keeps a slope below 0: it cannot die


def twin_of(model: MLP) -> MLP:
    """A float32 copy of ``model``'s architecture without dropout, for measuring.

    Its initial weights come from a generator of its own (they are overwritten anyway), so
    building it draws nothing from the run's generator."""
    return MLP(model.sizes, model.activation, model.init, 0.0, model.loss_name,
               np.random.default_rng(0), model.label_smoothing, model.batch_norm)


def layer_diagnostics(twin: MLP, theta: F32, X: F32, y: NDArray[np.int64]
                      ) -> dict[str, float]:
    """The diagnostics of the weights ``theta`` (a model's flat parameter vector, copied into
    ``twin``) on X: (N, D) float32, y: (N,) int64. -> {"grad_norm/1": ..., ...}."""
    np.copyto(twin.theta, theta)
    logits = twin.forward(X, train=True)  # batch norm on batch statistics, as in training
    activations = [layer.a for layer in twin.layers if isinstance(layer, Activation)]
    outputs = sigmoid(logits.copy()) if twin.loss_name == "quadratic" else None
    _, dlogits = twin.loss(logits, y)
    twin.backward(dlogits)
    row: dict[str, float] = {}
    for i, dense in enumerate(twin.dense_layers(), start=1):
        row[f"grad_norm/{i}"] = norm(dense.dW)
        row[f"weight_norm/{i}"] = norm(dense.W)
        if i <= len(activations):
            row.update(unit_health(activations[i - 1], twin.activation, i))
        elif outputs is not None:
            row.update(unit_health(outputs, "sigmoid", i))
    return row


def unit_health(a: F32, activation: str, layer: int) -> dict[str, float]:
    """a: (N, H) float32 outputs of one activation layer -> its dead or saturated share."""
    if activation in DYING:
        ever_active = (a > 0).any(axis=0)
        return {f"dead/{layer}": 1.0 - float(ever_active.mean())}
    if activation == "sigmoid":
        low = 1.0 - SATURATION
        tails = np.count_nonzero(a < low) + np.count_nonzero(a > SATURATION)
        return {f"saturated/{layer}": tails / a.size}
    if activation == "tanh":
        return {f"saturated/{layer}": np.count_nonzero(np.abs(a) > SATURATION) / a.size}
    return {}


def norm(a: np.ndarray) -> float:
    """Frobenius norm, summed in float64 (a float32 sum of a million squares drifts); einsum
    casts a few thousand elements at a time, so no float64 copy of the array is made."""
    flat = a.ravel()
    return math.sqrt(float(np.einsum("i,i->", flat, flat, dtype=np.float64)))


def diagnostic_batch(trainer: Any, limit: int = DIAG_BATCH) -> tuple[F32, NDArray[np.int64]]:
    """The first ``limit`` validation images (training images when there is no validation
    set): a fixed batch, so that the figures of two epochs compare the weights alone."""
    ds = trainer.val if trainer.val.X.shape[0] > 0 else trainer.train
    return ds.X[:limit], ds.y[:limit]


class Diagnostics(Callback):
    """Adds the per-layer diagnostics to every epoch's metrics row.

    ``gradients`` holds the twin's dL/dW of the last epoch (one array per Dense layer) for
    callbacks after this one (the TensorBoard histograms)."""

    def __init__(self, limit: int = DIAG_BATCH) -> None:
        self.limit = limit
        self.twin: MLP | None = None
        self.gradients: list[F32] = []

    def on_train_begin(self, trainer: Any) -> None:
        super().on_train_begin(trainer)
        self.twin = twin_of(trainer.model)
        self.X, self.y = diagnostic_batch(trainer, self.limit)

    def on_epoch_end(self, row: dict[str, Any]) -> None:
        if len(self.y) == 0:
            return
        row.update(layer_diagnostics(self.twin, self.trainer.model.theta, self.X, self.y))
        self.gradients = [dense.dW for dense in self.twin.dense_layers()]

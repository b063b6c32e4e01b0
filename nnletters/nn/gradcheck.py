"""Gradient checking: backprop's gradient against central finite differences, in float64.

For a parameter entry w the numerical derivative is

    dL/dw ~= (L(w + h) - L(w - h)) / (2 h)

whose truncation error shrinks like h^2 while its round-off grows like 1/h: the loss is only
exact to about one unit in the last place (~4e-16 for a loss near 2.3), so the quotient
carries ~ulp / (2h) of round-off, 2e-11 at h = 1e-5, close to the smallest gradients the check
must judge (threshold 1e-4 times the floor REL_ERROR_FLOOR = 1e-6). At h = STEP = 1e-4 the
round-off is 2e-12 and the truncation error (~h^2) is still far below the threshold, so a
correct backward pass agrees to ~1e-7 relative error and a wrong derivative is off by orders
of magnitude more.
The loss includes the L2 term 0.5 * weight_decay * ||W||^2 (weights only), and dropout uses a
fixed mask, so that L is a deterministic function of the parameters.

ReLU (and leaky ReLU) has a kink at z = 0 where no derivative exists. When a step of +-h moves
some pre-activation across 0 (for a first-layer weight: |z| < h |x| on a sample it touches),
the difference quotient mixes two slopes and says nothing about backprop. Such entries are
found exactly, by comparing which side of the kink every ReLU pre-activation is on at w - h,
w and w + h, and are skipped and counted instead of failing a correct backward pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from nnletters.nn.layers import Activation, Dropout

DEFAULT_THRESHOLD = 1e-4  # a correct backward pass gives ~1e-7; a wrong one ~1e-1
# Denominator floor: keeps round-off (about 1e-16 * L / h) on near-zero gradient entries
# from counting as a relative error.
REL_ERROR_FLOOR = 1e-6
STEP = 1e-4  # the central-difference step h (see above)
KINKED = ("relu", "leaky_relu")  # activations whose derivative jumps at z = 0


def total_loss(model, X: NDArray, y: NDArray[np.int64], weight_decay: float) -> float:
    """Data loss + L2 penalty for the current parameters (training-mode forward)."""
    logits = model.forward(X, train=True)
    loss, _ = model.loss(logits.copy(), y)
    return loss + weight_decay * model.weight_l2()


def backprop_gradient(model, X: NDArray, y: NDArray[np.int64], weight_decay: float) -> NDArray:
    """The flat gradient of ``total_loss`` by backpropagation."""
    model.train_step(X, y)
    grad = model.grad.copy()
    grad[:model.n_decay] += weight_decay * model.theta[:model.n_decay]
    return grad


def fix_dropout_masks(model, n: int, rng: np.random.Generator) -> None:
    """Give every dropout layer a fixed inverted-dropout mask for a batch of ``n``."""
    width = model.sizes[0]
    for layer in model.layers:
        width = getattr(layer, "fan_out", width)  # dropout keeps the preceding Dense's width
        if isinstance(layer, Dropout):
            keep = 1.0 - layer.p
            layer.fixed_mask = (rng.random((n, width)) < keep).astype(model.dtype) / keep


def kink_sides(model) -> list[NDArray[np.bool_]]:
    """After a forward pass: which side of 0 each ReLU-family pre-activation is on,
    one (N, width) bool array per such layer (a > 0 exactly when z > 0)."""
    return [layer.a > 0 for layer in model.layers
            if isinstance(layer, Activation) and layer.name in KINKED]


def check_gradients(model, X: NDArray, y: NDArray[np.int64], weight_decay: float = 0.0,
                    h: float = STEP, max_entries: int = 64,
                    rng: np.random.Generator | None = None,
                    threshold: float = DEFAULT_THRESHOLD) -> list[dict[str, Any]]:
    """Compare backprop with central differences for every parameter tensor of a float64
    ``model``. Checks at most ``max_entries`` entries per tensor (chosen by ``rng``); an
    entry whose +-h steps cross a ReLU kink is skipped (see the module docstring).

    Returns one dict per tensor: name, shape, checked, kinks_skipped, max_rel_error, passed
    and worst (the entry with the largest error: index, analytic and numeric value)."""
    if model.theta.dtype != np.float64:
        raise ValueError("gradient checks need a float64 model (MLP(..., dtype=np.float64))")
    rng = rng or np.random.default_rng(0)
    X = np.asarray(X, dtype=np.float64)
    # Biases start at zero, so a row that dropout or ReLU zeroed entirely gives a
    # pre-activation of exactly 0: ReLU's kink, where no derivative exists. Nudge them off it.
    model.theta[model.n_decay:] += rng.normal(0.0, 0.01, model.theta.size - model.n_decay)
    analytic = backprop_gradient(model, X, y, weight_decay)
    sides = kink_sides(model)
    offset = {id(p): _offset_in(model.theta, p) for p in model.params()}
    results = []
    for name, param in _named_params(model):
        n = param.size
        picks = np.arange(n) if n <= max_entries else rng.choice(n, max_entries, replace=False)
        result = {"name": name, "shape": list(param.shape), "checked": int(len(picks)),
                  "kinks_skipped": 0, "max_rel_error": 0.0, "worst": None}
        for j in picks:
            i = offset[id(param)] + int(j)
            numeric, kinked = _central_difference(model, X, y, weight_decay, i, h, sides)
            if kinked:
                result["kinks_skipped"] += 1
                continue
            a = float(analytic[i])
            error = abs(a - numeric) / max(abs(a) + abs(numeric), REL_ERROR_FLOOR)
            if result["worst"] is None or error > result["max_rel_error"]:
                result["max_rel_error"] = float(error)
                result["worst"] = {"index": [int(k) for k in np.unravel_index(j, param.shape)],
                                   "analytic": a, "numeric": float(numeric)}
        result["passed"] = bool(result["max_rel_error"] <= threshold)
        results.append(result)
    return results


def _central_difference(model, X: NDArray, y: NDArray[np.int64], weight_decay: float, i: int,
                        h: float, sides: list[NDArray[np.bool_]]) -> tuple[float, bool]:
    """(L(w + h) - L(w - h)) / 2h for flat parameter ``i``, and whether either step moved a
    ReLU pre-activation to the other side of its kink (``sides``: the sides at w)."""
    saved = model.theta[i]
    losses, kinked = [], False
    for w in (saved + h, saved - h):
        model.theta[i] = w
        losses.append(total_loss(model, X, y, weight_decay))
        kinked = kinked or any(not np.array_equal(now, then)
                               for now, then in zip(kink_sides(model), sides, strict=True))
    model.theta[i] = saved
    return (losses[0] - losses[1]) / (2 * h), kinked


def _named_params(model) -> list[tuple[str, NDArray]]:
    out = []
    for i, layer in enumerate(model.stateful_layers()):
        for pname, _, _ in layer.param_specs:
            out.append((f"model/{i}/{pname}", getattr(layer, pname)))
    return out


def _offset_in(flat: NDArray, view: NDArray) -> int:
    """Index in ``flat`` where the view ``view`` starts."""
    return (view.__array_interface__["data"][0] - flat.__array_interface__["data"][0]) \
        // flat.itemsize


# --------------------------------------------------------------------------- input gradient


def class_score(model, X: NDArray, classes: NDArray[np.int64], score: str = "logit") -> NDArray:
    """(N,) each row's score for its class, evaluation-mode forward: the logit z_c or the
    log of the probability predict shows (softmax, or the quadratic loss's normalised
    sigmoid)."""
    logits = model.forward(X, train=False).copy()
    rows = np.arange(X.shape[0])
    if score == "logit":
        return logits[rows, classes]
    return np.log(model.output_fn(logits)[rows, classes])


def check_input_gradient(model, X: NDArray, classes: NDArray[np.int64], score: str = "logit",
                         h: float = 1e-5, max_entries: int = 64,
                         rng: np.random.Generator | None = None) -> float:
    """Max relative error of ``model.input_gradient`` against central differences over the
    input pixels of a float64 ``model``: d score_n / d x[n, i] ~= (s(x + h e_i) - s(x - h
    e_i)) / 2h, at most ``max_entries`` pixels (chosen by ``rng``). Rows are independent in
    evaluation mode, so one perturbed pixel column serves every row at once."""
    if model.theta.dtype != np.float64:
        raise ValueError("gradient checks need a float64 model (MLP(..., dtype=np.float64))")
    rng = rng or np.random.default_rng(0)
    X = np.array(X, dtype=np.float64)
    analytic = model.input_gradient(X, classes, score)
    n_in = X.shape[1]
    picks = np.arange(n_in) if n_in <= max_entries else rng.choice(n_in, max_entries,
                                                                   replace=False)
    worst = 0.0
    for i in picks:
        saved = X[:, i].copy()
        X[:, i] = saved + h
        up = class_score(model, X, classes, score)
        X[:, i] = saved - h
        down = class_score(model, X, classes, score)
        X[:, i] = saved
        numeric = (up - down) / (2 * h)
        a = analytic[:, i]
        rel = np.abs(a - numeric) / np.maximum(np.abs(a) + np.abs(numeric), REL_ERROR_FLOOR)
        worst = max(worst, float(rel.max()))
    return worst

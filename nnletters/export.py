"""Take a trained model out of nnletters: an ONNX graph, or plain arrays for any NumPy program.

    nnletters export RUN|CHECKPOINT --format onnx --out model.onnx
        model.onnx   Gemm -> activation -> ... -> Gemm -> Softmax, built with ``onnx.helper``
        model.json   classes, image size, polarity and how to turn an image into the input

    nnletters export RUN|CHECKPOINT --format npz-plain --out model.npz
        model.npz    W0, b0, W1, b1, ... float32, nothing else
        model.json   the same facts plus each layer's arrays and activation

Both hold what inference computes, not what training computes: the weights the checkpoint's
``load_model`` gives (a run's best.npz already holds the EMA weights when the run used
``optim.ema``), each batch-norm layer folded into the Dense layer before it, and no dropout
(evaluation never drops). Batch norm at evaluation is an affine map per unit,

    bn(z) = gamma (z - mean) / sqrt(var + eps) + beta = z * scale + shift,

so bn(x W + b) = x (W * scale) + (b * scale + shift): one Gemm with new weights.

The input is the prepared image vector, (N, S*S) float32 in [0, 1]:
``nnletters.load_model(RUN).prepare(paths)`` gives exactly what ``nnletters predict`` feeds
the network. ``onnx`` is imported only here and only for ``--format onnx`` (the 'export' extra).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nnletters.errors import CheckpointError, NNLettersError
from nnletters.fileio import write_json, write_with
from nnletters.nn.functional import LEAKY_SLOPE

F32 = NDArray[np.float32]
FORMATS = ("onnx", "npz-plain")
OPSET = 17  # Softmax(axis=-1) per row needs >= 13; 17 is read by every onnxruntime since 1.11
IR_VERSION = 8  # the IR version that goes with opset 17, so older runtimes load the file too
INPUT, OUTPUT = "image", "probabilities"
# What each loss turns logits into (nn/functional.py OUTPUTS), as named in the JSON.
OUTPUT_FUNCTIONS = {"cross_entropy": "softmax", "quadratic": "normalised_sigmoid"}
PREPROCESS = (
    "Input: float32 (N, S*S), row-major pixels of an S x S grey image scaled to [0, 1] "
    "(x / 255). An image of the training data's size and framing needs only that (and "
    "inverting, 255 - x, when its polarity is not the model's: light_on_dark true means a "
    "light letter on a dark background). 'nnletters predict' also crops a user's image to "
    "the letter (pixels differing from the border's median by more than 64 of 255), pads it "
    "to a square in which the letter spans glyph_fill of the side, and resizes it to S x S "
    "(Lanczos); nnletters.load_model(RUN).prepare(paths) returns exactly those vectors.")


@dataclass
class PlainLayer:
    """One Gemm of the inference graph: z = x W + b, then ``activation`` (None: the logits).

    W: (fan_in, fan_out) float32, b: (fan_out,) float32."""

    W: F32
    b: F32
    activation: str | None


def plain_layers(network) -> list[PlainLayer]:
    """The MLP's evaluation-time computation as Gemm + activation pairs: batch norm folded
    into the Dense before it, dropout dropped (an identity when not training)."""
    from nnletters.nn.layers import Activation, BatchNorm, Dense

    layers: list[PlainLayer] = []
    for layer in network.layers:
        if isinstance(layer, Dense):
            b = layer.b if layer.b is not None else np.zeros(layer.fan_out, np.float32)
            layers.append(PlainLayer(layer.W.copy(), b.copy(), None))
        elif isinstance(layer, BatchNorm):
            layers[-1] = _fold_batch_norm(layers[-1], layer)
        elif isinstance(layer, Activation):
            layers[-1].activation = layer.name
    return layers


def _fold_batch_norm(dense: PlainLayer, bn) -> PlainLayer:
    """x W + b followed by bn -> x (W scale) + (b scale + shift), with BatchNorm's own
    evaluation-mode scale and shift (computed in float32, as its forward does)."""
    scale = bn.gamma / np.sqrt(bn.running_var + bn.eps)
    shift = bn.beta - bn.running_mean * scale
    return PlainLayer((dense.W * scale).astype(np.float32),
                      (dense.b * scale + shift).astype(np.float32), dense.activation)


# --------------------------------------------------------------------------- ONNX


def require_onnx() -> Any:
    """The ``onnx`` module, or the one-line error that names the extra to install."""
    try:
        import onnx
    except ImportError:
        raise NNLettersError("nnletters export --format onnx needs the 'export' extra: "
                             "pip install 'nnletters[export]'") from None
    return onnx


def onnx_model(layers: list[PlainLayer], loss: str, meta: dict[str, str] | None = None):
    """An ``onnx.ModelProto``: image (N, D) float32 -> probabilities (N, C) float32.

    One Gemm per layer with W and b as initializers, the activation node after it, and the
    loss's output function at the end: Softmax(axis=-1) for cross-entropy; for the quadratic
    loss's sigmoid outputs, Sigmoid then division by the row sum (``normalised_sigmoid``)."""
    onnx = require_onnx()
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, x = [], [], INPUT
    for i, layer in enumerate(layers):
        inits += [numpy_helper.from_array(layer.W, f"W{i}"),
                  numpy_helper.from_array(layer.b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [x, f"W{i}", f"b{i}"], [f"z{i}"], name=f"dense{i}"))
        x = f"z{i}"
        if layer.activation is not None:
            nodes.append(_activation_node(layer.activation, x, f"a{i}", f"act{i}"))
            x = f"a{i}"
    nodes += _output_nodes(loss, x, inits)
    n_in, n_out = layers[0].W.shape[0], layers[-1].W.shape[1]
    graph = helper.make_graph(
        nodes, "nnletters_mlp",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", n_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="nnletters")
    helper.set_model_props(model, meta or {})
    onnx.checker.check_model(model, full_check=True)
    return model


def _activation_node(name: str, x: str, out: str, node_name: str):
    from onnx import helper

    if name == "leaky_relu":
        return helper.make_node("LeakyRelu", [x], [out], name=node_name, alpha=LEAKY_SLOPE)
    ops = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}
    if name not in ops:
        raise CheckpointError(f"activation {name!r} has no ONNX counterpart in nnletters")
    return helper.make_node(ops[name], [x], [out], name=node_name)


def _output_nodes(loss: str, logits: str, inits: list) -> list:
    from onnx import helper, numpy_helper

    if loss == "cross_entropy":
        return [helper.make_node("Softmax", [logits], [OUTPUT], name="softmax", axis=-1)]
    if loss == "quadratic":  # sigmoid scores scaled to sum to one (normalised_sigmoid)
        inits.append(numpy_helper.from_array(np.array([-1], np.int64), "last_axis"))
        return [helper.make_node("Sigmoid", [logits], ["scores"], name="sigmoid"),
                helper.make_node("ReduceSum", ["scores", "last_axis"], ["total"],
                                 name="row_sum", keepdims=1),
                helper.make_node("Div", ["scores", "total"], [OUTPUT], name="normalise")]
    raise CheckpointError(f"loss {loss!r} has no ONNX output function in nnletters")


# --------------------------------------------------------------------------- entry point


def export_model(target: str | Path | None, fmt: str, out: str | Path) -> dict[str, Path]:
    """``nnletters export``: write the model of a run or checkpoint as ``fmt`` to ``out``,
    with its JSON description beside it (``out`` with the suffix .json). Returns
    {"model": path, "json": path}."""
    from nnletters.prediction import load_model

    if fmt not in FORMATS:
        raise NNLettersError(f"unknown export format {fmt!r}; expected one of "
                             + ", ".join(FORMATS))
    if fmt == "onnx":
        require_onnx()  # before anything is loaded or written
    model = load_model(target)
    out = Path(out)
    info_path = out.with_suffix(".json")
    if info_path == out:
        raise NNLettersError(f"--out {out}: the description is written to {info_path}; "
                             "give the model file another suffix (.onnx, .npz)")
    if not out.parent.is_dir():
        raise NNLettersError(f"--out {out}: folder {out.parent} does not exist")
    layers = plain_layers(model.network)
    info = describe(model, layers, fmt)
    if info["weights"].startswith("the raw weights"):
        warnings.warn(f"{model.path}: exporting {info['weights']}", stacklevel=2)
    if fmt == "onnx":
        props = {"classes": json.dumps(model.classes), "image_size": str(model.image_size)}
        proto = onnx_model(layers, model.network.loss_name, props)
        write_with(out, lambda fh: fh.write(proto.SerializeToString()))
    else:
        write_with(out, lambda fh: np.savez(fh, **plain_arrays(layers)))
    write_json(info_path, info)
    return {"model": out, "json": info_path}


def plain_arrays(layers: list[PlainLayer]) -> dict[str, F32]:
    """{"W0": W, "b0": b, "W1": ...}: the npz-plain file's arrays, float32."""
    arrays: dict[str, F32] = {}
    for i, layer in enumerate(layers):
        arrays[f"W{i}"], arrays[f"b{i}"] = layer.W, layer.b
    return arrays


def weights_used(model) -> str:
    """Which weights the export holds: a run with ``optim.ema`` evaluates (and keeps in
    best.npz) the average of its weights, while its last.npz holds the raw ones."""
    decay = (model.meta.get("config") or {}).get("optim", {}).get("ema")
    if not decay:
        return "the trained weights (no weight average in this run)"
    if model.path.name == "last.npz":
        return (f"the raw weights of last.npz; the run evaluated their average "
                f"(optim.ema {decay}), which best.npz holds")
    return f"the exponential moving average of the weights (optim.ema {decay})"


def describe(model, layers: list[PlainLayer], fmt: str) -> dict[str, Any]:
    """The JSON written beside an export: what the input is and how to read the output."""
    meta = model.meta
    info: dict[str, Any] = {
        "format": f"nnletters-{fmt}", "source": str(model.path), "epoch": meta.get("epoch"),
        "classes": model.classes, "image_size": model.image_size,
        "light_on_dark": model.light_on_dark, "glyph_fill": model.glyph_fill,
        "input": {"name": INPUT, "shape": ["N", model.image_size ** 2], "dtype": "float32",
                  "range": [0.0, 1.0]},
        "output": {"name": OUTPUT, "shape": ["N", len(model.classes)], "dtype": "float32",
                   "function": OUTPUT_FUNCTIONS[model.network.loss_name]},
        "preprocess": PREPROCESS,
        "network": model.network.describe(),
        "weights": weights_used(model),
    }
    if fmt == "onnx":
        info["opset"] = OPSET
    else:
        info["leaky_slope"] = LEAKY_SLOPE
        info["layers"] = [{"W": f"W{i}", "b": f"b{i}", "shape": list(layer.W.shape),
                           "activation": layer.activation} for i, layer in enumerate(layers)]
    return info

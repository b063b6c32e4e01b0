"""``nnletters export``: the ONNX graph run by onnxruntime and the plain arrays run by a few
lines of NumPy give the probabilities nnletters gives, on every image of a run's test split."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import nnletters
from nnletters.cli import main
from nnletters.evaluation import evaluation_data
from nnletters.prediction import predict_images
from tests.conftest import draw_letter

ort = pytest.importorskip("onnxruntime", reason="onnxruntime (the 'test' extra) not installed")
onnx = pytest.importorskip("onnx", reason="onnx (the 'export' extra) not installed")

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def letters_dir(tmp_path_factory):
    """4 letters x 10 crude glyphs, light on dark (the conftest's drawing)."""
    root = tmp_path_factory.mktemp("letters")
    for letter in "ABCD":
        (root / letter).mkdir()
        for i in range(10):
            draw_letter(letter, shift=i % 3 - 1, width=2 + i % 3).save(root / letter / f"{i}.png")
    return root


def train_tiny(data, out, *overrides):
    cfg = nnletters.load_config(None, [
        f"data.path={data}", "model.hidden=[12, 8]", "optim.name=adam", "optim.lr=0.01",
        "train.epochs=2", "train.batch_size=8", "data.val_fraction=0.2",
        "data.test_fraction=0.3", "train.early_stopping.enabled=false", *overrides])
    return nnletters.train(cfg, out=out).path


def split_vectors(run, data):
    """(paths, prepared vectors) of every image of the run's own test split."""
    ds, _ = evaluation_data(run / "best.npz", nnletters.load_model(run).image_size)
    paths = [data / p for p in ds.paths]
    return paths, nnletters.load_model(run).prepare(paths)


def plain_numpy_forward(npz_path, json_path, x):
    """What another NumPy program needs to do with an npz-plain export (15 lines)."""
    info = json.loads(Path(json_path).read_text())
    arrays = np.load(npz_path, allow_pickle=False)
    acts = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh,
            "leaky_relu": lambda z: np.where(z > 0, z, info["leaky_slope"] * z),
            "sigmoid": lambda z: 1 / (1 + np.exp(-z))}
    for layer in info["layers"]:
        x = x @ arrays[layer["W"]] + arrays[layer["b"]]
        if layer["activation"]:
            x = acts[layer["activation"]](x)
    if info["output"]["function"] == "softmax":
        e = np.exp(x - x.max(axis=1, keepdims=True))
    else:  # normalised_sigmoid
        e = 1 / (1 + np.exp(-x))
    return e / e.sum(axis=1, keepdims=True)


CASES = [(act, bn, ema, "cross_entropy") for act in ("relu", "leaky_relu", "tanh", "sigmoid")
         for bn in (False, True) for ema in (False, True)]
CASES += [("sigmoid", False, True, "quadratic"), ("relu", True, False, "quadratic")]


@pytest.mark.parametrize(("activation", "batch_norm", "ema", "loss"), CASES)
def test_exports_agree_with_predict_on_the_whole_test_split(tmp_path, letters_dir, activation,
                                                            batch_norm, ema, loss):
    run = train_tiny(letters_dir, tmp_path / "run", f"model.activation={activation}",
                     f"model.batch_norm={str(batch_norm).lower()}", f"model.loss={loss}",
                     "model.dropout=0.2", *(["optim.ema=0.9"] if ema else []))
    model = nnletters.load_model(run)
    paths, X = split_vectors(run, letters_dir)
    assert len(paths) >= 8 and X.dtype == np.float32
    expected = model.probabilities(X)
    predicted = [r["label"] for r in predict_images(paths, run)[0]]  # nnletters predict

    result = CliRunner().invoke(main, ["export", str(run), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    graph = onnx.load(tmp_path / "m.onnx")
    onnx.checker.check_model(graph, full_check=True)
    ops = [node.op_type for node in graph.graph.node]
    assert ops.count("Gemm") == 3 and "BatchNormalization" not in ops and "Dropout" not in ops
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"image": X})[0]
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.abs(got - expected).max() <= TOLERANCE
    assert [model.classes[i] for i in got.argmax(axis=1)] == predicted

    result = CliRunner().invoke(main, ["export", str(run), "--format", "npz-plain",
                                       "--out", str(tmp_path / "p.npz")])
    assert result.exit_code == 0, result.output
    plain = plain_numpy_forward(tmp_path / "p.npz", tmp_path / "p.json", X)
    assert np.abs(plain - expected).max() <= TOLERANCE
    assert (plain.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_batch_norm_and_ema_change_the_weights_the_graph_holds(tmp_path, letters_dir):
    """The folded, averaged weights are not the raw Dense weights: a graph built from those
    would disagree, so the agreement above is not an accident of identical arrays."""
    from nnletters.checkpoint import load_checkpoint
    from nnletters.export import plain_layers

    run = train_tiny(letters_dir, tmp_path / "run", "model.batch_norm=true", "optim.ema=0.9")
    folded = plain_layers(nnletters.load_model(run).network)
    raw = load_checkpoint(run / "last.npz").model_state["0/W"]
    assert folded[0].W.shape == raw.shape and not np.allclose(folded[0].W, raw, atol=1e-3)
    info = json.loads((_export(run, tmp_path / "m.onnx")).read_text())
    assert "moving average" in info["weights"]
    info = json.loads(_export(run / "last.npz", tmp_path / "last.onnx",
                              warning=f"Warning: {run / 'last.npz'}: exporting the raw weights "
                                      "of last.npz; the run evaluated their average (optim.ema "
                                      "0.9), which best.npz holds\n").read_text())
    assert info["weights"].startswith("the raw weights of last.npz")


def _export(target, out, warning=""):
    result = CliRunner().invoke(main, ["export", str(target), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output == warning + f"wrote {out} and {out.with_suffix('.json')}\n"
    return out.with_suffix(".json")


def test_json_beside_the_model_says_how_to_feed_it(tmp_path, letters_dir):
    run = train_tiny(letters_dir, tmp_path / "run")
    result = CliRunner().invoke(main, ["export", str(run), "--out", str(tmp_path / "m.onnx")])
    assert result.output == f"wrote {tmp_path / 'm.onnx'} and {tmp_path / 'm.json'}\n"
    info = json.loads((tmp_path / "m.json").read_text())
    model = nnletters.load_model(run)
    assert info["classes"] == ["A", "B", "C", "D"] and info["image_size"] == 28
    assert info["light_on_dark"] is True and info["glyph_fill"] == model.glyph_fill
    assert info["input"]["shape"] == ["N", 784] and info["output"]["function"] == "softmax"
    props = {p.key: p.value for p in onnx.load(tmp_path / "m.onnx").metadata_props}
    assert props == {"classes": '["A", "B", "C", "D"]', "image_size": "28"}


def test_readme_onnxruntime_snippet_reads_a_png_and_predicts(tmp_path, letters_dir):
    """The README's snippet, run as written, on test images (and on the same images with
    the other polarity): the probability it prints is the one nnletters gives the
    training-style vector of that image."""
    run = train_tiny(letters_dir, tmp_path / "run")
    _export(run, tmp_path / "model.onnx")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text.split("## Export", 1)[1], re.S).group(1)
    assert len(code.strip().splitlines()) <= 11  # ten lines of code and a blank one
    ds, _ = evaluation_data(run / "best.npz", 28)
    probs = nnletters.load_model(run).probabilities(ds.X)
    for i in range(3):
        image = Image.open(letters_dir / ds.paths[i])
        inverted = Image.eval(image, lambda v: 255 - v)
        for variant, picture in (("same", image), ("inverted", inverted)):
            picture.save(tmp_path / "letter.png")
            out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True,
                                 capture_output=True, text=True).stdout.split()
            best = int(probs[i].argmax())
            assert out == [ds.classes[best], f"{probs[i, best]:.3f}"], (variant, out)


def test_missing_onnx_gives_one_line_naming_the_extra(tmp_path, letters_dir, monkeypatch):
    run = train_tiny(letters_dir, tmp_path / "run")
    monkeypatch.setitem(sys.modules, "onnx", None)  # what an install without onnx sees
    result = CliRunner().invoke(main, ["export", str(run), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1
    assert result.output == ("Error: nnletters export --format onnx needs the 'export' extra: "
                             "pip install 'nnletters[export]'\n")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.json").exists()
    result = CliRunner().invoke(main, ["export", str(run), "--format", "npz-plain",
                                       "--out", str(tmp_path / "p.npz")])
    assert result.exit_code == 0 and (tmp_path / "p.npz").exists()


def test_export_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(main, ["export", str(tmp_path / "nowhere"), "--out",
                                       str(tmp_path / "m.onnx")])
    assert result.exit_code == 1
    assert result.output == f"Error: checkpoint not found: {tmp_path / 'nowhere'}\n"

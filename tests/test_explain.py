"""Saliency maps: the input gradient against central differences, maps that move with the
glyph, SmoothGrad, the weight average, and ``nnletters predict --explain``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import nnletters
from nnletters.checkpoint import load_checkpoint
from nnletters.cli import main
from nnletters.explain import Explanation, load_explained_model, panels, saliency
from nnletters.nn.gradcheck import check_input_gradient
from nnletters.nn.model import MLP
from tests.conftest import draw_letter
from tests.test_api import letters, tiny_config

ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid"]


def float64_twin(activation: str, loss: str, batch_norm: bool, seed: int = 1) -> MLP:
    """A small float64 MLP with dropout (off in evaluation), nonzero biases and, with batch
    norm, running statistics away from their initial 0 and 1."""
    rng = np.random.default_rng(seed)
    model = MLP([12, 7, 5, 4], activation, "he", 0.3, loss, rng, batch_norm=batch_norm,
                dtype=np.float64)
    model.theta[model.n_decay:] += rng.normal(0.0, 0.1, model.theta.size - model.n_decay)
    for layer in model.stateful_layers():
        if hasattr(layer, "running_var"):
            layer.running_mean[...] = rng.normal(0.0, 0.3, layer.width)
            layer.running_var[...] = rng.uniform(0.5, 2.0, layer.width)
            layer.gamma[...] = rng.uniform(0.5, 1.5, layer.width)
    return model


@pytest.mark.parametrize("score", ["logit", "log_prob"])
@pytest.mark.parametrize("loss", ["cross_entropy", "quadratic"])
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_input_gradient_matches_central_differences(activation, batch_norm, loss, score):
    model = float64_twin(activation, loss, batch_norm)
    rng = np.random.default_rng(2)
    X, classes = rng.random((6, 12)), rng.integers(0, 4, 6)
    assert check_input_gradient(model, X, classes, score) < 1e-6


def test_the_input_check_catches_a_wrong_gradient():
    model = float64_twin("tanh", "cross_entropy", True)
    rng = np.random.default_rng(2)
    X, classes = rng.random((6, 12)), rng.integers(0, 4, 6)
    right = model.input_gradient
    model.input_gradient = lambda *a: right(*a) * 1.01  # one percent off
    assert check_input_gradient(model, X, classes) > 1e-3


def test_input_gradient_is_float32_in_eval_mode_and_leaves_training_state_alone():
    rng = np.random.default_rng(0)
    model = MLP([16, 8, 3], "relu", "he", 0.5, "cross_entropy", rng, batch_norm=True)
    model.grad[...] = 7.0
    stats = [layer.running_mean.copy() for layer in model.stateful_layers()
             if hasattr(layer, "running_mean")]
    X = rng.random((5, 16), dtype=np.float32)
    first = model.input_gradient(X, np.array([0, 1, 2, 0, 1]))
    again = model.input_gradient(X, np.array([0, 1, 2, 0, 1]))
    assert first.dtype == np.float32 and first.shape == (5, 16)
    np.testing.assert_array_equal(first, again)  # no dropout mask drawn
    assert (model.grad == 7.0).all()  # no parameter gradient written
    after = [layer.running_mean for layer in model.stateful_layers()
             if hasattr(layer, "running_mean")]
    np.testing.assert_array_equal(stats[0], after[0])  # batch norm did not update


# --------------------------------------------------------------------------- shifts


def circular_model(size: int, rng: np.random.Generator) -> MLP:
    """An MLP whose maths is shift-invariant on a size x size torus: the first layer is two
    channels of circular 3x3 convolution (unit (k, p) sees the kernel k centred on pixel p),
    batch norm and ReLU treat every unit alike, and each output sums a channel over all
    positions. Shifting the image (circularly) leaves every score unchanged, so the map of
    a shifted image must be the map shifted the same way."""
    n = size * size
    model = MLP([n, 2 * n, 3], "relu", "he", 0.0, "cross_entropy", rng, batch_norm=True)
    dense_in, bn, _, dense_out = model.layers
    kernels = rng.normal(size=(2, 3, 3)).astype(np.float32)
    for k in range(2):
        for p in range(n):
            img = np.zeros((size, size), np.float32)
            img[:3, :3] = kernels[k]
            img = np.roll(img, (p // size - 1, p % size - 1), axis=(0, 1))
            dense_in.W[:, k * n + p] = img.reshape(-1)
    bn.gamma[...], bn.beta[...] = 1.3, -0.2
    bn.running_mean[...], bn.running_var[...] = 0.4, 2.0
    mix = rng.normal(size=(2, 3)).astype(np.float32)
    dense_out.W[...] = np.repeat(mix, n, axis=0)
    dense_out.b[...] = rng.normal(size=3)
    return model


def test_the_map_moves_with_the_glyph():
    size, rng = 12, np.random.default_rng(4)
    model = circular_model(size, rng)
    glyph = np.zeros((size, size), np.float32)
    glyph[2:9, 3] = 1.0  # an L: asymmetric, so a transposed or mirrored map would differ
    glyph[8, 3:7] = 1.0
    glyph += 0.1 * rng.random((size, size), dtype=np.float32)
    shift = (2, 3)
    X = np.stack([glyph.reshape(-1), np.roll(glyph, shift, axis=(0, 1)).reshape(-1)])
    logits = model.forward(X).copy()
    np.testing.assert_allclose(logits[0], logits[1], rtol=1e-5, atol=1e-5)  # invariant
    for c in range(3):
        maps = saliency(model, X, np.array([c, c])).reshape(2, size, size)
        moved = np.roll(maps[0], shift, axis=(0, 1))
        np.testing.assert_allclose(maps[1], moved, rtol=1e-5, atol=1e-6)
        # and the test can fail: the map depends on where the glyph is, and is not symmetric
        assert np.abs(maps[1] - maps[0]).max() > 0.1 * np.abs(maps[0]).max()
        assert np.abs(maps[1] - moved.T).max() > 0.1 * np.abs(maps[0]).max()


# --------------------------------------------------------------------------- SmoothGrad


def test_smoothgrad_is_the_seeded_mean_over_noisy_copies():
    rng = np.random.default_rng(0)
    model = MLP([16, 8, 3], "tanh", "xavier", 0.0, "cross_entropy", rng)
    X, classes = rng.random((2, 16), dtype=np.float32), np.array([2, 0])
    smooth = saliency(model, X, classes, smoothgrad=5, rng=np.random.default_rng(9))
    np.testing.assert_array_equal(
        smooth, saliency(model, X, classes, smoothgrad=5, rng=np.random.default_rng(9)))
    noise = np.random.default_rng(9).standard_normal((10, 16), dtype=np.float32)
    noisy = np.repeat(X, 5, axis=0) + noise * np.float32(0.15)
    by_hand = model.input_gradient(noisy, np.repeat(classes, 5)).reshape(2, 5, 16).mean(axis=1)
    np.testing.assert_allclose(smooth, by_hand, rtol=1e-5, atol=1e-7)
    assert not np.allclose(smooth, saliency(model, X, classes))  # the noise did something


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    cfg = tiny_config(letters(root / "letters"), "optim.ema=0.9")
    return nnletters.train(cfg, out=root / "run").path


def test_explain_reads_the_weight_average_of_last_npz(ema_run):
    ckpt = load_checkpoint(ema_run / "last.npz")
    model = load_explained_model(ema_run / "last.npz")
    np.testing.assert_array_equal(model.network.theta, ckpt.ema_state["theta"])
    assert not np.array_equal(model.network.theta, nnletters.load_model(
        ema_run / "last.npz").network.theta)  # plain predict reads the raw weights there


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, decoded in full."""
    with Image.open(io.BytesIO(png)) as img:
        img.load()
        return img.size


def test_predict_explain_writes_a_picture_per_image(ema_run, tmp_path):
    draw_letter("B", size=40, light_on_dark=False, width=4).save(tmp_path / "b.png")
    draw_letter("C", size=40, light_on_dark=False, width=4).save(tmp_path / "c.png")
    runner = CliRunner()
    args = ["predict", str(tmp_path / "b.png"), str(tmp_path / "c.png"), "--checkpoint",
            str(ema_run), "--explain", "--json"]
    one = runner.invoke(main, [*args, "--out", str(tmp_path / "one")])
    two = runner.invoke(main, [*args, "--out", str(tmp_path / "two"), "--top-k", "2",
                               "--smoothgrad", "4"])
    assert one.exit_code == 0 and two.exit_code == 0, one.output + two.output
    plain = json.loads(runner.invoke(main, args[:5] + ["--json", "--top-k", "2"]).output)
    for results, folder, k in ((json.loads(one.output), "one", 1),
                               (json.loads(two.output), "two", 2)):
        assert [r["explanation"] for r in results] == [str(tmp_path / folder / "b.png"),
                                                       str(tmp_path / folder / "c.png")]
        assert [len(r["top_k"]) for r in results] == [k, k]
        assert [r["label"] for r in results] == [r["label"] for r in plain]
    sizes = {f: png_size((tmp_path / f / "b.png").read_bytes()) for f in ("one", "two")}
    assert sizes["two"][0] > sizes["one"][0] and sizes["one"][1] == sizes["two"][1]


def test_panels_of_one_and_two_classes():
    """Input, signed map, magnitude; with a runner-up also its map and the difference."""
    x = np.linspace(0, 1, 49, dtype=np.float32)
    maps = np.stack([np.linspace(-1, 2, 49), np.linspace(1, 0, 49)]).astype(np.float32)
    item = Explanation(x, [3, 1], ["J", "I"], [0.8, 0.1], maps, "j.png")
    two = panels(item, 7)
    one = panels(Explanation(x, [3], ["J"], [0.8], maps[:1], "j.png"), 7)
    assert [caption[0] for caption, _ in two] == [
        "input as the network", "d z(J) / d x", "|d z(J) / d x|", "d z(I) / d x",
        "d z(J) - d z(I)"]
    assert [caption for caption, _ in one] == [caption for caption, _ in two[:3]]
    rgb = dict((caption[0], image) for caption, image in two)
    assert all(image.shape == (7, 7, 3) and image.dtype == np.uint8 for image in rgb.values())
    signed = rgb["d z(J) / d x"].reshape(49, 3).astype(int)
    # red where the gradient is positive, blue where negative, white at zero (pixel 16)
    assert (signed[17:, 0] > signed[17:, 2]).all() and (signed[:16, 2] > signed[:16, 0]).all()
    assert (signed[16] > 240).all()
    assert (rgb["input as the network"][0, 0] == 0).all()
    assert (rgb["input as the network"][6, 6] == 255).all()


def test_explain_text_output_and_default_folder(ema_run, tmp_path, monkeypatch):
    draw_letter("B", size=40, light_on_dark=False, width=4).save(tmp_path / "b.png")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["predict", "b.png", "--checkpoint", str(ema_run),
                                       "--explain", "--score", "log_prob"])
    assert result.exit_code == 0, result.output
    checkpoint, line = result.output.splitlines()
    assert checkpoint == f"checkpoint {ema_run / 'best.npz'}" and line.startswith("b.png: ")
    assert line.endswith(f"   map {Path('explain') / 'b.png'}")
    assert png_size((tmp_path / "explain" / "b.png").read_bytes())[0] > 400


def test_explain_options_need_explain(ema_run, tmp_path):
    draw_letter("B").save(tmp_path / "b.png")
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "b.png"), "--checkpoint",
                                       str(ema_run), "--smoothgrad", "3"])
    assert result.exit_code == 2
    assert "--out, --smoothgrad and --score go with --explain." in result.output


def test_pictures_of_images_with_the_same_name_do_not_overwrite_each_other():
    from nnletters.explain import picture_paths

    paths = picture_paths([Path("x/a.png"), Path("y/a.png"), Path("a-2.png"), Path("z/a.jpg")],
                          Path("o"))
    assert [p.name for p in paths] == ["a.png", "a-2.png", "a-2-2.png", "a-3.png"]

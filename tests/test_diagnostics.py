"""Per-layer diagnostics: each figure against a network whose answer is known, the report's
picture, and the metrics rows of a real run."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import nnletters
from nnletters.diagnostics import layer_diagnostics, twin_of
from nnletters.nn.model import MLP
from nnletters.report import write_report
from tests.test_api import letters, tiny_config


def batch(n: int = 64, d: int = 12, classes: int = 4, seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.random((n, d), dtype=np.float32), rng.integers(0, classes, n)


def test_norms_are_those_of_the_weights_and_of_the_training_gradient():
    X, y = batch()
    model = MLP([12, 8, 6, 4], "tanh", "xavier", 0.0, rng=np.random.default_rng(0))
    row = layer_diagnostics(twin_of(model), model.theta, X, y)
    model.train_step(X, y)  # the same loss's gradient, computed by the model itself
    for i, dense in enumerate(model.dense_layers(), start=1):
        assert row[f"grad_norm/{i}"] == pytest.approx(np.linalg.norm(dense.dW.astype(float)))
        assert row[f"weight_norm/{i}"] == pytest.approx(np.linalg.norm(dense.W.astype(float)))
    assert set(row) == {f"{k}/{i}" for k in ("grad_norm", "weight_norm") for i in (1, 2, 3)} \
        | {"saturated/1", "saturated/2"}


def test_dead_relu_units_are_those_never_active_on_the_batch():
    X, y = batch()
    model = MLP([12, 10, 4], "relu", "he", 0.0, rng=np.random.default_rng(0))
    first = model.dense_layers()[0]
    first.b[:] = 100.0  # active on every image...
    first.b[[2, 5, 7]] = -100.0  # ...except these three, which are off on all of them
    row = layer_diagnostics(twin_of(model), model.theta, X, y)
    assert row["dead/1"] == pytest.approx(0.3)
    # A dead unit passes no gradient back: its column of dW_1 and its row of dW_2 are 0.
    twin = twin_of(model)
    layer_diagnostics(twin, model.theta, X, y)
    dW1, dW2 = (d.dW for d in twin.dense_layers())
    assert not dW1[:, [2, 5, 7]].any() and dW1[:, [0, 1]].any()
    assert not dW2[[2, 5, 7]].any()


@pytest.mark.parametrize(("activation", "bias", "share"), [
    ("sigmoid", 0.0, 0.0), ("sigmoid", 50.0, 1.0), ("sigmoid", -50.0, 1.0),
    ("tanh", 0.0, 0.0), ("tanh", -50.0, 1.0)])
def test_saturated_share_counts_outputs_in_the_flat_tails(activation, bias, share):
    X, y = batch()
    model = MLP([12, 10, 4], activation, "xavier", 0.0, rng=np.random.default_rng(0))
    first = model.dense_layers()[0]
    first.W[:] = 0.0
    first.b[:] = bias  # every output is f(bias): 0.5 / 0 in the middle, or deep in a tail
    row = layer_diagnostics(twin_of(model), model.theta, X, y)
    assert row["saturated/1"] == share
    assert "dead/1" not in row


def test_quadratic_loss_outputs_saturate_and_the_gradient_vanishes():
    """The tutorial's part 4 after its first step: pre-activations near -18,500."""
    X, y = batch(d=289, classes=26)
    model = MLP([289, 26], "sigmoid", "xavier", 0.0, "quadratic", rng=np.random.default_rng(0))
    dense = model.dense_layers()[0]
    dense.W[:] = -18_500 / 289 / 0.5  # x ~ U(0, 1): z ~ -18,500 on average
    row = layer_diagnostics(twin_of(model), model.theta, X, y)
    assert row["saturated/1"] == 1.0
    assert row["grad_norm/1"] < 1e-20


def test_batch_norm_network_is_measured_without_touching_its_running_statistics():
    X, y = batch()
    model = MLP([12, 10, 4], "relu", "he", 0.3, batch_norm=True, rng=np.random.default_rng(0))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    row = layer_diagnostics(twin_of(model), model.theta, X, y)
    assert 0.0 <= row["dead/1"] < 1.0 and row["grad_norm/1"] > 0
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_run_rows_and_report_picture(tmp_path):
    data = letters(tmp_path / "letters")
    run = nnletters.train(tiny_config(data), out=tmp_path / "run")
    assert all({"grad_norm/1", "grad_norm/2", "weight_norm/1", "dead/1"} <= set(r)
               for r in run.history)
    written = write_report(run.path)
    with Image.open(written["diagnostics.png"]) as img:
        assert img.size == (1500, 460)
        pixels = np.asarray(img.convert("L"))
    assert (pixels < 128).mean() > 0.01  # lines and labels drawn, not a blank canvas
    assert 'id="diagnostics.png"' in written["report.html"].read_text()
    bare = nnletters.train(tiny_config(data, "train.diagnostics=false"), out=tmp_path / "bare")
    assert "grad_norm/1" not in bare.history[0]
    assert "diagnostics.png" not in write_report(bare.path)

"""``nnletters gradcheck``: backprop agrees with central differences on every shipped config
and every activation/loss, and the command fails, naming the tensor, when a derivative is
wrong."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from nnletters.cli import main
from nnletters.config import load_config
from nnletters.data.synthetic import write_dataset
from nnletters.nn import functional as F
from nnletters.nn.gradcheck import backprop_gradient, check_gradients, total_loss
from nnletters.nn.model import MLP

ROOT = Path(__file__).resolve().parents[1]
NOTMNIST = Path(__file__).resolve().parents[2] / "shared/data/notMNIST_small.tar.gz"
SHIPPED = sorted((ROOT / "configs").glob("*.yaml"))  # configs added later are checked too


def gradcheck(*args: str):
    return CliRunner().invoke(main, ["gradcheck", *map(str, args)])


def error_line(result) -> str:
    """The ``Error: ...`` line Click printed (stderr is mixed into output by default)."""
    return next(line for line in result.output.splitlines() if line.startswith("Error: "))


@pytest.fixture(scope="module")
def letters(tmp_path_factory) -> Path:
    """A tiny rendered dataset: 8x8 images of A-D, 4 of each, one folder per letter."""
    out = tmp_path_factory.mktemp("data") / "letters"
    write_dataset(out, "A-D", image_size=8, per_class=4, seed=0, layout="folders")
    return out


def small_config(tmp_path: Path, data: Path, **model) -> Path:
    """A config for a 64-6-5-4 network on ``data`` (overrides go into the model section)."""
    cfg = {"seed": 0,
           "data": {"path": str(data), "image_size": 8, "cache": False,
                    "val_fraction": 0.25, "test_fraction": 0.25},
           "model": {"hidden": [6, 5], "init": "xavier", **model},
           "optim": {"name": "sgd", "lr": 0.1, "weight_decay": 0.01}}
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def shipped_data_overrides(config: Path, tmp_path: Path) -> list[str]:
    """--set options that give a shipped config small data it can read in a test: the real
    notMNIST archive (or skip), a few rendered letters instead of thousands, or a tiny
    dataset rendered in the layout its data.path expects (the tutorial's list files)."""
    cfg = load_config(config)
    if cfg.data.source == "synthetic":
        return ["data.synthetic.per_class=4", "data.cache=false"]
    if "notmnist" in Path(cfg.data.path).name.lower():
        if not NOTMNIST.is_file():
            pytest.skip(f"{NOTMNIST} is absent (the notMNIST_small archive)")
        return [f"data.path={NOTMNIST}", "data.cache=false"]
    lists = cfg.data.path.endswith(".txt")
    out = tmp_path / "letters"
    write_dataset(out, "A-Z", cfg.data.image_size, per_class=4, seed=0,
                  layout="lists" if lists else "folders", style="ink")
    return [f"data.path={out / 'train.txt' if lists else out}", "data.cache=false"]


@pytest.mark.parametrize("config", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_passes(config, tmp_path):
    sets = [a for item in shipped_data_overrides(config, tmp_path) for a in ("--set", item)]
    result = gradcheck("--config", config, *sets, "--entries", 16, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows and all(r["passed"] and r["max_rel_error"] <= r["threshold"] for r in rows)
    assert all(r["checked"] == min(16, r["size"]) for r in rows)
    n_dense = len(load_config(config).model.hidden) + 1
    assert sum(r["tensor"].endswith("/W") for r in rows) == n_dense  # every layer's weights


def test_tutorial_configs_are_shipped():
    names = {p.name for p in SHIPPED}
    assert {"tutorial-part4.yaml", "tutorial-part5.yaml", "tutorial-part5-relu.yaml"} <= names


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("loss", ["cross_entropy", "quadratic"])
def test_every_activation_and_loss_passes_with_l2_and_dropout(activation, loss, letters,
                                                              tmp_path):
    config = small_config(tmp_path, letters, activation=activation, loss=loss, dropout=0.3)
    result = gradcheck("--config", config)
    assert result.exit_code == 0, result.output
    assert "+ L2 term 0.5 * 0.01 * ||W||^2" in result.output
    assert "dropout 0.3 with fixed masks" in result.output
    assert "all 6 tensors pass" in result.output
    for name in ("model/0/W", "model/0/b", "model/1/W", "model/1/b", "model/2/W", "model/2/b"):
        assert any(line.startswith(name) and line.endswith("pass")
                   for line in result.output.splitlines()), name


def test_batch_norm_and_label_smoothing_pass(letters, tmp_path):
    config = small_config(tmp_path, letters, batch_norm=True, label_smoothing=0.1)
    result = gradcheck("--config", config, "--json")
    assert result.exit_code == 0, result.output
    names = {r["tensor"] for r in json.loads(result.output)}
    assert {"model/1/gamma", "model/1/beta"} <= names


def test_a_wrong_activation_derivative_fails_naming_the_tensors(letters, tmp_path,
                                                                monkeypatch):
    # tanh' is 1 - a^2; 1 - a is the slip the check must catch. Only gradients that flow
    # back through a tanh are wrong: the first two layers', not the output layer's.
    monkeypatch.setitem(F.DERIVATIVES, "tanh", lambda a, da: da.__imul__(1.0 - a))
    config = small_config(tmp_path, letters, activation="tanh", hidden=[6])
    result = gradcheck("--config", config)
    assert result.exit_code == 1
    assert error_line(result) == (
        "Error: gradient check failed for model/0/W, model/0/b: max relative error above "
        "0.0001, so backprop disagrees with the finite differences")
    rows = {line.split()[0]: line.split()[-1] for line in result.output.splitlines()
            if line.startswith("model/")}
    assert rows == {"model/0/W": "FAIL", "model/0/b": "FAIL", "model/1/W": "pass",
                    "model/1/b": "pass"}


def test_a_wrong_loss_derivative_fails_every_tensor(letters, tmp_path, monkeypatch):
    # The quadratic loss's dL/dz keeps the output sigmoid's a (1 - a); drop it.
    monkeypatch.setattr(F, "sigmoid_backward", lambda a, da: da)
    config = small_config(tmp_path, letters, activation="relu", loss="quadratic")
    result = gradcheck("--config", config, "--json")
    assert result.exit_code == 1
    rows = json.loads(result.output.split("\nError: ")[0])
    assert not any(r["passed"] for r in rows)
    assert error_line(result).startswith("Error: gradient check failed for model/0/W, "
                                         "model/0/b, model/1/W")


def test_adamw_decay_is_left_out_of_the_checked_loss(letters, tmp_path):
    config = small_config(tmp_path, letters)
    result = gradcheck("--config", config, "--set", "optim.name=adamw")
    assert result.exit_code == 0, result.output
    assert ("(no L2 term: adamw applies weight_decay 0.01 to the weights directly, not "
            "through the gradient)") in result.output


def test_samples_and_entries_are_what_the_report_says(letters, tmp_path):
    config = small_config(tmp_path, letters)
    result = gradcheck("--config", config, "--samples", 3, "--entries", 5)
    assert result.exit_code == 0, result.output
    assert "3 training samples" in result.output
    rows = {line.split()[0]: line.split()[1:5] for line in result.output.splitlines()
            if line.startswith("model/")}
    assert rows["model/0/W"] == ["64x6", "5", "of", "384"]
    assert rows["model/2/b"] == ["4", "4", "of", "4"]  # fewer entries than asked: all


def test_missing_data_is_one_error_line(tmp_path):
    config = small_config(tmp_path, tmp_path / "nowhere")
    result = gradcheck("--config", config)
    assert result.exit_code == 1
    assert error_line(result) == f"Error: data path not found: {tmp_path / 'nowhere'}"


def test_bad_config_key_is_one_error_line(letters, tmp_path):
    config = small_config(tmp_path, letters)
    result = gradcheck("--config", config, "--set", "model.activaton=tanh")
    assert result.exit_code == 1
    assert error_line(result) == ("Error: --set model.activaton=tanh: unknown key "
                                  "'model.activaton' (did you mean 'model.activation'?)")


def test_usage_errors_exit_2(letters, tmp_path):
    assert gradcheck().exit_code == 2
    config = small_config(tmp_path, letters)
    assert gradcheck("--config", config, "--set", "no-equals-sign").exit_code == 2
    assert gradcheck("--config", config, "--samples", 0).exit_code == 2


# --------------------------------------------------------------------------- ReLU kinks
# Issue 13 item 6: the README's own quickstart config failed (relative error 0.37 on
# model/0/b) because a ReLU pre-activation sat within h of 0. Such entries are skipped and
# counted; a wrong derivative still fails.


def relu_model_with_a_kink(h: float) -> tuple[MLP, np.ndarray, np.ndarray, int]:
    """A float64 12-6-4 ReLU net and a batch where hidden unit 2's pre-activation on sample 0
    is h/3 once check_gradients (rng seeded 0) has nudged the biases: a step of h on b[2]
    crosses the kink. -> (model, X, y, the kinked unit)."""
    rng = np.random.default_rng(4)
    model = MLP([12, 6, 4], "relu", "he", 0.0, "cross_entropy", rng, dtype=np.float64)
    X, y = rng.random((5, 12)), np.array([0, 1, 2, 3, 0])
    nudge = np.random.default_rng(0).normal(0.0, 0.01, model.theta.size - model.n_decay)
    dense = model.stateful_layers()[0]
    unit = 2
    z = X[0] @ dense.W[:, unit] + dense.b[unit] + nudge[unit]
    dense.b[unit] += h / 3 - z
    return model, X, y, unit


def test_entries_at_a_relu_kink_are_skipped_and_counted():
    h = 1e-4
    model, X, y, unit = relu_model_with_a_kink(h)
    # The old check: the plain difference quotient on b[2] disagrees with backprop.
    twin = MLP([12, 6, 4], "relu", "he", 0.0, "cross_entropy", np.random.default_rng(4),
               dtype=np.float64)
    twin.theta[...] = model.theta
    twin.theta[twin.n_decay:] += np.random.default_rng(0).normal(0.0, 0.01,
                                                                 twin.theta.size - twin.n_decay)
    grad = backprop_gradient(twin, X, y, 0.0)
    i = twin.n_decay + unit  # b[2] is the first bias tensor's entry 2
    numeric = _central_difference_plain(twin, X, y, i, h)
    assert abs(grad[i] - numeric) / (abs(grad[i]) + abs(numeric)) > 1e-2
    results = {r["name"]: r for r in check_gradients(model, X, y, h=h, max_entries=100,
                                                     rng=np.random.default_rng(0))}
    assert all(r["passed"] for r in results.values()), results
    assert results["model/0/b"]["kinks_skipped"] >= 1
    assert results["model/0/W"]["kinks_skipped"] >= 1  # W[j, 2] with x_j > 1/3 cross it too
    worst = results["model/0/b"]["worst"]
    assert worst["index"] != [unit]
    assert abs(worst["analytic"] - worst["numeric"]) <= 1e-4 * abs(worst["analytic"]) + 1e-10


def _central_difference_plain(model, X, y, i: int, h: float) -> float:
    saved = model.theta[i]
    model.theta[i] = saved + h
    up = total_loss(model, X, y, 0.0)
    model.theta[i] = saved - h
    down = total_loss(model, X, y, 0.0)
    model.theta[i] = saved
    return (up - down) / (2 * h)


QUICKSTART = ROOT / "configs" / "quickstart.yaml"
SMALL_QUICKSTART = ["--set", "data.synthetic.per_class=20", "--set", "data.cache=false"]


@pytest.mark.parametrize("seed", [2, 6])  # both failed (22 DejaVu fonts) before the skip
def test_the_quickstart_config_passes(seed):
    result = gradcheck("--config", QUICKSTART, *SMALL_QUICKSTART, "--set", f"seed={seed}")
    assert result.exit_code == 0, result.output
    assert "all 4 tensors pass" in result.output
    worst = next(line for line in result.output.splitlines() if line.startswith("worst entry"))
    assert re.fullmatch(r"worst entry model/\d/[Wb]\[[\d, ]+\]: backprop \S+, numeric \S+", worst)


def test_a_wrong_relu_derivative_still_fails_on_the_quickstart(monkeypatch):
    # ReLU' is [z > 0]; forgetting the mask (passing da through) is the bug to catch.
    monkeypatch.setitem(F.DERIVATIVES, "relu", lambda a, da: da)
    result = gradcheck("--config", QUICKSTART, *SMALL_QUICKSTART, "--set", "seed=2", "--json")
    assert result.exit_code == 1
    rows = {r["tensor"]: r for r in json.loads(result.output.split("\nError: ")[0])}
    assert not rows["model/0/W"]["passed"] and not rows["model/0/b"]["passed"]
    assert rows["model/0/b"]["kinks_skipped"] < rows["model/0/b"]["checked"] // 2
    assert error_line(result).startswith("Error: gradient check failed for model/0/W, model/0/b")

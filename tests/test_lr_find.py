"""The learning-rate range test: its schedule, its suggestion, determinism, every optimiser
and loss, the command's output, and Ctrl-C."""

from __future__ import annotations

import io
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from nnletters.cli import main
from nnletters.config import load_config
from nnletters.lr_find import (
    RangeTest,
    centred_mean,
    format_lr,
    lr_at,
    lr_find_png,
    range_test,
    suggest,
)
from tests.test_api import letters

REPO = Path(__file__).resolve().parents[1]
SUGGESTION = re.compile(r"^suggested optim\.lr: \d\.\de-?\d+ \(steepest descent of the "
                        r"smoothed loss\); the config has optim\.lr 0\.01$", re.M)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lr_find")
    data = letters(root / "letters")
    path = root / "tiny.yaml"
    path.write_text(f"name: tiny\ndata: {{path: '{data}', val_fraction: 0.25, "
                    "test_fraction: 0.25}\nmodel: {hidden: [16]}\n"
                    "optim: {name: adam, lr: 0.01}\ntrain: {batch_size: 4}\n")
    return path


def lr_steps(min_lr: float, max_lr: float, steps: int) -> np.ndarray:
    return np.array([lr_at(i, min_lr, max_lr, steps) for i in range(steps)])


def test_lr_grows_geometrically_from_min_to_max():
    lrs = lr_steps(1e-6, 10.0, 200)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(10.0)
    ratios = lrs[1:] / lrs[:-1]
    np.testing.assert_allclose(ratios, ratios[0])


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = list(lr_steps(1e-6, 10.0, 200))
    x = np.log10(lrs)
    # falls fastest at 1e-3 (tanh's steepest point), bottoms out near 0.1, then climbs
    loss = 3.0 - np.tanh(2.0 * (x + 3.0)) + np.where(x > -1, 5.0 * (x + 1) ** 2, 0.0)
    assert math.log10(suggest(lrs, list(loss))) == pytest.approx(-3.0, abs=0.05)
    assert suggest(lrs, list(1.0 + x - x[0])) is None  # never falls: no suggestion


def test_centred_mean_does_not_lag():
    values = [0.0] * 10 + [1.0] * 10
    smooth = centred_mean(values, 2)
    assert smooth[9] == pytest.approx(0.4) and smooth[10] == pytest.approx(0.6)
    assert smooth[0] == 0.0 and smooth[-1] == 1.0


def test_two_runs_give_identical_curves(config):
    cfg = load_config(config)
    first = range_test(cfg, 1e-4, 1.0, 40, log=lambda _m: None)
    second = range_test(cfg, 1e-4, 1.0, 40, log=lambda _m: None)
    assert len(first.lrs) > 10
    assert first.losses == second.losses and first.lrs == second.lrs
    assert first.suggestion == second.suggestion
    other = range_test(load_config(config, ["seed=1"]), 1e-4, 1.0, 40, log=lambda _m: None)
    assert other.losses != first.losses  # the seed is what makes them equal


def test_stops_when_the_loss_explodes(config):
    cfg = load_config(config, ["optim.name=sgd"])
    result = range_test(cfg, 1e-3, 1e7, 200, log=lambda _m: None)
    assert len(result.lrs) < 200
    assert re.match(r"the loss (became|passed)", result.stop_reason)
    assert all(math.isfinite(v) for v in result.losses)


@pytest.mark.parametrize("optim", ["sgd", "momentum", "nesterov", "adam", "adamw"])
@pytest.mark.parametrize("loss", ["cross_entropy", "quadratic"])
def test_every_optimiser_and_loss(config, optim, loss):
    cfg = load_config(config, [f"optim.name={optim}", f"model.loss={loss}",
                               "optim.weight_decay=0.001", "model.batch_norm=true",
                               "model.dropout=0.2"])
    result = range_test(cfg, 1e-4, 10.0, 30, log=lambda _m: None)
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) > 10
    assert all(math.isfinite(v) for v in result.smoothed)


def test_picture_marks_the_suggestion():
    lrs = list(lr_steps(1e-4, 1.0, 50))
    loss = list(3.0 - np.tanh(np.log10(lrs) + 2))
    result = RangeTest("demo", 0.01, lrs, loss, [0.5] * 50, loss, [0.5] * 50, loss,
                       "reached --max 1 after 50 steps", suggest(lrs, loss), 50)
    with Image.open(io.BytesIO(lr_find_png(result))) as img:
        img.load()
        assert img.size[0] > 800 and img.size[1] > 300
    assert format_lr(0.0031622) == "3.2e-3" and format_lr(12.0) == "1.2e1"


def test_command_writes_only_the_picture(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["lr-find", "--config", str(config), "--steps", "40",
                                       "--min", "1e-4", "--max", "10", "--out", "out"])
    assert result.exit_code == 0, result.output
    assert SUGGESTION.search(result.output), result.output
    assert result.output.endswith(f"wrote {Path('out') / 'lr_find.png'}\n")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["lr_find.png", "out"]


def test_bad_range_is_a_usage_error(config):
    result = CliRunner().invoke(main, ["lr-find", "--config", str(config), "--min", "1",
                                       "--max", "0.1"])
    assert result.exit_code == 2 and "--min (1) must be below --max (0.1)." in result.output


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGINT to a child process")
def test_ctrl_c_exits_130_and_writes_nothing(config, tmp_path):
    """A real process, interrupted once it says it has started (its first line)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "nnletters", "lr-find", "--config",
                             str(config), "--steps", "100000000", "--min", "1e-9", "--max",
                             "1e-8", "--out", str(tmp_path / "out")],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        assert first.startswith("lr-find: "), first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # a no-op once it has exited
        proc.wait()
    assert proc.returncode == 130, err
    assert err == "Interrupted; nothing written\n" and out == ""
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []

"""Run folders written before the house was rebuilt (nnletters 0.1.0 at commit 111af4c: a
784-style MLP at 12x12 px, Adam with EMA, 3 epochs, on the letters conftest.py draws) still
load, predict, evaluate and resume."""

import json
import shutil
from pathlib import Path

import numpy as np
from click.testing import CliRunner

import nnletters
from nnletters import metrics
from nnletters.cli import main

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "run-0.1.0"


def old_run(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURE, tmp_path / "run"))


def test_a_run_from_before_loads_predicts_and_evaluates(tmp_path, letters_folder):
    run = old_run(tmp_path)
    model = nnletters.load_model(run)
    assert model.classes == ["A", "B", "C", "D"] and model.image_size == 12
    assert model.network.sizes == [144, 16, 4]
    result = nnletters.evaluate(model, data=letters_folder)
    assert result["n"] == 48 and result["accuracy"] > 0.5  # 4 classes: chance is 25%
    cli = CliRunner().invoke(main, ["eval", str(run), "--data", str(letters_folder), "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output.splitlines()[-1])["accuracy"] == result["accuracy"]
    probs = model.probabilities(model.prepare([letters_folder / "A" / "A00.png"]))
    assert probs.dtype == np.float32 and abs(float(probs.sum()) - 1) < 1e-5


def test_a_run_from_before_resumes_and_keeps_its_rows(tmp_path, letters_folder):
    run = old_run(tmp_path)
    before = metrics.read_history(run)
    result = CliRunner().invoke(main, ["train", "--resume", str(run), "--quiet",
                                       "--set", "train.epochs=5",
                                       "--set", f"data.path={letters_folder}"])
    assert result.exit_code == 0, result.output
    after = metrics.read_history(run)
    assert [r["epoch"] for r in after] == [1, 2, 3, 4, 5]
    assert after[:3] == before

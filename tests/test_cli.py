"""The command line through Click's CliRunner: exit codes and exact Error: lines."""

import json

import pytest
from click.testing import CliRunner

from nnletters.cli import main
from tests.conftest import draw_letter


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def trained_run(runner, letters_folder, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(f"name: tiny\ndata: {{path: '{letters_folder}', val_fraction: 0.25, "
                      "test_fraction: 0.25}\nmodel: {hidden: [32]}\n"
                      "optim: {name: adam, lr: 0.01}\ntrain: {epochs: 12, batch_size: 8}\n")
    out = tmp_path / "run"
    result = runner.invoke(main, ["train", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, config


def test_train_prints_epochs_and_test_accuracy(trained_run, runner):
    out, config = trained_run
    assert (out / "best.npz").exists()
    result = runner.invoke(main, ["train", "--config", str(config), "--out", str(out.parent / "q"),
                                  "--quiet", "--set", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("test accuracy ")
    assert len(result.output.splitlines()) == 1


def test_eval_json(trained_run, runner):
    out, _ = trained_run
    result = runner.invoke(main, ["eval", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"accuracy", "loss", "n", "classes", "per_class", "confusion"} <= set(report)
    assert report["classes"] == ["A", "B", "C", "D"] and report["n"] == 12
    assert set(report["per_class"]["A"]) == {"precision", "recall", "f1", "support"}
    text = runner.invoke(main, ["eval", str(out)])
    assert text.exit_code == 0 and "confusion matrix" in text.output


def test_predict_json_and_bad_files(trained_run, runner, tmp_path):
    out, _ = trained_run
    draw_letter("A", size=64, light_on_dark=False, width=6).save(tmp_path / "a.png")
    (tmp_path / "junk.png").write_text("not an image")
    result = runner.invoke(main, ["predict", str(tmp_path / "a.png"), "--checkpoint", str(out),
                                  "--json", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    (answer,) = json.loads(result.output)
    assert answer["path"] == str(tmp_path / "a.png") and answer["label"] == "A"
    assert [label for label, _ in answer["top_k"]][0] == "A" and len(answer["top_k"]) == 2
    both = runner.invoke(main, ["predict", str(tmp_path / "a.png"), str(tmp_path / "junk.png"),
                                "--checkpoint", str(out), "--json"])
    assert both.exit_code == 1
    assert len(json.loads(both.stdout)) == 1
    assert both.stderr.startswith(f"Error: {tmp_path / 'junk.png'}")


def test_bad_config_is_one_error_line(runner, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("data: {path: x}\noptim: {lr: -1}\n")
    result = runner.invoke(main, ["train", "--config", str(config), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {config}: optim.lr: expected a number > 0, got -1\n"
    assert not (tmp_path / "r").exists()


def test_set_without_equals_is_a_usage_error(runner, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: {path: x}\n")
    result = runner.invoke(main, ["train", "--config", str(config), "--set", "optim.lr"])
    assert result.exit_code == 2
    assert "expected KEY=VALUE" in result.stderr


def test_missing_data_path_names_it(runner, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{path: '{tmp_path / 'nowhere'}'}}\n")
    result = runner.invoke(main, ["train", "--config", str(config), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and str(tmp_path / "nowhere") in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "r").exists()  # nothing left behind

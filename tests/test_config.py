"""Config loading: every bad field is refused with one line naming file, key and value."""

from pathlib import Path

import pytest

from nnletters.config import ConfigError, load_config, to_yaml


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_and_overrides(tmp_path):
    path = write(tmp_path, "name: t\ndata: {path: x}\nmodel: {hidden: [64]}\n")
    cfg = load_config(path, ["model.hidden=[512, 256]", "optim.lr=0.01", "train.epochs=3"])
    assert cfg.model.hidden == [512, 256]
    assert cfg.optim.lr == 0.01 and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 3 and cfg.name == "t"
    assert cfg.train.early_stopping.monitor == "val_accuracy"


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, "data: {path: x}\n"), ["optim.name=adam"])
    again = load_config(write(tmp_path, to_yaml(cfg), "resolved.yaml"))
    assert again == cfg


@pytest.mark.parametrize("override, expected", [
    ("optim.lr=-1", "optim.lr: expected a number > 0, got -1"),
    ("optim.lr=0", "optim.lr: expected a number > 0, got 0"),
    ("model.dropout=1", "model.dropout: expected a number >= 0 and < 1, got 1"),
    ("model.hidden=[0]", "model.hidden: expected a list of positive whole numbers"),
    ("model.hidden=64", "model.hidden: expected a list of positive whole numbers"),
    ("model.activation=softplus", "model.activation: expected one of relu, leaky_relu, tanh, "
                                  "sigmoid, got 'softplus'"),
    ("train.epochs=ten", "train.epochs: expected a whole number >= 1, got 'ten'"),
    ("train.epochs=2.5", "train.epochs: expected a whole number >= 1, got 2.5"),
    ("train.batch_size=true", "train.batch_size: expected a whole number >= 1, got True"),
    ("data.test_fraction=0.5", "data.val_fraction + data.test_fraction: expected a sum < 1"),
    ("train.early_stopping.monitor=acc", "train.early_stopping.monitor: expected one of "
                                         "val_accuracy, val_loss, got 'acc'"),
    ("model=3", "model: expected a section (mapping), got 3"),
])
def test_bad_values_name_override_key_expected_and_given(tmp_path, override, expected):
    path = write(tmp_path, "data: {path: x, val_fraction: 0.5}\n")
    message = error_of(path, [override])
    assert message.startswith(f"--set {override}: ")
    assert expected in message


def test_bad_override_is_named_and_file_values_name_the_file(tmp_path):
    path = write(tmp_path, "data: {path: x}\noptim: {lr: 0.1}\n")
    assert error_of(path, ["train.epochs=ten"]) == \
        "--set train.epochs=ten: train.epochs: expected a whole number >= 1, got 'ten'"
    assert error_of(path, ["optim.momentun=0.9"]) == \
        "--set optim.momentun=0.9: unknown key 'optim.momentun' (did you mean 'optim.momentum'?)"
    bad = write(tmp_path, "data: {path: x}\noptim: {lr: -1}\n", "bad.yaml")
    assert error_of(bad, ["train.epochs=3", "optim.momentum=0.5"]) == \
        f"{bad}: optim.lr: expected a number > 0, got -1"  # good overrides: the file's fault
    assert error_of(None, ["optim.lr=-1"]) == "--set optim.lr=-1: optim.lr: expected a number " \
        "> 0, got -1"
    assert error_of(None, []) == "config: data.path: expected a folder, archive or list file " \
        "(or data.source: synthetic), but none is set"


@pytest.mark.parametrize("overrides, line", [
    # An override of a section owns every key inside it, and an unknown section it creates.
    (["data.augment={enabled: true, rotate: 90}"], "--set data.augment={enabled: true, "
     "rotate: 90}: data.augment.rotate: expected a number >= 0 and <= 45, got 90"),
    (["optimizer.lr=0.1"], "--set optimizer.lr=0.1: unknown key 'optimizer' (did you mean "
     "'optim'?)"),
    # A later override of the section replaces an earlier one's key: the later one is named.
    (["data.augment.rotate=10", "data.augment={rotate: 90}"],
     "--set data.augment={rotate: 90}: data.augment.rotate: expected a number >= 0 and <= 45, "
     "got 90"),
    # Checks across keys name the first key's override, else the other's, else the file.
    (["data.test_fraction=0.6"], "--set data.test_fraction=0.6: data.val_fraction + "
     "data.test_fraction: expected a sum < 1 so that training data is left, got 0.5 + 0.6"),
    (["model.loss=quadratic"], "--set model.loss=quadratic: model.label_smoothing: expected 0 "
     "with the quadratic loss, got 0.1"),
    (["data.path="], "--set data.path=: data.path: expected a folder, archive or list file "
     "(or data.source: synthetic), got ''"),
])
def test_override_named_in_nested_and_cross_key_errors(tmp_path, overrides, line):
    path = write(tmp_path, "data: {path: x, val_fraction: 0.5}\n"
                           "model: {label_smoothing: 0.1}\n")
    assert error_of(path, overrides) == line


def test_cross_key_error_from_the_file_names_the_file(tmp_path):
    path = write(tmp_path, "data: {path: x, val_fraction: 0.5, test_fraction: 0.5}\n")
    assert error_of(path, ["optim.lr=0.1"]).startswith(f"{path}: data.val_fraction + ")


def test_unknown_key_suggests_closest(tmp_path):
    path = write(tmp_path, "data: {path: x}\nmodel: {hiden: [3]}\n")
    assert error_of(path) == f"{path}: unknown key 'model.hiden' (did you mean 'model.hidden'?)"
    assert "unknown key 'optimizer'" in error_of(write(tmp_path, "optimizer: {}\n"))


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    path = write(tmp_path, "data:\n  path: x\nmodel: {hidden: [3\n")
    message = error_of(path)
    assert message.startswith(f"{path}: YAML syntax error at line ")
    assert "column" in message


def test_missing_file_and_not_a_mapping(tmp_path):
    assert error_of(tmp_path / "nope.yaml") == f"config file not found: {tmp_path / 'nope.yaml'}"
    path = write(tmp_path, "- a\n- b\n")
    assert "expected a mapping of sections at the top level, got list" in error_of(path)


def test_bad_set_syntax(tmp_path):
    path = write(tmp_path, "data: {path: x}\n")
    assert "expected key=value" in error_of(path, ["optim.lr"])


def test_empty_hidden_is_a_single_linear_layer(tmp_path):
    cfg = load_config(write(tmp_path, "data: {path: x}\nmodel: {hidden: []}\n"))
    assert cfg.model.hidden == []


def test_readme_config_reference_is_generated_from_config_py():
    from nnletters.config import reference, reference_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- config-reference:start -->\n", 1)[1].split(
        "<!-- config-reference:end -->", 1)[0]
    assert block == reference_markdown(), "regenerate with: nnletters config reference"
    keys = [k for k, *_ in reference()]
    assert "data.augment.stroke" in keys and "optim.ema" in keys and len(keys) == len(set(keys))


def test_dry_run_prints_config_and_model_summary_and_writes_nothing(tmp_path, letters_folder):
    from click.testing import CliRunner

    from nnletters.cli import main

    result = CliRunner().invoke(main, ["train", "--dry-run", "--set", f"data.path={letters_folder}",
                                       "--set", "model.hidden=[32]", "--out",
                                       str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "hidden: [32]" in result.output
    assert "Dense (784 -> 32)" in result.output and "Dense (32 -> 4)" in result.output
    assert result.output.splitlines()[-1].split() == ["total", f"{784 * 32 + 32 + 32 * 4 + 4:,}"]
    assert not (tmp_path / "run").exists()

"""A run evaluates on the data it was trained and tested on (issue 13, item 3): data.json
records each split's digest and the synthetic fonts with their sha256; eval re-renders from
exactly those fonts whatever else is installed, and refuses in one line when it cannot or
when the data differ (``--data`` on the run's own changed source only warns).

The machine's fonts are replaced by folders of copied .ttf files through $NNLETTERS_FONTS."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from nnletters.cli import main
from nnletters.config import load_config
from nnletters.data import load_splits
from nnletters.data.fingerprint import dataset_digest, file_sha256
from nnletters.data.fonts import FONTS_ENV, find_fonts

CONFIG = """\
name: fonts
seed: 0
data: {source: synthetic, synthetic: {letters: A-D, per_class: 12}, image_size: 12,
       val_fraction: 0.25, test_fraction: 0.25}
model: {hidden: [8]}
train: {epochs: 1, batch_size: 8}
"""


def cli(*args: str):
    return CliRunner().invoke(main, [*map(str, args)])


def error_line(result) -> str:
    return next(line for line in result.output.splitlines() if line.startswith("Error: "))


@pytest.fixture(scope="module")
def machine_fonts() -> list[Path]:
    fonts = [p for p in find_fonts() if p.suffix.lower() == ".ttf"]
    if len(fonts) < 5:
        pytest.skip(f"needs 5 TrueType fonts on this machine, found {len(fonts)}")
    return fonts[:5]


def font_folder(root: Path, name: str, fonts: list[Path]) -> Path:
    folder = root / name
    folder.mkdir()
    for font in fonts:
        shutil.copy(font, folder / font.name)
    return folder


@pytest.fixture
def run(tmp_path, machine_fonts, monkeypatch) -> Path:
    """A run trained while this 'machine' had three fonts."""
    monkeypatch.setenv(FONTS_ENV, str(font_folder(tmp_path, "three", machine_fonts[:3])))
    (tmp_path / "fonts.yaml").write_text(CONFIG)
    out = tmp_path / "run"
    done = cli("train", "--config", tmp_path / "fonts.yaml", "--out", out, "-q")
    assert done.exit_code == 0, done.output
    return out


def test_data_json_records_the_fonts_and_each_split(run, machine_fonts):
    record = json.loads((run / "data.json").read_text())
    fonts = record["synthetic"]["fonts"]
    assert [f["file"] for f in fonts] == sorted(p.name for p in machine_fonts[:3])
    assert all(f["sha256"] == file_sha256(f["path"]) for f in fonts)
    assert {k: v["n"] for k, v in record["splits"].items()} == {"train": 24, "val": 12,
                                                                "test": 12}
    assert record["source"]["n"] == 48 and len(record["source"]["sha256"]) == 64


def evaluated(run: Path) -> tuple[float, float]:
    """(accuracy, loss) of ``nnletters eval RUN``: the loss tells test sets apart even when
    a dozen images give the same accuracy."""
    result = cli("eval", run, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["accuracy"], json.loads(result.output)["loss"]


def measured(run: Path) -> tuple[float, float]:
    summary = json.loads((run / "summary.json").read_text())
    return summary["test_accuracy"], summary["test_loss"]


def test_more_fonts_installed_still_evaluates_the_recorded_split(run, tmp_path, machine_fonts,
                                                                 monkeypatch):
    more = font_folder(tmp_path, "five", machine_fonts)  # a browser install added two
    monkeypatch.setenv(FONTS_ENV, str(more))
    cfg = load_config(run / "config.yaml")
    now = load_splits(cfg.data, cfg.seed).test  # what this machine renders today ...
    recorded = json.loads((run / "data.json").read_text())["splits"]["test"]
    assert dataset_digest(now) != recorded  # ... is another test split
    assert evaluated(run) == measured(run)  # eval re-renders the run's own split


def test_a_missing_font_is_refused_naming_it(run, tmp_path, machine_fonts, monkeypatch):
    fewer = font_folder(tmp_path, "two", machine_fonts[:2])
    monkeypatch.setenv(FONTS_ENV, str(fewer))
    gone = sorted(p.name for p in machine_fonts[:3])
    gone = [name for name in gone if name not in {p.name for p in machine_fonts[:2]}]
    # The path data.json recorded is gone too (it was a copy in the first folder).
    shutil.rmtree(tmp_path / "three")
    result = cli("eval", run)
    assert result.exit_code == 1
    assert error_line(result) == (f"Error: {run}: cannot re-create the run's synthetic letters: "
                                  f"of the 3 fonts in data.json, 1 not on this machine "
                                  f"({gone[0]})")


def test_a_font_with_other_contents_is_refused(run, tmp_path, machine_fonts, monkeypatch):
    swapped = tmp_path / "three" / machine_fonts[0].name
    shutil.copy(machine_fonts[4], swapped)  # same file name, other font
    result = cli("eval", run)
    assert result.exit_code == 1
    assert error_line(result).endswith(f"1 present but different (sha256: {swapped.name})")


def test_a_split_that_renders_differently_is_refused(run):
    record = json.loads((run / "data.json").read_text())
    record["splits"]["test"]["sha256"] = "0" * 64  # as another FreeType would render it
    (run / "data.json").write_text(json.dumps(record))
    result = cli("eval", run)
    assert result.exit_code == 1
    assert error_line(result).startswith(
        f"Error: {run}: the test split's images differ from those the run was trained and "
        "tested on (sha256 ")
    assert error_line(result).endswith("pass --data PATH to evaluate on other data")


def test_a_run_from_before_data_json_evaluates_with_a_warning(run):
    (run / "data.json").unlink()
    result = CliRunner().invoke(main, ["eval", str(run)])
    assert result.exit_code == 0, result.output
    assert f"Warning: {run}: no data.json (a run made before nnletters recorded its data)" \
        in result.stderr
    assert result.stdout.startswith("checkpoint ")


def test_resume_renders_from_the_recorded_fonts(run, tmp_path, machine_fonts, monkeypatch):
    monkeypatch.setenv(FONTS_ENV, str(font_folder(tmp_path, "five", machine_fonts)))
    more = cli("train", "--resume", run, "--set", "train.epochs=2", "-q")
    assert more.exit_code == 0, more.output
    shutil.rmtree(tmp_path / "three")
    monkeypatch.setenv(FONTS_ENV, str(font_folder(tmp_path, "two", machine_fonts[:2])))
    refused = cli("train", "--resume", run, "--set", "train.epochs=3")
    assert refused.exit_code == 1
    assert "cannot re-create the run's synthetic letters" in error_line(refused)


# --------------------------------------------------------------------------- files on disk


@pytest.fixture
def folder_run(tmp_path, letters_folder) -> Path:
    (tmp_path / "folder.yaml").write_text(
        CONFIG.replace("source: synthetic, synthetic: {letters: A-D, per_class: 12}",
                       f"path: '{letters_folder}'").replace("image_size: 12", "image_size: 28"))
    out = tmp_path / "run"
    done = cli("train", "--config", tmp_path / "folder.yaml", "--out", out, "-q")
    assert done.exit_code == 0, done.output
    return out


def test_changed_files_are_refused_or_warned_with_data(folder_run, letters_folder):
    assert evaluated(folder_run) == measured(folder_run)
    for png in sorted((letters_folder / "B").glob("*.png"))[:3]:
        png.unlink()
    result = cli("eval", folder_run)
    assert result.exit_code == 1
    assert error_line(result).startswith(f"Error: {folder_run}: the test split has ")
    explicit = CliRunner().invoke(main, ["eval", str(folder_run), "--data", str(letters_folder)])
    assert explicit.exit_code == 0, explicit.output
    assert explicit.stderr == (f"Warning: {letters_folder}: changed since the run was trained "
                               "(45 images now, 48 then, other pixels or labels); evaluating "
                               "it as it is now\n")

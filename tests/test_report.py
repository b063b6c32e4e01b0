"""nnletters report: the four pictures and report.html of tiny synthetic runs."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from nnletters.cli import main
from nnletters.config import load_config
from nnletters.evaluation import evaluate, evaluate_checkpoint
from nnletters.report import (
    PICTURES,
    load_results,
    mistakes_header,
    mistakes_png,
    rank_mistakes,
    render_pictures,
    report_html,
    weight_tiles,
    weights_png,
    write_report,
)
from nnletters.run_folder import train_run

TINY = ["name=tiny", "data.source=synthetic", "data.synthetic.letters=A-C",
        "data.synthetic.per_class=20", "model.hidden=[16]", "train.epochs=2",
        "train.batch_size=16"]


def train_tiny(run_dir: Path, cache: Path, *extra: str) -> Path:
    cfg = load_config(None, [*TINY, f"data.cache_dir={cache}", *extra])
    run_dir.mkdir(parents=True)
    train_run(cfg, run_dir, log=lambda _msg: None)
    return run_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    return train_tiny(root / "run", root / "cache")


@pytest.fixture(scope="module")
def report(run: Path) -> dict[str, Path]:
    return write_report(run)


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        img.load()  # decodes every pixel: a truncated file fails here
        return img.size


def embedded_pictures(page: str) -> dict[str, bytes]:
    found = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]+)">',
                       page)
    return {alt: base64.b64decode(data) for data, alt in found}


def check_report(written: dict[str, Path]) -> str:
    """Every file exists, pictures are sane PNGs embedded in the page; returns the page."""
    assert set(written) == {*PICTURES, "report.html"}
    page = written["report.html"].read_text("utf-8")
    embedded = embedded_pictures(page)
    assert set(embedded) == set(PICTURES)
    for name in PICTURES:
        data = written[name].read_bytes()
        width, height = png_size(data)
        assert 300 <= width <= 3000 and 50 <= height <= 3000, (name, width, height)
        assert embedded[name] == data  # the page shows exactly the files written
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing from the network
    assert "<script" not in page
    return page


def test_report_writes_every_file_into_run_report(run: Path, report: dict[str, Path]) -> None:
    assert all(p.parent == run / "report" for p in report.values())
    page = check_report(report)
    summary = json.loads((run / "summary.json").read_text())
    assert f"{100 * summary['test_accuracy']:.2f}%" in page
    assert f"{summary['test_loss']:.4f}" in page
    assert f"{summary['best_epoch']} of {summary['epochs_run']} run" in page
    assert "name: tiny" in page  # the resolved config
    for name in summary["classes"]:
        assert f"<tr><td>{name}</td>" in page  # per-class table


def test_report_evaluates_the_same_test_split_as_eval(run: Path) -> None:
    res = load_results(run)
    result = evaluate_checkpoint(run)
    assert res.evaluation["confusion"] == result["confusion"]
    assert res.X.dtype == np.float32 and res.X.shape == (len(res.y), 28 * 28)
    assert res.first_W.shape == (28 * 28, 16)
    summary = json.loads((run / "summary.json").read_text())
    assert res.evaluation["accuracy"] == pytest.approx(summary["test_accuracy"])


def test_report_on_other_data_and_out_folder(run: Path, tmp_path: Path) -> None:
    from nnletters.data.synthetic import write_dataset

    write_dataset(tmp_path / "data", "A-C", 28, 4, seed=5)
    written = write_report(run, data_path=tmp_path / "data", out=tmp_path / "out")
    page = check_report(written)
    assert written["report.html"].parent == tmp_path / "out"
    assert "12 images" in page and str(tmp_path / "data") in page


def test_no_mistakes_gives_one_caption_and_says_so(run: Path) -> None:
    res = load_results(run)
    # Relabel the data with the model's own answers: a model that makes no mistake.
    y = res.proba.argmax(axis=1)
    perfect = dataclasses.replace(res, y=y, evaluation=evaluate(
        _model(run), res.X, y, res.classes))
    pictures = render_pictures(perfect)
    width, height = png_size(pictures["mistakes.png"])
    assert height < 80  # one line of text, no grid
    assert mistakes_header(0, 12, 0)[0] == "No mistakes: all 12 test images are classified " \
                                            "correctly."
    page = report_html(perfect, pictures)
    assert f"No mistakes: all {len(y)} images are classified correctly." in page
    assert "accuracy <b>100.00%</b>" in page


def _model(run: Path):
    from nnletters.checkpoint import load_checkpoint, model_from_checkpoint

    return model_from_checkpoint(load_checkpoint(run / "best.npz"))


def test_mistakes_are_ranked_most_confident_first() -> None:
    y = np.array([0, 1, 2, 0, 1], dtype=np.int64)
    proba = np.array([[0.9, 0.1, 0.0],   # right
                      [0.6, 0.3, 0.1],   # wrong, 0.6
                      [0.1, 0.8, 0.1],   # wrong, 0.8
                      [0.2, 0.2, 0.6],   # wrong, 0.6 (tie: data order kept)
                      [0.0, 1.0, 0.0]], dtype=np.float32)
    assert rank_mistakes(y, proba).tolist() == [2, 1, 3]
    assert mistakes_header(3, 5, 3)[0].startswith("3 of 5 test images misclassified (all shown)")
    assert "the 2 most confident shown" in mistakes_header(3, 5, 2)[0]
    X = np.random.default_rng(0).random((5, 49), dtype=np.float32)
    three = png_size(mistakes_png(X, y, proba, ["A", "B", "C"], 7, columns=1))
    one = png_size(mistakes_png(X, y, proba, ["A", "B", "C"], 7, columns=1, limit=1))
    assert three[1] > one[1] + 2 * 7  # one captioned tile per row: three rows, then one


def test_weight_tiles_are_scaled_symmetrically_around_zero() -> None:
    from matplotlib import colormaps

    W = np.zeros((4, 2), dtype=np.float32)
    W[:, 0] = [2.0, -1.0, 0.0, 0.5]     # mostly positive: zero must still be the middle
    W[:, 1] = [0.0, -0.01, 0.0, 0.0]    # tiny weights use the full colour range
    tiles = weight_tiles(W, 2)
    lut = (colormaps["RdBu_r"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    assert tiles.shape == (2, 2, 2, 3) and tiles.dtype == np.uint8
    assert tiles[0].reshape(4, 3).tolist() == lut[[255, 64, 128, 159]].tolist()
    assert tiles[1].reshape(4, 3).tolist() == lut[[128, 0, 128, 128]].tolist()


def test_weights_mosaic_shows_at_most_256_units() -> None:
    rng = np.random.default_rng(0)
    W = rng.standard_normal((7 * 7, 300)).astype(np.float32)
    assert png_size(weights_png(W, 7)) == png_size(weights_png(W[:, :256], 7))
    assert png_size(weights_png(W[:, :16], 7))[1] < png_size(weights_png(W, 7))[1]


def test_report_after_one_epoch_and_without_summary(tmp_path: Path) -> None:
    run = train_tiny(tmp_path / "one", tmp_path / "cache", "train.epochs=1")
    (run / "summary.json").unlink()  # as if the run had been stopped after its first epoch
    page = check_report(write_report(run))
    assert "No summary.json" in page


def test_report_on_seed_17x17_list_layout(tmp_path: Path) -> None:
    from nnletters.data.synthetic import write_dataset

    write_dataset(tmp_path / "seed", "A-C", 17, 20, seed=0, layout="lists", style="ink")
    run = train_tiny(tmp_path / "run", tmp_path / "cache", "data.source=path",
                     f"data.path={tmp_path / 'seed'}", "data.image_size=17",
                     "model.hidden=[]", "model.loss=quadratic")
    res = load_results(run)
    assert res.image_size == 17 and res.first_W.shape == (17 * 17, 3)
    page = check_report(write_report(run))
    assert "quadratic" in page


def test_cli_report_latest_run_and_errors(run: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, ["report"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: no runs found under runs/")
    (tmp_path / "runs").symlink_to(run.parent, target_is_directory=True)
    result = runner.invoke(main, ["report", "--out", "here"])
    assert result.exit_code == 0, result.output
    assert f"wrote {Path('here') / 'report.html'}" in result.output
    assert sorted(p.name for p in (tmp_path / "here").iterdir()) == sorted(
        [*PICTURES, "report.html"])
    result = runner.invoke(main, ["report", str(run), str(run)])
    assert result.exit_code == 2 and "use --compare" in result.output
    result = runner.invoke(main, ["report", "--compare", str(run)])
    assert result.exit_code == 2 and "two or more" in result.output


def test_cli_compare_overlays_runs(run: Path, tmp_path: Path) -> None:
    other = train_tiny(tmp_path / "lr", tmp_path / "cache", "optim.lr=0.01")
    result = CliRunner().invoke(main, ["report", "--compare", str(run), str(other),
                                       "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    width, height = png_size((tmp_path / "cmp" / "compare.png").read_bytes())
    assert width >= 800 and height >= 300
    page = (tmp_path / "cmp" / "compare.html").read_text()
    for folder in (run, other):  # one row of final figures per run
        summary = json.loads((folder / "summary.json").read_text())
        assert f"<td>{folder.name}</td>" in page
        assert f"<td>{100 * summary['test_accuracy']:.2f}%</td>" in page
    assert "optim.lr" in page  # the differing config value is a column
    default = CliRunner().invoke(main, ["report", "--compare", str(run), str(other)])
    assert default.exit_code == 0, default.output
    assert (run.parent / "compare" / "compare.html").exists()  # not the current folder


def test_many_classes_confusion_shows_mistakes_and_ranked_accuracy() -> None:
    from nnletters.report import FULL_MATRIX_CLASSES, confusion_png

    classes = [chr(ord("A") + i) for i in range(26)]
    counts = np.diag(np.full(26, 50))
    counts[8, 9], counts[8, 8] = 7, 43  # I read as J
    counts[20] = 0  # a class absent from the data
    png = confusion_png(counts, classes, "26 classes")
    width, height = png_size(png)
    assert len(classes) > FULL_MATRIX_CLASSES and width > height  # two panels side by side
    small = confusion_png(counts[:4, :4], classes[:4], "4 classes")
    assert png_size(small)[0] < width


def test_cli_train_report_writes_the_report(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NNLETTERS_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "tiny.yaml").write_text("name: tiny\n")
    args = ["train", "--config", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "run"),
            "--quiet", "--report"]
    for item in TINY:
        args += ["--set", item]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"report {tmp_path / 'run' / 'report' / 'report.html'}" in result.output
    check_report({name: tmp_path / "run" / "report" / name
                  for name in [*PICTURES, "report.html"]})


def test_the_page_shows_the_network_first(report: dict[str, Path]) -> None:
    page = report["report.html"].read_text("utf-8")
    assert list(embedded_pictures(page))[0] == "network.png"
    assert page.index('id="network.png"') < page.index("<h2>Summary</h2>")

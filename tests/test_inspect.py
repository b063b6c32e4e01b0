"""``nnletters data inspect``: planted problems are found; the notMNIST figures are right."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from nnletters.cli import data_group
from nnletters.data.inspect import format_inspection, inspect_dataset

NOTMNIST = Path(__file__).resolve().parents[2] / "shared/data/notMNIST_small.tar.gz"


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def distinct(k: int, size: int = 6) -> np.ndarray:
    arr = np.zeros((size, size), np.uint8)
    arr.flat[k] = 100 + k
    return arr


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A: 4 distinct + a copy of A/0 + a blank; B: 3 distinct, one identical to A/1 (a label
    conflict), a blank of another value, an RGB image at another size, a broken file."""
    root = tmp_path / "planted"
    files = {f"A/{k}.png": png(distinct(k)) for k in range(4)}
    files["A/copy_of_0.png"] = png(distinct(0))
    files["A/blank.png"] = png(np.full((6, 6), 255, np.uint8))
    files.update({f"B/{k}.png": png(distinct(10 + k)) for k in range(3)})
    files["B/same_as_A1.png"] = png(distinct(1))
    files["B/blank.png"] = png(np.zeros((6, 6), np.uint8))
    rgb = Image.new("RGB", (9, 7), (10, 20, 30))
    rgb.putpixel((0, 0), (200, 0, 0))
    buf = io.BytesIO()
    rgb.save(buf, "PNG")
    files["B/rgb.png"] = buf.getvalue()
    files["B/broken.png"] = b"\x89PNG\r\n\x1a\n truncated"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_inspect_finds_planted_problems(planted):
    report = inspect_dataset(planted)
    assert report["files"] == 13 and report["readable"] == 12
    assert report["classes"]["A"] == {"files": 6, "readable": 6, "unreadable": 0, "blank": 1}
    assert report["classes"]["B"] == {"files": 7, "readable": 6, "unreadable": 1, "blank": 1}
    assert report["sizes"] == {"6x6": 11, "9x7": 1}
    assert report["modes"] == {"L": 11, "RGB": 1}
    assert [u["name"] for u in report["unreadable"]] == ["B/broken.png"]
    assert report["blank"]["per_class"] == {"A": 1, "B": 1}
    assert report["blank"]["values"] == {"0": 1, "255": 1}
    dup = report["duplicates"]
    assert dup["groups"] == 2 and dup["images"] == 4 and dup["distinct"] == 10
    assert dup["conflicting"] == [{"labels": ["A", "B"],
                                   "names": ["A/1.png", "B/same_as_A1.png"]}]
    assert {"labels": ["A"], "names": ["A/0.png", "A/copy_of_0.png"]} in dup["all"]
    text = format_inspection(report)
    assert "Unreadable files: 1" in text and "B/broken.png" in text
    assert "A / B: A/1.png, B/same_as_A1.png" in text


def test_inspect_split_reports_leakage(tmp_path):
    root = tmp_path / "leaky"
    for label, n in (("A", 2), ("B", 10)):
        (root / label).mkdir(parents=True)
        for k in range(n):
            (root / label / f"{k}.png").write_bytes(png(distinct(k + 20 * (label == "B"))))
    for k in range(18):  # 18 of A's 20 images are one image: it must land in every split
        (root / "A" / f"dup{k:02d}.png").write_bytes(png(np.full((6, 6), 7, np.uint8)))
    config = tmp_path / "split.yaml"
    config.write_text("seed: 3\ndata:\n  val_fraction: 0.2\n  test_fraction: 0.2\n")
    split = inspect_dataset(root, split_config=config)["split"]
    assert split["seed"] == 3 and split["sizes"] == {"train": 18, "val": 6, "test": 6}
    test_leak, val_leak = split["train_test"], split["train_val"]
    assert test_leak["groups"] == val_leak["groups"] == 1
    assert test_leak["test_images"] >= 2 and val_leak["val_images"] >= 2
    assert test_leak["train_images"] == val_leak["train_images"] >= 10
    assert test_leak["train_images"] + test_leak["test_images"] + val_leak["val_images"] == 18
    assert split["dedup_would_drop"] == test_leak["train_images"]


def test_inspect_checks_the_split_lists_themselves(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for k in range(4):
        (imgs / f"{k}.png").write_bytes(png(distinct(k)))
    (imgs / "copy.png").write_bytes(png(distinct(0)))
    (tmp_path / "train.txt").write_text("imgs/0.png A\nimgs/1.png B\nimgs/2.png A\n")
    (tmp_path / "validate.txt").write_text("imgs/3.png B\n")
    (tmp_path / "test.txt").write_text("imgs/copy.png A\n")
    report = inspect_dataset(tmp_path / "test.txt")
    assert report["kind"] == "splits"
    split = report["split"]
    assert split["sizes"] == {"train": 3, "val": 1, "test": 1}
    assert split["train_test"]["examples"] == [["imgs/0.png", "imgs/copy.png"]]
    assert "Split (train.txt / validate.txt / test.txt)" in format_inspection(report)


def test_cli_inspect_json_is_one_object(planted):
    result = CliRunner().invoke(data_group, ["inspect", str(planted), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["duplicates"]["groups"] == 2 and report["readable"] == 12


def test_cli_inspect_bad_split_config_is_an_error(planted, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  val_fraction: 2\n")
    result = CliRunner().invoke(data_group, ["inspect", str(planted), "--split", str(bad)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {bad}: data.val_fraction: expected")


# --------------------------------------------------------------------------- notMNIST


@pytest.fixture(scope="module")
def notmnist_report() -> dict:
    if not NOTMNIST.exists():
        pytest.skip(f"notMNIST_small archive not found at {NOTMNIST}")
    return inspect_dataset(NOTMNIST)


def test_notmnist_figures(notmnist_report):
    report = notmnist_report
    assert report["files"] == 18_726 and report["readable"] == 18_724
    assert [u["name"] for u in report["unreadable"]] == [
        "A/RGVtb2NyYXRpY2FCb2xkT2xkc3R5bGUgQm9sZC50dGY=.png",
        "F/Q3Jvc3NvdmVyIEJvbGRPYmxpcXVlLnR0Zg==.png"]
    assert report["sizes"] == {"28x28": 18_724} and report["modes"] == {"L": 18_724}
    assert report["blank"]["total"] == 254 and report["blank"]["per_class"] == {"I": 254}
    dup = report["duplicates"]
    assert dup["groups"] == 236 and dup["distinct"] == 18_232
    assert len(dup["conflicting"]) == 2
    assert [row["files"] for row in report["classes"].values()] == [1873] * 6 + [1872] * 4


def test_a_text_file_that_is_no_list_is_named_so_in_one_line(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Letters\n\nTrain multilayer perceptrons on letters.\n")
    result = CliRunner().invoke(data_group, ["inspect", str(readme)])
    assert result.exit_code == 1
    assert result.output == (f"Error: {readme}: not a list file of 'relative/path label' "
                             "lines (its first line: 'Train multilayer perceptrons o')\n")

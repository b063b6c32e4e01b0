"""Synthetic letters: parsing, deterministic rendering, fonts, cache, writing to disk, CLI."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from nnletters.cli import synth_command
from nnletters.config import SyntheticConfig, load_config
from nnletters.data import fonts as font_finder
from nnletters.data import load_splits, synthetic
from nnletters.data.synthetic import (
    find_fonts,
    load_synthetic,
    parse_letters,
    render_letters,
    write_dataset,
)
from nnletters.errors import DataError

AZ = [chr(c) for c in range(ord("A"), ord("Z") + 1)]


def _few_fonts() -> list[Path]:
    """Three fonts (fewer glyphs to draw keeps the tests fast), or [] for the built-in one."""
    return find_fonts()[:3]


# --------------------------------------------------------------------------- letters


@pytest.mark.parametrize("spec, expected", [
    ("A-J", list("ABCDEFGHIJ")),
    ("A-Z", AZ),
    ("ABC", ["A", "B", "C"]),
    ("A-E,X-Z", list("ABCDEXYZ")),
    ("ZA", ["A", "Z"]),
    ("A-C, B-D", list("ABCD")),
])
def test_parse_letters_reads_ranges_and_lists(spec: str, expected: list[str]) -> None:
    assert parse_letters(spec) == expected


@pytest.mark.parametrize("spec", ["", "a-j", "A-", "-A", "J-A", "A--C", "1-3", "A;B", "ÄB"])
def test_parse_letters_refuses_bad_specs(spec: str) -> None:
    with pytest.raises(DataError, match=r"^letters: "):
        parse_letters(spec)


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("size, style", [(17, "ink"), (28, "notmnist")])
def test_render_is_deterministic_and_gives_every_letter(size: int, style: str) -> None:
    fonts = _few_fonts()
    X, y, names = render_letters(AZ, size, 3, seed=5, style=style, fonts=fonts)
    assert X.shape == (26 * 3, size, size) and X.dtype == np.uint8
    assert y.dtype == np.int64 and np.array_equal(y, np.repeat(np.arange(26), 3))
    assert names and len(names) == max(len(fonts), 1)
    # every image holds a glyph: a full range of grey from background to ink
    assert (X.reshape(len(X), -1).max(1).astype(int) - X.reshape(len(X), -1).min(1) > 150).all()
    X2, y2, names2 = render_letters(AZ, size, 3, seed=5, style=style, fonts=fonts)
    assert np.array_equal(X, X2) and np.array_equal(y, y2) and names == names2
    X3, _, _ = render_letters(AZ, size, 3, seed=6, style=style, fonts=fonts)
    assert not np.array_equal(X, X3)


def test_styles_have_opposite_polarity() -> None:
    corners = np.zeros((28, 28), bool)  # an O leaves the corners of its frame empty
    for rows in (slice(0, 3), slice(-3, None)):
        corners[rows, :3] = corners[rows, -3:] = True
    light, _, _ = render_letters(["O"], 28, 8, seed=0, style="notmnist", fonts=_few_fonts())
    dark, _, _ = render_letters(["O"], 28, 8, seed=0, style="ink", fonts=_few_fonts())
    # notmnist: light ink on black; seed: dark ink on white, with a clear margin
    assert light[:, corners].mean() < 60 and light.max() > 180
    assert dark[:, corners].mean() > 240 and dark.min() < 75


def test_a_letter_renders_the_same_whatever_other_letters_are_asked() -> None:
    alone, _, _ = render_letters(["Q"], 20, 4, seed=1, fonts=_few_fonts())
    among, y, _ = render_letters(list("PQR"), 20, 4, seed=1, fonts=_few_fonts())
    assert np.array_equal(alone, among[y == 1])


def test_labels_match_the_pictures() -> None:
    """A nearest-mean classifier fit on one seed reads another: images carry their letter."""
    fonts = _few_fonts()
    X, y, _ = render_letters(AZ, 16, 12, seed=0, fonts=fonts)
    Xt, yt, _ = render_letters(AZ, 16, 6, seed=1, fonts=fonts)
    means = np.stack([X[y == k].reshape(12, -1).mean(0) for k in range(26)])
    flat = Xt.reshape(len(Xt), -1).astype(np.float64)
    guess = ((flat[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (guess == yt).mean() > 0.5  # chance is 1/26


@pytest.mark.parametrize("radius", [1, 2])
def test_square_filter_matches_pillows_rank_filters(radius: int) -> None:
    from PIL import ImageFilter

    rng = np.random.default_rng(0)
    a = np.zeros((30, 26), np.uint8)
    a[4:-4, 4:-4] = rng.integers(0, 256, (22, 18)) * (rng.random((22, 18)) < 0.3)
    size = 2 * radius + 1
    for op, rank in ((np.maximum, ImageFilter.MaxFilter), (np.minimum, ImageFilter.MinFilter)):
        expected = np.asarray(Image.fromarray(a).filter(rank(size)))
        got = synthetic._square_filter(a, radius, op)
        # Pillow repeats the edge pixels; the square filter pads with background: compare
        # away from the edges, where both see the same pixels.
        assert np.array_equal(got[radius:-radius, radius:-radius],
                              expected[radius:-radius, radius:-radius])


def test_builtin_font_is_the_fallback() -> None:
    X, y, names = render_letters(list("AZ"), 24, 2, seed=0, fonts=[])
    assert names == ["pillow-builtin"]
    assert X.shape == (4, 24, 24) and (X.reshape(4, -1).max(1) > 150).all()


def test_render_refuses_bad_arguments() -> None:
    with pytest.raises(DataError, match="style"):
        render_letters(["A"], 17, 1, seed=0, style="cursive", fonts=[])
    with pytest.raises(DataError, match="per_class"):
        render_letters(["A"], 17, 0, seed=0, fonts=[])
    with pytest.raises(DataError, match="letters"):
        render_letters(["a"], 17, 1, seed=0, fonts=[])


# --------------------------------------------------------------------------- fonts


def test_find_fonts_lists_sorted_files_that_draw_capitals() -> None:
    fonts = find_fonts()
    assert fonts == sorted(fonts) and len(set(fonts)) == len(fonts)
    from PIL import ImageFont

    for path in fonts[:5]:
        assert path.is_file()
        assert font_finder.draws_capitals(ImageFont.truetype(str(path), 20))


def test_find_fonts_skips_files_that_are_not_usable_fonts(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    broken = tmp_path / "Broken.ttf"
    broken.write_bytes(b"not a font at all" * 10)
    icons = tmp_path / "SomeIcons.ttf"  # picture fonts are dropped by name
    icons.write_bytes(broken.read_bytes())
    real = find_fonts()[:1]
    monkeypatch.setattr(font_finder, "_fc_list", lambda: [broken, icons, *real])
    assert find_fonts() == real


# --------------------------------------------------------------------------- dataset + cache


def test_load_synthetic_gives_a_dataset_and_caches_it(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = SyntheticConfig(letters="A-C", per_class=5, style="notmnist")
    ds = load_synthetic(cfg, 12, seed=3, cache_dir=tmp_path)
    assert ds.X.shape == (15, 144) and ds.X.dtype == np.float32
    assert 0.0 <= ds.X.min() and ds.X.max() <= 1.0
    assert ds.classes == ["A", "B", "C"] and np.array_equal(ds.y, np.repeat(np.arange(3), 5))
    assert ds.y.dtype == np.int64 and ds.split is None and ds.skipped == []
    assert ds.fonts and len(ds.paths) == 15 and ds.paths[0].endswith("/A_00001")
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def no_render(*args: object, **kwargs: object) -> None:
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(synthetic, "_render", no_render)
    again = load_synthetic(cfg, 12, seed=3, cache_dir=tmp_path)
    assert np.array_equal(again.X, ds.X) and again.paths == ds.paths and again.fonts == ds.fonts
    with pytest.raises(AssertionError, match="rendered again"):
        load_synthetic(cfg, 12, seed=4, cache_dir=tmp_path)  # another seed is another key


def test_load_synthetic_without_cache_writes_nothing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NNLETTERS_CACHE_DIR", str(tmp_path))
    ds = load_synthetic(SyntheticConfig(letters="AB", per_class=2), 10, seed=0, cache=False)
    assert len(ds) == 4 and not any(tmp_path.iterdir())


def test_load_synthetic_names_the_bad_letters_key(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^data\.synthetic\.letters: .*'A-'"):
        load_synthetic(SyntheticConfig(letters="A-"), 10, seed=0, cache_dir=tmp_path)


def test_synthetic_source_is_selected_in_the_config(tmp_path: Path) -> None:
    cfg = load_config(None, ["data.source=synthetic", "data.synthetic.letters=A-D",
                             "data.synthetic.per_class=10", "data.image_size=12",
                             f"data.cache_dir={tmp_path}"])
    splits = load_splits(cfg.data, seed=0)
    assert splits.classes == list("ABCD") and splits.fonts
    assert len(splits.train) + len(splits.val) + len(splits.test) == 40


# --------------------------------------------------------------------------- writing to disk


def test_lists_layout_round_trips_through_data_path(tmp_path: Path) -> None:
    out = tmp_path / "letters"
    summary = write_dataset(out, "A-D", 14, 10, seed=2, layout="lists")
    assert summary["images"] == 40 and summary["splits"] == {"train": 32, "validate": 4,
                                                             "test": 4}
    lines = (out / "train.txt").read_text().splitlines()
    assert all(re.fullmatch(r"images/([A-D])_\d{5}\.png \1", line) for line in lines), lines
    named = [line.split(" ")[0] for name in ("train", "validate", "test")
             for line in (out / f"{name}.txt").read_text().splitlines()]
    assert sorted(named) == sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert (out / "fonts.txt").read_text().splitlines() == summary["fonts"]

    cfg = load_config(None, [f"data.path={out}", "data.cache=false", "data.image_size=14"])
    splits = load_splits(cfg.data, seed=99)  # the lists' split wins over the seed
    assert splits.classes == list("ABCD")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (32, 4, 4)
    X, y, _ = render_letters(list("ABCD"), 14, 10, seed=2)
    test_rows = [int(p[-9:-4]) - 1 + 10 * "ABCD".index(p[7]) for p in splits.test.paths]
    assert np.array_equal(np.rint(splits.test.X * 255).astype(np.uint8),
                          X[test_rows].reshape(4, -1))
    assert np.array_equal(splits.test.y, y[test_rows])


def test_folders_layout_writes_one_folder_per_letter(tmp_path: Path) -> None:
    out = tmp_path / "f"
    write_dataset(out, ["A", "B"], 9, 3, seed=0, layout="folders", style="ink")
    assert sorted(p.name for p in out.iterdir()) == ["A", "B", "fonts.txt"]
    assert sorted(p.name for p in (out / "B").iterdir()) == [f"B_0000{i}.png" for i in (1, 2, 3)]
    with Image.open(out / "A" / "A_00002.png") as img:
        assert img.mode == "L" and img.size == (9, 9)


def test_write_dataset_refuses_a_folder_in_use(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not an empty folder"):
        write_dataset(tmp_path, "A", 9, 1, seed=0)
    with pytest.raises(DataError, match="layout"):
        write_dataset(tmp_path / "new", "A", 9, 1, seed=0, layout="zip")


# --------------------------------------------------------------------------- CLI


def test_synth_command_writes_and_summarises(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(synth_command, [str(out), "--letters", "A-C", "--size", "10",
                                                "--per-class", "4", "--layout", "lists"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("wrote 12 images of 3 letters (10x10, notmnist style, ")
    assert "(train 6, validate 3, test 3)" in result.output  # >= 1 of each per letter
    assert (out / "test.txt").is_file()


def test_synth_command_reports_bad_letters_as_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(synth_command, [str(tmp_path / "o"), "--letters", "A-"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: letters: expected capital letters A-Z as a range or list, e.g. 'A-J', 'ABC' "
        "or 'A-E,X-Z', got 'A-'")

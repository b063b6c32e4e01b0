"""Data sources, decoding, splits and the cache, on tiny images written into tmp_path."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import zipfile
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import nnletters.data.loading as data_mod
from nnletters.cli import data_group
from nnletters.config import DataConfig
from nnletters.data import (
    Dataset,
    dedup_against,
    images,
    load_dataset,
    load_splits,
    sources,
    stratified_split,
)
from nnletters.data import cache as cache_mod
from nnletters.data.images import decode_chunk, decode_image, map_chunks, read_file_gray, read_gray
from nnletters.data.preparation import Look, prepare_gray
from nnletters.data.split import split_counts
from nnletters.errors import DataError

S = 8  # image size used throughout


# --------------------------------------------------------------------------- helpers


def pattern(k: int, size: int = S) -> np.ndarray:
    """A distinct (size, size) uint8 image for each k: one bright pixel on a k-dependent
    background level."""
    arr = np.full((size, size), k // (size * size), dtype=np.uint8)
    arr.flat[k % (size * size)] = 255
    return arr


def png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, "PNG")
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_folder(root: Path, per_class: dict[str, int]) -> dict[str, np.ndarray]:
    """root/<class>/<i>.png with distinct patterns; -> {name: pixels}."""
    written, k = {}, 0
    for label, n in per_class.items():
        for i in range(n):
            arr = pattern(k)
            write(root / label / f"{i:02d}.png", png_bytes(arr))
            written[f"{label}/{i:02d}.png"] = arr
            k += 1
    return written


def make_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def load(path: Path, **kw) -> Dataset:
    kw.setdefault("cache", False)
    return load_dataset(path, S, **kw)


# --------------------------------------------------------------------------- folders


def test_folder_gives_float32_rows_sorted_by_class_then_name(tmp_path):
    written = make_folder(tmp_path / "d", {"B": 3, "A": 2})
    write(tmp_path / "d/A/deeper/zz.png", png_bytes(pattern(99)))   # nested: counts for A
    write(tmp_path / "d/loose.png", png_bytes(pattern(98)))         # outside a class
    write(tmp_path / "d/A/.hidden.png", b"junk")                     # hidden: ignored
    write(tmp_path / "d/B/notes.txt", b"not an image extension")
    ds = load(tmp_path / "d")
    assert ds.classes == ["A", "B"]
    assert ds.paths == ["A/00.png", "A/01.png", "A/deeper/zz.png",
                        "B/00.png", "B/01.png", "B/02.png"]
    assert ds.y.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.X.dtype == np.float32 and ds.y.dtype == np.int64
    assert ds.X.shape == (6, S * S) and ds.X.flags.c_contiguous
    assert ds.X.min() >= 0 and ds.X.max() <= 1
    np.testing.assert_array_equal(ds.X[3], written["B/00.png"].reshape(-1) / np.float32(255))
    assert ds.skipped == [] and ds.split is None


def test_linked_class_folders_are_followed_once(tmp_path):
    make_folder(tmp_path / "elsewhere", {"B": 2})
    make_folder(tmp_path / "d", {"A": 2})
    (tmp_path / "d/B").symlink_to(tmp_path / "elsewhere/B")
    (tmp_path / "d/A/loop").symlink_to(tmp_path / "d")  # a cycle must not loop forever
    ds = load(tmp_path / "d")
    assert ds.paths == ["A/00.png", "A/01.png", "B/00.png", "B/01.png"]


def test_single_top_folder_is_looked_through(tmp_path):
    make_folder(tmp_path / "d/top", {"A": 1, "B": 1})
    ds = load(tmp_path / "d")
    assert ds.classes == ["A", "B"] and ds.paths == ["A/00.png", "B/00.png"]


def test_images_are_resized_to_image_size(tmp_path):
    write(tmp_path / "d/A/big.png", png_bytes(np.full((30, 20), 200, np.uint8)))
    write(tmp_path / "d/B/small.png", png_bytes(np.full((4, 4), 100, np.uint8)))
    ds = load(tmp_path / "d")
    np.testing.assert_array_equal(ds.X * 255, np.round(ds.X * 255))  # still whole levels
    assert np.allclose(ds.X[0], 200 / 255) and np.allclose(ds.X[1], 100 / 255)


def test_unreadable_files_are_skipped_with_reasons(tmp_path):
    make_folder(tmp_path / "d", {"A": 2, "B": 2})
    noise = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    good = png_bytes(noise)  # large enough that half of it ends inside the pixel data
    write(tmp_path / "d/A/empty.png", b"")
    write(tmp_path / "d/A/truncated.png", good[: len(good) // 2])
    write(tmp_path / "d/B/text.png", b"this is not an image\n")
    ds = load(tmp_path / "d")
    assert len(ds) == 4
    reasons = dict(ds.skipped)
    assert sorted(reasons) == ["A/empty.png", "A/truncated.png", "B/text.png"]
    assert reasons["A/empty.png"] == "empty file"
    assert reasons["B/text.png"] == "not an image Pillow can read"
    assert reasons["A/truncated.png"].startswith("cannot decode")


def test_class_without_readable_images_is_an_error_naming_it(tmp_path):
    make_folder(tmp_path / "d", {"A": 2})
    write(tmp_path / "d/Z/bad.png", b"")
    with pytest.raises(DataError, match=r"class 'Z' has no readable images .*Z/bad.png"):
        load(tmp_path / "d")


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "data path not found: {p}"),
    (lambda p: p.mkdir(), "{p}: no image files found"),
    (lambda p: write(p / "A/readme.txt", b"x"), "{p}: no image files found"),
    (lambda p: write(p / "x.png", png_bytes(pattern(1))), "{p}: no images inside class folders"),
])
def test_unusable_paths_are_errors_naming_the_path(tmp_path, setup, message):
    path = tmp_path / "d"
    setup(path)
    with pytest.raises(DataError, match=re.escape(message.format(p=path))):
        load(path)


def test_a_single_image_is_not_a_dataset(tmp_path):
    path = write(tmp_path / "one.png", png_bytes(pattern(1)))
    with pytest.raises(DataError, match="is a single image"):
        load(path)


# --------------------------------------------------------------------------- archives


def archive_files(top: str = "") -> dict[str, bytes]:
    return {f"{top}{label}/{i}.png": png_bytes(pattern(10 * j + i))
            for j, label in enumerate("AB") for i in range(3)}


@pytest.mark.parametrize("suffix, writer", [
    (".tar.gz", make_tar), (".tgz", make_tar), (".tar", partial(make_tar, mode="w")),
    (".zip", make_zip),
])
def test_archives_read_in_place_equal_the_folder(tmp_path, suffix, writer):
    files = archive_files("data/")
    for name, content in files.items():
        write(tmp_path / "folder" / name, content)
    archive = writer(tmp_path / f"data{suffix}", files)
    from_archive, from_folder = load(archive), load(tmp_path / "folder")
    assert from_archive.paths == from_folder.paths == [f"{c}/{i}.png" for c in "AB"
                                                       for i in range(3)]
    np.testing.assert_array_equal(from_archive.X, from_folder.X)
    np.testing.assert_array_equal(from_archive.y, from_folder.y)
    assert not list(tmp_path.glob("data/"))  # nothing extracted


def test_tar_refuses_traversal_absolute_and_link_members(tmp_path):
    files = archive_files()
    files["../evil.png"] = png_bytes(pattern(70))
    files["/abs/evil.png"] = png_bytes(pattern(71))
    archive = make_tar(tmp_path / "d.tar.gz", files)
    with tarfile.open(tmp_path / "links.tar", "w") as tar:  # append link members too
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for kind, name in ((tarfile.SYMTYPE, "A/sym.png"), (tarfile.LNKTYPE, "B/hard.png")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "/etc/passwd"
            tar.addfile(info)
    for path in (archive, tmp_path / "links.tar"):
        ds = load(path)
        assert len(ds) == 6 and all(".." not in p for p in ds.paths)
        reasons = dict(ds.skipped)
        assert reasons["../evil.png"] == reasons["/abs/evil.png"] == \
            "unsafe path in archive (refused)"
    reasons = dict(load(tmp_path / "links.tar").skipped)
    assert reasons["A/sym.png"] == reasons["B/hard.png"] == "link in archive (skipped)"


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT,
                                 tarfile.PAX_FORMAT])
def test_quick_tar_headers_match_tarfile(tmp_path, fmt):
    long_dir = "top/A/" + "d" * 90 + "/"  # names past 100 bytes: prefix, GNU or pax records
    files = {f"{long_dir}{i}.png": png_bytes(pattern(i)) for i in range(3)}
    files["top/B/é.png"] = png_bytes(pattern(5))
    files["top/B/plain.png"] = png_bytes(pattern(6))
    path = tmp_path / "fmt.tar"
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        link = tarfile.TarInfo("top/B/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "plain.png"
        tar.addfile(link)

    def members(tarinfo: type) -> list[tuple]:
        with tarfile.open(path, "r|*", tarinfo=tarinfo) as tar:
            return [(m.name, m.size, m.type, m.linkname, m.offset_data) for m in tar]

    assert members(sources._QuickTarInfo) == members(tarfile.TarInfo)
    ds = load(path)
    assert sorted(ds.paths) == sorted(name[len("top/"):] for name in files)
    assert ds.skipped == [("top/B/link.png", "link in archive (skipped)")]


def test_zip_refuses_traversal_members(tmp_path):
    files = archive_files()
    files["../../evil.png"] = png_bytes(pattern(70))
    files["A/../../evil2.png"] = png_bytes(pattern(71))
    ds = load(make_zip(tmp_path / "d.zip", files))
    assert len(ds) == 6
    assert {name for name, _ in ds.skipped} == {"../../evil.png", "A/../../evil2.png"}


def test_broken_archives_are_errors_naming_the_path(tmp_path):
    good = make_tar(tmp_path / "good.tar.gz", archive_files()).read_bytes()
    truncated = write(tmp_path / "cut.tar.gz", good[: len(good) // 2])
    not_archive = write(tmp_path / "text.tar.gz", b"hello, not an archive\n" * 10)
    bad_zip = write(tmp_path / "bad.zip", b"PK\x03\x04 broken")
    plain = make_tar(tmp_path / "plain.tar", archive_files(), mode="w").read_bytes()
    cut_member = write(tmp_path / "cut.tar", plain[:512 + 100])  # inside the first member
    garbage = write(tmp_path / "junk.tar", b"not a tar header " * 100)
    for path in (truncated, not_archive, bad_zip, cut_member, garbage):
        with pytest.raises(DataError, match=re.escape(str(path))):
            load(path)


def test_archive_skips_macos_junk(tmp_path):
    files = archive_files("top/")
    files["__MACOSX/top/A/._0.png"] = b"resource fork"
    files["top/A/._1.png"] = b"resource fork"
    ds = load(make_zip(tmp_path / "d.zip", files))
    assert ds.classes == ["A", "B"] and len(ds) == 6 and ds.skipped == []


# --------------------------------------------------------------------------- list files


def make_list_layout(root: Path) -> None:
    make_folder(root / "imgs", {"A": 4, "B": 4})
    write(root / "imgs/with space.png", png_bytes(pattern(60)))
    (root / "train.txt").write_text("# train split\n\nimgs/A/00.png A\nimgs/A/01.png A\n"
                                    "imgs/B/00.png B\nimgs/B/01.png B\nimgs/with space.png B\n")
    (root / "validate.txt").write_text("imgs/A/02.png A\nimgs/B/02.png B\n")
    (root / "test.txt").write_text("imgs/A/03.png A\n./imgs/B/03.png B\n")


def test_list_file_reads_paths_relative_to_it(tmp_path):
    make_folder(tmp_path / "imgs", {"A": 2, "B": 1})
    (tmp_path / "all.lst").write_text("imgs/B/00.png letter_b\n# comment\n\n"
                                      "imgs/A/01.png letter_a\nimgs/A/00.png letter_a\n")
    ds = load(tmp_path / "all.lst")
    assert ds.classes == ["letter_a", "letter_b"]
    assert ds.paths == ["imgs/A/00.png", "imgs/A/01.png", "imgs/B/00.png"]
    assert ds.split is None


@pytest.mark.parametrize("entry", ["", "train.txt", "validate.txt", "test.txt"])
def test_three_lists_are_the_splits(tmp_path, entry):
    make_list_layout(tmp_path)
    ds = load(tmp_path / entry)
    assert ds.split is not None and ds.split.dtype == np.int8
    by_split = {k: sorted(p for p, s in zip(ds.paths, ds.split, strict=True) if s == k)
                for k in range(3)}
    assert by_split[1] == ["imgs/A/02.png", "imgs/B/02.png"]
    assert by_split[2] == ["imgs/A/03.png", "imgs/B/03.png"]
    assert "imgs/with space.png" in by_split[0] and len(by_split[0]) == 5
    splits = load_splits(DataConfig(path=str(tmp_path / entry), image_size=S, cache=False),
                         seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (5, 2, 2)
    assert splits.val.paths == ["imgs/A/02.png", "imgs/B/02.png"]


@pytest.mark.parametrize("line, message", [
    ("imgs/A/missing.png A", "{f}:3: imgs/A/missing.png: file not found"),
    ("just-one-field", "{f}:3: expected 'relative/path label', got 'just-one-field'"),
    ("../outside.png A", "{f}:3: ../outside.png: path leaves the list's folder (refused)"),
    ("/etc/passwd A", "{f}:3: /etc/passwd: path leaves the list's folder (refused)"),
])
def test_bad_list_lines_are_errors_naming_file_and_line(tmp_path, line, message):
    make_folder(tmp_path / "d/imgs", {"A": 1})
    write(tmp_path / "outside.png", png_bytes(pattern(3)))
    lst = tmp_path / "d/list.txt"
    lst.write_text(f"imgs/A/00.png A\n\n{line}\n")
    with pytest.raises(DataError, match=re.escape(message.format(f=lst))):
        load(lst)


def test_binary_file_is_neither_list_nor_archive(tmp_path):
    path = write(tmp_path / "data.bin", bytes(range(256)) * 4)
    with pytest.raises(DataError, match="neither a list file"):
        load(path)


# --------------------------------------------------------------------------- modes


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def glyph_mask() -> np.ndarray:
    mask = np.zeros((S, S), bool)
    mask[2:6, 3:5] = True
    return mask


def test_16bit_is_scaled_not_clipped():
    values = np.array([[0, 257 * 100, 32896, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    gray, info = read_gray(encode(img), "x.png")
    assert info.mode == "I;16"
    assert gray.tolist() == [[0, 100, 128, 255]]


def test_transparent_pixels_become_background():
    mask = glyph_mask()
    light = np.zeros((S, S, 4), np.uint8)
    light[..., :3] = 255                       # white everywhere, only the glyph opaque
    light[..., 3] = np.where(mask, 255, 0)
    dark = np.zeros((S, S, 4), np.uint8)       # black glyph, transparent black elsewhere
    dark[..., 3] = np.where(mask, 255, 0)
    la = np.stack([np.full((S, S), 200, np.uint8), np.where(mask, 255, 0).astype(np.uint8)], -1)
    expect_light = np.where(mask, 255, 0)
    assert (read_gray(encode(Image.fromarray(light, "RGBA")), "l")[0] == expect_light).all()
    assert (read_gray(encode(Image.fromarray(dark, "RGBA")), "d")[0] ==
            np.where(mask, 0, 255)).all()
    assert (read_gray(encode(Image.fromarray(la, "LA")), "la")[0] ==
            np.where(mask, 200, 0)).all()


def test_palette_with_and_without_transparency():
    mask = glyph_mask()
    img = Image.fromarray(mask.astype(np.uint8), "P")
    img.putpalette([255, 0, 0, 255, 255, 255] + [0] * 762)  # 0: red, 1: white
    plain, info = read_gray(encode(img), "p.png")
    assert info.mode == "P"
    assert plain[0, 0] == 76 and plain[2, 3] == 255          # red -> luma 76
    see_through, _ = read_gray(encode(img, transparency=0), "pt.png")
    assert (see_through == np.where(mask, 255, 0)).all()


def test_cmyk_jpeg_bilevel_float_and_rgb_modes():
    white_cmyk = read_gray(encode(Image.new("CMYK", (S, S), (0, 0, 0, 0)), "JPEG"), "c")
    black_cmyk = read_gray(encode(Image.new("CMYK", (S, S), (0, 0, 0, 255)), "JPEG"), "k")
    assert white_cmyk[1].mode == "CMYK" and white_cmyk[0].min() >= 250
    assert black_cmyk[0].max() <= 5
    one = Image.fromarray(glyph_mask())
    assert one.mode == "1"
    assert (read_gray(encode(one), "1")[0] == np.where(glyph_mask(), 255, 0)).all()
    ramp = np.linspace(0, 1, S * S, dtype=np.float32).reshape(S, S)
    gray, info = read_gray(encode(Image.fromarray(ramp, "F"), "TIFF"), "f.tif")
    assert info.mode == "F" and gray[0, 0] == 0 and gray[-1, -1] == 255
    rgb = read_gray(encode(Image.new("RGB", (S, S), (0, 255, 0))), "g")[0]
    assert (rgb == 150).all()  # ITU-R 601-2 luma of pure green


def test_animated_gif_gives_first_frame():
    frames = [Image.new("L", (S, S), 0), Image.new("L", (S, S), 255)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert (decode_image(data, S, "a.gif") == 0).all()


def test_exif_orientation_is_applied():
    stored = np.zeros((16, 32), np.uint8)   # wide: dark left half, bright right half
    stored[:, 16:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6                          # display rotated 90 degrees clockwise
    data = encode(Image.fromarray(stored), "JPEG", exif=exif, quality=95)
    gray, info = read_gray(data, "r.jpg")
    assert (info.width, info.height) == (32, 16)  # as stored
    assert gray.shape == (32, 16)                 # as displayed: tall
    assert gray[:12].mean() < 30 and gray[-12:].mean() > 225  # left half went to the top


def test_decompression_bomb_is_refused_as_unreadable(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 15 * 15)
    with pytest.raises(DataError, match=r"bomb.png: 16x16 pixels is above the limit of 225"):
        decode_image(png_bytes(np.zeros((16, 16), np.uint8)), S, "bomb.png")
    make_folder(tmp_path / "d", {"A": 2})
    write(tmp_path / "d/A/bomb.png", png_bytes(np.zeros((16, 16), np.uint8)))
    ds = load(tmp_path / "d")
    assert len(ds) == 2 and dict(ds.skipped)["A/bomb.png"].startswith("16x16 pixels is above")


def prepare_user_image(path, size, light_on_dark=True, fill=0.9):
    """A user's image file as predict prepares it for a model of that look."""
    return prepare_gray(read_file_gray(path), Look(size, light_on_dark, fill))


def test_prepare_user_image_fixes_polarity_and_aspect(tmp_path):
    tall = np.full((20, 10), 255, np.uint8)  # dark glyph on a white, non-square page
    tall[4:16, 2:8] = 0
    path = write(tmp_path / "user.png", png_bytes(tall))
    x = prepare_user_image(path, S)
    assert x.shape == (S * S,) and x.dtype == np.float32
    img = x.reshape(S, S)
    assert img[:, 0].max() < 0.05 and img[:, -1].max() < 0.05  # padded sides: background
    assert img[S // 2, S // 2] > 0.9                              # glyph: light on dark
    kept = prepare_user_image(path, S, light_on_dark=False).reshape(S, S)
    np.testing.assert_allclose(kept, 1 - img, atol=1e-6)
    with pytest.raises(DataError, match="missing.png: file not found"):
        prepare_user_image(tmp_path / "missing.png", S)


# --------------------------------------------------------------------------- parallel


def test_parallel_decode_matches_serial(tmp_path, monkeypatch):
    files = {f"top/{'ABC'[k % 3]}/{k:03d}.png": png_bytes(pattern(k)) for k in range(40)}
    files["top/A/empty.png"] = b""
    archive = make_tar(tmp_path / "d.tar.gz", files)
    serial = load(archive, workers=1)
    monkeypatch.setattr(images, "PARALLEL_MIN_ITEMS", 5)
    parallel = load(archive, workers=2)
    np.testing.assert_array_equal(parallel.X, serial.X)
    assert parallel.paths == serial.paths and parallel.skipped == serial.skipped
    items = [(f"{k}.png", png_bytes(pattern(k))) for k in range(20)]
    chunks = list(map_chunks(partial(decode_chunk, image_size=S), items, workers=2,
                             chunk_size=3))
    assert [name for chunk, _ in chunks for name, _ in chunk] == [n for n, _ in items]
    rows = np.concatenate([pixels for _, (pixels, _) in chunks])
    np.testing.assert_array_equal(rows, np.stack([pattern(k).reshape(-1) for k in range(20)]))


# --------------------------------------------------------------------------- splits


def test_stratified_split_is_seeded_stratified_and_covers_everything():
    y = np.repeat(np.arange(3), [50, 30, 20])
    train, val, test = stratified_split(y, 0.2, 0.1, seed=7)
    for part in (train, val, test):
        assert part.dtype == np.int64 and (np.diff(part) > 0).all()
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val, test])), np.arange(100))
    assert np.bincount(y[val]).tolist() == [10, 6, 4]
    assert np.bincount(y[test]).tolist() == [5, 3, 2]
    again = stratified_split(y, 0.2, 0.1, seed=7)
    other = stratified_split(y, 0.2, 0.1, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    assert not np.array_equal(val, other[1])


def test_stratified_split_is_pinned_across_machines():
    # PCG64's raw stream is stable, so these indexes must never change (a changed split
    # would silently change every reported score).
    _, val, test = stratified_split(np.repeat([0, 1], 10), 0.2, 0.2, seed=0)
    assert val.tolist() == [1, 8, 15, 18]
    assert test.tolist() == [2, 3, 11, 13]


@pytest.mark.parametrize("n, fractions, expected", [
    (3, (0.1, 0.1), (1, 1)), (2, (0.1, 0.1), (0, 0)), (1, (0.5, 0.4), (0, 0)),
    (3, (0.0, 0.1), (0, 1)), (10, (0.25, 0.25), (3, 3)), (4, (0.4, 0.5), (1, 2)),
])
def test_split_counts_keep_a_training_sample(n, fractions, expected):
    assert split_counts(n, *fractions) == expected


def test_dedup_drops_training_images_seen_in_val_or_test(tmp_path):
    make_folder(tmp_path / "d", {"A": 10, "B": 10})
    for name in ("A/00.png", "B/00.png"):  # copies that will land in several splits
        for i in range(6):
            write(tmp_path / f"d/{name[0]}/copy{i}.png", (tmp_path / "d" / name).read_bytes())
    cfg = DataConfig(path=str(tmp_path / "d"), image_size=S, cache=False, val_fraction=0.25,
                     test_fraction=0.25)
    plain = load_splits(cfg, seed=1)
    held_out = {r.tobytes() for part in (plain.val, plain.test) for r in part.X}
    leaked = sum(r.tobytes() in held_out for r in plain.train.X)
    assert leaked > 0
    deduped = load_splits(DataConfig(**{**cfg.__dict__, "dedup": True}), seed=1)
    assert deduped.n_deduped == leaked and len(deduped.train) == len(plain.train) - leaked
    assert not any(r.tobytes() in held_out for r in deduped.train.X)
    same, dropped = dedup_against(plain.val, [plain.train.subset(np.arange(0))])
    assert dropped == 0 and same is plain.val


# --------------------------------------------------------------------------- memory


def test_gather_unit_float_is_to_unit_float_of_the_rows_bit_for_bit():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (10, 7), dtype=np.uint8)
    index = np.array([9, 0, 3, 3, 7, 1, 2])
    for chunk in (1, 3, 7, 100):  # chunk boundaries inside, at and past the end
        got = images.gather_unit_float(pixels, index, chunk=chunk)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, images.to_unit_float(pixels[index]))
    assert images.gather_unit_float(pixels, np.zeros(0, np.int64)).shape == (0, 7)


def test_splits_hold_the_same_floats_as_the_whole_source(tmp_path):
    make_folder(tmp_path / "d", {"A": 5, "B": 5, "C": 5})
    whole = load(tmp_path / "d")
    cfg = DataConfig(path=str(tmp_path / "d"), image_size=S, val_fraction=0.2,
                     test_fraction=0.2, cache_dir=str(tmp_path / "cache"))
    index = stratified_split(whole.y, 0.2, 0.2, seed=0)
    for cached in (False, True, True):  # decoded; decoded and stored; from the cache
        splits = load_splits(replace(cfg, cache=cached), seed=0)
        for part, idx in zip((splits.train, splits.val, splits.test), index, strict=True):
            assert part.X.dtype == np.float32 and part.X.flags.c_contiguous
            np.testing.assert_array_equal(part.X, whole.X[idx])
            np.testing.assert_array_equal(part.y, whole.y[idx])


def test_digest_of_uint8_pixels_is_the_digest_of_their_floats():
    from nnletters.data.fingerprint import dataset_digest

    pixels = np.random.default_rng(2).integers(0, 256, (11, 5), dtype=np.uint8)
    as_floats = Dataset(X=images.to_unit_float(pixels), y=np.arange(11) % 2,
                        classes=["A", "B"], paths=[""] * 11, skipped=[])
    as_pixels = Dataset(X=pixels, y=as_floats.y, classes=["A", "B"], paths=[""] * 11,
                        skipped=[])
    whole = dataset_digest(as_floats, chunk=100)
    assert dataset_digest(as_pixels, chunk=3) == dataset_digest(as_floats, chunk=4) == whole
    as_floats.X[0, 0] = 0.5  # and it still sees every pixel
    assert dataset_digest(as_floats, chunk=3) != whole


def test_load_splits_never_holds_a_float32_copy_of_the_whole_source(tmp_path):
    """Each split converts its own rows from the uint8 pixels (and the digest hashes 1 MiB at
    a time), so the peak is the float32 splits plus the pixels plus a chunk (1.35x the
    float32 data here), not a float32 copy of everything beside the splits (2x and more)."""
    import tracemalloc

    size, n, rng = 64, 600, np.random.default_rng(0)
    for i in range(n):
        noise = rng.integers(0, 256, (size, size), dtype=np.uint8)
        write(tmp_path / "d" / "AB"[i % 2] / f"{i:03d}.png", png_bytes(noise))
    cfg = DataConfig(path=str(tmp_path / "d"), image_size=size,
                     cache_dir=str(tmp_path / "cache"))
    load_splits(cfg, seed=0)  # decodes and fills the cache
    tracemalloc.start()  # NumPy reports its array buffers to tracemalloc
    try:
        splits = load_splits(cfg, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    floats = n * size * size * 4
    assert sum(p.X.nbytes for p in (splits.train, splits.val, splits.test)) == floats
    assert peak < 1.45 * floats, f"peak {peak / floats:.2f}x the float32 data"


# --------------------------------------------------------------------------- cache


def test_cache_hit_skips_decoding(tmp_path, monkeypatch):
    make_folder(tmp_path / "d", {"A": 2, "B": 2})
    write(tmp_path / "d/B/broken.png", b"")
    first = load(tmp_path / "d", cache=True, cache_dir=tmp_path / "cache")
    (entry,) = cache_mod.entries(tmp_path / "cache")
    with np.load(entry.path, allow_pickle=False) as z:  # no pickled objects inside
        assert z["X"].dtype == np.uint8
    monkeypatch.setattr(data_mod, "_decode", lambda *a: pytest.fail("decoded again"))
    second = load(tmp_path / "d", cache=True, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(second.X, first.X)
    assert second.X.dtype == np.float32 and second.y.dtype == np.int64
    assert (second.classes, second.paths, second.skipped) == \
        (first.classes, first.paths, first.skipped)
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_cache_notices_a_changed_file_and_size(tmp_path):
    make_folder(tmp_path / "d", {"A": 2, "B": 2})
    cache_dir = tmp_path / "cache"
    before = load(tmp_path / "d", cache=True, cache_dir=cache_dir)
    changed = write(tmp_path / "d/A/00.png", png_bytes(np.full((S, S), 77, np.uint8)))
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = load(tmp_path / "d", cache=True, cache_dir=cache_dir)
    assert not np.array_equal(after.X[0], before.X[0]) and np.allclose(after.X[0], 77 / 255)
    assert len(cache_mod.entries(cache_dir)) == 1  # the stale entry was replaced
    bigger = load_dataset(tmp_path / "d", 12, cache=True, cache_dir=cache_dir)
    assert bigger.X.shape == (4, 144) and len(cache_mod.entries(cache_dir)) == 2


def test_corrupt_cache_is_rebuilt(tmp_path):
    archive = make_tar(tmp_path / "d.tar.gz", archive_files())
    first = load(archive, cache=True, cache_dir=tmp_path / "cache")
    (entry,) = cache_mod.entries(tmp_path / "cache")
    entry.path.write_bytes(b"garbage")
    again = load(archive, cache=True, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.X, first.X)
    assert cache_mod.fetch(entry.path, "wrong key") is None
    assert entry.path.stat().st_size > 100  # rewritten


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("NNLETTERS_CACHE_DIR", str(tmp_path / "envcache"))
    assert cache_mod.default_cache_dir() == tmp_path / "envcache"
    make_folder(tmp_path / "d", {"A": 1, "B": 1})
    load(tmp_path / "d", cache=True)
    assert len(cache_mod.entries()) == 1


# --------------------------------------------------------------------------- CLI


def test_cli_cache_lists_and_clears_only_cache_files(tmp_path):
    make_folder(tmp_path / "d", {"A": 1, "B": 1})
    cache_dir = tmp_path / "cache"
    load(tmp_path / "d", cache=True, cache_dir=cache_dir)
    keep = write(cache_dir / "unrelated.npz", b"not ours")
    runner = CliRunner()
    shown = runner.invoke(data_group, ["cache", "--dir", str(cache_dir)])
    assert shown.exit_code == 0, shown.output
    assert f"{cache_dir}: 1 entry," in shown.output and "d-" in shown.output
    cleared = runner.invoke(data_group, ["cache", "--clear", "--dir", str(cache_dir)])
    assert cleared.exit_code == 0 and "removed 1 entry" in cleared.output
    assert cache_mod.entries(cache_dir) == [] and keep.exists()


def test_cli_inspect_error_is_one_line(tmp_path):
    result = CliRunner().invoke(data_group, ["inspect", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert result.output == f"Error: data path not found: {tmp_path / 'nope'}\n"


def test_cache_entry_meta_is_json(tmp_path):
    make_folder(tmp_path / "d", {"A": 1, "B": 1})
    load(tmp_path / "d", cache=True, cache_dir=tmp_path / "c")
    (entry,) = cache_mod.entries(tmp_path / "c")
    with np.load(entry.path, allow_pickle=False) as z:
        assert json.loads(z["classes"].tobytes()) == ["A", "B"]
        assert json.loads(z["meta"].tobytes())["format"] == cache_mod.FORMAT_VERSION


def test_prepare_user_image_crops_the_glyph_to_the_training_fill(tmp_path):
    page = np.full((200, 300), 255, np.uint8)  # a small dark square far from the centre
    page[20:40, 30:50] = 0
    path = write(tmp_path / "small.png", png_bytes(page))
    img = prepare_user_image(path, S, light_on_dark=True, fill=0.5).reshape(S, S)
    lit = np.argwhere(img > 0.5)
    span = lit.max(axis=0) - lit.min(axis=0) + 1
    assert abs(span[0] - S // 2) <= 1 and abs(span[1] - S // 2) <= 1  # half the frame
    centre = (lit.max(axis=0) + lit.min(axis=0)) / 2
    assert np.all(np.abs(centre - (S - 1) / 2) <= 1)                 # and centred
    full = prepare_user_image(path, S, light_on_dark=True, fill=1.0).reshape(S, S)
    assert full.min() > 0.9                                           # fills the frame

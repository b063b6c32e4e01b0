"""Never crash on bad input: every hostile config, dataset, checkpoint, image and disk ends with
exit code 1 (or 2 for bad usage), exactly one ``Error: ...`` line on stderr naming the file,
key or value at fault, no traceback, and no partial files left behind.

Each case builds its input in tmp_path and asserts the exact line the CLI prints.
"""

from __future__ import annotations

import errno
import io
import json
import os
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from nnletters.checkpoint import load_checkpoint
from nnletters.cli import main
from nnletters.data.images import MAX_PIXELS
from nnletters.errors import ConfigError
from tests.conftest import draw_letter

EXPECTED_LAYOUT = ("expected one subfolder per class holding "
                   "bmp/gif/jpeg/jpg/png/tif/tiff/webp files")


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_error(result, line: str, exit_code: int = 1) -> None:
    """Exit code, and stderr is exactly ``line`` (plus newline): one line, no traceback.
    A ``line`` ending in '...' gives the start of the line only (the rest is the parser's
    own words, which vary with where the input happens to break)."""
    assert result.exit_code == exit_code, (result.output, result.exception)
    if line.endswith("..."):
        assert result.stderr.startswith(line[:-3]) and result.stderr.count("\n") == 1
    else:
        assert result.stderr == line + "\n"
    assert "Traceback" not in result.output


def make_letters(root: Path, classes: str = "ABCD", per_class: int = 6) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_letter(c, shift=i % 3 - 1, width=2 + i % 2).save(root / c / f"{c}{i}.png")
    return root


def config_for(tmp_path: Path, data: Path | str, **sections: str) -> Path:
    """A tiny, valid config (no dataset cache) pointing at ``data``."""
    text = (f"data: {{path: '{data}', val_fraction: 0.25, test_fraction: 0.25, cache: false}}\n"
            f"model: {{hidden: [16]}}\ntrain: {{epochs: 1, batch_size: 8}}\n")
    text += "".join(f"{name}: {value}\n" for name, value in sections.items())
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def train_on(tmp_path: Path, data: Path | str, *extra: object):
    return invoke("train", "--config", config_for(tmp_path, data), "--out", tmp_path / "run",
                  *extra)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A trained tiny run (its best.npz is the good checkpoint the bad ones are made from)."""
    tmp = tmp_path_factory.mktemp("run")
    result = train_on(tmp, make_letters(tmp / "letters"), "-q")
    assert result.exit_code == 0, result.output
    return tmp / "run"


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("text, line", [
    (None, "config file not found: {cfg}"),
    ("data: {path: x\n", "{cfg}: YAML syntax error at line 2, column 1: expected ',' or '}', "
                         "but got '<stream end>'"),
    ("- data\n- model\n", "{cfg}: expected a mapping of sections at the top level, got list"),
    ("data: {path: x}\noptim: {lr: 0.1, momentun: 0.9}\n",
     "{cfg}: unknown key 'optim.momentun' (did you mean 'optim.momentum'?)"),
    ("data: {path: x}\ntrain: {epochs: ten}\n",
     "{cfg}: train.epochs: expected a whole number >= 1, got 'ten'"),
    ("data: {path: x}\nmodel: {hidden: 64}\n",
     "{cfg}: model.hidden: expected a list of positive whole numbers, e.g. [512, 256], got 64"),
    ("data: {path: x}\noptim: {lr: 0}\n", "{cfg}: optim.lr: expected a number > 0, got 0"),
    ("data: {path: x}\noptim: {lr: -1e-3}\n",
     "{cfg}: optim.lr: expected a number > 0, got -0.001"),
    ("data: {path: x}\nmodel: {dropout: 1.0}\n",
     "{cfg}: model.dropout: expected a number >= 0 and < 1, got 1.0"),
    ("data: {path: x}\nmodel: {hidden: [64, 0]}\n",
     "{cfg}: model.hidden: expected a list of positive whole numbers, e.g. [512, 256], "
     "got [64, 0]"),
    ("data: {path: x, val_fraction: 0.5, test_fraction: 0.5}\n",
     "{cfg}: data.val_fraction + data.test_fraction: expected a sum < 1 so that training "
     "data is left, got 0.5 + 0.5"),
    ("data: {}\n", "{cfg}: data.path: expected a folder, archive or list file (or data.source: "
                   "synthetic), but none is set"),
])
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, text, line):
    cfg = tmp_path / "bad.yaml"
    if text is not None:
        cfg.write_text(text)
    assert_error(invoke("train", "--config", cfg, "--out", tmp_path / "run"),
                 "Error: " + line.replace("{cfg}", str(cfg)))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("item, line", [
    ("train.epochs=ten", "train.epochs: expected a whole number >= 1, got 'ten'"),
    ("optim.momentun=0.9", "unknown key 'optim.momentun' (did you mean 'optim.momentum'?)"),
])
def test_bad_set_value_names_the_override_not_the_file(tmp_path, item, line):
    cfg = tmp_path / "good.yaml"
    cfg.write_text("data: {path: x}\ntrain: {epochs: 2}\n")
    assert_error(invoke("train", "--config", cfg, "--set", item, "--out", tmp_path / "run"),
                 f"Error: --set {item}: {line}")
    assert not (tmp_path / "run").exists()


def test_config_that_is_not_text(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_bytes(b"\xff\xfe\x00\x01")
    assert_error(invoke("train", "--config", cfg),
                 f"Error: {cfg}: cannot read config: 'utf-8' codec can't decode byte 0xff in "
                 "position 0: invalid start byte")


def test_set_that_is_not_key_value_is_a_usage_error(tmp_path):
    cfg = config_for(tmp_path, tmp_path)
    result = invoke("train", "--config", cfg, "--set", "optim.lr")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == \
        "Error: --set 'optim.lr': expected KEY=VALUE, e.g. optim.lr=0.01"
    assert [line for line in result.stderr.splitlines() if line.startswith("Error")] == \
        [result.stderr.splitlines()[-1]]


def test_scientific_notation_is_a_number(tmp_path):
    """YAML 1.1 reads 1e-3 as a string; a config (or --set) meaning a number gets one."""
    data = make_letters(tmp_path / "letters", per_class=4)
    result = invoke("train", "--config", config_for(tmp_path, data, optim="{lr: 1e-2}"),
                    "--set", "optim.weight_decay=5e-4", "--out", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    assert "lr: 0.01" in (tmp_path / "run/config.yaml").read_text()


def test_empty_hidden_is_allowed_as_a_single_linear_layer(tmp_path):
    """Decision: model.hidden: [] is the tutorial's 289->26 linear network, not an error
    (the issue lists 'empty widths'; zero or negative widths are refused above)."""
    data = make_letters(tmp_path / "letters", per_class=4)
    result = invoke("train", "--config", config_for(tmp_path, data, model="{hidden: []}"),
                    "--out", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "run/last.npz").meta["layer_sizes"] == [784, 4]


def test_debug_shows_the_exception(tmp_path):
    result = invoke("--debug", "train", "--config", tmp_path / "nope.yaml")
    assert result.exit_code == 1 and isinstance(result.exception, ConfigError)
    plain = invoke("train", "--config", tmp_path / "nope.yaml")
    assert plain.exception is None or isinstance(plain.exception, SystemExit)


# --------------------------------------------------------------------------- data


def write(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def png(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A few hundred bytes of PNG declaring width x height pixels (never decoded)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def archive_of(folder: Path, path: Path, extra: dict[str, bytes] | None = None) -> Path:
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}
    files.update(extra or {})
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as archive:
            for name, content in files.items():
                archive.writestr(name, content)
    else:
        with tarfile.open(path, "w:gz") as tar:
            for name, content in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def setup_class_without_readable_images(tmp: Path) -> Path:
    root = make_letters(tmp / "d", "AB")
    write(root / "C/x.png", b"")
    write(root / "C/y.png", "junk")
    return root


def setup_list(tmp: Path, line: str) -> Path:
    make_letters(tmp / "letters", "A", per_class=1)
    return write(tmp / "list.txt", f"letters/A/A0.png A\n{line}\n")


def setup_truncated(tmp: Path, suffix: str) -> Path:
    good = archive_of(make_letters(tmp / "d"), tmp / f"good{suffix}").read_bytes()
    return write(tmp / f"cut{suffix}", good[: len(good) // 2])


@pytest.mark.parametrize("setup, line", [
    (lambda t: t / "nowhere", "data path not found: {p}"),
    (lambda t: (t / "empty").mkdir() or t / "empty", f"{{p}}: no image files found "
                                                     f"({EXPECTED_LAYOUT})"),
    (lambda t: write(t / "d/A/notes.txt", "x").parents[1], f"{{p}}: no image files found "
                                                          f"({EXPECTED_LAYOUT})"),
    (lambda t: write(t / "d/x.png", png(draw_letter("A"))).parent,
     f"{{p}}: no images inside class folders ({EXPECTED_LAYOUT})"),
    (setup_class_without_readable_images,
     "{p}: class 'C' has no readable images (2 unreadable, e.g. C/x.png: empty file)"),
    (lambda t: setup_list(t, "letters/A/nope.png A"), "{p}:2: letters/A/nope.png: file not found"),
    (lambda t: setup_list(t, "justonefield"),
     "{p}:2: expected 'relative/path label', got 'justonefield'"),
    (lambda t: setup_list(t, "../outside.png A"),
     "{p}:2: ../outside.png: path leaves the list's folder (refused)"),
    (lambda t: setup_list(t, "/etc/passwd A"),
     "{p}:2: /etc/passwd: path leaves the list's folder (refused)"),
    (lambda t: write(t / "data.tar.gz", "hello, not an archive\n" * 10),
     "{p}: not a gzip-compressed tar archive (the file does not start like one)"),
    (lambda t: write(t / "data.zip", "<html>not found</html>"),
     "{p}: not a zip archive (the file does not start like one)"),
    (lambda t: write(t / "data.zip", b""), "{p}: empty file, not an archive"),
    (lambda t: setup_truncated(t, ".zip"),
     "{p}: truncated or corrupt archive (File is not a zip file)"),
    (lambda t: setup_truncated(t, ".tar.gz"), "{p}: truncated or corrupt archive (..."),
    (lambda t: write(t / "d/A/only.png", bomb_png()).parents[1],
     "{p}: class 'A' has no readable images (1 unreadable, e.g. A/only.png: 10000000000 pixels "
     f"is above the limit of {MAX_PIXELS} (decompression bomb?))"),
])
def test_bad_data_is_one_line_naming_the_path(tmp_path, setup, line):
    path = setup(tmp_path)
    assert_error(train_on(tmp_path, path), "Error: " + line.format(p=path))
    assert not (tmp_path / "run").exists()  # the run folder is made only once data loads


def test_archive_entries_outside_the_archive_are_refused_and_listed(tmp_path):
    """A '../x.png' member is never read: the rest of the archive trains, the refusal is
    listed in skipped.txt and reported in one line."""
    data = make_letters(tmp_path / "d")
    evil = png(draw_letter("A"))
    for suffix in (".zip", ".tar.gz"):
        archive = archive_of(data, tmp_path / f"evil{suffix}",
                             {"../../evil.png": evil, "/abs/evil.png": evil})
        out = tmp_path / f"run{suffix}"
        result = invoke("train", "--config", config_for(tmp_path, archive), "--out", out)
        assert result.exit_code == 0, result.output
        assert f"skipped 2 unreadable file(s), listed in {out / 'skipped.txt'}" in result.output
        assert (out / "skipped.txt").read_text() == (
            "../../evil.png\tunsafe path in archive (refused)\n"
            "/abs/evil.png\tunsafe path in archive (refused)\n")
        summary = json.loads((out / "summary.json").read_text())
        assert summary["n_train"] + summary["n_val"] + summary["n_test"] == 24


def test_decompression_bomb_among_good_images_is_skipped_and_named(tmp_path):
    data = make_letters(tmp_path / "d")
    write(data / "B/bomb.png", bomb_png())
    result = train_on(tmp_path, data)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run/skipped.txt").read_text() == \
        f"B/bomb.png\t10000000000 pixels is above the limit of {MAX_PIXELS} (decompression bomb?)\n"


def image_zoo() -> dict[str, bytes]:
    """16-bit, CMYK, animated and EXIF-rotated versions of a light-on-dark 'A'."""
    glyph = draw_letter("A")
    sixteen = Image.fromarray(np.asarray(glyph, np.uint16) * 257)
    assert sixteen.mode == "I;16"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: displayed after a quarter turn
    rotated = glyph.transpose(Image.Transpose.ROTATE_90)
    return {"sixteen.png": png(sixteen), "cmyk.jpg": png(glyph.convert("CMYK"), "JPEG"),
            "animated.gif": png(glyph, "GIF", save_all=True,
                                append_images=[draw_letter("B")], duration=40),
            "exif.jpg": png(rotated, "JPEG", exif=exif, quality=95)}


def test_16bit_cmyk_animated_and_exif_images_are_handled_not_errors(tmp_path, run):
    data = make_letters(tmp_path / "d")
    zoo = {name: write(data / "A" / name, content) for name, content in image_zoo().items()}
    result = train_on(tmp_path, data, "-q")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "run/skipped.txt").exists()
    assert json.loads((tmp_path / "run/summary.json").read_text())["skipped"] == 0
    predicted = invoke("predict", *zoo.values(), "--checkpoint", run, "--json")
    assert predicted.exit_code == 0, predicted.output
    assert [r["path"] for r in json.loads(predicted.stdout)] == [str(p) for p in zoo.values()]


# --------------------------------------------------------------------------- checkpoints


def good_arrays(run: Path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(run / "best.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return arrays, json.loads(str(arrays["meta"][()]))


def npz_variant(run: Path, path: Path, drop: tuple[str, ...] = (), meta: dict | None = None,
                **arrays: np.ndarray) -> Path:
    good, good_meta = good_arrays(run)
    out = {k: v for k, v in good.items() if k not in drop}
    out.update({k.replace("__", "/"): v for k, v in arrays.items()})
    out["meta"] = np.array(json.dumps(good_meta if meta is None else meta))
    np.savez(path, **out)
    return path


class Trap:
    """Unpickling this calls open(marker, 'w'): proof that a pickle was (never) loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def setup_pickle(run: Path, tmp: Path) -> Path:
    good, _ = good_arrays(run)
    trap = np.empty(1, dtype=object)
    trap[0] = Trap(tmp / "unpickled")
    np.savez(tmp / "pickle.npz", **{**good, "model/0/W": trap})
    return tmp / "pickle.npz"


def setup_truncated_npz(run: Path, tmp: Path) -> Path:
    data = (run / "best.npz").read_bytes()
    return write(tmp / "cut.npz", data[: len(data) // 2])


def meta_without(run: Path, key: str) -> dict:
    meta = good_arrays(run)[1]
    del meta[key]
    return meta


@pytest.mark.parametrize("setup, line", [
    (lambda run, t: write(t / "notes.npz", "just text"),
     "{p}: not an nnletters checkpoint (not an .npz archive)"),
    (lambda run, t: (np.save(t / "plain.npy", np.zeros(3)), (t / "plain.npy").rename(
        t / "plain.npz"))[1], "{p}: not an nnletters checkpoint (not an .npz archive)"),
    (setup_truncated_npz, "{p}: not a readable .npz checkpoint (truncated or corrupt: "
                          "BadZipFile: File is not a zip file)"),
    (setup_pickle,
     "{p}: holds object arrays (pickled data); refused, a checkpoint holds plain arrays only"),
    (lambda run, t: (np.savez(t / "other.npz", W=np.zeros(3, np.float32)), t / "other.npz")[1],
     "{p}: not an nnletters checkpoint (no 'meta' entry)"),
    (lambda run, t: npz_variant(run, t / "nometa.npz", meta=meta_without(run, "classes")),
     "{p}: metadata lacks 'classes'"),
    (lambda run, t: npz_variant(run, t / "noarray.npz", drop=("model/1/b",)),
     "{p}: missing arrays: 1/b"),
    (lambda run, t: npz_variant(run, t / "shape.npz", model__0__W=np.zeros((784, 9), np.float32)),
     "{p}: weight shapes [(784, 9), (16, 4)] disagree with layer sizes [784, 16, 4] in its "
     "metadata"),
    (lambda run, t: npz_variant(run, t / "newer.npz", meta={**good_arrays(run)[1],
                                                            "format_version": 2}),
     "{p}: format version 2 is newer than this nnletters reads (1); upgrade nnletters"),
    (lambda run, t: npz_variant(run, t / "act.npz", meta={**good_arrays(run)[1],
                                                          "activation": "swish"}),
     "{p}: metadata 'activation' is 'swish', expected one of relu, leaky_relu, tanh, sigmoid"),
    (lambda run, t: t, "{p}: no checkpoint (best.npz or last.npz) in this folder"),
])
def test_bad_checkpoint_is_one_line_for_eval_and_predict(run, tmp_path, setup, line):
    path = setup(run, tmp_path)
    expected = "Error: " + line.format(p=path)
    assert_error(invoke("eval", path), expected)
    image = write(tmp_path / "img/a.png", png(draw_letter("A")))
    assert_error(invoke("predict", image, "--checkpoint", path), expected)
    assert not (tmp_path / "unpickled").exists()  # the trap was never sprung


def test_resume_from_a_corrupt_checkpoint_is_one_line(run, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    (folder / "config.yaml").write_bytes((run / "config.yaml").read_bytes())
    data = (run / "last.npz").read_bytes()
    write(folder / "last.npz", data[:100])
    assert_error(invoke("train", "--resume", folder),
                 f"Error: {folder / 'last.npz'}: not a readable .npz checkpoint (truncated or "
                 "corrupt: BadZipFile: File is not a zip file)")


# --------------------------------------------------------------------------- predict


def test_predict_names_each_bad_input_and_answers_the_rest(run, tmp_path):
    good_a = write(tmp_path / "a.png", png(draw_letter("A")))
    good_b = write(tmp_path / "b.png", png(draw_letter("B")))
    empty = write(tmp_path / "bad/empty.png", b"")
    text = write(tmp_path / "bad/text.png", "not an image")
    bomb = write(tmp_path / "bad/bomb.png", bomb_png())
    no_images = tmp_path / "nothing"
    write(no_images / "readme.txt", "x")
    missing = tmp_path / "missing.png"
    result = invoke("predict", good_a, empty, text, no_images, missing, bomb, good_b,
                    "--checkpoint", run, "--json")
    assert result.exit_code == 1
    assert [r["path"] for r in json.loads(result.stdout)] == [str(good_a), str(good_b)]
    assert result.stderr.splitlines() == [
        f"Error: {no_images}: directory holds no images",
        f"Error: {missing}: no such file",
        f"Error: {empty}: empty file",
        f"Error: {text}: not an image Pillow can read",
        f"Error: {bomb}: 10000000000 pixels is above the limit of {MAX_PIXELS} "
        "(decompression bomb?)",
    ]


# --------------------------------------------------------------------------- disk


def no_space_on(name: str, nth: int, monkeypatch) -> None:
    """os.replace fails with ENOSPC on the nth replacement of a file called ``name``, as a
    full disk makes it fail (root ignores chmod, so a real read-only folder cannot be used)."""
    real, seen = os.replace, {"n": 0}

    def replace(src, dst):
        if Path(dst).name == name:
            seen["n"] += 1
            if seen["n"] == nth:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_disk_full_mid_run_keeps_the_last_checkpoint_whole(tmp_path, monkeypatch):
    data = make_letters(tmp_path / "d")
    cfg = config_for(tmp_path, data)
    out = tmp_path / "run"
    no_space_on("last.npz", 2, monkeypatch)
    result = invoke("train", "--config", cfg, "--set", "train.epochs=3", "--out", out)
    assert_error(result, f"Error: cannot write {out / 'last.npz'}: No space left on device")
    assert load_checkpoint(out / "last.npz").meta["epoch"] == 1  # the previous one, whole
    assert not list(out.glob(".*.tmp"))
    monkeypatch.undo()  # space freed: the run goes on from epoch 1
    resumed = invoke("train", "--resume", out, "-q")
    assert resumed.exit_code == 0, resumed.output
    assert [r["epoch"] for r in map(json.loads, (out / "metrics.jsonl").read_text()
                                    .splitlines())] == [1, 2, 3]


def test_disk_full_at_the_start_leaves_no_run_folder(tmp_path, monkeypatch):
    data = make_letters(tmp_path / "d", per_class=4)
    out = tmp_path / "run"
    no_space_on("config.yaml", 1, monkeypatch)
    assert_error(train_on(tmp_path, data),
                 f"Error: cannot write {out / 'config.yaml'}: No space left on device")
    assert not out.exists()


def test_read_only_run_folder_is_one_line(tmp_path, monkeypatch):
    import tempfile

    data = make_letters(tmp_path / "d", per_class=4)
    out = tmp_path / "run"

    def read_only(*_args, **_kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert_error(train_on(tmp_path, data),
                 f"Error: cannot write {out / 'config.yaml'}: Read-only file system")
    assert not out.exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes into read-only folders anyway")
def test_really_read_only_folder_is_one_line(tmp_path):
    data = make_letters(tmp_path / "d", per_class=4)
    out = tmp_path / "run"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert_error(train_on(tmp_path, data),
                     f"Error: cannot write {out / 'config.yaml'}: Permission denied")
    finally:
        out.chmod(0o700)

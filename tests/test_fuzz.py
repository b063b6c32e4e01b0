"""Fuzzing the loaders: random bytes and mutated PNG/JPEG/GIF, ZIP, TAR, NPZ and YAML files,
from a fixed seed, go through the functions that read user files. Whatever the input, the
only exceptions that may escape are nnletters' own (DataError, CheckpointError, ConfigError):
never a traceback from Pillow, zipfile, tarfile, NumPy or PyYAML.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nnletters.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from nnletters.config import load_config
from nnletters.data import load_dataset
from nnletters.data.images import decode_image
from nnletters.errors import CheckpointError, ConfigError, DataError, NNLettersError
from nnletters.nn.model import MLP
from nnletters.prediction import predict_images
from tests.conftest import draw_letter

ROUNDS = 120  # mutations per format; the whole file runs in a few seconds

# Pillow warns about the corrupt TIFF/EXIF blocks it meets; warnings are not failures here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random change of the kinds that break parsers: flipped bytes, a cut, an insert,
    a repeated block, or a header field overwritten with an extreme value."""
    buf = bytearray(data)
    kind = int(rng.integers(6))
    if kind == 0 or not buf:  # flip a few bytes
        for _ in range(int(rng.integers(1, 9))):
            if buf:
                buf[int(rng.integers(len(buf)))] = int(rng.integers(256))
    elif kind == 1:  # truncate
        del buf[int(rng.integers(len(buf))):]
    elif kind == 2:  # insert random bytes
        at = int(rng.integers(len(buf) + 1))
        buf[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    elif kind == 3:  # repeat a block
        a = int(rng.integers(len(buf)))
        b = min(len(buf), a + int(rng.integers(1, 256)))
        buf[a:a] = buf[a:b]
    elif kind == 4:  # extreme 4-byte value somewhere in the first 512 bytes (header fields)
        at = int(rng.integers(max(1, min(len(buf), 512) - 4)))
        buf[at:at + 4] = bytes(rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00",
                                           b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00"]))
    else:  # zero a run of bytes
        a = int(rng.integers(len(buf)))
        buf[a:a + int(rng.integers(1, 128))] = bytes(min(len(buf) - a, 128))
    return bytes(buf)


def only_our_errors(fn: Callable[[], object], allowed: type[NNLettersError]) -> str:
    """Run ``fn``; -> 'ok' or 'refused'. Anything but ``allowed`` fails the test (with the
    input's description in the traceback)."""
    try:
        fn()
    except allowed as exc:
        message = str(exc)
        assert message and "\n" not in message, f"not one line: {message!r}"
        return "refused"
    return "ok"


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def image_seeds() -> list[bytes]:
    glyph = draw_letter("B", size=20)
    frames = [glyph, draw_letter("C", size=20)]
    return [encoded(glyph, "PNG"), encoded(glyph.convert("RGBA"), "PNG"),
            encoded(glyph, "JPEG", quality=80), encoded(glyph.convert("CMYK"), "JPEG"),
            encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]),
            encoded(glyph, "TIFF"), encoded(glyph, "BMP"), encoded(glyph, "WEBP")]


def test_random_bytes_and_mutated_images_give_data_errors_only():
    rng = np.random.default_rng(20240601)
    seeds = image_seeds()
    outcomes = []
    for i in range(ROUNDS * 4):
        if i % 8 == 0:
            data = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
        else:
            data = mutate(seeds[i % len(seeds)], rng)
        outcomes.append(only_our_errors(lambda d=data, n=i: decode_image(d, 28, f"fuzz{n}.png"),
                                        DataError))
    assert "refused" in outcomes and "ok" in outcomes  # the fuzzing reached both sides


def letter_files() -> dict[str, bytes]:
    return {f"top/{c}/{i}.png": encoded(draw_letter(c, size=12, shift=i - 1), "PNG")
            for c in "AB" for i in range(3)}


def tar_bytes(mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, content in letter_files().items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def zip_bytes(compression: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as archive:
        for name, content in letter_files().items():
            archive.writestr(name, content)
    return buf.getvalue()


@pytest.mark.parametrize("suffix, seed", [
    (".tar", lambda: tar_bytes("w")), (".tar.gz", lambda: tar_bytes("w:gz")),
    (".tar.xz", lambda: tar_bytes("w:xz")), (".zip", lambda: zip_bytes(zipfile.ZIP_STORED)),
    (".zip", lambda: zip_bytes(zipfile.ZIP_DEFLATED)),
])
def test_mutated_archives_give_data_errors_only(tmp_path, suffix, seed):
    rng = np.random.default_rng(7)
    good = seed()
    outcomes = []
    for i in range(ROUNDS):
        path = tmp_path / f"f{i}{suffix}"
        path.write_bytes(mutate(good, rng) if i % 10 else
                         rng.integers(0, 256, int(rng.integers(0, 2000)), np.uint8).tobytes())
        outcomes.append(only_our_errors(
            lambda p=path: load_dataset(p, 12, workers=1, cache=False), DataError))
    assert "refused" in outcomes


def test_random_list_files_give_data_errors_only(tmp_path):
    rng = np.random.default_rng(11)
    for name, content in letter_files().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    good = "".join(f"{name} {name.split('/')[1]}\n" for name in letter_files()).encode()
    outcomes = []
    for i in range(ROUNDS):
        path = tmp_path / f"list{i}.txt"
        path.write_bytes(mutate(good, rng))
        outcomes.append(only_our_errors(
            lambda p=path: load_dataset(p, 12, workers=1, cache=False), DataError))
    assert {"ok", "refused"} <= set(outcomes)  # the mutations reach both outcomes


def checkpoint_bytes(tmp_path: Path) -> bytes:
    model = MLP([16, 5, 3], "relu", "he", 0.0, "cross_entropy", np.random.default_rng(0))
    meta = {"classes": ["a", "b", "c"], "image_size": 4, "layer_sizes": [16, 5, 3],
            "activation": "relu", "loss": "cross_entropy", "init": "he", "dropout": 0.0,
            "label_smoothing": 0.0, "batch_norm": False, "light_on_dark": True}
    save_checkpoint(tmp_path / "good.npz", model, meta)
    return (tmp_path / "good.npz").read_bytes()


def load_and_build(path: Path) -> None:
    model_from_checkpoint(load_checkpoint(path))


def test_mutated_checkpoints_give_checkpoint_errors_only(tmp_path):
    rng = np.random.default_rng(3)
    good = checkpoint_bytes(tmp_path)
    outcomes = []
    for i in range(ROUNDS * 2):
        path = tmp_path / f"c{i}.npz"
        path.write_bytes(mutate(good, rng))
        outcomes.append(only_our_errors(lambda p=path: load_and_build(p), CheckpointError))
    assert "refused" in outcomes


HOSTILE_VALUES = [None, True, -1, 0, 2**70, 1.5, float("nan"), "", "x" * 300, [], [0],
                  [-3, 2], ["a", 1], {}, {"a": 1}, [[1]], "relu", 1e308]


def test_hostile_checkpoint_metadata_gives_checkpoint_errors_only(tmp_path):
    """Well-formed npz files whose metadata holds values of every wrong type in every field
    (what a hand-edited or crafted checkpoint could hold)."""
    checkpoint_bytes(tmp_path)
    with np.load(tmp_path / "good.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["meta"][()]))
    image = tmp_path / "a.png"
    draw_letter("A", size=4).save(image)
    rng = np.random.default_rng(5)
    outcomes = []
    for i in range(ROUNDS * 2):
        bad = dict(meta)
        for key in rng.choice(sorted(meta), size=int(rng.integers(1, 3)), replace=False):
            bad[str(key)] = HOSTILE_VALUES[int(rng.integers(len(HOSTILE_VALUES)))]
        path = tmp_path / f"m{i}.npz"
        np.savez(path, **{**arrays, "meta": np.array(json.dumps(bad))})
        outcomes.append(only_our_errors(lambda p=path: predict_one(p, image), CheckpointError))
    assert "refused" in outcomes


def predict_one(checkpoint: Path, image: Path) -> None:
    """Load, rebuild and predict: the metadata fields predict reads are used too."""
    results, errors = predict_images([image], checkpoint)
    assert len(results) + len(errors) == 1


def test_mutated_yaml_gives_config_errors_only(tmp_path):
    rng = np.random.default_rng(9)
    good = (b"seed: 3\nname: fuzz\ndata: {path: somewhere, image_size: 28, val_fraction: 0.1}\n"
            b"model: {hidden: [64, 32], activation: relu, dropout: 0.1}\n"
            b"optim: {name: adam, lr: 1.0e-3}\nschedule: {name: cosine, warmup_epochs: 1}\n"
            b"train: &t {epochs: 3, batch_size: 16, early_stopping: {patience: 2}}\n")
    outcomes = []
    for i in range(ROUNDS * 2):
        path = tmp_path / f"c{i}.yaml"
        path.write_bytes(mutate(good, rng) if i % 10 else
                         rng.integers(0, 256, int(rng.integers(0, 200)), np.uint8).tobytes())
        overrides = [] if i % 3 else [mutate(b"optim.lr=0.1", rng).decode("utf-8", "replace")]
        outcomes.append(only_our_errors(lambda p=path, o=overrides: load_config(p, o),
                                        ConfigError))
    assert "refused" in outcomes

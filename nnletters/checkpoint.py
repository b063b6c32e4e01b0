"""Checkpoints: arrays plus JSON metadata in one ``.npz``, never a pickle.

Layout of ``last.npz`` / ``best.npz``:
    model/<i>/<name>   float32 parameters of the i-th parameter layer (``model/0/W``...)
    optim/<name>       last.npz: the optimiser's state (velocity, or Adam's m, v, t); best.npz
                       has none (older runs wrote it there too; nothing reads it)
    ema/<name>         last.npz with optim.ema: the weight average (theta, updates, buffers)
    meta               a 0-d unicode array holding a JSON object: format version, epoch, class
                       names, image size, layer sizes, activation, loss, RNG state, best metric,
                       schedule and early-stopping state, and the resolved config

Loading uses ``allow_pickle=False`` so an npz holding object arrays is refused, never
unpickled. Writes are atomic (temp file + os.replace), so a crash leaves the old file.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnletters.errors import CheckpointError, one_line
from nnletters.fileio import ZIP_MAGIC, write_with

FORMAT_VERSION = 1
KIND = "nnletters-checkpoint"
MAX_CHECKPOINT_BYTES = 4 * 2**30
"""A checkpoint declaring more bytes of arrays than this is refused before reading."""


@dataclass
class Checkpoint:
    path: Path
    meta: dict[str, Any]
    model_state: dict[str, np.ndarray]
    optim_state: dict[str, np.ndarray] = field(default_factory=dict)
    ema_state: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])


def save_checkpoint(path: str | Path, model, meta: dict[str, Any], optimizer=None,
                    extra: dict[str, np.ndarray] | None = None) -> None:
    """Write the model's arrays (and the optimiser's state) with ``meta`` atomically;
    ``extra`` adds arrays under their own prefixed keys (``ema/...``). The live arrays are
    written as they are (no copies: the write is over before this returns)."""
    arrays = {f"model/{k}": v for k, v in model.state_dict(copy=False).items()}
    if optimizer is not None:
        arrays.update({f"optim/{k}": v for k, v in optimizer.state_dict(copy=False).items()})
    arrays.update(extra or {})
    meta = {"kind": KIND, "format_version": FORMAT_VERSION, **meta}
    arrays["meta"] = np.array(json.dumps(meta))
    write_with(path, lambda fh: write_npz(fh, arrays))


def write_npz(fh, arrays: dict[str, np.ndarray]) -> None:
    """What ``np.savez(fh, **arrays)`` writes (an uncompressed zip of ``<name>.npy``
    members, each a version 1.0 .npy header and the array's bytes), read straight from each
    array's memory: ``np.savez`` first copies every array into a bytes object, which for the
    recipe's last.npz is 21 MB more memory and copying per epoch."""
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            array = np.asarray(value, order="C")
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(
                    member, np.lib.format.header_data_from_array_1_0(array))
                member.write(array.reshape(-1).view(np.uint8))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate a checkpoint; any problem is a one-line CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a .npz checkpoint")
    arrays = _read_arrays(path)
    if "meta" not in arrays:
        raise CheckpointError(f"{path}: not an nnletters checkpoint (no 'meta' entry)")
    meta = _parse_meta(path, arrays.pop("meta"))
    model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    optim_state = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    ema_state = {k[len("ema/"):]: v for k, v in arrays.items() if k.startswith("ema/")}
    _check_shapes(path, meta, model_state)
    return Checkpoint(path, meta, model_state, optim_state, ema_state)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``; CheckpointError for anything else, pickles above all.

    The zip header is checked first because ``np.load`` would take any other file for a
    plain ``.npy`` array or a pickle; the declared sizes are checked before anything is
    decompressed, so a small file cannot claim gigabytes."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if magic not in ZIP_MAGIC:
        raise CheckpointError(f"{path}: not an nnletters checkpoint (not an .npz archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
        if declared > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(f"{path}: declares {declared} bytes of arrays, above the "
                                  f"limit of {MAX_CHECKPOINT_BYTES}; refused")
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except CheckpointError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise CheckpointError(f"{path}: holds object arrays (pickled data); refused, "
                                  "a checkpoint holds plain arrays only") from None
        raise CheckpointError(f"{path}: not a valid checkpoint "
                              f"({one_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001  zipfile and numpy raise many types on bad input
        raise CheckpointError(f"{path}: not a readable .npz checkpoint (truncated or corrupt: "
                              f"{type(exc).__name__}: {one_line(exc)})") from None



def _parse_meta(path: Path, raw: np.ndarray) -> dict[str, Any]:
    try:
        if raw.dtype.kind not in "US" or raw.ndim != 0:
            raise TypeError(f"a {raw.dtype} array of shape {raw.shape}, expected one string")
        meta = json.loads(str(raw[()]))
    except (ValueError, TypeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({one_line(exc)})") from None
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        raise CheckpointError(f"{path}: not an nnletters checkpoint (metadata kind "
                              f"{meta.get('kind') if isinstance(meta, dict) else None!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {version!r} is newer than this "
                              f"nnletters reads ({FORMAT_VERSION}); upgrade nnletters")
    for key in ("classes", "image_size", "layer_sizes", "activation", "loss"):
        if key not in meta:
            raise CheckpointError(f"{path}: metadata lacks '{key}'")
    _check_meta_values(path, meta)
    return meta


def _check_meta_values(path: Path, meta: dict[str, Any]) -> None:
    """The fields that rebuild the model must have the types and values a model accepts."""
    from nnletters.nn.functional import ACTIVATIONS, LOSSES

    def positive_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    def fraction(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1

    checks = {
        "classes": (lambda v: isinstance(v, list) and bool(v)
                    and all(isinstance(c, str) for c in v), "a list of class names"),
        "image_size": (positive_int, "a positive whole number"),
        "layer_sizes": (lambda v: isinstance(v, list) and len(v) >= 2
                        and all(positive_int(n) for n in v), "a list of positive sizes"),
        "activation": (lambda v: isinstance(v, str) and v in ACTIVATIONS,
                       "one of " + ", ".join(ACTIVATIONS)),
        "loss": (lambda v: isinstance(v, str) and v in LOSSES, "one of " + ", ".join(LOSSES)),
        "init": (lambda v: v in ("he", "xavier"), "he or xavier"),
        "dropout": (fraction, "a number in [0, 1)"),
        "label_smoothing": (fraction, "a number in [0, 1)"),
        "batch_norm": (lambda v: isinstance(v, bool), "true or false"),
        "light_on_dark": (lambda v: isinstance(v, bool), "true or false"),
        "glyph_fill": (lambda v: isinstance(v, int | float) and not isinstance(v, bool)
                       and 0 < v <= 1, "a number in (0, 1]"),
    }
    for key, (ok, expected) in checks.items():
        if key in meta and not ok(meta[key]):
            raise CheckpointError(f"{path}: metadata '{key}' is {str(meta[key])[:80]!r}, "
                                  f"expected {expected}")


def _check_shapes(path: Path, meta: dict[str, Any], state: dict[str, np.ndarray]) -> None:
    sizes = meta["layer_sizes"]
    if not isinstance(sizes, list) or len(sizes) < 2:
        raise CheckpointError(f"{path}: metadata layer_sizes {sizes!r} is not a list of sizes")
    if len(meta["classes"]) != sizes[-1]:
        raise CheckpointError(f"{path}: {len(meta['classes'])} class names but the output "
                              f"layer has {sizes[-1]} units")
    dense_keys = sorted((k for k in state if k.endswith("/W")), key=lambda k: int(k.split("/")[0]))
    shapes = [tuple(state[k].shape) for k in dense_keys]
    expected = list(zip(sizes[:-1], sizes[1:], strict=True))
    if shapes != expected:
        raise CheckpointError(f"{path}: weight shapes {shapes} disagree with layer sizes "
                              f"{sizes} in its metadata")
    for key, array in state.items():
        if array.dtype != np.float32:
            raise CheckpointError(f"{path}: array model/{key} is {array.dtype}, "
                                  "expected float32")


def model_from_checkpoint(ckpt: Checkpoint):
    """Rebuild the MLP a checkpoint describes and load its weights."""
    from nnletters.nn.model import MLP

    m = ckpt.meta
    # The generator only fills the initial weights, which the checkpoint overwrites.
    model = MLP(m["layer_sizes"], m["activation"], m.get("init", "he"), m.get("dropout", 0.0),
                m["loss"], np.random.default_rng(0), m.get("label_smoothing", 0.0),
                m.get("batch_norm", False))
    try:
        model.load_state_dict(ckpt.model_state)
    except (KeyError, ValueError) as exc:  # KeyError's str() would add quotes
        raise CheckpointError(f"{ckpt.path}: {exc.args[0] if exc.args else exc}") from None
    return model


def check_image_input(ckpt: Checkpoint) -> None:
    """A model that reads images takes image_size squared inputs; refuse a checkpoint whose
    metadata says otherwise before any image is fed to it."""
    n_in, size = ckpt.meta["layer_sizes"][0], ckpt.image_size
    if n_in != size * size:
        raise CheckpointError(f"{ckpt.path}: the model takes {n_in} inputs but image_size "
                              f"{size} gives {size * size} pixels")


def resolve_checkpoint(target: str | Path | None, runs_dir: str | Path = "runs") -> Path:
    """A checkpoint path from a run folder, a file, or (None) the most recent run."""
    if target is None:
        run = latest_run(runs_dir)
        if run is None:
            raise CheckpointError(f"no runs found under {runs_dir}/; train one first or "
                                  "name a run folder or checkpoint")
        target = run
    path = Path(target)
    if path.is_dir():
        for name in ("best.npz", "last.npz"):
            if (path / name).exists():
                return path / name
        raise CheckpointError(f"{path}: no checkpoint (best.npz or last.npz) in this folder")
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def latest_run(runs_dir: str | Path = "runs") -> Path | None:
    """The most recently modified folder under ``runs_dir`` that holds a checkpoint."""
    root = Path(runs_dir)
    if not root.is_dir():
        return None
    runs = [d for d in root.iterdir()
            if d.is_dir() and ((d / "best.npz").exists() or (d / "last.npz").exists())]
    return max(runs, key=lambda d: d.stat().st_mtime, default=None)

"""Decoded datasets kept on disk between runs, so a second load takes a fraction of a second.

One ``.npz`` file per (source, image size): pixels as uint8 (a quarter of float32's size),
labels, and the names as UTF-8 JSON in byte arrays, so loading needs no pickle
(``allow_pickle=False``). The file name carries a key hashed from everything that changes
the arrays: the source's absolute path, the size and mtime of every file read, the image
size, the decoder's limits and version. A changed file gives a new key, the stale entry of
the same source is removed when the new one is written, and an unreadable cache file is
simply rebuilt. Writes are atomic (``nnletters.fileio``: a temp file, then ``os.replace``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL

from nnletters.data import images
from nnletters.data.dataset import Dataset
from nnletters.errors import NNLettersError
from nnletters.fileio import write_with

FORMAT_VERSION = 1
ENV_VAR = "NNLETTERS_CACHE_DIR"
_ENTRY = re.compile(r"^[\w.-]+-[0-9a-f]{8}-s\d+-[0-9a-f]{16}\.npz$")


def default_cache_dir() -> Path:
    """$NNLETTERS_CACHE_DIR, else $XDG_CACHE_HOME/nnletters, else ~/.cache/nnletters."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nnletters"


def cache_file(cache_dir: str | Path | None, source: str, image_size: int,
               key_parts: dict[str, Any]) -> tuple[Path, str]:
    """-> (cache file path, full key). ``source`` names the data (an absolute path, or e.g.
    "synthetic"); ``key_parts`` is anything JSON-able that identifies its contents."""
    parts = {"format": FORMAT_VERSION, "source": source, "image_size": image_size,
             "max_pixels": images.MAX_PIXELS, "pillow": PIL.__version__, **key_parts}
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    where = hashlib.sha256(source.encode()).hexdigest()[:8]
    stem = re.sub(r"[^\w.-]+", "_", Path(source).name)[:40] or "data"
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return folder / f"{stem}-{where}-s{image_size}-{key[:16]}.npz", key


def store(file: Path, key: str, ds: Dataset, extra: dict[str, Any] | None = None) -> None:
    """Write ``ds`` atomically (X: its uint8 pixels, or float32 multiples of 1/255 as decoded
    images give), and remove older entries of the same source and size. Failure to write
    only warns."""
    meta = {"format": FORMAT_VERSION, "key": key, "extra": extra or {}}
    arrays = {
        "X": ds.X if ds.X.dtype == np.uint8 else np.rint(ds.X * np.float32(255)).astype(np.uint8),
        "y": ds.y.astype(np.int64),
        "split": (np.full(len(ds.y), -1, np.int8) if ds.split is None
                  else ds.split.astype(np.int8)),
        "meta": _json_bytes(meta), "classes": _json_bytes(ds.classes),
        "paths": _json_bytes(ds.paths), "skipped": _json_bytes(ds.skipped),
    }
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        # uncompressed: loads several times faster
        write_with(file, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]
    except (OSError, NNLettersError) as exc:
        warnings.warn(f"cannot write dataset cache {file}: {exc}", stacklevel=2)
        return
    _remove_stale(file)


def fetch(file: Path, key: str, *, as_pixels: bool = False
          ) -> tuple[Dataset, dict[str, Any]] | None:
    """The cached dataset and its ``extra`` dict, or None when absent, stale or unreadable.
    With ``as_pixels`` its X stays uint8 (see ``Dataset``), else float32 in [0, 1]."""

    try:
        with np.load(file, allow_pickle=False) as z:
            meta = _json_load(z["meta"])
            if meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
                return None
            pixels, y, split = z["X"], z["y"], z["split"]
            classes, paths = _json_load(z["classes"]), _json_load(z["paths"])
            skipped = [tuple(s) for s in _json_load(z["skipped"])]
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None  # corrupt, or from another version: the caller rebuilds and overwrites it
    n = len(y)
    if (pixels.ndim != 2 or pixels.dtype != np.uint8 or len(pixels) != n or len(paths) != n
            or split.shape != (n,) or (n and (y.min() < 0 or y.max() >= len(classes)))):
        return None
    ds = Dataset(X=pixels if as_pixels else images.to_unit_float(pixels),
                 y=y.astype(np.int64), classes=list(classes),
                 paths=list(paths), skipped=skipped,
                 split=None if (split < 0).all() else split.astype(np.int8))
    return ds, meta.get("extra", {})


@dataclass(frozen=True)
class Entry:
    """One cache file, for ``nnletters data cache``."""

    path: Path
    size: int      # bytes
    mtime: float   # seconds since the epoch


def entries(cache_dir: str | Path | None = None) -> list[Entry]:
    """The cache files in ``cache_dir`` (default folder when None), newest first."""
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if _ENTRY.match(path.name) and path.is_file():
            st = path.stat()
            found.append(Entry(path, st.st_size, st.st_mtime))
    return sorted(found, key=lambda e: e.mtime, reverse=True)


def clear(cache_dir: str | Path | None = None) -> list[Entry]:
    """Remove the cache files (and leftover temp files) in ``cache_dir``; -> what was removed.
    Only files named like cache entries are touched, whatever folder is given."""
    removed = entries(cache_dir)
    for entry in removed:
        entry.path.unlink(missing_ok=True)
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):  # fileio's temp files: .<entry>.<random>.tmp
            if _ENTRY.match(tmp.name[1:].rsplit(".", 2)[0]):
                tmp.unlink(missing_ok=True)
    return removed


def _remove_stale(file: Path) -> None:
    """Older entries of the same source and image size (same name up to the content key)."""
    prefix = file.name[: -len("0123456789abcdef.npz")]
    for other in file.parent.glob(f"{prefix}*.npz"):
        if other != file and _ENTRY.match(other.name):
            other.unlink(missing_ok=True)


def _json_bytes(value: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(value, ensure_ascii=False).encode(), dtype=np.uint8)


def _json_load(array: np.ndarray) -> Any:
    return json.loads(array.tobytes().decode())

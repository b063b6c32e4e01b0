"""What identifies a run's data, recorded in its folder as ``data.json``, and the checks that
let eval, report and resume re-create exactly that data or refuse with the reason.

Synthetic letters depend on the fonts installed: a browser install that adds twenty faces
re-renders every split differently from the same seed. So a run records

    {"format": 1,
     "source": {"kind": "synthetic" | "path", "path": ..., "n": 13000, "sha256": ...},
     "splits": {"train": {"n": 10400, "sha256": ...}, "val": ..., "test": ...},
     "synthetic": {"fonts": [{"file": "DejaVuSans.ttf", "sha256": ..., "path": ...}, ...],
                   "pillow": "11.0.0", "freetype": "2.13.2", "render_version": 2}}

A digest is the SHA-256 of the class names, the labels (int64) and the pixels (float32) in
the order the loader gives them, so equal digests mean the same images with the same labels.
Re-creating a synthetic split draws from the recorded font files, found on this machine by
file name and checked by hash, never from whatever fonts are installed now.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from nnletters.data.images import chunk_rows, to_unit_float
from nnletters.errors import DataError
from nnletters.fileio import read_json, write_json

RECORD_NAME = "data.json"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- digests


def dataset_digest(ds, chunk: int | None = None) -> dict[str, Any]:
    """``{"n": images, "sha256": hex}`` of a Dataset's classes, ``y`` and ``X`` (as float32
    in [0, 1], also when X still holds uint8 pixels). X is hashed ``chunk`` rows at a time
    (default: about 1 MiB): the same digest as in one piece, without a copy of all of it."""
    h = hashlib.sha256(json.dumps(list(ds.classes)).encode())
    h.update(np.ascontiguousarray(ds.y, dtype="<i8").tobytes())
    chunk = chunk or chunk_rows(ds.X[0].size if len(ds.X) else 1)
    for start in range(0, len(ds.X), chunk):
        rows = ds.X[start:start + chunk]
        if rows.dtype == np.uint8:
            rows = to_unit_float(rows)
        h.update(np.ascontiguousarray(rows, dtype="<f4"))
    return {"n": int(len(ds.y)), "sha256": h.hexdigest()}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def font_entries(files: list[str]) -> list[dict[str, str]]:
    """One ``{"file", "sha256", "path"}`` per font file, sorted by file name."""
    paths = sorted((Path(f) for f in files), key=lambda p: (p.name, str(p)))
    return [{"file": p.name, "sha256": file_sha256(p), "path": str(p)} for p in paths]


# --------------------------------------------------------------------------- the record


def data_record(data_cfg, splits) -> dict[str, Any]:
    """data.json's content for ``splits`` loaded from the config's ``data`` section."""
    record: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "source": {"kind": data_cfg.source, "path": data_cfg.path, **splits.source_digest},
        "splits": {name: dataset_digest(getattr(splits, name)) for name in SPLITS}}
    if data_cfg.source == "synthetic":
        record["synthetic"] = {"fonts": font_entries(splits.font_files), **_renderer()}
    return record


def _renderer() -> dict[str, Any]:
    import PIL
    from PIL import features

    from nnletters.data.synthetic import RENDER_VERSION

    return {"pillow": PIL.__version__, "freetype": features.version("freetype2"),
            "render_version": RENDER_VERSION}


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    write_json(Path(run_dir) / RECORD_NAME, record)


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The run's data.json, or None for a run made before nnletters wrote one."""
    path = Path(run_dir) / RECORD_NAME
    if not path.exists():
        return None
    try:
        record = read_json(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("splits"), dict):
        raise DataError(f"{path}: not a data record (no 'splits')")
    return record


# --------------------------------------------------------------------------- fonts


def recorded_fonts(record: dict[str, Any] | None, where: str) -> list[Path] | None:
    """The recorded font files, found on this machine by name and SHA-256; None when the run
    is not synthetic or has no record. DataError naming the first missing or changed font."""
    if record is None or "synthetic" not in record:
        return None
    from nnletters.data.fonts import candidate_fonts

    wanted = record["synthetic"]["fonts"]
    by_name: dict[str, list[Path]] = {}
    for entry in wanted:  # the recorded path first, then any other copy this machine has
        by_name.setdefault(entry["file"], []).append(Path(entry["path"]))
    for path in candidate_fonts():
        if path.name in by_name:
            by_name[path.name].append(path)
    found, changed, missing = [], [], []
    for entry in wanted:
        places = [p for p in dict.fromkeys(by_name[entry["file"]]) if p.is_file()]
        match = next((p for p in places if file_sha256(p) == entry["sha256"]), None)
        if match is not None:
            found.append(match)
        else:
            (changed if places else missing).append(entry["file"])
    if missing or changed:
        raise DataError(_fonts_problem(where, len(wanted), missing, changed))
    return found


def _fonts_problem(where: str, n: int, missing: list[str], changed: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} not on this machine ({_names(missing)})")
    if changed:
        parts.append(f"{len(changed)} present but different (sha256: {_names(changed)})")
    return (f"{where}: cannot re-create the run's synthetic letters: of the {n} fonts in "
            f"{RECORD_NAME}, {' and '.join(parts)}")


def _names(files: list[str], show: int = 3) -> str:
    more = f" and {len(files) - show} more" if len(files) > show else ""
    return ", ".join(files[:show]) + more


# --------------------------------------------------------------------------- checks


def split_problem(record: dict[str, Any], name: str, ds) -> str | None:
    """Why ``ds`` is not the recorded split ``name`` (None when it is)."""
    want = record["splits"].get(name)
    if want is None:
        return None
    got = dataset_digest(ds)
    if got == want:
        return None
    label = {"val": "validation"}.get(name, name)
    if got["n"] != want["n"]:
        return (f"the {label} split has {got['n']} images, {want['n']} when the run was "
                f"trained")
    return (f"the {label} split's images differ from those the run was trained and tested "
            f"on (sha256 {got['sha256'][:12]} now, {want['sha256'][:12]} in {RECORD_NAME})"
            + _renderer_change(record))


def _renderer_change(record: dict[str, Any]) -> str:
    then = record.get("synthetic")
    if not then:
        return ""
    now = _renderer()
    diff = [f"{k} {then.get(k)} then, {now[k]} now" for k in ("pillow", "freetype",
                                                               "render_version")
            if then.get(k) != now[k]]
    return f"; {', '.join(diff)}" if diff else ""


def check_splits(record: dict[str, Any], splits, where: str) -> None:
    """DataError unless every split is the recorded one (for a resume)."""
    for name in SPLITS:
        problem = split_problem(record, name, getattr(splits, name))
        if problem:
            raise DataError(f"{where}: {problem}; a resume must train on the run's own data")


def run_test_split(run_dir: Path, cfg, progress: bool = False):
    """The test split of the run in ``run_dir`` (``cfg`` its config), re-created from the
    recorded fonts and checked against data.json: DataError saying what differs. A run
    without data.json (made before it existed) is re-created as its config says, with a
    warning that it may not be the split it was measured on."""
    from nnletters.data import load_splits

    record = read_record(run_dir)
    if record is None:
        what = "fonts" if cfg.data.source == "synthetic" else "files"
        warnings.warn(f"{run_dir}: no {RECORD_NAME} (a run made before nnletters recorded its "
                      f"data): its test split is re-created from this machine's {what}, which "
                      f"may differ from the split it was tested on", stacklevel=2)
    fonts = recorded_fonts(record, str(run_dir))
    ds = load_splits(cfg.data, cfg.seed, progress=progress, fonts=fonts).test
    problem = record and split_problem(record, "test", ds)
    if problem:
        raise DataError(f"{run_dir}: {problem}; pass --data PATH to evaluate on other data")
    return ds


def warn_if_changed(run_dir: Path, data_path: str | Path, ds) -> None:
    """``--data`` naming the run's own source: warn (one line) when it changed since.
    ``ds``: the source as training read it, or a function loading it (called only then)."""
    record = read_record(run_dir)
    source = (record or {}).get("source") or {}
    if not source.get("path") or Path(source["path"]) != Path(data_path).resolve():
        return
    got = dataset_digest(ds() if callable(ds) else ds)
    if "sha256" in source and got["sha256"] != source["sha256"]:
        warnings.warn(f"{data_path}: changed since the run was trained ({got['n']} images now, "
                      f"{source['n']} then, other pixels or labels); evaluating it as it is now",
                      stacklevel=2)

"""``nnletters predict``: the letter in any image a user hands over, with probabilities.

Kept light on purpose: this path imports NumPy and Pillow only (no YAML, no tqdm), so that a
one-image prediction answers in a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nnletters.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def expand_paths(paths: list[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files as given, directories expanded to the images in them (sorted).

    Returns (image paths, errors) where errors are (path, message) for bad arguments."""
    files: list[Path] = []
    errors: list[tuple[str, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append((str(path), f"{path}: directory holds no images"))
            files.extend(found)
        elif not path.exists():
            errors.append((str(path), f"{path}: no such file"))
        else:
            files.append(path)
    return files, errors


def predict_images(paths: list[str | Path], target: str | Path | None = None,
                   top_k: int = 3) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Predict each image; returns (results, errors). One bad image does not stop the rest.

    Each result is ``{path, label, probability, top_k: [[label, p], ...]}``."""
    from nnletters.checkpoint import (
        check_image_input,
        load_checkpoint,
        model_from_checkpoint,
        resolve_checkpoint,
    )
    from nnletters.data.images import prepare_user_image

    ckpt = load_checkpoint(resolve_checkpoint(target))
    check_image_input(ckpt)
    model = model_from_checkpoint(ckpt)
    files, errors = expand_paths(paths)
    light_on_dark = bool(ckpt.meta.get("light_on_dark", True))
    fill = float(ckpt.meta.get("glyph_fill", 0.9))
    rows, good = [], []
    for path in files:
        try:
            rows.append(prepare_user_image(path, ckpt.image_size, light_on_dark, fill))
            good.append(path)
        except DataError as exc:
            errors.append((str(path), str(exc)))
    results = []
    if rows:
        probs = model.predict_proba(np.stack(rows).astype(np.float32, copy=False))
        k = max(1, min(top_k, len(ckpt.classes)))
        for path, p in zip(good, probs, strict=True):
            order = np.argsort(-p, kind="stable")[:k]
            top = [[ckpt.classes[i], round(float(p[i]), 6)] for i in order]
            results.append({"path": str(path), "label": top[0][0], "probability": top[0][1],
                            "top_k": top})
    return results, errors

"""A trained model ready to read letters: ``load_model(run or checkpoint)`` -> ``Model``, whose
``prepare`` turns image files (or Pillow images, or arrays) into the vectors the network
reads and whose ``predict`` names the letter with probabilities. ``nnletters predict`` is
``predict_images`` over files and folders.

Kept light on purpose: this path imports NumPy and Pillow only (no YAML, no tqdm), so that a
one-image prediction answers in a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nnletters.data.images import is_image_name
from nnletters.errors import DataError

F32 = NDArray[np.float32]


class Model:
    """A network with what its checkpoint records about the images it was trained on.

    ``network`` is the ``nnletters.nn.model.MLP``; ``classes``, ``image_size``,
    ``light_on_dark`` (polarity of the training glyphs) and ``glyph_fill`` (how much of the
    frame they span) decide how a user's image is prepared."""

    def __init__(self, network, meta: dict[str, Any], path: Path) -> None:
        self.network, self.meta, self.path = network, meta, Path(path)
        self.classes: list[str] = list(meta["classes"])
        self.image_size = int(meta["image_size"])
        self.light_on_dark = bool(meta.get("light_on_dark", True))
        self.glyph_fill = float(meta.get("glyph_fill", 0.9))

    def __repr__(self) -> str:
        return f"Model({self.network.describe()}, classes {''.join(self.classes)}, {self.path})"

    @property
    def run_dir(self) -> Path | None:
        """The run folder the checkpoint lives in (None for a lone .npz)."""
        return self.path.parent if (self.path.parent / "config.yaml").exists() else None

    def prepare(self, images: Iterable[Any]) -> F32:
        """Image files, Pillow images or 2-D arrays -> (N, S*S) float32 in [0, 1]: exactly
        the vectors ``predict`` feeds the network (so any other runtime can be fed them)."""
        rows = [self._prepare_one(image) for image in images]
        if not rows:
            return np.zeros((0, self.image_size * self.image_size), dtype=np.float32)
        return np.stack(rows).astype(np.float32, copy=False)

    def _prepare_one(self, image: Any) -> F32:
        from nnletters.data.images import prepare_gray, prepare_user_image

        args = (self.image_size, self.light_on_dark, self.glyph_fill)
        if isinstance(image, str | Path):
            return prepare_user_image(image, *args)
        gray = np.asarray(image.convert("L") if hasattr(image, "convert") else image)
        if gray.ndim != 2:
            raise DataError(f"expected a 2-D grey image, got an array of shape {gray.shape}")
        if gray.dtype != np.uint8:  # floats in [0, 1]
            gray = np.clip(np.rint(np.asarray(gray, np.float64) * 255), 0, 255).astype(np.uint8)
        return prepare_gray(gray, *args)

    def probabilities(self, X: F32) -> F32:
        """(N, S*S) prepared vectors -> (N, classes) float32 probabilities."""
        return self.network.predict_proba(np.asarray(X, dtype=np.float32))

    def predict(self, images: Sequence[Any], top_k: int = 3) -> list[dict[str, Any]]:
        """Each image's most likely letters: ``{label, probability, top_k: [[label, p]...]}``
        (plus ``path`` for a file)."""
        return self.ranked(self.probabilities(self.prepare(images)), images, top_k)

    def ranked(self, probs: F32, images: Sequence[Any], top_k: int = 3) -> list[dict[str, Any]]:
        """``predict``'s result dicts from (N, classes) probabilities of ``images``."""
        k = max(1, min(top_k, len(self.classes)))
        results = []
        for image, p in zip(images, probs, strict=True):
            order = np.argsort(-p, kind="stable")[:k]
            top = [[self.classes[i], round(float(p[i]), 6)] for i in order]
            result = {"label": top[0][0], "probability": top[0][1], "top_k": top}
            if isinstance(image, str | Path):
                result = {"path": str(image), **result}
            results.append(result)
        return results


def load_model(target: str | Path | None = None) -> Model:
    """The model of a run folder (its best.npz, else last.npz), of a checkpoint file, or
    (None) of the most recent run under runs/."""
    from nnletters.checkpoint import (
        check_image_input,
        load_checkpoint,
        model_from_checkpoint,
        resolve_checkpoint,
    )

    ckpt = load_checkpoint(resolve_checkpoint(target))
    check_image_input(ckpt)
    return Model(model_from_checkpoint(ckpt), ckpt.meta, ckpt.path)


def expand_paths(paths: list[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files as given, directories expanded to the images in them (sorted).

    Returns (image paths, errors) where errors are (path, message) for bad arguments."""
    files: list[Path] = []
    errors: list[tuple[str, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and is_image_name(p.name))
            if not found:
                errors.append((str(path), f"{path}: directory holds no images"))
            files.extend(found)
        elif not path.exists():
            errors.append((str(path), f"{path}: no such file"))
        else:
            files.append(path)
    return files, errors


def prepare_files(model: Model, paths: list[str | Path]
                  ) -> tuple[F32, list[Path], list[tuple[str, str]]]:
    """Files and folders -> (X (N, S*S) float32 of the readable images, their paths,
    errors as (path, message)). One bad image does not stop the rest."""
    files, errors = expand_paths(paths)
    rows, good = [], []
    for path in files:
        try:
            rows.append(model.prepare([path]))
            good.append(path)
        except DataError as exc:
            errors.append((str(path), str(exc)))
    return (np.concatenate(rows) if rows else model.prepare([])), good, errors


def predict_images(paths: list[str | Path], target: str | Path | None = None,
                   top_k: int = 3) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Predict each image; returns (results, errors). One bad image does not stop the rest.

    Each result is ``{path, label, probability, top_k: [[label, p], ...]}``."""
    model = load_model(target)
    X, good, errors = prepare_files(model, paths)
    if not good:
        return [], errors
    return model.ranked(model.probabilities(X), good, top_k), errors

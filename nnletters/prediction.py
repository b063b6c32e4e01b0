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
        from nnletters.data.preparation import Look

        self.network, self.meta, self.path = network, meta, Path(path)
        self.classes: list[str] = list(meta["classes"])
        self.look = Look.of(meta)
        self.image_size = self.look.image_size
        self.light_on_dark = self.look.light_on_dark
        self.glyph_fill = self.look.glyph_fill

    def __repr__(self) -> str:
        return f"Model({self.network.describe()}, classes {''.join(self.classes)}, {self.path})"

    @property
    def run_dir(self) -> Path | None:
        """The run folder the checkpoint lives in (None for a lone .npz)."""
        return self.path.parent if (self.path.parent / "config.yaml").exists() else None

    def prepare(self, images: Iterable[Any]) -> F32:
        """Image files, Pillow images or 2-D arrays -> (N, S*S) float32 in [0, 1]: exactly
        the vectors ``predict`` feeds the network (so any other runtime can be fed them).

        ``nnletters.data.preparation.prepare_pixels`` decides: an image in the training format
        passes untouched, a photo or drawing is inverted, cropped and framed as needed."""
        return self.prepare_noting(images)[0]

    def prepare_noting(self, images: Iterable[Any]) -> tuple[F32, list[tuple[str, ...]]]:
        """``prepare`` plus, per image, what was done to it (see ``prepare_pixels``)."""
        return self.prepare_grays([self._gray(image) for image in images])

    def prepare_grays(self, grays: Sequence[NDArray[np.uint8]]
                      ) -> tuple[F32, list[tuple[str, ...]]]:
        """Decoded (H, W) uint8 images -> ``prepare_noting``'s answer. Images handed over
        together are judged together, as ``eval --data`` judges a data set: when there are
        enough of them, their polarity and framing are decided for all of them at once
        (``preparation.judge_set``)."""
        from nnletters.data.images import to_unit_float
        from nnletters.data.preparation import evidence, judge_set, prepare_pixels

        view = judge_set((evidence(gray, self.look) for gray in grays), self.look)
        rows = [np.zeros((0, self.image_size ** 2), dtype=np.uint8)]
        notes = []
        for gray in grays:
            pixels, done = prepare_pixels(gray, self.look, view)
            rows.append(pixels[None])
            notes.append(done)
        return to_unit_float(np.concatenate(rows)), notes

    @staticmethod
    def _gray(image: Any) -> NDArray[np.uint8]:
        """A file, Pillow image or 2-D array (uint8, or floats in [0, 1]) -> (H, W) uint8."""
        from nnletters.data.images import read_file_gray

        if isinstance(image, str | Path):
            return read_file_gray(image)
        gray = np.asarray(image.convert("L") if hasattr(image, "convert") else image)
        if gray.ndim != 2:
            raise DataError(f"expected a 2-D grey image, got an array of shape {gray.shape}")
        if gray.dtype != np.uint8:  # floats in [0, 1]
            gray = np.clip(np.rint(np.asarray(gray, np.float64) * 255), 0, 255).astype(np.uint8)
        return gray

    def probabilities(self, X: F32) -> F32:
        """(N, S*S) prepared vectors -> (N, classes) float32 probabilities."""
        return self.network.predict_proba(np.asarray(X, dtype=np.float32))

    def predict(self, images: Sequence[Any], top_k: int = 3) -> list[dict[str, Any]]:
        """Each image's most likely letters: ``{label, probability, top_k: [[label, p]...],
        checkpoint}`` (plus ``path`` for a file, and ``warning: "no glyph found"`` for a
        blank image)."""
        X, notes = self.prepare_noting(images)
        return self.ranked(self.probabilities(X), images, top_k, notes)

    def ranked(self, probs: F32, images: Sequence[Any], top_k: int = 3,
               notes: Sequence[tuple[str, ...]] | None = None) -> list[dict[str, Any]]:
        """``predict``'s result dicts from (N, classes) probabilities of ``images``."""
        from nnletters.data.preparation import NO_GLYPH

        k = max(1, min(top_k, len(self.classes)))
        results = []
        for n, (image, p) in enumerate(zip(images, probs, strict=True)):
            order = np.argsort(-p, kind="stable")[:k]
            top = [[self.classes[i], round(float(p[i]), 6)] for i in order]
            result = {"label": top[0][0], "probability": top[0][1], "top_k": top}
            if isinstance(image, str | Path):
                result = {"path": str(image), **result}
            if notes is not None and NO_GLYPH in notes[n]:
                result["warning"] = NO_GLYPH
            result["checkpoint"] = str(self.path)
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
                  ) -> tuple[F32, list[Path], list[tuple[str, str]], list[tuple[str, ...]]]:
    """Files and folders -> (X (N, S*S) float32 of the readable images, their paths,
    errors as (path, message), notes per image such as "no glyph found"). One bad image does
    not stop the rest. Files are prepared together (``Model.prepare_grays``), as
    ``eval --data`` prepares a set."""
    from nnletters.data.images import read_file_gray

    files, errors = expand_paths(paths)
    grays, good = [], []
    for path in files:
        try:
            grays.append(read_file_gray(path))
        except DataError as exc:
            errors.append((str(path), str(exc)))
            continue
        good.append(path)
    if not good:
        return model.prepare([]), good, errors, []
    X, notes = model.prepare_grays(grays)
    return X, good, errors, notes


def predict_images(paths: list[str | Path], target: str | Path | None = None,
                   top_k: int = 3) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Predict each image; returns (results, errors). One bad image does not stop the rest.

    Each result is ``{path, label, probability, top_k: [[label, p], ...], checkpoint}``
    (the checkpoint file used), plus ``warning: "no glyph found"`` for a blank image."""
    model = load_model(target)
    X, good, errors, notes = prepare_files(model, paths)
    if not good:
        return [], errors
    return model.ranked(model.probabilities(X), good, top_k, notes), errors

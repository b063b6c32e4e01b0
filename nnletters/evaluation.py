"""Evaluation: accuracy, loss, per-class precision/recall/F1 and the confusion matrix.

    precision_c = TP_c / (TP_c + FP_c)   of the images called c, how many are c
    recall_c    = TP_c / (TP_c + FN_c)   of the images that are c, how many were found
    f1_c        = 2 P R / (P + R)
    confusion[i][j] = number of images of true class i predicted as class j
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nnletters.data.preparation import FRAMED, INVERTED, Look
from nnletters.errors import DataError


def confusion_matrix(y_true: NDArray[np.int64], y_pred: NDArray[np.int64],
                     n_classes: int) -> NDArray[np.int64]:
    """(C, C) int64 counts, rows the true class, columns the prediction."""
    return np.bincount(y_true * n_classes + y_pred,
                       minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_scores(confusion: NDArray[np.int64], classes: list[str]) -> dict[str, dict]:
    tp = np.diag(confusion).astype(np.float64)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0,
                      2 * precision * recall / (precision + recall), 0.0)
    scores = {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                     "f1": float(f1[i]), "support": int(actual[i])}
              for i, name in enumerate(classes)}
    for i, name in enumerate(classes):
        if actual[i] == 0:  # a class the data does not hold: its recall means nothing
            scores[name]["absent"] = True
    return scores


def evaluate_loss_accuracy(model, X: NDArray[np.float32], y: NDArray[np.int64],
                           batch_size: int = 1024) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` (inference mode) on (X, y)."""
    if X.shape[0] == 0:
        return float("nan"), float("nan")
    total_loss, correct = 0.0, 0
    for start in range(0, X.shape[0], batch_size):
        xb, yb = X[start:start + batch_size], y[start:start + batch_size]
        logits = model.forward(xb, train=False)
        correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
        loss, _ = model.loss(logits, yb, out=logits)
        total_loss += loss * len(yb)
    return total_loss / X.shape[0], correct / X.shape[0]


def evaluate(model, X: NDArray[np.float32], y: NDArray[np.int64], classes: list[str],
             batch_size: int = 1024) -> dict[str, Any]:
    """Every figure ``nnletters eval`` reports, as one JSON-ready dict."""
    loss, accuracy = evaluate_loss_accuracy(model, X, y, batch_size)
    pred = predict_classes(model, X, batch_size)
    confusion = confusion_matrix(y, pred, len(classes))
    return {"accuracy": accuracy, "loss": loss, "n": int(X.shape[0]), "classes": classes,
            "per_class": per_class_scores(confusion, classes),
            "confusion": confusion.tolist()}


def predict_classes(model, X: NDArray[np.float32], batch_size: int = 1024) -> NDArray[np.int64]:
    out = np.empty(X.shape[0], dtype=np.int64)
    for start in range(0, X.shape[0], batch_size):
        out[start:start + batch_size] = model.forward(X[start:start + batch_size]).argmax(1)
    return out


def format_evaluation(result: dict[str, Any]) -> str:
    """Human-readable text of ``evaluate``'s result. Classes the data does not hold (an
    evaluation on a subset of the model's classes) get no row, only a line naming them."""
    classes = result["classes"]
    present = [c for c in classes if not result["per_class"][c].get("absent")]
    lines = [f"accuracy {100 * result['accuracy']:.2f}%   loss {result['loss']:.4f}   "
             f"n {result['n']}", "",
             f"{'class':>8} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}"]
    for name in present:
        s = result["per_class"][name]
        lines.append(f"{name:>8} {s['precision']:>9.4f} {s['recall']:>7.4f} {s['f1']:>7.4f} "
                     f"{s['support']:>8}")
    if len(present) < len(classes):
        absent = [c for c in classes if c not in present]
        called = sum(row[classes.index(c)] for row in result["confusion"] for c in absent)
        lines.append(f"not in the data: {' '.join(absent)} (predicted {called} times)")
    width = max(5, *(len(str(v)) for row in result["confusion"] for v in row), *map(len, classes))
    lines += ["", "confusion matrix (rows: true class, columns: predicted)",
              " " * (width + 1) + " ".join(f"{c:>{width}}" for c in classes)]
    for name, row in zip(classes, result["confusion"], strict=True):
        if name in present:
            lines.append(f"{name:>{width}} " + " ".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def align_classes(data_classes: list[str], model_classes: list[str], y: NDArray[np.int64],
                  source: str | Path) -> NDArray[np.int64]:
    """Re-index labels of a dataset to the model's class order, matching by name."""
    unknown = [c for c in data_classes if c not in model_classes]
    if unknown:
        raise DataError(f"{source}: class {unknown[0]!r} is not one the model knows "
                        f"({', '.join(model_classes)})")
    mapping = np.array([model_classes.index(c) for c in data_classes], dtype=np.int64)
    return mapping[y]


def evaluation_data(ckpt_path: Path, image_size: int, data_path: str | Path | None = None,
                    progress: bool = False, look: Look | None = None) -> tuple[Any, str]:
    """(Dataset, description) that ``eval`` and ``report`` judge a checkpoint on: all of
    ``data_path`` when given (a list file: exactly its lines), each image prepared as
    ``predict`` prepares it for a model whose training images look like ``look``; else the
    run's own test split re-created from the config.yaml beside the checkpoint (same data,
    fractions and seed)."""
    if data_path is not None:
        from nnletters.data import load_dataset
        from nnletters.data.fingerprint import warn_if_changed

        ds, source = given_data(data_path, look or Look(image_size), progress), str(data_path)
        # data.json holds the source as training read it (whole, unprepared; cached)
        warn_if_changed(Path(ckpt_path).parent, data_path,
                        lambda: load_dataset(data_path, image_size, progress=progress))
    else:
        from nnletters.config import load_config
        from nnletters.data.fingerprint import run_test_split

        config_path = Path(ckpt_path).parent / "config.yaml"
        if not config_path.exists():
            raise DataError(f"{ckpt_path}: no config.yaml beside it to find the run's test "
                            "split; pass --data PATH")
        cfg = load_config(config_path)
        # The recorded data (fonts included) or a refusal saying what differs: see data.json.
        ds = run_test_split(Path(ckpt_path).parent, cfg, progress=progress)
        source = f"test split of {cfg.data.path or 'synthetic letters'}"
    if len(ds.y) == 0:
        raise DataError(f"{source}: no test images to evaluate on; pass --data PATH")
    return ds, source


def given_data(data_path: str | Path, look: Look, progress: bool = False):
    """All of ``data_path`` prepared for ``look`` (``load_prepared``); a one-line warning
    says how many images had to be inverted or framed to look like the training images."""
    from nnletters.data.loading import load_prepared

    ds, counts = load_prepared(data_path, look, progress=progress)
    note = preparation_note(counts, len(ds.y), look)
    if note:
        warnings.warn(f"{data_path}: {note}", stacklevel=2)
    return ds


def preparation_note(counts: dict[str, int], n: int, look: Look) -> str:
    """'' when every image was already in the training format, else what was adapted."""
    polarity = "light on dark" if look.light_on_dark else "dark on light"
    other = "dark on light" if look.light_on_dark else "light on dark"
    parts = []
    if counts.get(INVERTED):
        parts.append(f"{counts[INVERTED]} of {n} images are {other}, unlike the model's "
                     f"training images ({polarity}): inverted")
    if counts.get(FRAMED):
        parts.append(f"{counts[FRAMED]} of {n} images cropped and framed like its training "
                     f"glyphs (which span {100 * look.glyph_fill:.0f}% of the frame)")
    return "; ".join(parts)


def evaluate_checkpoint(target: str | Path | None, data_path: str | Path | None = None,
                        progress: bool = False) -> dict[str, Any]:
    """``nnletters eval``: a run's own test split, or all of ``data_path``."""
    from nnletters.prediction import load_model

    return evaluate_model(load_model(target), data_path, progress)


def evaluate_model(model, data_path: str | Path | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """``evaluate``'s figures for a ``prediction.Model`` on its run's test split or on all
    of ``data_path`` (prepared as ``predict`` prepares each file), plus the checkpoint."""
    ds, source = evaluation_data(model.path, model.image_size, data_path, progress,
                                 look=model.look)
    y = align_classes(ds.classes, model.classes, ds.y, source)
    result = evaluate(model.network, ds.X, y, model.classes)
    result["checkpoint"] = str(model.path)
    return result

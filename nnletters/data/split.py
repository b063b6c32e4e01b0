"""Seeded, stratified train/val/test splits, and dropping training images that leak.

The split depends only on the labels, the fractions and the seed: a PCG64 bit generator draws
one raw 64-bit key per sample, class by class in sorted order, and each class is cut after
sorting its keys. NumPy keeps the raw streams of its bit generators stable across versions and
platforms (NEP 19), so the same seed gives the same split on any machine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from nnletters.data.dataset import Dataset

Index = npt.NDArray[np.int64]


def stratified_split(y: npt.NDArray[np.integer], val_fraction: float, test_fraction: float,
                     seed: int) -> tuple[Index, Index, Index]:
    """Labels (N,) -> sorted int64 index arrays (train, val, test) covering 0..N-1 once.

    Each class is split on its own, so every split keeps the class proportions. A class of
    three or more samples gives at least one to each split whose fraction is > 0; every class
    keeps at least one training sample.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1
            and val_fraction + test_fraction < 1):
        raise ValueError(f"fractions must be >= 0 with a sum < 1, got val={val_fraction}, "
                         f"test={test_fraction}")
    y = np.asarray(y)
    bits = np.random.PCG64(seed)
    by_class = np.argsort(y, kind="stable")
    _, starts, counts = np.unique(y[by_class], return_index=True, return_counts=True)
    train, val, test = [], [], []
    for start, count in zip(starts, counts, strict=True):
        members = by_class[start:start + count]
        members = members[np.argsort(bits.random_raw(count), kind="stable")]
        n_val, n_test = split_counts(int(count), val_fraction, test_fraction)
        test.append(members[:n_test])
        val.append(members[n_test:n_test + n_val])
        train.append(members[n_test + n_val:])
    return _sorted(train), _sorted(val), _sorted(test)


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """How many of a class's ``n`` samples go to (val, test): rounded half up, at least one
    each when n >= 3 and the fraction > 0, never all of them."""
    n_val = math.floor(n * val_fraction + 0.5)
    n_test = math.floor(n * test_fraction + 0.5)
    if n >= 3:
        n_val = max(n_val, 1) if val_fraction > 0 else 0
        n_test = max(n_test, 1) if test_fraction > 0 else 0
    while n_val + n_test > max(n - 1, 0):  # keep one sample to train on
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def dedup_against(train: Dataset, others: Dataset | Iterable[Dataset]) -> tuple[Dataset, int]:
    """Drop training images pixel-identical to an image of ``others`` (val, test), so that a
    score on those splits is not inflated by images the model has seen.
    -> (the remaining training set, how many were dropped)."""

    others = [others] if isinstance(others, Dataset) else list(others)
    seen = {row.tobytes() for other in others for row in other.X}
    keep = np.fromiter((row.tobytes() not in seen for row in train.X), dtype=bool,
                       count=len(train.X))
    dropped = int(len(keep) - keep.sum())
    return (train if dropped == 0 else train.subset(np.flatnonzero(keep))), dropped


def _sorted(parts: list[np.ndarray]) -> Index:
    return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)

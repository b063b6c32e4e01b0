"""Files -> arrays: ``X`` float32 (N, S*S) in [0, 1], ``y`` int64 (N,), class names.

    ds = load_dataset("../shared/data/notMNIST_small.tar.gz", image_size=28)
    splits = load_splits(cfg.data, seed=cfg.seed)   # train / val / test, stratified

Sources (see ``sources``): a folder of class folders, an archive of one, list files, or
letters rendered from fonts (``synthetic``). Decoding (``images``) runs in parallel for large
sources and is cached (``cache``); ``inspect`` reports what a dataset holds.
"""

from __future__ import annotations

from nnletters.data.dataset import Dataset, Splits
from nnletters.data.loading import load_dataset, load_splits
from nnletters.data.split import dedup_against, stratified_split

__all__ = ["Dataset", "Splits", "dedup_against", "load_dataset", "load_splits",
           "stratified_split"]

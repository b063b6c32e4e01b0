"""Files -> arrays: ``X`` float32 (N, S*S) in [0, 1], ``y`` int64 (N,), class names.

    ds = load_dataset("../shared/data/notMNIST_small.tar.gz", image_size=28)
    splits = load_splits(cfg.data, seed=cfg.seed)   # train / val / test, stratified

Sources (see ``sources``): a folder of class folders, an archive of one, list files, or
letters rendered from fonts (``synthetic``). Decoding (``images``) runs in parallel for large
sources and is cached (``cache``); ``loading`` puts them together; ``split`` makes seeded
stratified splits; ``augment`` varies training batches; ``inspect`` reports what a dataset
holds; ``preparation`` makes any image look like a model's training images (for predict and
eval --data). The names below are imported on first use, so ``nnletters predict`` (which
needs only ``images`` and ``preparation``) does not load the rest.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {"Dataset": "dataset", "Splits": "dataset", "load_dataset": "loading",
          "load_splits": "loading", "dedup_against": "split", "stratified_split": "split"}

__all__ = list(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(f"nnletters.data.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'nnletters.data' has no attribute {name!r}")

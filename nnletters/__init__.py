"""nnletters: multilayer perceptrons from scratch in NumPy that read letters in small images.

The Python API (see ``nnletters.api``)::

    import nnletters

    cfg = nnletters.load_config("configs/quickstart.yaml", overrides=["train.epochs=3"])
    run = nnletters.train(cfg, out="runs/api-demo", callbacks=[...])
    model = nnletters.load_model(run.path)
    model.predict(["data/samples/A.png"], top_k=3)
    nnletters.evaluate(model, data=None)

Names are imported on first use, so ``import nnletters`` stays cheap (no matplotlib, tqdm or
YAML until a function needs them).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {"Callback": "nnletters.callbacks", "Config": "nnletters.config",
        "Model": "nnletters.prediction", "Run": "nnletters.run_folder",
        "evaluate": "nnletters.api", "load_config": "nnletters.config",
        "load_model": "nnletters.prediction", "resume": "nnletters.api",
        "train": "nnletters.api"}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'nnletters' has no attribute {name!r}")

"""The Python API: what the command line does, callable from Python. The CLI calls the same
functions (``nnletters.run_folder``, ``nnletters.prediction``, ``nnletters.evaluation``).

    import nnletters

    cfg = nnletters.load_config("configs/quickstart.yaml", overrides=["train.epochs=3"])
    run = nnletters.train(cfg, out="runs/api-demo")     # a run folder, like `nnletters train`
    model = nnletters.load_model(run.path)              # its best.npz
    model.predict(["data/samples/A.png"], top_k=3)      # [{'path', 'label', 'probability', ...}]
    nnletters.evaluate(model)["accuracy"]               # on the run's own test split
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from nnletters.callbacks import Callback
from nnletters.config import Config, load_config
from nnletters.prediction import Model, load_model
from nnletters.run_folder import Run

__all__ = ["Callback", "Config", "Model", "Run", "evaluate", "load_config", "load_model",
           "resume", "train"]


def _quiet(_message: str) -> None:
    pass


def train(cfg: Config | str | Path, out: str | Path | None = None, *,
          callbacks: Iterable[Callback] = (), progress: bool = False,
          log: Callable[[str], None] = _quiet) -> Run:
    """Train ``cfg`` (a Config, or a YAML path) into the run folder ``out`` (default
    runs/<name>-<time>); -> the ``Run`` (``.path``, ``.summary``, ``.history``).

    ``log`` receives the lines ``nnletters train`` prints (e.g. ``log=print``)."""
    from nnletters.run_folder import new_run_dir, train_run

    if not isinstance(cfg, Config):
        cfg = load_config(cfg)
    return train_run(cfg, new_run_dir(cfg, out), progress=progress, log=log,
                     callbacks=callbacks)


def resume(run_dir: str | Path, overrides: Iterable[str] = (), *,
           callbacks: Iterable[Callback] = (), progress: bool = False,
           log: Callable[[str], None] = _quiet) -> Run:
    """Continue a stopped run (``nnletters train --resume``); a finished one is returned
    unchanged."""
    from nnletters.run_folder import resume_run

    return resume_run(run_dir, tuple(overrides), progress=progress, log=log,
                      callbacks=callbacks)


def evaluate(model: Model | Run | str | Path | None = None,
             data: str | Path | None = None) -> dict[str, Any]:
    """``nnletters eval`` as a dict (accuracy, loss, per_class, confusion, ...): a model or
    run on its run's test split, or on all of ``data``."""
    from nnletters.evaluation import evaluate_model

    if isinstance(model, Run):
        model = model.path
    if not isinstance(model, Model):
        model = load_model(model)
    return evaluate_model(model, data)

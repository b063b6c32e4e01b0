"""A run from config to run folder: data, model, training, test figures, summary.

    runs/<name>-<timestamp>/
        config.yaml      the resolved config (every key, defaults filled in)
        metrics.jsonl    one JSON object per epoch
        metrics.csv      the same rows as CSV
        last.npz         model + optimiser + RNG state after the last completed epoch
        best.npz         the same at the best epoch of the monitored metric
        summary.json     best epoch and metric, final test accuracy and loss, sizes, times
        skipped.txt      unreadable input files and why (only when there were any)
        fonts.txt        fonts used to render synthetic letters (synthetic data only)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from nnletters.config import Config, to_yaml
from nnletters.errors import NNLettersError
from nnletters.fileio import write_json, write_text


def new_run_dir(cfg: Config, out: str | Path | None, runs_root: str | Path = "runs") -> Path:
    """``out`` exactly, or runs/<name>-<timestamp>; refuses a folder that holds a run.

    The folder is only created by ``train_run``, once the data has loaded, so that a bad
    data path leaves nothing behind."""
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(runs_root) / f"{cfg.name}-{stamp}"
        suffix = 1
        while run_dir.exists():
            suffix += 1
            run_dir = Path(runs_root) / f"{cfg.name}-{stamp}-{suffix}"
    else:
        run_dir = Path(out)
    if (run_dir / "last.npz").exists() or (run_dir / "best.npz").exists():
        raise NNLettersError(f"{run_dir}: already holds a run; resume it with --resume "
                             f"{run_dir} or choose another --out")
    if run_dir.exists() and not run_dir.is_dir():
        raise NNLettersError(f"{run_dir}: exists and is not a folder; choose another --out")
    return run_dir


def make_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NNLettersError(f"cannot create run folder {run_dir}: "
                             f"{exc.strerror or exc}") from None


def model_meta(cfg: Config, model, classes: list[str], light_on_dark: bool) -> dict[str, Any]:
    """What eval and predict need to rebuild the model from a checkpoint alone."""
    return {"name": cfg.name, "classes": classes, "image_size": cfg.data.image_size,
            "input_size": model.sizes[0], "layer_sizes": model.sizes,
            "activation": cfg.model.activation, "init": cfg.model.init,
            "dropout": cfg.model.dropout, "loss": cfg.model.loss,
            "label_smoothing": cfg.model.label_smoothing, "batch_norm": cfg.model.batch_norm,
            "light_on_dark": light_on_dark}


def train_run(cfg: Config, run_dir: Path, *, progress: bool = False,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir``; returns the summary written to summary.json."""
    from nnletters.data import load_splits
    from nnletters.evaluation import evaluate
    from nnletters.nn.augment import Augmenter
    from nnletters.training import Trainer, build, data_polarity

    t_start = time.perf_counter()
    if cfg.data.path:  # saved absolute, so eval/report find the data from any folder
        cfg = replace(cfg, data=replace(cfg.data, path=str(Path(cfg.data.path).resolve())))
    splits = load_splits(cfg.data, cfg.seed, progress=progress)
    make_run_dir(run_dir)
    write_text(run_dir / "config.yaml", to_yaml(cfg))
    record_inputs(run_dir, splits, log)
    train, val, test = splits.train, splits.val, splits.test
    log(f"data: {len(splits.classes)} classes, {len(train.y)} train / {len(val.y)} val / "
        f"{len(test.y)} test images of {cfg.data.image_size}x{cfg.data.image_size} "
        f"({time.perf_counter() - t_start:.1f}s)")
    if cfg.data.dedup:
        log(f"dedup: dropped {splits.n_deduped} training image(s) pixel-identical to a "
            f"validation or test image")

    rng = np.random.default_rng(cfg.seed)
    model, optimizer, schedule = build(cfg, train.X.shape[1], len(splits.classes), rng)
    meta = model_meta(cfg, model, splits.classes, data_polarity(train.X, cfg.data.image_size))
    log(f"model: {model.describe()}, {model.theta.size:,} parameters; optimiser "
        f"{cfg.optim.name} lr {cfg.optim.lr:g}; run folder {run_dir}")
    trainer = Trainer(cfg, model, optimizer, schedule, rng, train, val, run_dir, meta,
                      progress=progress, log=log)
    # Pixels shifted in from outside the image take the background's value.
    augmenter = Augmenter(cfg.data.augment, cfg.data.image_size, rng,
                          fill=0.0 if meta["light_on_dark"] else 1.0)
    if augmenter.active:
        trainer.transform = augmenter
        log(f"augmentation: {augmenter.describe()}")
    if trainer.ema is not None:
        log(f"weights averaged (EMA decay {cfg.optim.ema:g}) for validation, best.npz and test")
    t_train = time.perf_counter()
    state = trainer.fit()
    train_seconds = time.perf_counter() - t_train

    test_result = evaluate(model, test.X, test.y, splits.classes) if len(test.y) else None
    summary = {
        "name": cfg.name, "epochs_run": state.epoch, "best_epoch": state.best_epoch,
        "monitor": cfg.train.early_stopping.monitor, "best_metric": state.best_metric,
        "stopped_early": state.stopped_early,
        "test_accuracy": test_result["accuracy"] if test_result else None,
        "test_loss": test_result["loss"] if test_result else None,
        "n_train": int(len(train.y)), "n_val": int(len(val.y)), "n_test": int(len(test.y)),
        "n_deduped": int(splits.n_deduped),
        "classes": splits.classes, "skipped": len(splits.skipped),
        "train_seconds": round(train_seconds, 3),
        "total_seconds": round(time.perf_counter() - t_start, 3),
    }
    write_json(run_dir / "summary.json", summary)
    if test_result:
        log(f"test: accuracy {100 * test_result['accuracy']:.2f}%  loss "
            f"{test_result['loss']:.4f}  ({len(test.y)} images, weights of epoch "
            f"{state.best_epoch})")
    log(f"done in {summary['total_seconds']:.1f}s; run folder {run_dir}")
    return summary


def record_inputs(run_dir: Path, splits, log: Callable[[str], None]) -> None:
    """skipped.txt (unreadable files) and fonts.txt (synthetic fonts) in the run folder."""
    if splits.skipped:
        write_text(run_dir / "skipped.txt",
                   "".join(f"{name}\t{reason}\n" for name, reason in splits.skipped))
        log(f"skipped {len(splits.skipped)} unreadable file(s), listed in "
            f"{run_dir / 'skipped.txt'}")
    fonts = getattr(splits, "fonts", None)
    if fonts:
        write_text(run_dir / "fonts.txt", "".join(f"{f}\n" for f in fonts))

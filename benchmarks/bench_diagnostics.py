"""What the per-layer diagnostics and TensorBoard logging cost per epoch, beside the epoch.

    python benchmarks/bench_diagnostics.py                  # quickstart's shape and 784-1024-512
    python benchmarks/bench_diagnostics.py --rounds 7 --json

For each architecture (default: configs/quickstart.yaml's 784-256-26 with dropout 0.1, and
notmnist-best's 784-1024-512 with 26 outputs), on seeded random data of quickstart's size
(10,400 training images of 28x28, batch 128, Adam), each round times in turn:

- ``epoch``: one training epoch (``training.train_epoch``, the loop of ``nnletters train``);
- ``diagnostics``: ``Diagnostics.on_epoch_end``, one forward and backward pass of the
  512-image diagnostics batch on the twin network, plus the norms and unit counts;
- ``tensorboard``: ``TensorBoardLog.on_epoch_end`` on a row with the diagnostics, with the
  histograms (written at epoch 1, every 5th and the last) and without (the other epochs).

The order of the three rotates every round; reported are the medians over the rounds and the
per-round ratio to the epoch (median, min-max). OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed
from this command's environment as in ``bench_train.py`` (``--keep-blas-env`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from _blasenv import describe as describe_blas_env
from _blasenv import drop_slow_blas_vars, openblas_env

if __name__ == "__main__":
    drop_slow_blas_vars()

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ARCHS = {"784-256-26 dropout 0.1 (quickstart)": ([256], 0.1),
         "784-1024-512-26 (notmnist-best's shape)": ([1024, 512], 0.0)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per architecture")
    p.add_argument("--train", type=int, default=10_400, help="training images per epoch")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--keep-blas-env", action="store_true", help="keep OPENBLAS_* as set")
    p.add_argument("--no-tensorboard", action="store_true", help="skip the TensorBoard timing")
    return p.parse_args(argv)


def trainer_for(hidden: list[int], dropout: float, n_train: int, run_dir: Path):
    """A stand-in for the Trainer with what the callbacks read, on seeded random data."""
    import numpy as np

    from nnletters.config import load_config
    from nnletters.training import build, train_epoch

    cfg = load_config(None, [f"model.hidden={hidden}", f"model.dropout={dropout}",
                             "optim.name=adam", "optim.lr=0.001", "train.batch_size=128",
                             "train.epochs=15", "data.source=synthetic"])
    rng = np.random.default_rng(0)
    X = rng.random((n_train + 1300, 784), dtype=np.float32)
    y = rng.integers(0, 26, n_train + 1300)
    model, optimizer, _ = build(cfg, 784, 26, rng)
    t = SimpleNamespace(cfg=cfg, model=model, rng=rng, run_dir=run_dir, transform=None,
                        state=SimpleNamespace(epoch=0),
                        train=SimpleNamespace(X=X[:n_train], y=y[:n_train]),
                        val=SimpleNamespace(X=X[n_train:], y=y[n_train:]))
    t.epoch = lambda: train_epoch(model, optimizer, t.train.X, t.train.y, 128, rng, 0.001)
    return t


def time_arch(hidden: list[int], dropout: float, args: argparse.Namespace) -> dict:
    from nnletters.diagnostics import Diagnostics

    with tempfile.TemporaryDirectory() as tmp:
        t = trainer_for(hidden, dropout, args.train, Path(tmp))
        diag = Diagnostics()
        diag.on_train_begin(t)
        tb = None
        if not args.no_tensorboard:
            from nnletters.tensorboard_log import TensorBoardLog

            tb = TensorBoardLog(diag)
            tb.on_train_begin(t)
        t.epoch()  # warm-up: buffers allocated, caches filled
        times: dict[str, list[float]] = {"epoch": [], "diagnostics": [], "tb_plain": [],
                                         "tb_histograms": []}
        row = {"epoch": 1, "lr": 0.001, "train_loss": 1.0}  # diagnostics add their keys
        steps = [("epoch", t.epoch), ("diagnostics", lambda: diag.on_epoch_end(row))]
        if tb is not None:
            steps += [("tb_plain", lambda: tb.on_epoch_end(dict(row, epoch=2))),
                      ("tb_histograms", lambda: tb.on_epoch_end(dict(row, epoch=5)))]
        for r in range(args.rounds):
            for name, fn in steps[r % len(steps):] + steps[:r % len(steps)]:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        if tb is not None:
            tb._close()
    return summarise(times)


def summarise(times: dict[str, list[float]]) -> dict:
    out: dict = {}
    for name, values in times.items():
        if not values:
            continue
        ratios = [v / e for v, e in zip(values, times["epoch"], strict=True)]
        out[name] = {"median_ms": round(1000 * statistics.median(values), 2),
                     "ratio_to_epoch": {"median": round(statistics.median(ratios), 4),
                                        "min": round(min(ratios), 4),
                                        "max": round(max(ratios), 4)},
                     "all_ms": [round(1000 * v, 2) for v in values]}
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = {"rounds": args.rounds, "train_images": args.train, "diagnostics_batch": 512,
              "blas_env": openblas_env(),
              "architectures": {name: time_arch(h, d, args) for name, (h, d) in ARCHS.items()}}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(describe_blas_env(report["blas_env"]))
    print(f"{args.rounds} rounds, {args.train:,} training images per epoch; medians, and the "
          "ratio to the epoch (median, min-max over rounds)")
    for name, res in report["architectures"].items():
        print(f"\n{name}")
        for part, r in res.items():
            q = r["ratio_to_epoch"]
            print(f"  {part:<14} {r['median_ms']:>9.1f} ms   {100 * q['median']:6.2f}% "
                  f"({100 * q['min']:.2f}-{100 * q['max']:.2f}%)")


if __name__ == "__main__":
    main()

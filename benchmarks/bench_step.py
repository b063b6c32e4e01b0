"""Where one training step of nnletters goes: the whole step, forward + loss + backward, the
optimiser's update alone, and the step's matrix products alone (the limit).

    python benchmarks/bench_step.py                            # plain MLP, momentum, numba
    python benchmarks/bench_step.py --optimizer adamw --ema 0.999 --dropout 0.3
    python benchmarks/bench_step.py --kernels numpy --json

Everything runs in this one process on one fixed batch (no data loading, no augmentation),
each part timed in blocks of ``--steps`` calls. The parts alternate block by block, with a
pause of ``--pause`` s before each block so that OpenBLAS's threads have stopped spinning,
and the median (min-max) over ``--rounds`` blocks is reported. The matrix products are those
of the step at the same shapes: forward x W per layer, dW = x^T dz per layer and dx = dz W^T
for every layer but the first. With the numba kernels, the update's memory floor is timed
too: one numba pass that reads as many parameter-sized arrays as the update reads (gradient,
weights, its state, the average) and writes as many as it writes, with one addition per
element, so that what the update costs above it is its arithmetic.

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed as in the other benchmarks
(``--keep-blas-env`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace

from _blasenv import describe as describe_blas_env
from _blasenv import drop_slow_blas_vars, openblas_env

if __name__ == "__main__":
    drop_slow_blas_vars()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", default="1024,512", help="hidden widths, comma separated")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--optimizer", default="momentum",
                   choices=["sgd", "momentum", "nesterov", "adam", "adamw"])
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--ema", type=float, default=0.0, help="optim.ema (0: none)")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--kernels", default="numba", choices=["numpy", "numba"])
    p.add_argument("--steps", type=int, default=100, help="calls per timed block")
    p.add_argument("--rounds", type=int, default=7, help="timed blocks per part")
    p.add_argument("--pause", type=float, default=0.25, help="seconds before every block")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--keep-blas-env", action="store_true",
                   help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (tests use this)")
    return p.parse_args(argv)


def build_parts(args: argparse.Namespace) -> dict:
    """-> {part name: a function doing that part once}."""
    import numpy as np

    from nnletters.nn.ema import EMA
    from nnletters.nn.model import MLP
    from nnletters.nn.optim import build_optimizer

    rng = np.random.default_rng(0)
    sizes = [784, *(int(h) for h in args.hidden.split(",") if h), 10]
    model = MLP(sizes, dropout=args.dropout, rng=rng, kernels=args.kernels)
    cfg = SimpleNamespace(name=args.optimizer, momentum=0.9, beta1=0.9, beta2=0.999, eps=1e-8,
                          weight_decay=args.weight_decay, max_norm=0.0)
    optimizer = build_optimizer(cfg, model, kernels=args.kernels)
    ema = EMA(model, args.ema, optimizer) if args.ema else None  # fused: in the update
    x = rng.random((args.batch, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], args.batch)
    weights = [layer.W for layer in model.dense_layers()]

    def update() -> None:
        optimizer.step(1e-3)
        if ema is not None:
            ema.update()

    def memory_floor(n_arrays: int) -> Callable[[], None]:
        """The update's traffic alone: reads n_arrays arrays, writes all but the gradient."""
        import numba

        @numba.njit(parallel=True, error_model="numpy")
        def touch(g, b, c, d, e, n):
            for i in numba.prange(g.size):
                x = g[i]
                b[i] += x
                if n > 2:
                    c[i] += x
                if n > 3:
                    d[i] += x
                if n > 4:
                    e[i] += x

        arrays = [np.zeros_like(model.theta) for _ in range(5)]
        return lambda: touch(*arrays, n_arrays)

    def matmuls() -> None:
        inputs, a = [], x
        for W in weights:
            inputs.append(a)
            a = a @ W
        d = a
        for i in range(len(weights) - 1, -1, -1):
            inputs[i].T @ d
            if i:
                d = d @ weights[i].T

    parts = {"step": lambda: (model.train_step(x, y), update()),
             "forward + loss + backward": lambda: model.train_step(x, y),
             "optimiser update": update}
    if args.kernels == "numba":
        # gradient and weights, then the state (velocity; Adam's m and v) and the average
        state = {"sgd": 0, "momentum": 1, "nesterov": 1}.get(args.optimizer, 2)
        n_arrays = 2 + state + (1 if args.ema else 0)
        parts[f"update's memory floor ({n_arrays} read, {n_arrays - 1} written)"] = \
            memory_floor(n_arrays)
    parts["matmul-only"] = matmuls
    return parts


def time_parts(parts: dict, args: argparse.Namespace) -> dict[str, list[float]]:
    """ms per call of each part, one figure per round; parts alternate block by block."""
    for fn in parts.values():  # warm up (and compile)
        for _ in range(max(3, args.steps // 5)):
            fn()
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(args.rounds):
        for name, fn in parts.items():
            time.sleep(args.pause)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            times[name].append(1000 * (time.perf_counter() - t0) / args.steps)
    return times


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    times = time_parts(build_parts(args), args)
    step = statistics.median(times["step"])
    rows = {name: {"ms": statistics.median(v), "min": min(v), "max": max(v),
                   "share_of_step": statistics.median(v) / step} for name, v in times.items()}
    report = {"hidden": args.hidden, "batch": args.batch, "optimizer": args.optimizer,
              "ema": args.ema, "dropout": args.dropout, "kernels": args.kernels,
              "rounds": args.rounds, "steps": args.steps, "parts": rows,
              "matmul_share": rows["matmul-only"]["ms"] / step,
              "load_average": os.getloadavg()[0], "openblas_env": openblas_env()}
    if args.json:
        print(json.dumps(report))
        return
    print(f"one step of 784-{args.hidden.replace(',', '-')}-10, batch {args.batch}, "
          f"{args.optimizer}{f' + EMA {args.ema:g}' if args.ema else ''}"
          f"{f', dropout {args.dropout:g}' if args.dropout else ''}; kernels: {args.kernels}; "
          f"median (min-max) of {args.rounds} blocks of {args.steps} calls; "
          f"load average {report['load_average']:.1f}")
    print(describe_blas_env(report["openblas_env"]))
    for name, r in rows.items():
        print(f"{name:42s}{r['ms']:7.2f} ms ({r['min']:.2f}-{r['max']:.2f})"
              f"{100 * r['share_of_step']:6.0f}% of the step")
    print(f"the matrix products are {100 * report['matmul_share']:.0f}% of the step")


if __name__ == "__main__":
    sys.exit(main())

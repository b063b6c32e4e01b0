"""End to end: a whole ``nnletters train`` run against the same setup written in PyTorch.

    python benchmarks/bench_e2e.py                                  # configs/notmnist.yaml
    python benchmarks/bench_e2e.py --data PATH/notMNIST_small.tar.gz --json
    python benchmarks/bench_e2e.py --epochs 5 --rounds 2            # shorter, twice each

Both sides train the config's model on the config's data split for the config's epochs, one
after the other, each in its own process (so neither ever shares the CPU with the other's
spinning BLAS or OpenMP threads):

- ``nnletters``: the command itself, ``nnletters train --config C -q`` (checkpoints, metrics
  files and all), timed from process start to exit;
- ``torch``: the same setup written the way a PyTorch user writes it: ``nn.Sequential`` of
  Linear/ReLU/Dropout with He-normal weights and zero biases, ``F.cross_entropy`` with the
  config's label smoothing, ``torch.optim.AdamW`` (weight decay on the weights only, as
  nnletters does), the learning rate set every epoch from the same schedule, the same
  exponential moving average of the weights (with its warm-up) evaluated on the validation
  split after every epoch, the weights of the best epoch tested at the end.
  ``torch.set_num_threads`` = NumPy's BLAS threads.

What is shared, so that only the trainer differs: the data (``nnletters.data.load_splits``,
from the decoded-image cache, warmed first), the shuffling (a seeded NumPy permutation per
epoch) and the augmentation (nnletters' own ``Augmenter``, NumPy, on the batch before it
becomes a tensor). Reported per side: test accuracy, best validation accuracy, training
seconds (the epochs' own time), wall seconds of the whole process, and the training time each
took to first reach the lower of the two best validation accuracies ("time to target"),
and the training step in ms (the epochs' own time / steps) beside the matmul-only step: the
model's matrix products alone at the same shapes (NumPy float32, a third process per round,
a pause before each timed block). ``--rounds N`` runs every side N times in rotated order:
medians, their ranges, and the PyTorch / nnletters ratios paired by round. ``--kernels``
sets nnletters' ``train.kernels``.

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed from this command's environment as in
``bench_train.py`` (``--keep-blas-env`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _blasenv import describe as describe_blas_env
from _blasenv import drop_slow_blas_vars, openblas_env
from _measure import limit_blas_threads
from _rounds import (
    KERNELS,
    check_kernels,
    emit,
    fmt_spread,
    kernels_overrides,
    paired_ratios,
    pause,
    rotated,
    spread,
)

if __name__ == "__main__":
    drop_slow_blas_vars()

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "notmnist.yaml"
SHARED_DATA = ROOT.parent / "shared" / "data" / "notMNIST_small.tar.gz"
IMPLS = ("nnletters", "torch")
GEMM_SIDE = "matmul-only"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="an nnletters YAML config")
    p.add_argument("--data", help="data.path for the config (default: the config's own, or "
                                  f"{SHARED_DATA} when that is missing)")
    p.add_argument("--epochs", type=int, help="train.epochs (default: the config's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="more config overrides, applied to both sides")
    p.add_argument("--kernels", choices=KERNELS,
                   help="nnletters' train.kernels (default: the config's)")
    p.add_argument("--threads", type=int, help="BLAS and torch threads (default: NumPy's "
                                                "BLAS threads as found)")
    p.add_argument("--impls", default=",".join(IMPLS), help="comma separated subset of "
                                                            f"{','.join(IMPLS)}")
    p.add_argument("--rounds", type=int, default=1,
                   help="runs of each side, in rotated order (medians and ranges reported)")
    p.add_argument("--no-gemm", action="store_true",
                   help="skip the matmul-only step's process in every round")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--save", help="also write the JSON report to this file")
    p.add_argument("--keep-blas-env", action="store_true",
                   help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (tests use this)")
    p.add_argument("--worker", choices=["torch", "gemm"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)  # the worker's result file
    args = p.parse_args(argv)
    args.impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    unknown = sorted(set(args.impls) - set(IMPLS))
    if unknown:
        p.error(f"--impls: unknown {', '.join(unknown)} (choose from {', '.join(IMPLS)})")
    return args


def overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` list both sides train with."""
    sets = [f"data.path={args.data}"] if args.data else []
    if args.epochs:
        sets.append(f"train.epochs={args.epochs}")
    return sets + list(args.set) + kernels_overrides(args.kernels)


def resolve_data(args: argparse.Namespace) -> None:
    """Fill ``args.data`` when the config's own data.path does not exist here."""
    if args.data:
        return
    from nnletters.config import load_config

    cfg = load_config(args.config, list(args.set))
    if cfg.data.source == "synthetic" or (cfg.data.path and Path(cfg.data.path).exists()):
        return
    if SHARED_DATA.exists():
        args.data = str(SHARED_DATA)
        return
    sys.exit(f"error: {cfg.data.path}: not found; pass --data PATH (notMNIST_small.tar.gz)")


def blas_threads() -> int:
    """NumPy's BLAS threads (threadpoolctl), else the cores this process may use."""
    from _measure import numpy_blas

    found = numpy_blas().get("num_threads")
    if found:
        return int(found)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# --------------------------------------------------------------------------- the two sides


def timed_run(cmd: list[str], threads: int, what: str) -> float:
    """Run ``cmd`` from the project root with ``threads`` BLAS threads; -> its wall seconds,
    process start to exit. RuntimeError with the end of its stderr when it fails."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed: {proc.stderr.strip()[-2000:]}")
    return wall


def run_nnletters(args: argparse.Namespace, work: Path, threads: int) -> dict:
    """``nnletters train`` in a subprocess; figures from its summary.json and metrics."""
    out = work / f"nnletters-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "nnletters", "train", "--config", args.config,
           "--out", str(out), "-q"]
    for s in overrides(args):
        cmd += ["--set", s]
    wall = timed_run(cmd, threads, "nnletters train")
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    return {"test_accuracy": summary["test_accuracy"],
            "val_accuracy": [r["val_accuracy"] for r in rows],
            "epoch_seconds": [r["epoch_seconds"] for r in rows],
            "train_seconds": summary["train_seconds"], "wall_seconds": wall,
            "n_train": summary["n_train"]}


def run_torch(args: argparse.Namespace, work: Path, threads: int) -> dict:
    """This script's torch worker in a subprocess (a fresh process, like the command's)."""
    out = work / f"torch-{time.monotonic_ns()}.json"
    cmd = [sys.executable, __file__, "--worker", "torch", "--out", str(out),
           "--config", args.config, "--threads", str(threads), "--keep-blas-env"]
    if args.data:
        cmd += ["--data", args.data]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    for s in args.set:
        cmd += ["--set", s]
    if args.kernels:
        cmd += ["--kernels", args.kernels]
    wall = timed_run(cmd, threads, "the torch worker")
    result = json.loads(out.read_text())
    result["wall_seconds"] = wall
    return result


def run_gemm(args: argparse.Namespace, work: Path, threads: int) -> dict:
    """The matmul-only step at the config's shapes, in a fresh process like the other two."""
    out = work / f"gemm-{time.monotonic_ns()}.json"
    cmd = [sys.executable, __file__, "--worker", "gemm", "--out", str(out),
           "--config", args.config, "--keep-blas-env"]
    for s in overrides(args):
        cmd += ["--set", s]
    timed_run(cmd, threads, "the matmul-only worker")
    return json.loads(out.read_text())


def gemm_worker(args: argparse.Namespace, blocks: int = 5) -> None:
    """Time the matmul-only step at the config's layer shapes and batch size: one untimed
    epoch's worth of steps, then ``blocks`` timed ones, a pause before each; writes the
    median ms/step to ``args.out``."""
    import statistics

    from _measure import GemmRoofline

    from nnletters.config import load_config
    from nnletters.data import load_splits

    cfg = load_config(args.config, list(args.set))  # overrides(args) arrive as --set
    splits = load_splits(cfg.data, cfg.seed)
    n, n_in = splits.train.X.shape
    sizes = [n_in, *cfg.model.hidden, len(splits.classes)]
    batch = cfg.train.batch_size
    roofline = GemmRoofline(list(zip(sizes[:-1], sizes[1:], strict=True)), batch, cfg.seed)
    steps = max(1, n // batch)
    del splits
    ms = []
    for block in range(blocks + 1):
        pause()
        t0 = time.perf_counter()
        for _ in range(steps):
            roofline.step()
        if block:  # the first block warms up
            ms.append(1000 * (time.perf_counter() - t0) / steps)
    Path(args.out).write_text(json.dumps({"ms_per_step": statistics.median(ms),
                                          "ms_per_step_all": ms, "batch": batch,
                                          "sizes": sizes}))


def torch_worker(args: argparse.Namespace) -> None:
    """Train the config's setup in PyTorch; write the figures to ``args.out``."""
    import copy

    import numpy as np
    import torch
    import torch.nn.functional as F

    from nnletters.config import load_config
    from nnletters.data import load_splits
    from nnletters.data.augment import Augmenter
    from nnletters.data.images import data_polarity
    from nnletters.nn.kernels import resolve as resolve_kernels
    from nnletters.nn.schedules import Schedule

    cfg = load_config(args.config, overrides(args))
    m, o = cfg.model, cfg.optim
    if (m.loss != "cross_entropy" or m.batch_norm or m.activation != "relu"
            or o.name not in ("adam", "adamw") or cfg.schedule.name == "plateau"):
        sys.exit("error: the torch side covers ReLU MLPs with cross-entropy, adam/adamw and "
                 "a per-epoch schedule (no plateau); this config asks for more")
    torch.set_num_threads(args.threads)
    torch.manual_seed(cfg.seed)
    splits = load_splits(cfg.data, cfg.seed)
    train, val, test = splits.train, splits.val, splits.test
    rng = np.random.default_rng(cfg.seed)
    sizes = [train.X.shape[1], *m.hidden, len(splits.classes)]
    # The augmentation is nnletters' own, with the kernels the nnletters side resolves to,
    # so that it costs both sides the same. Its few small matrix products run on one
    # OpenBLAS thread here: OpenBLAS's threads spin after each call, and two spinning
    # pools (OpenBLAS's and torch's OpenMP) on these cores ran this side 4x slower.
    blas_limit = limit_blas_threads(1)  # noqa: F841 - kept referenced for the process
    augment = Augmenter(cfg.data.augment, cfg.data.image_size, rng,
                        fill=0.0 if data_polarity(train.X, cfg.data.image_size) else 1.0,
                        kernels=resolve_kernels(cfg.train.kernels, sizes))

    layers: list[torch.nn.Module] = []
    for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        linear = torch.nn.Linear(fan_in, fan_out)
        torch.nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")  # N(0, 2 / fan_in)
        torch.nn.init.zeros_(linear.bias)
        layers.append(linear)
        if k < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
            if m.dropout > 0:
                layers.append(torch.nn.Dropout(m.dropout))
    model = torch.nn.Sequential(*layers)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    decay = o.weight_decay
    groups = [{"params": weights, "weight_decay": decay}, {"params": biases, "weight_decay": 0}]
    if o.name == "adamw":
        opt = torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
    else:  # L2 added to the gradient, as nnletters' adam does
        opt = torch.optim.Adam(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
    schedule = Schedule(cfg.schedule, o.lr, cfg.train.epochs)

    ema = copy.deepcopy(model) if o.ema else model
    ema_params, params = list(ema.parameters()), list(model.parameters())
    updates = 0

    def evaluate(net, X, y) -> tuple[float, float]:
        net.eval()
        with torch.inference_mode():
            logits = torch.cat([net(torch.from_numpy(X[i:i + 1024]))
                                for i in range(0, len(y), 1024)])
            target = torch.from_numpy(y)
            loss = F.cross_entropy(logits, target, label_smoothing=m.label_smoothing).item()
            acc = (logits.argmax(1) == target).float().mean().item()
        return loss, acc

    es = cfg.train.early_stopping
    best, best_state, val_accs, epoch_seconds = None, None, [], []
    X, y, bs = train.X, train.y, cfg.train.batch_size
    buf = np.empty((min(bs, len(y)), X.shape[1]), dtype=np.float32)
    t_train = time.perf_counter()
    for epoch in range(cfg.train.epochs):
        for group in opt.param_groups:
            group["lr"] = schedule.lr(epoch)
        model.train()
        t0 = time.perf_counter()
        order = rng.permutation(len(y))
        for start in range(0, len(y), bs):
            idx = order[start:start + bs]
            xb = np.take(X, idx, axis=0, out=buf[:len(idx)])
            if augment.active:
                xb = augment(xb)
            logits = model(torch.from_numpy(xb))
            target = torch.from_numpy(y[idx])
            loss = F.cross_entropy(logits, target, label_smoothing=m.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()  # the per-step loss nnletters reads (its divergence check)
            if o.ema:
                updates += 1
                d = min(o.ema, (1.0 + updates) / (10.0 + updates))
                with torch.no_grad():
                    torch._foreach_lerp_(ema_params, params, 1.0 - d)
        epoch_seconds.append(time.perf_counter() - t0)
        val_loss, val_acc = evaluate(ema, val.X, val.y)
        val_accs.append(val_acc)
        metric = val_loss if es.monitor == "val_loss" else val_acc
        if best is None or (metric < best if es.monitor == "val_loss" else metric > best):
            best, best_state = metric, copy.deepcopy(ema.state_dict())
    train_seconds = time.perf_counter() - t_train
    ema.load_state_dict(best_state)
    _, test_acc = evaluate(ema, test.X, test.y)
    Path(args.out).write_text(json.dumps({
        "test_accuracy": test_acc, "val_accuracy": val_accs, "epoch_seconds": epoch_seconds,
        "train_seconds": train_seconds, "n_train": int(len(y)), "torch": torch.__version__}))


# --------------------------------------------------------------------------- report


def time_to(target: float, result: dict) -> float | None:
    """Training seconds until the validation accuracy first reached ``target``."""
    elapsed = 0.0
    for acc, seconds in zip(result["val_accuracy"], result["epoch_seconds"], strict=True):
        elapsed += seconds
        if acc is not None and acc >= target - 1e-12:
            return elapsed
    return None


def median_run(runs: list[dict]) -> dict:
    """The run with the median wall time (lower median), whole, so figures stay together."""
    return sorted(runs, key=lambda r: r["wall_seconds"])[(len(runs) - 1) // 2]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker == "torch":
        torch_worker(args)
        return
    if args.worker == "gemm":
        gemm_worker(args)
        return
    check_kernels(args.kernels)
    resolve_data(args)
    threads = args.threads or blas_threads()
    if "torch" in args.impls:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("torch is not importable: only nnletters runs "
                  "(pip install torch==2.13.0 for the CPU build)", file=sys.stderr)
            args.impls = [i for i in args.impls if i != "torch"]

    from nnletters.config import load_config
    from nnletters.data import load_splits

    cfg = load_config(args.config, overrides(args))
    t0 = time.perf_counter()
    load_splits(cfg.data, cfg.seed)  # both sides then read the decoded-image cache
    print(f"data ready in {time.perf_counter() - t0:.1f}s (cache warmed)", file=sys.stderr)

    runs, gemm, load = run_rounds(args, threads)
    report = build_report(args, cfg, threads, runs, gemm, load)
    emit(report, args.save, args.json, print_report)


def run_rounds(args: argparse.Namespace, threads: int
               ) -> tuple[dict[str, list[dict]], list[dict], list[float]]:
    """``--rounds`` rounds, each side (and the matmul-only step) once per round in its own
    process, in an order rotated every round. -> runs per side, matmul-only runs, load."""
    runners = {"nnletters": run_nnletters, "torch": run_torch, GEMM_SIDE: run_gemm}
    sides = list(args.impls) + ([] if args.no_gemm else [GEMM_SIDE])
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="nnletters-e2e-") as tmp:
        for r in range(args.rounds):
            for name in rotated(sides, r):
                print(f"round {r + 1}/{args.rounds}: {name} ...", file=sys.stderr)
                pause()
                runs[name].append(runners[name](args, Path(tmp), threads))
    load.append(os.getloadavg()[0])
    return runs, runs.pop(GEMM_SIDE, []), load


def add_step_times(run: dict, batch: int) -> None:
    """ms per training step: the epochs' own seconds over their steps (partial last batch
    counted as a step, on both sides alike)."""
    steps = len(run["epoch_seconds"]) * -(-run["n_train"] // batch)
    run["ms_per_step"] = 1000 * sum(run["epoch_seconds"]) / steps


def build_report(args: argparse.Namespace, cfg, threads: int, runs: dict[str, list[dict]],
                 gemm: list[dict], load: list[float]) -> dict:
    for rs in runs.values():
        for run in rs:
            add_step_times(run, cfg.train.batch_size)
    results = {name: median_run(rs) for name, rs in runs.items()}
    target = min(max(a for a in r["val_accuracy"] if a is not None)
                 for r in results.values())
    for name, r in results.items():
        r["time_to_target"] = time_to(target, r)
        r["spread"] = {key: spread([run[key] for run in runs[name]])
                       for key in ("train_seconds", "wall_seconds", "ms_per_step")}
    gemm_ms = spread([g["ms_per_step"] for g in gemm]) if gemm else None
    report = {"config": args.config, "overrides": overrides(args), "epochs": cfg.train.epochs,
              "threads": threads, "rounds": args.rounds, "target_val_accuracy": target,
              "load_average": load, "openblas_env": openblas_env(), "results": results,
              "all_runs": runs, "gemm_ms_per_step": gemm_ms, "gemm_runs": gemm,
              "kernels": args.kernels}
    if gemm_ms:
        for r in results.values():
            r["share_of_gemm"] = gemm_ms["median"] / r["ms_per_step"]
    if "nnletters" in results and "torch" in results:
        n, t = results["nnletters"], results["torch"]
        for key, field in (("speedup_wall", "wall_seconds"), ("speedup_train", "train_seconds"),
                           ("speedup_step", "ms_per_step")):
            pairs = paired_ratios([x[field] for x in runs["torch"]],
                                  [x[field] for x in runs["nnletters"]])
            report[key], report[key + "_rounds"] = pairs["median"], pairs
        if n["time_to_target"] and t["time_to_target"]:
            report["speedup_time_to_target"] = t["time_to_target"] / n["time_to_target"]
    return report


def print_report(report: dict) -> None:
    print(f"end to end: {report['config']} {' '.join(report['overrides'])}")
    print(f"{report['epochs']} epochs, {report['threads']} threads, {report['rounds']} "
          f"round(s) each, every run its own process, rotated order (the run with the median "
          f"wall time shown, ranges in brackets); load average {report['load_average'][0]:.1f}"
          f" at the start, {report['load_average'][1]:.1f} at the end")
    print(describe_blas_env(report["openblas_env"]))
    target = report["target_val_accuracy"]
    print(f"\n{'':10} {'test acc':>9} {'best val':>9} {'train s':>20} {'wall s':>20} "
          f"{'ms/step':>8} {'of matmul':>9} {'to ' + format(target, '.2%') + ' val':>15}")
    for name, r in report["results"].items():
        ttt, sp = r["time_to_target"], r["spread"]
        share = f"{r['share_of_gemm']:.0%}" if "share_of_gemm" in r else "-"
        print(f"{name:10} {r['test_accuracy']:9.2%} {max(r['val_accuracy']):9.2%} "
              f"{fmt_spread(sp['train_seconds'], '.1f'):>20} "
              f"{fmt_spread(sp['wall_seconds'], '.1f'):>20} {r['ms_per_step']:8.2f} "
              f"{share:>9} {(f'{ttt:.1f} s' if ttt else 'never'):>15}")
    if report["gemm_ms_per_step"]:
        print(f"matmul-only step at the same shapes: "
              f"{fmt_spread(report['gemm_ms_per_step'], '.2f', ' ms')}")
    for key, label in (("speedup_wall", "wall time"), ("speedup_train", "training time"),
                       ("speedup_step", "ms per step"),
                       ("speedup_time_to_target", "time to target")):
        if key in report:
            rng = report.get(key + "_rounds")
            how = f" (paired rounds: {fmt_spread(rng, '.2f', 'x')})" if rng else ""
            print(f"nnletters is {report[key]:.2f}x as fast as PyTorch in {label}{how}")
    print("\nFor README.md (Speed):\n")
    print(readme_table(report))


def readme_table(report: dict) -> str:
    """The rows the README's Speed section quotes, as Markdown."""
    names = {"nnletters": f"`nnletters train --config {Path(report['config']).name}`"
                          f" (kernels: {report['kernels'] or 'default'})",
             "torch": "the same setup in PyTorch"}
    rows = ["| | test accuracy | training time, s | whole command, s | ms/step | share of the "
            "matmul-only step |", "| --- | --- | --- | --- | --- | --- |"]
    gemm = report["gemm_ms_per_step"]
    if gemm:
        rows.append(f"| matmul-only step (the limit) | | | | {gemm['median']:.2f} | 100% |")
    for name, r in report["results"].items():
        share = f"{r['share_of_gemm']:.0%}" if "share_of_gemm" in r else "-"
        rows.append(f"| {names.get(name, name)} | {r['test_accuracy']:.2%} | "
                    f"{fmt_spread(r['spread']['train_seconds'], '.1f')} | "
                    f"{fmt_spread(r['spread']['wall_seconds'], '.1f')} | "
                    f"{r['ms_per_step']:.2f} | {share} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()

"""Training benchmark: nnletters against reference MLPs on the same data and architecture.

    python benchmarks/bench_train.py                  # table + the README's Speed table
    python benchmarks/bench_train.py --json           # one JSON object on stdout
    python benchmarks/bench_train.py --kernels numba  # nnletters with train.kernels=numba
    python benchmarks/bench_train.py --matrix --impls nnletters   # Adam / dropout overhead

Every implementation (nnletters through ``training.build`` and ``training.train_epoch``, the
path ``nnletters train`` takes; a textbook float64 NumPy MLP; PyTorch CPU; scikit-learn's
MLPClassifier) trains on the same data with the same architecture. The figures come in paired
rounds, in an order rotated every round, with medians and their spreads:

- ``--isolation process`` (default): each round starts one fresh process per implementation.
  In it, after the warm-up, the implementation's epochs are cut into slices that alternate
  with the matmul-only step (NumPy float32 products at the step's own shapes: the GEMM
  roofline), with a pause before every timed slice, so that each figure has its own
  matmul-only step beside it, measured under the same load.
- ``--isolation pause``: everything in this one process, slice by slice as above, with the
  same pause before every timed slice (OpenBLAS's threads spin ~0.1 s after NumPy's last
  product and would steal a core from whatever runs next).

Either way, ``--alone`` implementations (nnletters and PyTorch by default) also train in a
process of their own each round, whole epochs back to back with nothing else in the process:
the figure a user sees. The report puts the two side by side, which checks the method.
Inference is timed at batch 1024; peak memory in one short subprocess per implementation.

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which some machines set and which slow current NumPy
down, are removed from this command's environment (it re-executes itself without them, says so
in its output, and changes nothing else). ``--keep-blas-env`` keeps them.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from _blasenv import describe as describe_blas_env
from _blasenv import drop_slow_blas_vars, openblas_env  # noqa: E402  (imports no NumPy)

if __name__ == "__main__":
    drop_slow_blas_vars()

import numpy as np  # noqa: E402
from _measure import (  # noqa: E402
    MIB,
    GemmRoofline,
    cpu_name,
    limit_blas_threads,
    memory_supported,
    numpy_blas,
    peak_rss_bytes,
    reset_peak_rss,
    rss_bytes,
)
from _refs import OPTIMIZERS, REFERENCES, Spec  # noqa: E402
from _rounds import (  # noqa: E402
    KERNELS,
    PAUSE_SECONDS,
    check_kernels,
    emit,
    fmt_spread,
    kernels_overrides,
    paired_ratios,
    pause,
    rotated,
    run_json,
    spread,
)

INFER_BATCH = 1024
GEMM_LABEL = "matmul-only"  # the roofline's turn in the rotation
DEFAULT_LR = {"adam": 0.001}  # everything else: 0.01

# Targets: (key in "ratios", comparison, threshold, description). Issue 14 set the first two;
# the others are from the first speed issue.
TARGETS = [
    ("train_vs_torch", ">=", 1.25, "training samples/s, nnletters / PyTorch CPU"),
    ("gemm_fraction", ">=", 0.85, "nnletters step: matmul-only step time / its step time"),
    ("train_vs_textbook", ">=", 2.5, "training samples/s, nnletters / textbook NumPy"),
    ("adam_overhead", "<=", 0.15, "time per sample, Adam over SGD momentum - 1 (--matrix)"),
    ("dropout_overhead", "<=", 0.15, "time per sample, dropout over none - 1 (--matrix)"),
    ("infer_vs_torch", ">=", 1.8, "inference samples/s at batch 1024, nnletters / PyTorch"),
    ("memory_ratio", "<=", 1.5, "nnletters training peak RSS / budget"),
]


# --------------------------------------------------------------------------- nnletters


def nnletters_overrides(spec: Spec) -> list[str]:
    """``--set`` style overrides giving nnletters' config the benchmark's spec."""
    return [f"seed={spec.seed}", "data.source=synthetic",
            f"model.hidden={list(spec.sizes[1:-1])}", "model.activation=relu",
            "model.loss=cross_entropy", f"model.dropout={spec.dropout}",
            f"optim.name={spec.optimizer}", f"optim.lr={spec.lr}",
            f"optim.momentum={spec.momentum}", f"optim.beta1={spec.beta1}",
            f"optim.beta2={spec.beta2}", f"optim.eps={spec.eps}",
            "schedule.name=constant", f"train.batch_size={spec.batch}",
            *kernels_overrides(spec.kernels)]


class NNLettersMLP:
    """nnletters' own model and optimiser, built and trained by the functions the
    ``nnletters train`` command calls (``training.build``, ``training.train_epoch``)."""

    name = "nnletters"

    def __init__(self, spec: Spec, X: np.ndarray, y: np.ndarray) -> None:
        from nnletters import training
        from nnletters.config import load_config

        cfg = load_config(None, nnletters_overrides(spec))
        self.cfg, self.X, self.y = cfg, X, y
        self.rng = np.random.default_rng(cfg.seed)
        self.model, self.optimizer, self.schedule = training.build(
            cfg, X.shape[1], spec.sizes[-1], self.rng)
        self._train_epoch = training.train_epoch
        self.lr = self.schedule.lr(0)

    def train_range(self, lo: int, hi: int) -> float:
        loss, _ = self._train_epoch(self.model, self.optimizer, self.X[lo:hi], self.y[lo:hi],
                                    self.cfg.train.batch_size, self.rng, self.lr)
        return loss

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(x, batch_size=INFER_BATCH)


FACTORIES = {"nnletters": NNLettersMLP, **REFERENCES}


@dataclass(frozen=True)
class Entry:
    """One implementation to run: a label for the table, which trainer, and its spec."""

    label: str
    kind: str
    spec: Spec


# --------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Training throughput against the matmul-only step, inference and memory "
                    "of nnletters and reference MLPs, in paired rounds.")
    p.add_argument("--hidden", default="1024,512", help="hidden widths, comma separated")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="momentum")
    p.add_argument("--adam", action="store_true", help="same as --optimizer adam")
    p.add_argument("--lr", type=float, help="default 0.01 (0.001 for adam)")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--kernels", default="",
                   help="nnletters' train.kernels: numpy, numba or auto (default: its config "
                        "default); a list such as numba,numpy also runs 'nnletters "
                        "kernels=numpy' in the same rounds")
    p.add_argument("--threads", type=int,
                   help="BLAS and torch threads (default: NumPy's BLAS threads as found)")
    p.add_argument("--samples", type=int, default=15000,
                   help="synthetic samples (notMNIST_small's size after the split)")
    p.add_argument("--data", help="a dataset for nnletters.data.load_dataset instead of the "
                                  "synthetic one, e.g. ../shared/data/notMNIST_small.tar.gz")
    p.add_argument("--isolation", choices=("process", "pause"), default="process",
                   help="process: a fresh process per implementation and round; pause: all "
                        "in this process, with a pause before every timed slice")
    p.add_argument("--rounds", type=int, default=3,
                   help="paired rounds (process: processes per implementation; pause: timed "
                        "epochs, each one round)")
    p.add_argument("--epochs", type=int, default=3,
                   help="timed epochs in each process (--isolation process; median taken)")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs first, per process")
    p.add_argument("--slices", type=int, default=5,
                   help="each epoch is run in this many slices, alternating with the "
                        "matmul-only step (and the other implementations with pause)")
    p.add_argument("--pause", type=float, default=PAUSE_SECONDS,
                   help="seconds of rest before every timed slice")
    p.add_argument("--alone", default="nnletters,torch",
                   help="implementations also timed alone in their own process each round "
                        "(whole epochs, nothing else running in it); '' for none")
    p.add_argument("--infer-rounds", type=int, default=5)
    p.add_argument("--impls", default="nnletters,textbook,torch,sklearn",
                   help="comma separated subset of nnletters,textbook,torch,sklearn")
    p.add_argument("--matrix", action="store_true",
                   help="also run nnletters with Adam and with dropout to report overheads")
    p.add_argument("--matrix-dropout", type=float, default=0.3)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS subprocesses")
    p.add_argument("--profile", action="store_true",
                   help="also run one nnletters epoch under cProfile and print its hot spots")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object, no table")
    p.add_argument("--save", help="also write the JSON object to this file")
    p.add_argument("--keep-blas-env", action="store_true",
                   help="do not remove OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE")
    p.add_argument("--child", help=argparse.SUPPRESS)   # internal: the peak-RSS subprocess
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one timed implementation
    p.add_argument("--worker-alone", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    check_args(p, args)
    return args


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.adam:
        args.optimizer = "adam"
    unknown = set(args.impls.split(",")) - set(FACTORIES)
    if unknown:
        p.error(f"--impls: unknown {', '.join(sorted(unknown))}; choose from "
                f"{', '.join(FACTORIES)}")
    if args.matrix and (args.optimizer != "momentum" or args.dropout):
        p.error("--matrix compares against plain SGD momentum without dropout: leave "
                "--optimizer/--dropout at their defaults")
    if not 0.0 <= args.dropout < 1.0:
        p.error("--dropout: expected 0 <= p < 1")
    for name in ("batch", "threads", "samples", "epochs", "slices", "infer_rounds", "rounds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')}: expected a whole number >= 1, got {value}")
    if args.pause < 0:
        p.error(f"--pause: expected seconds >= 0, got {args.pause}")
    args.kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    if set(args.kernels) - set(KERNELS):
        p.error(f"--kernels: expected {', '.join(KERNELS)}, got {','.join(args.kernels)}")
    args.alone = [a for a in args.alone.split(",") if a.strip()]
    if set(args.alone) - set(FACTORIES):
        p.error(f"--alone: unknown {', '.join(sorted(set(args.alone) - set(FACTORIES)))}")


def base_spec(args: argparse.Namespace, n_in: int, n_classes: int, threads: int) -> Spec:
    hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    lr = args.lr if args.lr is not None else DEFAULT_LR.get(args.optimizer, 0.01)
    return Spec(sizes=(n_in, *hidden, n_classes), batch=args.batch, optimizer=args.optimizer,
                lr=lr, dropout=args.dropout, seed=args.seed, threads=threads,
                kernels=args.kernels[0] if args.kernels else None)


def plan(args: argparse.Namespace, spec: Spec) -> list[Entry]:
    entries = [Entry(kind, kind, spec) for kind in FACTORIES if kind in args.impls.split(",")]
    if "nnletters" in args.impls.split(","):  # the other kernel paths, in the same rounds
        entries += [Entry(f"nnletters kernels={k}", "nnletters", replace(spec, kernels=k))
                    for k in args.kernels[1:]]
    if args.matrix:
        adam = replace(spec, optimizer="adam", lr=DEFAULT_LR["adam"])
        drop = replace(spec, dropout=args.matrix_dropout)
        entries += [Entry("nnletters adam", "nnletters", adam),
                    Entry(f"nnletters dropout {args.matrix_dropout:g}", "nnletters", drop)]
    return entries


# --------------------------------------------------------------------------- data


def synthetic_data(n: int, n_in: int, n_classes: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """X: (n, n_in) float32 uniform in [0, 1); y: (n,) int64 from a random linear teacher, so
    that every implementation has something learnable and its accuracy shows it trained."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, n_in), dtype=np.float32)
    teacher = rng.standard_normal((n_in, n_classes), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    for start in range(0, n, 4096):  # in chunks: no (n, n_classes) temporary beyond 4096 rows
        y[start:start + 4096] = ((X[start:start + 4096] - 0.5) @ teacher).argmax(axis=1)
    return X, y


def load_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, str]:
    if not args.data:
        X, y = synthetic_data(args.samples, 784, 10, args.seed)
        return X, y, f"synthetic float32 {X.shape[0]}x{X.shape[1]}, 10 classes (seed {args.seed})"
    from nnletters.data import load_dataset

    ds = load_dataset(args.data, 28)
    # Datasets come sorted by class; epochs run in contiguous slices, so mix the classes once.
    order = np.random.default_rng(args.seed).permutation(len(ds.y))
    X = np.ascontiguousarray(ds.X[order], dtype=np.float32)
    y = ds.y[order].astype(np.int64)
    del ds
    return X, y, f"{args.data}: {X.shape[0]}x{X.shape[1]}, {int(y.max()) + 1} classes"


def infer_batches(X: np.ndarray) -> list[np.ndarray]:
    """Full batches of INFER_BATCH rows (or all of X if it is smaller)."""
    n = max(1, X.shape[0] // INFER_BATCH) * INFER_BATCH
    return [X[s:s + INFER_BATCH] for s in range(0, min(n, X.shape[0]), INFER_BATCH)]


def memory_budget(spec: Spec, X: np.ndarray, y: np.ndarray) -> dict[str, int]:
    """The issue's memory budget in bytes, float32 throughout: decoded data + parameters +
    optimiser state + one batch's activations (every layer's input and output)."""
    params = spec.n_params * 4
    parts = {"data": X.nbytes + y.nbytes, "parameters": params,
             "optimizer_state": spec.optimizer_slots * params,
             "activations": spec.batch * sum(spec.sizes) * 4}
    parts["total"] = sum(parts.values())
    return parts


# --------------------------------------------------------------------------- timing


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_trainers(entries: list[Entry], X: np.ndarray, y: np.ndarray
                   ) -> tuple[dict, dict[str, str]]:
    trainers, skipped = {}, {}
    for e in entries:
        try:
            trainers[e.label] = FACTORIES[e.kind](e.spec, X, y)
        except Exception as exc:  # a missing or broken reference must not stop the rest
            skipped[e.label] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            log(f"skipping {e.label}: {skipped[e.label]}")
    return trainers, skipped


def slice_bounds(n: int, slices: int, batch: int) -> list[tuple[int, int]]:
    """Split range(n) into about ``slices`` contiguous parts, each a whole number of batches
    (but the last), so that an epoch done slice by slice takes the same steps as in one go."""
    steps = -(-n // batch)
    cuts = [min(n, round(steps * k / slices) * batch) for k in range(slices + 1)]
    return [(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:], strict=True) if hi > lo]


class GemmOnly:
    """The roofline as a pseudo-trainer: for a slice it runs as many matmul-only steps as the
    slice has full batches, so that it takes its turn in the rotation like the trainers and
    sees the same load. Its rate is in samples/s like theirs."""

    def __init__(self, roofline: GemmRoofline, batch: int) -> None:
        self.roofline, self.batch = roofline, batch
        self.samples = 0  # samples covered by the last call (full batches only)

    def train_range(self, lo: int, hi: int) -> float:
        steps = (hi - lo) // self.batch
        for _ in range(steps):
            self.roofline.step()
        self.samples = steps * self.batch
        return float("nan")


def time_training(trainers: dict, gemm: GemmOnly, args: argparse.Namespace, n: int,
                  epochs: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """``epochs`` timed epochs after ``--warmup``, each cut into ``--slices`` slices: slice j
    is trained by every trainer and the matmul-only step in turn, in an order rotated every
    slice, each timed slice after ``--pause`` seconds of rest (so that no one runs while the
    previous one's BLAS threads still spin). -> samples/s per epoch per label (the
    matmul-only step under GEMM_LABEL) and the last losses."""
    runners = {**trainers, GEMM_LABEL: gemm}
    labels = list(runners)
    rates: dict[str, list[float]] = {k: [] for k in labels}
    losses: dict[str, float] = {}
    turn = 0
    for r in range(args.warmup + epochs):
        seconds = dict.fromkeys(labels, 0.0)
        gemm_samples, timed = 0, r >= args.warmup
        for lo, hi in slice_bounds(n, args.slices, args.batch):
            for label in rotated(labels, turn):
                if timed:
                    pause(args.pause)
                start = time.perf_counter()
                losses[label] = runners[label].train_range(lo, hi)
                seconds[label] += time.perf_counter() - start
            gemm_samples += gemm.samples
            turn += 1
        if timed:
            for label in labels:
                done = gemm_samples if label == GEMM_LABEL else n
                rates[label].append(done / seconds[label])
        kind = f"epoch {r - args.warmup + 1}/{epochs}" if timed else "warm-up"
        log(f"{kind}: " + ", ".join(f"{k} {v:.2f}s" for k, v in seconds.items()))
    losses.pop(GEMM_LABEL)
    return rates, losses


def time_alone(trainer, args: argparse.Namespace, n: int) -> list[float]:
    """Whole epochs back to back, nothing else in between: samples/s of each timed epoch."""
    rates = []
    for r in range(args.warmup + args.epochs):
        start = time.perf_counter()
        trainer.train_range(0, n)
        if r >= args.warmup:
            rates.append(n / (time.perf_counter() - start))
    return rates


def time_inference(trainers: dict, X: np.ndarray, y: np.ndarray, args: argparse.Namespace
                   ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Alternating passes over full 1024-row batches, each after a pause; -> samples/s and
    accuracy per label."""
    batches = infer_batches(X)
    n = sum(len(b) for b in batches)
    labels = list(trainers)
    rates: dict[str, list[float]] = {k: [] for k in labels}
    accuracy: dict[str, float] = {}
    for r in range(args.infer_rounds):
        for label in rotated(labels, r):
            predict = trainers[label].predict_proba
            pause(args.pause)
            start = time.perf_counter()
            preds = [predict(b).argmax(axis=1) for b in batches]
            rates[label].append(n / (time.perf_counter() - start))
            accuracy[label] = float(np.mean(np.concatenate(preds) == y[:n]))
    return rates, accuracy


def profile_epoch(trainer, top: int = 15) -> str:
    """cProfile of one training epoch, sorted by time spent in each function itself (NumPy's
    matmul and ufuncs count towards the Python function that calls them)."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    trainer.train_range(0, len(trainer.y))
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


# --------------------------------------------------------------------------- rounds


def setup(args: argparse.Namespace) -> tuple[int, np.ndarray, np.ndarray, str, Spec]:
    """BLAS threads (capped for the process), data and the base spec."""
    threads = args.threads or numpy_blas().get("num_threads", 1)
    global _LIMITER  # kept alive for the process
    _LIMITER = limit_blas_threads(threads)
    X, y, desc = load_data(args)
    return threads, X, y, desc, base_spec(args, X.shape[1], int(y.max()) + 1, threads)


_LIMITER = None


def run_worker(args: argparse.Namespace) -> None:
    """In a fresh process: one implementation (``--worker LABEL``) timed against the
    matmul-only step and for inference, or (``--worker-alone``) alone, whole epochs; prints
    one JSON object."""
    _, X, y, _, spec = setup(args)
    entry = next(e for e in plan(args, spec) if e.label == args.worker)
    trainer = FACTORIES[entry.kind](entry.spec, X, y)
    if args.worker_alone:
        print(json.dumps({"train": time_alone(trainer, args, X.shape[0])}))
        return
    gemm = GemmOnly(GemmRoofline(spec.layers, spec.batch, args.seed), spec.batch)
    rates, losses = time_training({entry.label: trainer}, gemm, args, X.shape[0], args.epochs)
    infer, accuracy = time_inference({entry.label: trainer}, X, y, args)
    print(json.dumps({"train": rates[entry.label], "gemm": rates[GEMM_LABEL],
                      "infer": infer[entry.label], "accuracy": accuracy[entry.label],
                      "loss": losses[entry.label]}))


def worker_rounds(args: argparse.Namespace, argv: list[str], entries: list[Entry],
                  alone_only: bool = False) -> tuple[dict[str, dict], dict[str, str]]:
    """``--rounds`` rounds; in each, one fresh process per implementation (and per --alone
    implementation, alone) in rotated order. -> per label, lists over rounds: "train" and
    "gemm" samples/s (medians of the process's epochs), "infer", "alone"; and the skipped."""
    script = str(Path(__file__).resolve())
    labels = [e.label for e in entries]
    jobs = [] if alone_only else [(label, False) for label in labels]
    jobs += [(label, True) for label in labels if label in args.alone]
    rounds: dict[str, dict] = {label: {"train": [], "gemm": [], "infer": [], "alone": []}
                               for label in labels}
    skipped: dict[str, str] = {}
    for r in range(args.rounds):
        for label, alone in rotated(jobs, r):
            if label in skipped:
                continue
            cmd = [sys.executable, script, *argv, "--worker", label]
            try:
                out = run_json(cmd + (["--worker-alone"] if alone else []), label)
            except RuntimeError as exc:  # a missing or broken reference must not stop the rest
                skipped[label] = str(exc)
                log(f"skipping {label}: {exc}")
                continue
            record(rounds[label], out, alone)
            what = "alone" if alone else "train"
            log(f"round {r + 1}/{args.rounds}: {label}{' alone' if alone else ''} "
                f"{rounds[label][what][-1]:,.0f} samples/s")
    return rounds, skipped


def record(figures: dict, out: dict, alone: bool) -> None:
    """One process's figures into a label's lists over rounds (medians of its epochs)."""
    if alone:
        figures["alone"].append(statistics.median(out["train"]))
        return
    for key in ("train", "gemm", "infer"):
        figures[key].append(statistics.median(out[key]))
    figures["accuracy"], figures["loss"] = out["accuracy"], out["loss"]


def pause_rounds(args: argparse.Namespace, argv: list[str], entries: list[Entry],
                 X: np.ndarray, y: np.ndarray, spec: Spec) -> tuple[dict[str, dict], dict]:
    """Every implementation in this process (``--rounds`` timed epochs, one round each),
    then the --alone ones in their own processes. Same result shape as ``worker_rounds``."""
    trainers, skipped = build_trainers(entries, X, y)
    gemm = GemmOnly(GemmRoofline(spec.layers, spec.batch, args.seed), spec.batch)
    rates, losses = time_training(trainers, gemm, args, X.shape[0], args.rounds)
    infer, accuracy = time_inference(trainers, X, y, args)
    rounds = {label: {"train": rates[label], "gemm": rates[GEMM_LABEL], "infer": infer[label],
                      "alone": [], "accuracy": accuracy[label], "loss": losses[label]}
              for label in trainers}
    del trainers
    gc.collect()
    pause(args.pause)
    alone, _ = worker_rounds(args, argv, [e for e in entries if e.label not in skipped],
                             alone_only=True)
    for label, figures in alone.items():
        rounds[label]["alone"] = figures["alone"]
    return rounds, skipped


# --------------------------------------------------------------------------- peak memory


def run_child(args: argparse.Namespace) -> None:
    """In a fresh process: warm the libraries on a tiny model, note the RSS, load the data,
    then record the RSS peak of building + one training epoch, and of one inference pass."""
    threads = args.threads or numpy_blas().get("num_threads", 1)
    _limiter = limit_blas_threads(threads)  # noqa: F841 (kept alive for the process)
    n_in, n_classes = 784, 10
    entry = next(e for e in plan(args, base_spec(args, n_in, n_classes, threads))
                 if e.label == args.child)
    tiny_spec = replace(entry.spec, sizes=(16, *[8] * (len(entry.spec.sizes) - 2), n_classes),
                        batch=4)
    tx = np.random.default_rng(0).random((32, 16), dtype=np.float32)
    tiny = FACTORIES[entry.kind](tiny_spec, tx, np.arange(32, dtype=np.int64) % n_classes)
    tiny.train_range(0, 32)
    tiny.predict_proba(tx)
    del tiny, tx
    gc.collect()
    base = rss_bytes()
    X, y, _ = load_data(args)
    spec = replace(entry.spec, sizes=(X.shape[1], *entry.spec.sizes[1:-1], int(y.max()) + 1))
    gc.collect()
    reset_peak_rss()
    trainer = FACTORIES[entry.kind](spec, X, y)
    trainer.train_range(0, X.shape[0])
    train_peak = peak_rss_bytes()
    reset_peak_rss()
    for b in infer_batches(X):
        trainer.predict_proba(b)
    infer_peak = peak_rss_bytes()
    budget = memory_budget(spec, X, y)
    print(json.dumps({"base_rss": base, "train_peak_rss": train_peak,
                      "infer_peak_rss": infer_peak, "budget": budget,
                      "train_growth": train_peak - base,
                      "ratio": (train_peak - base) / budget["total"]}))


def measure_memory(args: argparse.Namespace, argv: list[str], labels: list[str]) -> dict:
    if args.no_memory or not memory_supported() or not reset_peak_rss():
        return {}
    script = str(Path(__file__).resolve())
    out = {}
    for label in labels:
        proc = subprocess.run([sys.executable, script, *argv, "--child", label],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            out[label] = {"error": err}
            log(f"memory of {label}: failed: {err}")
            continue
        out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
        log(f"memory of {label}: peak {out[label]['train_growth'] / MIB:.1f} MiB over base, "
            f"{out[label]['ratio']:.2f}x budget")
    return out


# --------------------------------------------------------------------------- report


def environment(threads: int) -> dict:
    env = {"python": platform.python_version(), "numpy": np.__version__,
           "cpu": cpu_name(), "cores": os.cpu_count(), "blas": numpy_blas(),
           "threads": threads}
    for mod in ("torch", "sklearn"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    env["openblas_env"] = openblas_env()
    # Other processes on the machine make absolute figures noisy (ratios within a round hold
    # up better, since the rounds alternate): say how busy it was.
    env["load_average_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return env


def summarise(e: Entry, figures: dict) -> dict:
    """One implementation's rounds -> medians with spreads, per-step times and its share of
    the matmul-only step measured beside it (round by round, then the median)."""
    train, gemm = figures["train"], figures["gemm"]
    sps = statistics.median(train)
    of_gemm = paired_ratios(train, gemm)
    out = {"kind": e.kind, "spec": asdict(e.spec), "train_samples_per_s": sps,
           "train": spread(train), "ms_per_step": 1000 * e.spec.batch / sps,
           "gemm_samples_per_s": statistics.median(gemm),
           "gemm_ms_per_step": 1000 * e.spec.batch / statistics.median(gemm),
           "roofline_fraction": of_gemm["median"], "of_gemm": of_gemm,
           "gflops": sps * e.spec.flops_per_sample / 1e9,
           "infer_samples_per_s": statistics.median(figures["infer"]),
           "infer": spread(figures["infer"]), "accuracy": figures["accuracy"],
           "last_epoch_loss": figures["loss"], "rounds": figures}
    if figures["alone"]:
        alone = statistics.median(figures["alone"])
        out.update(alone_samples_per_s=alone, alone=spread(figures["alone"]),
                   alone_ms_per_step=1000 * e.spec.batch / alone,
                   measured_vs_alone=paired_ratios(train, figures["alone"]))
    return out


def compute_ratios(impls: dict, memory: dict) -> dict[str, dict | None]:
    """Paired ratios over the rounds (median, min, max) for the targets and the rest."""
    def rounds(label: str, key: str = "train") -> list[float]:
        return impls.get(label, {}).get("rounds", {}).get(key, [])

    nn = "nnletters"
    ratios = {
        "train_vs_torch": paired_ratios(rounds(nn), rounds("torch")),
        "train_vs_textbook": paired_ratios(rounds(nn), rounds("textbook")),
        "train_vs_sklearn": paired_ratios(rounds(nn), rounds("sklearn")),
        "alone_vs_torch_alone": paired_ratios(rounds(nn, "alone"), rounds("torch", "alone")),
        "gemm_fraction": impls.get(nn, {}).get("of_gemm"),
        "infer_vs_torch": paired_ratios(rounds(nn, "infer"), rounds("torch", "infer")),
        "infer_vs_textbook": paired_ratios(rounds(nn, "infer"), rounds("textbook", "infer")),
    }
    for label in impls:
        if label.startswith("nnletters kernels="):
            ratios[f"{label} vs torch"] = paired_ratios(rounds(label), rounds("torch"))
            ratios[f"{label} vs nnletters"] = paired_ratios(rounds(label), rounds(nn))
    mem = memory.get(nn, {}).get("ratio")
    ratios["memory_ratio"] = spread([mem]) if mem is not None else None
    for key, label in (("adam_overhead", "nnletters adam"),
                       ("dropout_overhead", next((k for k in impls if "dropout" in k), ""))):
        r = paired_ratios(rounds(nn), rounds(label))
        ratios[key] = {k: (v - 1 if k != "n" else v) for k, v in r.items()} if r else None
    return ratios


def check_targets(ratios: dict) -> list[dict]:
    """PASS/FAIL on the median of the paired ratios; their range is given alongside."""
    rows = []
    for key, op, threshold, what in TARGETS:
        r = ratios.get(key)
        value = r["median"] if r else None
        ok = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        rows.append({"target": key, "description": what, "value": value, "op": op,
                     "threshold": threshold, "pass": ok,
                     "range": [r["min"], r["max"]] if r else None})
    return rows


def fmt_target(key: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if key.endswith("overhead"):
        return f"{value:+.1%}"
    if key == "gemm_fraction":
        return f"{value:.1%}"
    return f"{value:.2f}x"


def print_header(result: dict) -> None:
    env, cfg = result["environment"], result["config"]
    blas = env["blas"]
    print(f"nnletters training benchmark: {'-'.join(map(str, cfg['sizes']))} ReLU, "
          f"batch {cfg['batch']}, {cfg['optimizer']} lr {cfg['lr']:g}, dropout "
          f"{cfg['dropout']:g}; nnletters kernels: {cfg['kernels'] or 'config default'}")
    how = (f"a fresh process per implementation and round, {cfg['warmup']} warm-up + "
           f"{cfg['epochs']} timed epochs each" if cfg["isolation"] == "process" else
           f"all in one process, {cfg['warmup']} warm-up epoch(s), then one timed epoch per "
           f"round")
    print(f"data: {result['data']}; {cfg['rounds']} paired rounds in rotated order, {how}; "
          f"slices alternate with the matmul-only step, {cfg['pause']:g} s pause before each; "
          f"median (min-max) over the rounds")
    print(f"NumPy {env['numpy']}, BLAS {blas.get('internal_api', '?')} {blas.get('version', '')}"
          f" ({blas.get('architecture', '?')}, {blas.get('threading_layer', '?')}); torch "
          f"{env['torch']}, sklearn {env['sklearn']}; {env['threads']} threads each")
    loads = (env["load_average_1min_start"], env["load_average_1min"])
    print(f"CPU: {env['cpu']}, {env['cores']} cores; Python {env['python']}; load average "
          f"{loads[0]:.1f} at the start, {loads[1]:.1f} at the end")
    if max(loads) > (env["cores"] or 1):
        print("WARNING: other processes compete for the CPU: absolute figures are low and "
              "noisy, and with several BLAS threads even ratios move (a thread that loses its "
              "core stalls the others); rerun on a quiet machine, or compare with --threads 1")
    print(describe_blas_env(env["openblas_env"]))


def print_tables(result: dict) -> None:
    print(f"\n{'implementation':<22}{'train samples/s':>26}{'ms/step':>9}{'matmul-only':>13}"
          f"{'share':>7}{'alone in own process':>26}")
    print("-" * 103)
    for label, r in result["implementations"].items():
        if "skipped" in r:
            print(f"{label:<22}skipped: {r['skipped']}")
            continue
        alone = fmt_spread(r.get("alone"))
        print(f"{label:<22}{fmt_spread(r['train']):>26}{r['ms_per_step']:>9.2f}"
              f"{r['gemm_ms_per_step']:>13.2f}{r['roofline_fraction']:>7.0%}{alone:>26}")
    print("ms/step = batch / median samples/s; matmul-only = the step's matrix products alone, "
          "timed in the same process, slices alternating; share = matmul-only / step, paired "
          "per round")
    print(f"\n{'implementation':<22}{'infer samples/s':>26}{'accuracy':>10}{'peak MiB':>10}"
          f"{'x budget':>10}")
    for label, r in result["implementations"].items():
        if "skipped" in r:
            continue
        mem = result["memory"].get(label, {})
        growth = f"{mem['train_growth'] / MIB:.1f}" if "train_growth" in mem else "-"
        ratio = f"{mem['ratio']:.2f}" if "ratio" in mem else "-"
        print(f"{label:<22}{fmt_spread(r['infer']):>26}{r['accuracy']:>10.3f}{growth:>10}"
              f"{ratio:>10}")
    if result["memory"]:
        b = next(iter(result["memory"].values())).get("budget")
        if b:
            print(f"peak MiB: training peak RSS minus the RSS before loading data; budget "
                  f"{b['total'] / MIB:.1f} MiB = data {b['data'] / MIB:.1f} + parameters "
                  f"{b['parameters'] / MIB:.1f} + optimiser state "
                  f"{b['optimizer_state'] / MIB:.1f} + one batch's activations "
                  f"{b['activations'] / MIB:.2f}")


def print_check(result: dict) -> None:
    """The method's own check: each --alone implementation measured our way (slices and
    pauses) against alone in its own process."""
    for label, r in result["implementations"].items():
        if "measured_vs_alone" not in r:
            continue
        m = r["measured_vs_alone"]
        print(f"check: {label} measured here {r['train_samples_per_s']:,.0f} samples/s, alone "
              f"in its own process {r['alone_samples_per_s']:,.0f}: ratio "
              f"{fmt_spread(m, '.3f')} (1.0 = the method costs it nothing)")


def print_targets(result: dict) -> None:
    print(f"\n{'target (median of paired rounds)':<62}{'value':>9}{'goal':>10}  result  "
          f"{'range':>17}")
    for t in result["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
        goal = f"{t['op']} {fmt_target(t['target'], t['threshold'])}"
        rng = ("-".join(fmt_target(t["target"], v) for v in t["range"]) if t["range"]
               else "")
        print(f"{t['description']:<62}{fmt_target(t['target'], t['value']):>9}{goal:>10}  "
              f"{verdict:<6}  {rng:>17}")
    extra = {k: v for k, v in result["ratios"].items()
             if k not in {t[0] for t in TARGETS} and v}
    print("also: " + ", ".join(f"{k} {fmt_spread(v, '.2f', 'x')}" for k, v in extra.items()))
    if result["data"].startswith("synthetic"):
        print("memory target is defined on notMNIST_small: pass --data for the real figure")


def readme_table(result: dict) -> str:
    """The rows the README's Speed section quotes, as Markdown."""
    cfg, impls, env = result["config"], result["implementations"], result["environment"]
    kernels = cfg["kernels"] or "default"
    names = {"nnletters": f"nnletters (kernels: {kernels})", "textbook": "textbook NumPy",
             "torch": f"PyTorch {env['torch']}", "sklearn": "scikit-learn"}
    gemm = result["gemm_samples_per_s"]
    rows = ["| per step, batch 128 | ms/step | samples/s | share of the matmul-only step | "
            "alone in its own process, samples/s |", "| --- | --- | --- | --- | --- |",
            f"| matmul-only step (the limit) | {1000 * cfg['batch'] / gemm:.2f} | {gemm:,.0f} "
            f"| 100% | |"]
    for label, r in impls.items():
        if "skipped" in r:
            continue
        of = r["of_gemm"]
        if label.startswith("nnletters kernels="):
            names[label] = f"nnletters (kernels: {label.split('=', 1)[1]})"
        rows.append(f"| {names.get(label, label)} | {r['ms_per_step']:.2f} | "
                    f"{fmt_spread(r['train'])} | {of['median']:.0%} ({of['min']:.0%}-"
                    f"{of['max']:.0%}) | {fmt_spread(r.get('alone'))} |")
    vs = result["ratios"].get("train_vs_torch")
    if vs:
        rows.append(f"\nnnletters / PyTorch, paired rounds: {fmt_spread(vs, '.2f', 'x')}")
    return "\n".join(rows)


def print_report(result: dict) -> None:
    print_header(result)
    print_tables(result)
    print()
    print_check(result)
    print_targets(result)
    if result["profile"]:
        print("\ncProfile of one nnletters epoch:")
        print(result["profile"].strip())
    print("\nFor README.md (Speed):\n")
    print(readme_table(result))


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    threads, X, y, data_desc, spec = setup(args)
    entries = plan(args, spec)
    if args.isolation == "process":
        rounds, skipped = worker_rounds(args, argv, entries)
    else:
        rounds, skipped = pause_rounds(args, argv, entries, X, y, spec)
    profile = None
    if args.profile and "nnletters" in args.impls.split(","):
        profile = profile_epoch(FACTORIES["nnletters"](spec, X, y))
    del X, y
    gc.collect()
    impls = {e.label: ({"skipped": skipped[e.label]} if e.label in skipped
                       else summarise(e, rounds[e.label])) for e in entries}
    gemm = [g for figures in rounds.values() for g in figures["gemm"]]
    memory = measure_memory(args, argv, [e.label for e in entries if e.label not in skipped])
    ratios = compute_ratios(impls, memory)
    env = {**environment(threads), "load_average_1min_start": load_start}
    return {"environment": env, "data": data_desc,
            "config": {**asdict(spec), "flops_per_sample": spec.flops_per_sample,
                       "isolation": args.isolation, "rounds": args.rounds,
                       "epochs": args.epochs, "warmup": args.warmup, "pause": args.pause,
                       "infer_batch": INFER_BATCH, "infer_rounds": args.infer_rounds},
            "gemm_samples_per_s": statistics.median(gemm) if gemm else None,
            "implementations": impls, "memory": memory, "ratios": ratios,
            "targets": check_targets(ratios), "profile": profile}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return
    if args.worker:
        run_worker(args)
        return
    for kernels in args.kernels:
        check_kernels(kernels)
    result = run(args, argv)
    emit(result, args.save, args.json, print_report)


if __name__ == "__main__":
    main()

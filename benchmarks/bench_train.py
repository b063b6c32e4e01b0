"""Training benchmark: nnletters against reference MLPs on the same data and architecture.

    python benchmarks/bench_train.py                 # table
    python benchmarks/bench_train.py --json          # one JSON object on stdout
    python benchmarks/bench_train.py --matrix --impls nnletters   # Adam / dropout overhead

In one process it builds every implementation (nnletters through ``training.build`` and
``training.train_epoch``, the path ``nnletters train`` takes; a textbook float64 NumPy MLP;
PyTorch CPU; scikit-learn's MLPClassifier), warms them up, then runs epochs *alternating*
between them: each epoch is cut into a few slices of whole batches, and every slice is trained
by each implementation in turn, in an order rotated every slice, so that load from other
processes hits all of them alike. It reports median samples/s over the epochs. A matmul-only
step (NumPy float32 at the step's own shapes: the GEMM roofline) takes its turn in the same
rotation. Inference is timed the same way at batch 1024. Peak memory is measured in one short
subprocess per implementation so that their peaks do not mix.

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

INFER_BATCH = 1024
GEMM_LABEL = "GEMM only"  # the roofline's turn in the rotation
DEFAULT_LR = {"adam": 0.001}  # everything else: 0.01

# The targets: (key in "ratios", comparison, threshold, description).
TARGETS = [
    ("train_vs_torch", ">=", 1.8, "training samples/s, nnletters / PyTorch CPU"),
    ("train_vs_textbook", ">=", 2.5, "training samples/s, nnletters / textbook NumPy"),
    ("gemm_fraction", ">=", 0.80, "nnletters GFLOP/s / NumPy GEMM rate at the step's shapes"),
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
            "schedule.name=constant", f"train.batch_size={spec.batch}"]


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
        description="Training throughput, GEMM roofline, inference and memory of nnletters "
                    "against reference MLPs.")
    p.add_argument("--hidden", default="1024,512", help="hidden widths, comma separated")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="momentum")
    p.add_argument("--adam", action="store_true", help="same as --optimizer adam")
    p.add_argument("--lr", type=float, help="default 0.01 (0.001 for adam)")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--threads", type=int,
                   help="BLAS and torch threads (default: NumPy's BLAS threads as found)")
    p.add_argument("--samples", type=int, default=15000,
                   help="synthetic samples (notMNIST_small's size after the split)")
    p.add_argument("--data", help="a dataset for nnletters.data.load_dataset instead of the "
                                  "synthetic one, e.g. ../shared/data/notMNIST_small.tar.gz")
    p.add_argument("--epochs", type=int, default=5, help="timed epochs of each implementation")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs first")
    p.add_argument("--slices", type=int, default=5,
                   help="each epoch is run in this many slices, alternating implementations "
                        "slice by slice")
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
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: the peak-RSS subprocess
    args = p.parse_args(argv)
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
    for name in ("batch", "threads", "samples", "epochs", "slices", "infer_rounds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')}: expected a whole number >= 1, got {value}")
    return args


def base_spec(args: argparse.Namespace, n_in: int, n_classes: int, threads: int) -> Spec:
    hidden = tuple(int(h) for h in args.hidden.split(",") if h.strip())
    lr = args.lr if args.lr is not None else DEFAULT_LR.get(args.optimizer, 0.01)
    return Spec(sizes=(n_in, *hidden, n_classes), batch=args.batch, optimizer=args.optimizer,
                lr=lr, dropout=args.dropout, seed=args.seed, threads=threads)


def plan(args: argparse.Namespace, spec: Spec) -> list[Entry]:
    entries = [Entry(kind, kind, spec) for kind in FACTORIES if kind in args.impls.split(",")]
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


def time_training(trainers: dict, gemm: GemmOnly, args: argparse.Namespace, n: int
                  ) -> tuple[dict[str, list[float]], dict[str, float], dict[str, float]]:
    """Alternating epochs, each cut into ``--slices`` slices: slice j of epoch r is trained by
    every trainer (and the GEMM-only step) in turn, in an order rotated every slice, so that
    bursts of load from other processes, seconds long, land on all of them alike. Returns
    samples/s per epoch per label (GEMM under ``GEMM_LABEL``), the best samples/s of any
    single timed slice (the least disturbed figure on a busy machine) and the last losses."""
    runners = {**trainers, GEMM_LABEL: gemm}
    labels = list(runners)
    bounds = slice_bounds(n, args.slices, args.batch)
    rates: dict[str, list[float]] = {k: [] for k in labels}
    best = dict.fromkeys(labels, 0.0)
    losses: dict[str, float] = {}
    turn = 0
    for r in range(args.warmup + args.epochs):
        seconds = dict.fromkeys(labels, 0.0)
        gemm_samples = 0
        timed = r >= args.warmup
        for lo, hi in bounds:
            for label in labels[turn % len(labels):] + labels[:turn % len(labels)]:
                start = time.perf_counter()
                losses[label] = runners[label].train_range(lo, hi)
                took = time.perf_counter() - start
                seconds[label] += took
                done = gemm.samples if label == GEMM_LABEL else hi - lo
                if timed and done:
                    best[label] = max(best[label], done / took)
            gemm_samples += gemm.samples
            turn += 1
        if timed:
            for label in labels:
                rates[label].append((gemm_samples if label == GEMM_LABEL else n)
                                    / seconds[label])
        kind = f"epoch {r - args.warmup + 1}/{args.epochs}" if timed else "warm-up"
        log(f"{kind}: " + ", ".join(f"{k} {v:.2f}s" for k, v in seconds.items()))
    losses.pop(GEMM_LABEL)
    return rates, best, losses


def time_inference(trainers: dict, X: np.ndarray, y: np.ndarray, rounds: int
                   ) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Alternating passes over full 1024-row batches; returns samples/s and accuracy."""
    batches = infer_batches(X)
    n = sum(len(b) for b in batches)
    labels = list(trainers)
    rates: dict[str, list[float]] = {k: [] for k in labels}
    accuracy: dict[str, float] = {}
    for r in range(rounds):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            predict = trainers[label].predict_proba
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
    # Other processes on the machine make absolute figures noisy (ratios within a run hold up
    # better, since the rounds alternate): say how busy it was.
    env["load_average_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return env


def compute_ratios(impls: dict, memory: dict, gemm_gflops: float, matrix: bool) -> dict:
    def sps(label: str, key: str = "train_samples_per_s") -> float | None:
        return impls.get(label, {}).get(key)

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    nn = "nnletters"
    ratios = {
        "train_vs_torch": div(sps(nn), sps("torch")),
        "train_vs_textbook": div(sps(nn), sps("textbook")),
        "train_vs_sklearn": div(sps(nn), sps("sklearn")),
        "gemm_fraction": div(impls.get(nn, {}).get("gflops"), gemm_gflops),
        "infer_vs_torch": div(sps(nn, "infer_samples_per_s"), sps("torch", "infer_samples_per_s")),
        "infer_vs_textbook": div(sps(nn, "infer_samples_per_s"),
                                 sps("textbook", "infer_samples_per_s")),
        "memory_ratio": memory.get(nn, {}).get("ratio"),
    }
    for key, label in (("adam_overhead", "nnletters adam"),
                       ("dropout_overhead", next((k for k in impls if "dropout" in k), ""))):
        ratio = div(sps(nn), sps(label)) if matrix else None
        ratios[key] = ratio - 1 if ratio else None
    return ratios


def check_targets(ratios: dict, ratios_best: dict) -> list[dict]:
    """PASS/FAIL on the medians; the best-slice value is given alongside, as a hint of what a
    quiet machine would show."""
    rows = []
    for key, op, threshold, what in TARGETS:
        value = ratios.get(key)
        ok = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        rows.append({"target": key, "description": what, "value": value, "op": op,
                     "threshold": threshold, "pass": ok, "best_slice_value": ratios_best.get(key)})
    return rows


def fmt_target(key: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if key.endswith("overhead"):
        return f"{value:+.1%}"
    if key == "gemm_fraction":
        return f"{value:.1%}"
    return f"{value:.2f}x"


def print_report(result: dict) -> None:
    env, cfg = result["environment"], result["config"]
    blas = env["blas"]
    print(f"nnletters training benchmark: {'-'.join(map(str, cfg['sizes']))} ReLU, "
          f"batch {cfg['batch']}, {cfg['optimizer']} lr {cfg['lr']:g}, dropout {cfg['dropout']:g}")
    print(f"data: {result['data']}; {cfg['warmup']} warm-up + {cfg['epochs']} timed epochs each, "
          f"alternating; median reported")
    print(f"NumPy {env['numpy']}, BLAS {blas.get('internal_api', '?')} {blas.get('version', '')}"
          f" ({blas.get('architecture', '?')}, {blas.get('threading_layer', '?')}), "
          f"{blas.get('num_threads', '?')} BLAS threads; torch {env['torch']}, "
          f"sklearn {env['sklearn']}; {env['threads']} threads each")
    loads = (env["load_average_1min_start"], env["load_average_1min"])
    print(f"CPU: {env['cpu']}, {env['cores']} cores; Python {env['python']}; load average "
          f"{loads[0]:.1f} at the start, {loads[1]:.1f} at the end")
    if max(loads) > (env["cores"] or 1):
        print("WARNING: other processes compete for the CPU: absolute figures are low and "
              "noisy, and with several BLAS threads even ratios move (a thread that loses its "
              "core stalls the others); rerun on a quiet machine, or compare with --threads 1")
    print(describe_blas_env(env["openblas_env"]))
    print(f"GEMM roofline: NumPy float32 matmul at the step's shapes runs at "
          f"{result['gemm_gflops']:.1f} GFLOP/s ({result['gemm_gflops_credited']:.1f} in the "
          f"6 x batch x sum(fan_in x fan_out) count credited to every trainer, "
          f"{cfg['flops_per_sample'] / 1e6:.2f} MFLOP per sample, which includes the "
          f"first layer's input gradient that none computes); \"of GEMM\" = the share of "
          f"step time a matmul-only step would take")
    print()
    head = (f"{'implementation':<22}{'train samples/s':>16}{'GFLOP/s':>9}{'of GEMM':>9}"
            f"{'infer samples/s':>17}{'accuracy':>10}{'peak MiB':>10}{'x budget':>10}")
    print(head)
    print("-" * len(head))
    for label, r in result["implementations"].items():
        if "skipped" in r:
            print(f"{label:<22}skipped: {r['skipped']}")
            continue
        mem = result["memory"].get(label, {})
        growth = f"{mem['train_growth'] / MIB:.1f}" if "train_growth" in mem else "-"
        ratio = f"{mem['ratio']:.2f}" if "ratio" in mem else "-"
        print(f"{label:<22}{r['train_samples_per_s']:>16,.0f}{r['gflops']:>9.1f}"
              f"{r['roofline_fraction']:>9.1%}{r['infer_samples_per_s']:>17,.0f}"
              f"{r['accuracy']:>10.3f}{growth:>10}{ratio:>10}")
    if result["memory"]:
        b = next(iter(result["memory"].values())).get("budget")
        if b:
            print(f"peak MiB: training peak RSS minus the RSS before loading data; budget "
                  f"{b['total'] / MIB:.1f} MiB = data {b['data'] / MIB:.1f} + parameters "
                  f"{b['parameters'] / MIB:.1f} + optimiser state "
                  f"{b['optimizer_state'] / MIB:.1f} + one batch's activations "
                  f"{b['activations'] / MIB:.2f}")
    print()
    print(f"{'target (medians)':<68}{'value':>9}{'goal':>11}  result  {'best slices':>11}")
    for t in result["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
        goal = f"{t['op']} {fmt_target(t['target'], t['threshold'])}"
        print(f"{t['description']:<68}{fmt_target(t['target'], t['value']):>9}{goal:>11}  "
              f"{verdict:<6}  {fmt_target(t['target'], t['best_slice_value']):>11}")
    print("best slices: the same ratios from each one's fastest single slice (least disturbed "
          "by other processes); memory is the same figure")
    extra = {k: v for k, v in result["ratios"].items() if k not in {t[0] for t in TARGETS}}
    print("also: " + ", ".join(f"{k} {fmt_target(k, v)}" for k, v in extra.items()))
    if result["profile"]:
        print("\ncProfile of one nnletters epoch:")
        print(result["profile"].strip())
    if result["data"].startswith("synthetic"):
        print("memory target is defined on notMNIST_small: pass --data for the real figure")


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    blas = numpy_blas()
    threads = args.threads or blas.get("num_threads", 1)
    _limiter = limit_blas_threads(threads)  # noqa: F841 (kept alive for the process)
    X, y, data_desc = load_data(args)
    spec = base_spec(args, X.shape[1], int(y.max()) + 1, threads)
    entries = plan(args, spec)
    trainers, skipped = build_trainers(entries, X, y)
    roofline = GemmRoofline(spec.layers, spec.batch, args.seed)
    train_rates, best_rates, losses = time_training(
        trainers, GemmOnly(roofline, spec.batch), args, X.shape[0])
    infer_rates, accuracy = time_inference(trainers, X, y, args.infer_rounds)
    profile = profile_epoch(trainers["nnletters"]) if args.profile and "nnletters" in trainers \
        else None
    gemm_sps = train_rates.pop(GEMM_LABEL)
    # NumPy's matmul rate at the step's shapes; then the same step time in the trainers'
    # count, 6 x batch x sum(fan_in x fan_out) per step.
    gemm = [sps * roofline.actual_flops / spec.batch / 1e9 for sps in gemm_sps]
    gemm_gflops = statistics.median(gemm)
    credited = gemm_gflops * roofline.credited_flops / roofline.actual_flops
    credited_best = best_rates.pop(GEMM_LABEL) * roofline.credited_flops / spec.batch / 1e9
    impls: dict[str, dict] = {}
    for e in entries:
        if e.label in skipped:
            impls[e.label] = {"skipped": skipped[e.label]}
            continue
        sps = statistics.median(train_rates[e.label])
        gflops = sps * e.spec.flops_per_sample / 1e9
        impls[e.label] = {
            "kind": e.kind, "spec": asdict(e.spec), "train_samples_per_s": sps,
            "train_samples_per_s_all": train_rates[e.label],
            "train_samples_per_s_best_slice": best_rates[e.label], "gflops": gflops,
            "roofline_fraction": gflops / credited,
            "infer_samples_per_s": statistics.median(infer_rates[e.label]),
            "infer_samples_per_s_all": infer_rates[e.label],
            "infer_samples_per_s_best": max(infer_rates[e.label]),
            "gflops_best_slice": best_rates[e.label] * e.spec.flops_per_sample / 1e9,
            "last_epoch_loss": losses[e.label], "accuracy": accuracy[e.label]}
    del trainers
    gc.collect()
    memory = measure_memory(args, argv, [e.label for e in entries if e.label not in skipped])
    ratios = compute_ratios(impls, memory, credited, args.matrix)
    best_view = {k: {"train_samples_per_s": v.get("train_samples_per_s_best_slice"),
                     "infer_samples_per_s": v.get("infer_samples_per_s_best"),
                     "gflops": v.get("gflops_best_slice")} for k, v in impls.items()}
    ratios_best = compute_ratios(best_view, memory, credited_best, args.matrix)
    env = {**environment(threads), "load_average_1min_start": load_start}
    return {"environment": env, "data": data_desc,
            "config": {**asdict(spec), "flops_per_sample": spec.flops_per_sample,
                       "epochs": args.epochs, "warmup": args.warmup,
                       "infer_batch": INFER_BATCH, "infer_rounds": args.infer_rounds},
            "gemm_gflops": gemm_gflops, "gemm_gflops_all": gemm,
            "gemm_gflops_credited": credited, "implementations": impls,
            "memory": memory, "ratios": ratios, "ratios_best": ratios_best,
            "targets": check_targets(ratios, ratios_best),
            "profile": profile}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return
    result = run(args, argv)
    if args.save:
        Path(args.save).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)


if __name__ == "__main__":
    main()

"""Scale: decode, cache load, one training epoch and peak memory at growing dataset sizes.

    python benchmarks/bench_scale.py                       # 26k, 104k, 520k images (minutes)
    python benchmarks/bench_scale.py --sizes 26000,104000 --json
    python benchmarks/bench_scale.py --config configs/quickstart.yaml --kernels numba

The images are a ``nnletters data synth`` folder (rendered once, by default into
/tmp/nnletters-scale/, never into the repository), at the largest size asked for; each
smaller size is a list file over the first images of every letter, so every size is a real
data path of PNG files. Per size, three fresh processes, each with its own decoded-data cache
folder:

- decode: ``load_dataset`` from the PNG files into an empty cache (decode + cache write);
- cache load: ``load_splits`` for the config, from that cache (load + split);
- train: the whole ``nnletters train --config C --set train.epochs=1`` command, in process,
  from that cache (load, split, one epoch, validation, checkpoints, test).

Each reports its wall seconds and its peak resident memory over the RSS it had before
touching the data (after imports). Everything should grow linearly with the size, and the
train command's peak stay within 1.5x of the budget: the decoded data as float32 plus the
model (parameters, gradients, optimiser state and the weight average, float32).

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
from _rounds import KERNELS, check_kernels, emit, kernels_overrides, run_json

if __name__ == "__main__":
    drop_slow_blas_vars()

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "notmnist.yaml"
DEFAULT_SIZES = "26000,104000,520000"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
BUDGET_LIMIT = 1.5
MIB = 1024 * 1024
PHASES = ("decode", "load", "train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=DEFAULT_SIZES,
                   help="dataset sizes, comma separated (multiples of the letter count)")
    p.add_argument("--letters", type=int, default=26, help="classes: the first N capitals")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--folder", help="the synth folder (default: /tmp/nnletters-scale/"
                                    "synth-<letters>x<per class>-s<size>, made when missing)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG),
                   help="the nnletters config trained for one epoch (its data.path is replaced)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="more config overrides for the train command")
    p.add_argument("--kernels", choices=KERNELS, help="nnletters' train.kernels")
    p.add_argument("--workers", type=int, default=0, help="data.workers for decoding (0: auto)")
    p.add_argument("--threads", type=int,
                   help="BLAS threads of the phases (OPENBLAS_NUM_THREADS; default: as found)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--save", help="also write the JSON report to this file")
    p.add_argument("--keep-blas-env", action="store_true",
                   help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (tests use this)")
    p.add_argument("--worker", choices=PHASES, help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)       # the worker's list file
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)  # the worker's cache folder
    args = p.parse_args(argv)
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        p.error(f"--sizes: expected whole numbers, got {args.sizes!r}")
    if not 1 <= args.letters <= len(LETTERS):
        p.error(f"--letters: expected 1..{len(LETTERS)}, got {args.letters}")
    bad = [n for n in args.sizes if n < args.letters or n % args.letters]
    if bad or not args.sizes:
        p.error(f"--sizes: expected multiples of {args.letters} (the letters), got "
                f"{', '.join(map(str, bad)) or 'none'}")
    return args


# --------------------------------------------------------------------------- the data


def synth_folder(args: argparse.Namespace) -> tuple[Path, float | None]:
    """The synth folder holding the largest size (rendered now when missing); -> (folder,
    seconds the rendering took, None when it was there already)."""
    per_class = args.sizes[-1] // args.letters
    folder = Path(args.folder) if args.folder else (
        Path(tempfile.gettempdir()) / "nnletters-scale"
        / f"synth-{args.letters}x{per_class}-s{args.image_size}")
    letters = LETTERS[:args.letters]
    last = folder / letters[-1] / f"{letters[-1]}_{per_class:05d}.png"
    if last.exists():
        return folder, None
    if folder.exists() and any(folder.iterdir()):
        sys.exit(f"error: {folder}: exists but lacks {last.name}; remove it or pass --folder")
    print(f"rendering {args.letters} x {per_class} images into {folder} (once) ...",
          file=sys.stderr)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nnletters", "data", "synth", str(folder),
                    "--letters", f"A-{letters[-1]}", "--per-class", str(per_class),
                    "--size", str(args.image_size)], check=True, cwd=ROOT,
                   stdout=sys.stderr)  # stdout is the report's
    return folder, time.perf_counter() - t0


def list_file(folder: Path, letters: str, n: int) -> Path:
    """A list file in ``folder`` naming the first n / len(letters) images of every letter."""
    per_class = n // len(letters)
    path = folder / f"scale-{n}.txt"
    lines = [f"{c}/{c}_{i:05d}.png {c}\n" for c in letters for i in range(1, per_class + 1)]
    text = "".join(lines)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


# --------------------------------------------------------------------------- one phase


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def train_overrides(args: argparse.Namespace) -> list[str]:
    return ["data.source=path", f"data.path={args.data}", f"data.cache_dir={args.cache_dir}",
            f"data.image_size={args.image_size}", f"data.workers={args.workers}",
            "train.epochs=1", *args.set, *kernels_overrides(args.kernels)]


def worker(args: argparse.Namespace) -> None:
    """One phase in this fresh process; prints {"seconds", "base_rss", "peak_rss", ...}."""
    # Everything the phase imports comes before the base RSS is read.
    import numpy as np  # noqa: F401

    import nnletters.evaluation  # noqa: F401
    import nnletters.run_folder  # noqa: F401
    import nnletters.training  # noqa: F401
    from nnletters.cli import main as cli
    from nnletters.config import load_config
    from nnletters.data import load_dataset, load_splits

    cfg = load_config(args.config, train_overrides(args))
    before = _status_kib("VmRSS") * 1024
    if args.worker == "train":
        # The compiled kernels' runtime (numba and LLVM, ~130 MiB) is code, a fixed cost like
        # NumPy's import, not memory that grows with the data: loaded before the base RSS is
        # read, and reported on its own line.
        from nnletters.nn import kernels

        sizes = [args.image_size ** 2, *cfg.model.hidden, args.letters]
        if kernels.resolve(cfg.train.kernels, sizes) == "numba":
            kernels.prepare(log=lambda _line: None)
    base = _status_kib("VmRSS") * 1024
    out: dict = {"kernels_rss": base - before}
    t0 = time.perf_counter()
    if args.worker == "decode":
        ds = load_dataset(args.data, args.image_size, workers=args.workers,
                          cache_dir=args.cache_dir)
        out.update(images=len(ds.y), x_bytes=ds.X.nbytes, x_dtype=str(ds.X.dtype))
    elif args.worker == "load":
        splits = load_splits(cfg.data, cfg.seed)
        out.update(n_train=len(splits.train.y), n_val=len(splits.val.y),
                   n_test=len(splits.test.y))
    else:
        run = Path(args.cache_dir) / "run"
        cmd = ["train", "--config", args.config, "--out", str(run), "-q"]
        for s in train_overrides(args):
            cmd += ["--set", s]
        cli(cmd, standalone_mode=False)
        rows = (run / "metrics.jsonl").read_text().splitlines()
        summary = json.loads((run / "summary.json").read_text())
        out.update(epoch_seconds=json.loads(rows[0])["epoch_seconds"],
                   n_train=summary["n_train"], n_params=params_of(run))
    out.update(seconds=time.perf_counter() - t0, base_rss=base,
               peak_rss=_status_kib("VmHWM") * 1024)
    print(json.dumps(out))


def params_of(run: Path) -> int:
    """Parameters of the run's model (from best.npz, weights and biases only)."""
    import numpy as np

    with np.load(run / "best.npz", allow_pickle=False) as z:
        return int(sum(z[k].size for k in z.files if k.startswith("model/")))


# --------------------------------------------------------------------------- driver


def model_slots(args: argparse.Namespace) -> int:
    """float32 copies of the parameters a training process holds: the parameters, their
    gradients, the optimiser's state and the weight average."""
    from nnletters.config import load_config

    o = load_config(args.config, list(args.set)).optim
    state = {"sgd": 0, "momentum": 1, "nesterov": 1}.get(o.name, 2)  # adam/adamw: m and v
    return 2 + state + (1 if o.ema else 0)


def measure(args: argparse.Namespace, argv: list[str], folder: Path, n: int) -> dict:
    """The three phases at size ``n``, each in a fresh process, sharing one cache folder."""
    data = list_file(folder, LETTERS[:args.letters], n)
    script = str(Path(__file__).resolve())
    row: dict = {"images": n}
    with tempfile.TemporaryDirectory(prefix="nnletters-scale-") as cache:
        for phase in PHASES:
            print(f"{n} images: {phase} ...", file=sys.stderr)
            cmd = [sys.executable, script, *argv, "--worker", phase, "--data", str(data),
                   "--cache-dir", cache, "--keep-blas-env"]
            env = dict(os.environ, **({"OPENBLAS_NUM_THREADS": str(args.threads)}
                                      if args.threads else {}))
            row[phase] = run_json(cmd, f"{phase} at {n} images", cwd=ROOT, env=env)
            row[phase]["peak_growth"] = row[phase]["peak_rss"] - row[phase]["base_rss"]
    data_bytes = n * (args.image_size ** 2 * 4 + 8)  # float32 pixels + int64 labels
    model_bytes = row["train"]["n_params"] * 4 * model_slots(args)
    row["budget"] = {"data": data_bytes, "model": model_bytes, "total": data_bytes + model_bytes}
    row["train_peak_over_budget"] = row["train"]["peak_growth"] / row["budget"]["total"]
    return row


def linearity(rows: list[dict]) -> dict[str, list[float]]:
    """Per phase, seconds and peak memory per image at each size divided by those at the
    smallest: 1.0 everywhere is linear growth."""
    first = rows[0]
    out: dict[str, list[float]] = {}
    for phase in PHASES:
        for key, name in (("seconds", "seconds"), ("peak_growth", "peak")):
            if phase == "train" and key == "seconds":
                key, name = "epoch_seconds", "epoch_seconds"
            unit = first[phase][key] / first["images"]
            out[f"{phase}_{name}"] = [r[phase][key] / r["images"] / unit for r in rows]
    return out


def print_report(report: dict) -> None:
    print(f"scale: {report['config']} for one epoch; {report['letters']} letters, "
          f"{report['image_size']}x{report['image_size']} PNG from {report['folder']}"
          + (f" (rendered in {report['synth_seconds']:.0f} s)" if report["synth_seconds"]
             else ""))
    print(describe_blas_env(report["openblas_env"])
          + (f"; {report['threads']} BLAS thread(s)" if report["threads"] else ""))
    print(f"load average {report['load_average'][0]:.1f} at the start, "
          f"{report['load_average'][1]:.1f} at the end\n")
    head = (f"{'images':>8} {'decode s':>9} {'peak MiB':>9} {'load s':>7} {'peak MiB':>9} "
            f"{'epoch s':>8} {'train cmd s':>12} {'peak MiB':>9} {'budget MiB':>11} "
            f"{'x budget':>9}")
    print(head)
    print("-" * len(head))
    for r in report["rows"]:
        d, ld, t = r["decode"], r["load"], r["train"]
        print(f"{r['images']:>8,} {d['seconds']:>9.1f} {d['peak_growth'] / MIB:>9.0f} "
              f"{ld['seconds']:>7.2f} {ld['peak_growth'] / MIB:>9.0f} "
              f"{t['epoch_seconds']:>8.1f} {t['seconds']:>12.1f} "
              f"{t['peak_growth'] / MIB:>9.0f} {r['budget']['total'] / MIB:>11.0f} "
              f"{r['train_peak_over_budget']:>8.2f}x")
    print("peak MiB: the phase's peak RSS over its RSS after imports; budget: decoded data "
          "as float32 + model (parameters, gradients, optimiser state, weight average)")
    kernels_rss = max(r["train"].get("kernels_rss", 0) for r in report["rows"])
    if kernels_rss > 4 * MIB:
        print(f"the training command's imports include the compiled kernels' runtime (numba, "
              f"LLVM): {kernels_rss / MIB:.0f} MiB, the same at every size")
    print("\nper image, relative to the smallest size (1.00 = linear):")
    for key, values in report["linearity"].items():
        print(f"  {key:<22}" + "  ".join(f"{v:5.2f}" for v in values))
    worst = max(r["train_peak_over_budget"] for r in report["rows"])
    verdict = "PASS" if worst <= BUDGET_LIMIT else "FAIL"
    print(f"\ntrain command peak / budget <= {BUDGET_LIMIT}x at every size: {verdict} "
          f"(worst {worst:.2f}x)")
    print("\nFor README.md (Speed):\n")
    print(readme_table(report))


def readme_table(report: dict) -> str:
    """The rows the README's Speed section quotes, as Markdown."""
    rows = ["| images | decode, s | cache load, s | epoch, s | training command: peak MiB "
            "(x budget) |", "| --- | --- | --- | --- | --- |"]
    for r in report["rows"]:
        t = r["train"]
        rows.append(f"| {r['images']:,} | {r['decode']['seconds']:.1f} | "
                    f"{r['load']['seconds']:.2f} | {t['epoch_seconds']:.1f} | "
                    f"{t['peak_growth'] / MIB:,.0f} ({r['train_peak_over_budget']:.2f}x) |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    check_kernels(args.kernels)
    folder, synth_seconds = synth_folder(args)
    load = [os.getloadavg()[0]]
    rows = [measure(args, argv, folder, n) for n in args.sizes]
    load.append(os.getloadavg()[0])
    report = {"config": args.config, "overrides": args.set, "kernels": args.kernels,
              "threads": args.threads,
              "letters": args.letters, "image_size": args.image_size, "folder": str(folder),
              "synth_seconds": synth_seconds, "load_average": load,
              "openblas_env": openblas_env(), "rows": rows, "linearity": linearity(rows)}
    emit(report, args.save, args.json, print_report)


if __name__ == "__main__":
    main()

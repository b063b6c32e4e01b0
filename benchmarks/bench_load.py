"""Loading benchmark: cold decode, warm (cached) load, against a plain Pillow loop.

    python benchmarks/bench_load.py                       # notMNIST_small, 3 rounds
    python benchmarks/bench_load.py PATH --rounds 5 --workers 2 --json

Each round times, in turn (so that noise from other processes hits all of them alike):

- plain:  tarfile streaming + ``Image.open`` + ``np.asarray`` per file, one process, the
          loop anyone would write first (no resizing, no skipping logic, no sorting);
- cold:   ``load_dataset`` with the cache off: read, decode (in parallel when large),
          convert, arrange;
- cold+store: the same into an empty cache folder, including writing the cache file;
- warm:   ``load_dataset`` again from that cache (the common case after the first run).

Medians over the rounds are printed with images/s. Targets: warm < 0.3 s on notMNIST_small,
cold no slower than plain.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from nnletters.data import load_dataset
from nnletters.data.images import resolve_workers

DEFAULT = Path(__file__).resolve().parents[2] / "shared/data/notMNIST_small.tar.gz"


def plain_pillow_loop(path: Path) -> int:
    """The baseline: every image of a tar archive through Pillow, serially; -> images read."""
    count = 0
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            try:
                img = Image.open(io.BytesIO(data))
                np.asarray(img.convert("L"))
                count += 1
            except Exception:  # noqa: BLE001  the baseline skips what it cannot read
                pass
    return count


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the decoding workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(fn, cpu: list[float] | None = None) -> tuple[float, object]:
    """-> (wall seconds, fn()); appends the CPU seconds spent to ``cpu`` when given.

    CPU time matters on a shared machine: wall time there depends on other processes."""
    start, start_cpu = time.perf_counter(), cpu_seconds()
    out = fn()
    if cpu is not None:
        cpu.append(cpu_seconds() - start_cpu)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--size", type=int, default=28, help="image_size")
    parser.add_argument("--workers", type=int, default=0, help="0: one per core")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not args.path.exists():
        sys.exit(f"benchmark data not found: {args.path}")
    is_tar = args.path.name.lower().endswith((".tar.gz", ".tgz", ".tar"))

    times: dict[str, list[float]] = {"plain": [], "cold": [], "cold+store": [], "warm": []}
    cpu: dict[str, list[float]] = {key: [] for key in times}
    n_images = 0
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as cache_dir:
            if is_tar:
                seconds, _count = timed(lambda: plain_pillow_loop(args.path), cpu["plain"])
                times["plain"].append(seconds)
            seconds, ds = timed(lambda: load_dataset(args.path, args.size, cache=False,
                                                     workers=args.workers), cpu["cold"])
            times["cold"].append(seconds)
            n_images = len(ds)  # type: ignore[arg-type]
            for key in ("cold+store", "warm"):
                seconds, _ = timed(lambda: load_dataset(args.path, args.size, cache=True,
                                                        cache_dir=cache_dir,
                                                        workers=args.workers), cpu[key])
                times[key].append(seconds)
    median = {k: statistics.median(v) for k, v in times.items() if v}
    result = {
        "path": str(args.path), "images": n_images, "image_size": args.size,
        "workers": resolve_workers(args.workers), "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "seconds": {k: round(v, 3) for k, v in median.items()},
        "images_per_s": {k: round(n_images / v) for k, v in median.items()},
        "cpu_seconds": {k: round(statistics.median(v), 3) for k, v in cpu.items() if v},
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "all_seconds": {k: [round(t, 3) for t in v] for k, v in times.items() if v},
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.path.name}: {n_images:,} images at {args.size}x{args.size}, "
          f"{result['workers']} decoding processes, median of {args.rounds} rounds, "
          f"load average {result['load_average']}")
    for key, seconds in median.items():
        print(f"  {key:<11} {seconds:7.3f} s  {n_images / seconds:>10,.0f} images/s  "
              f"cpu {result['cpu_seconds'][key]:6.2f} s  "
              f"(rounds: {', '.join(f'{t:.3f}' for t in times[key])})")


if __name__ == "__main__":
    main()

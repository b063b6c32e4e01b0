"""What every benchmark here shares to stay fair: paired rounds in rotated order, a pause before
each timed slice, one fresh process per measurement when asked, medians with their spreads,
and the ``--kernels`` choice passed to nnletters' config.

Why the pause: OpenBLAS's worker threads keep spinning on a core for about 0.1 s after a NumPy
matrix product returns (and OpenMP's threads do the same after a PyTorch or numba parallel
region). Timing PyTorch right after NumPy on a 2-core machine therefore measures PyTorch with
one core taken: in one process, slices of ~0.2 s alternating between the two ran PyTorch at
10-12k samples/s against 16-18k in a process of its own. A pause of ``PAUSE_SECONDS`` before
each timed slice lets those threads go to sleep first; running each implementation in its own
process avoids the question altogether. Imports nothing heavy.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
PAUSE_SECONDS = 0.25  # > the ~0.1 s OpenBLAS and OpenMP threads spin after their last job
KERNELS = ("numpy", "numba", "auto")


def pause(seconds: float = PAUSE_SECONDS) -> None:
    """Let every BLAS/OpenMP thread of this process (and of the one before) fall asleep."""
    if seconds > 0:
        time.sleep(seconds)


def rotated(items: Sequence[T], turn: int) -> list[T]:
    """``items`` starting at position ``turn`` (mod its length): round r goes first in turn r,
    so that no implementation always runs right after the same neighbour."""
    k = turn % len(items) if items else 0
    return list(items[k:]) + list(items[:k])


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, minimum and maximum of a non-empty list."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def fmt_spread(s: dict[str, float] | None, fmt: str = ",.0f", suffix: str = "") -> str:
    """``median (min-max)``, or ``median`` alone when there is one value."""
    if not s:
        return "-"
    if s["n"] == 1 or s["min"] == s["max"]:
        return f"{s['median']:{fmt}}{suffix}"
    return f"{s['median']:{fmt}}{suffix} ({s['min']:{fmt}}-{s['max']:{fmt}})"


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> dict[str, float] | None:
    """Spread of a[i] / b[i] over the rounds both have (the pairing the noise cancels in)."""
    pairs = [x / y for x, y in zip(a, b, strict=False) if x and y]
    return spread(pairs) if pairs else None


def run_json(cmd: list[str], what: str, cwd: Path | None = None,
             env: dict[str, str] | None = None) -> dict:
    """Run ``cmd``, which prints one JSON object as its last stdout line; -> that object.
    RuntimeError with the last line of its stderr when it fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{what}: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def kernels_overrides(kernels: str | None) -> list[str]:
    """``--set`` items that choose nnletters' kernels (none when not asked for)."""
    return [f"train.kernels={kernels}"] if kernels else []


def check_kernels(kernels: str | None) -> None:
    """Exit with one line when this nnletters cannot take ``train.kernels=kernels`` (the key
    is new: an older nnletters refuses it), before any process is started."""
    if not kernels:
        return
    from nnletters.config import load_config
    from nnletters.errors import NNLettersError

    try:
        load_config(None, ["data.source=synthetic", *kernels_overrides(kernels)])
    except NNLettersError as exc:
        sys.exit(f"error: --kernels {kernels}: this nnletters does not accept it ({exc})")


def emit(report: dict, save: str | None, as_json: bool,
         print_report: Callable[[dict], None]) -> None:
    """A benchmark's end: the report as JSON to ``save`` (when given), then on stdout as JSON
    (``as_json``) or as the script's own table."""
    text = json.dumps(report, indent=2) + "\n"
    if save:
        Path(save).write_text(text, encoding="utf-8")
    if as_json:
        print(text, end="")
    else:
        print_report(report)

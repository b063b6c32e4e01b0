"""Run a benchmark without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which some machines set and
which slow current NumPy's matrix products by 1.6-1.9x. OpenBLAS reads them when NumPy is
imported, so the script re-executes itself without them before importing NumPy. Imports
nothing heavy on purpose."""

from __future__ import annotations

import json
import os
import sys

SLOW_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
UNSET_NOTE = "NNLETTERS_BENCH_UNSET_BLAS_VARS"  # tells the re-executed process what it removed


def drop_slow_blas_vars() -> None:
    """Re-execute this script without SLOW_BLAS_VARS unless ``--keep-blas-env`` is given."""
    found = {k: os.environ[k] for k in SLOW_BLAS_VARS if k in os.environ}
    if not found or "--keep-blas-env" in sys.argv:
        return
    env = {k: v for k, v in os.environ.items() if k not in SLOW_BLAS_VARS}
    env[UNSET_NOTE] = json.dumps(found)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def openblas_env() -> dict:
    """What this run did with SLOW_BLAS_VARS: unset (with their values) or still set."""
    return {"unset_for_this_run": json.loads(os.environ.get(UNSET_NOTE, "{}")),
            "still_set": {k: os.environ[k] for k in SLOW_BLAS_VARS if k in os.environ}}


def describe(ob: dict) -> str:
    """One line for a report from ``openblas_env()``."""
    if ob["unset_for_this_run"]:
        was = ", ".join(f"{k}={v}" for k, v in ob["unset_for_this_run"].items())
        return f"environment: unset for this benchmark command only: {was}"
    if ob["still_set"]:
        kept = ", ".join(f"{k}={v}" for k, v in ob["still_set"].items())
        return f"environment: kept (--keep-blas-env): {kept}"
    return f"environment: {' and '.join(SLOW_BLAS_VARS)} not set"

"""Measuring helpers for the benchmarks: BLAS facts, the GEMM roofline, and resident memory.

Memory is read from ``/proc/self/status`` (Linux): ``VmRSS`` is the resident set now and
``VmHWM`` its high-water mark. Writing ``5`` to ``/proc/self/clear_refs`` resets the high-water
mark to the current RSS, which lets one process measure the peak of one phase (training) apart
from the phases before it (imports, loading data).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

MIB = 1024 * 1024


# --------------------------------------------------------------------------- BLAS and threads


def numpy_blas() -> dict:
    """The BLAS that NumPy's matmul calls, as threadpoolctl reports it (``{}`` if unknown)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {}
    infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    # Several BLAS libraries may be loaded (SciPy brings its own): prefer the one NumPy's
    # wheel ships in numpy.libs/, else the first (a system BLAS NumPy was built against).
    ours = [i for i in infos if "numpy" in Path(i["filepath"]).parent.name]
    info = (ours or infos or [{}])[0]
    keys = ("internal_api", "version", "architecture", "threading_layer", "num_threads",
            "filepath")
    return {k: info[k] for k in keys if k in info}


def limit_blas_threads(n: int):
    """Cap every loaded BLAS at ``n`` threads for the rest of the process (returns the limiter,
    which must stay referenced; None when threadpoolctl is not installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None

    return threadpool_limits(limits=n, user_api="blas")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------- GEMM roofline


class GemmRoofline:
    """NumPy float32 matmul at a training step's own shapes, with the memory layouts a step
    uses and preallocated outputs: for every layer the forward product x W and the weight
    gradient x^T dz, and for every layer but the first the input gradient dz W^T (no trainer
    computes the gradient with respect to the input images).

    ``step()`` is what one training step would be if it were nothing but its matrix products.
    ``actual_flops`` counts the products it runs; ``credited_flops`` is the count trainers are
    credited with, 6 * batch * sum(fan_in * fan_out), which includes the first layer's input
    gradient. Crediting a matmul-only step with that same count makes a trainer's GFLOP/s over
    it the share of its step time that the matrix products alone would take.
    """

    def __init__(self, layers: list[tuple[int, int]], batch: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.credited_flops = 6 * batch * sum(i * o for i, o in layers)
        self.actual_flops = self.credited_flops - 2 * batch * layers[0][0] * layers[0][1]
        self.ops = []
        for k, (i, o) in enumerate(layers):
            x = rng.random((batch, i), dtype=np.float32)
            W = rng.random((i, o), dtype=np.float32)
            dz = rng.random((batch, o), dtype=np.float32)
            z, dW, dx = np.empty((batch, o), np.float32), np.empty_like(W), np.empty_like(x)
            self.ops += [(x, W, z), (x.T, dz, dW)] + ([(dz, W.T, dx)] if k > 0 else [])

    def step(self) -> None:
        for a, b, out in self.ops:
            np.matmul(a, b, out=out)


# --------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def rss_bytes() -> int:
    """Resident set size of this process now."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Highest resident set size since the process started or since ``reset_peak_rss``."""
    return _status_kib("VmHWM") * 1024


def reset_peak_rss() -> bool:
    """Make the peak equal the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_supported() -> bool:
    return Path("/proc/self/status").exists()

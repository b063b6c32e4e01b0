"""Fused kernels: the elementwise passes of a training step, each done in one loop.

The NumPy code in ``layers.py``, ``optim.py`` and ``ema.py`` is the reference: readable, one
vector operation per line of maths. Each of those lines streams a whole array through memory,
and after a matrix product the arrays are cold, so a third of a step went to memory traffic.
The kernels here do the same float32 operations, in the same order, on one element at a time
in a single loop (numba compiles them), so that their results are *bit for bit* those of the
reference (tests/test_kernels.py checks this). Where NumPy's own maths cannot be reproduced
(its SIMD ``exp`` and ``tanh`` round differently from the C library's), the kernel leaves that
operation to NumPy: tanh and sigmoid layers call ``np.tanh`` / ``np.exp`` between two kernels.

Rules that keep the results identical:
- every scalar is passed as float32 (numba, unlike NumPy, would promote a Python float to
  float64), and each operation is written in the reference's order, e.g. (g - m) * (1 - b1);
- no ``fastmath``: it would allow reassociation and fused multiply-adds.

The functions below are plain Python until ``compile_kernels`` hands them to numba (numba is the
optional 'fast' extra); compiled code is cached on disk, so a machine compiles them once.
``parallel=True`` is what makes numba vectorise these loops, but they run on one thread: two
numba threads fight OpenBLAS's spinning workers on a 2-core machine (measured: 5x slower).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

prange = range  # numba.prange once compiled

# Activation codes for the layer kernels.
RELU, LEAKY_RELU, IDENTITY, SIGMOID_FROM_EXP = 0, 1, 2, 3
LEAKY_SLOPE = np.float32(0.01)  # functional.LEAKY_SLOPE as NumPy sees it (float32)


# --------------------------------------------------------------------------- optimisers
# Each kernel updates one stretch of the parameters: fused.py calls it on the weights
# (theta[:n_decay], decay on) and then on the rest (the biases, decay off). A flag that holds
# for the whole loop costs nothing; asking "i < n_decay?" of every element cost the momentum
# pass 30% of its time. shadow/rate: the weight average's update (ema.py) fused into the
# same pass; shadow is empty when it is not.


def _decayed_grad(g, w, weight_decay):
    # optim.Optimizer.add_weight_decay: g <- g + weight_decay w
    return g + w * weight_decay


def _average(shadow, w, rate):
    # ema.EMA.update: shadow <- shadow + (w - shadow) rate
    return shadow + (w - shadow) * rate


def _sgd(w, g, lr):
    return w - g * lr


def _momentum(w, g, v, lr, mu, nesterov):
    g = g * lr
    v = v * mu - g
    if nesterov:
        return (w - g) + v * mu, v
    return w + v, v


def _adam(w, g, m, v, c1, c2, eps_t, lr_t):
    # (1 - b1) = c1, (1 - b2) = c2; optim.Adam.update step by step
    m = m + (g - m) * c1
    v = v + (g * g - v) * c2
    return w - m / (np.sqrt(v) + eps_t) * lr_t, m, v


def sgd_step(theta, grad, decay, weight_decay, lr, shadow, rate):
    """w <- w - lr (g + wd w): theta, grad (P,) float32, scalars float32; decay: add the
    weight decay (off when weight_decay is 0, so that g is untouched as in NumPy)."""
    average = shadow.size > 0
    for i in prange(theta.size):
        g = grad[i]
        if decay:
            g = _decayed_grad(g, theta[i], weight_decay)
        w = _sgd(theta[i], g, lr)
        theta[i] = w
        if average:
            shadow[i] = _average(shadow[i], w, rate)


def momentum_step(theta, grad, velocity, decay, weight_decay, lr, mu, nesterov, shadow, rate):
    """Momentum or Nesterov (optim.Momentum) over theta, grad, velocity (P,) float32."""
    average = shadow.size > 0
    for i in prange(theta.size):
        g = grad[i]
        if decay:
            g = _decayed_grad(g, theta[i], weight_decay)
        w, velocity[i] = _momentum(theta[i], g, velocity[i], lr, mu, nesterov)
        theta[i] = w
        if average:
            shadow[i] = _average(shadow[i], w, rate)


def adam_step(theta, grad, m, v, l2, weight_decay, decoupled, shrink, c1, c2, eps_t, lr_t,
              shadow, rate):
    """Adam over theta, grad, m, v (P,) float32 (optim.Adam): L2 weight decay in the gradient
    (l2), or AdamW's w <- shrink w (decoupled; shrink = 1 - lr wd); c1 = 1 - b1, c2 = 1 - b2,
    eps_t and lr_t with the bias corrections folded in."""
    average = shadow.size > 0
    for i in prange(theta.size):
        g, w = grad[i], theta[i]
        if l2:
            g = _decayed_grad(g, w, weight_decay)
        if decoupled:
            w = w * shrink
        w, m[i], v[i] = _adam(w, g, m[i], v[i], c1, c2, eps_t, lr_t)
        theta[i] = w
        if average:
            shadow[i] = _average(shadow[i], w, rate)


def ema_step(theta, shadow, rate):
    """The weight average alone (after a max-norm step): shadow, theta (P,) float32."""
    for i in prange(theta.size):
        shadow[i] = _average(shadow[i], theta[i], rate)


# --------------------------------------------------------------------------- layers
# z (N, F) float32 is the Dense layer's output x W; b (F,) its bias (empty: none or added
# already). bits (N, F) uint32 are the generator's 32-bit draws behind dropout's float32
# uniforms (empty: no dropout): NumPy makes each uniform as (bits >> 8) / 2^24.


def _activate(z, act):
    # functional.relu / leaky_relu are np.maximum, which returns NaN for NaN and +0 for -0.
    if act == RELU:
        return z if (z > 0 or z != z) else np.float32(0.0)
    if act == LEAKY_RELU:
        s = z * LEAKY_SLOPE
        return z if (z > s or z != z) else s
    if act == SIGMOID_FROM_EXP:  # z holds exp(-z): functional.sigmoid's last two steps
        return np.float32(1.0) / (z + np.float32(1.0))
    return z  # IDENTITY: NumPy applied the activation already (tanh)


def _derivative(a, act):
    # functional.*_backward, as the factor da is multiplied by
    if act == RELU:
        return np.float32(1.0) if a > 0 else np.float32(0.0)
    if act == LEAKY_RELU:
        return np.float32(1.0) if a > 0 else LEAKY_SLOPE
    if act == IDENTITY:  # tanh: 1 - a^2
        return np.float32(1.0) - a * a
    return a * (np.float32(1.0) - a)  # sigmoid: a (1 - a)


def activation_forward(z, b, act, bits, kept_from, scale, mask, out):
    """a = f(z + b) into z; with dropout (bits not empty) the mask into ``mask`` and a * mask
    into out (N, F). (layers.Dense's bias, Activation, Dropout.forward.)

    Dropout's mask floor(u + keep) * scale is ``scale`` where u + keep reaches 1, else 0;
    with u = (bits >> 8) / 2^24 that is where (bits >> 8) >= kept_from (``keep_threshold``),
    which the kernel tests on the integers without making u."""
    n, f = z.shape
    bias, dropout = b.size > 0, bits.size > 0
    zero = np.float32(0.0)
    for i in prange(n):
        for j in range(f):
            x = z[i, j]
            if bias:
                x = x + b[j]
            a = _activate(x, act)
            z[i, j] = a
            if dropout:
                m = scale if (bits[i, j] >> np.uint32(8)) >= kept_from else zero
                mask[i, j] = m
                out[i, j] = a * m


def negate_bias(z, b):
    """z <- -(z + b), (N, F) float32: sigmoid's first step, before NumPy's exp."""
    n, f = z.shape
    bias = b.size > 0
    for i in prange(n):
        for j in range(f):
            x = z[i, j]
            if bias:
                x = x + b[j]
            z[i, j] = -x


def activation_backward(da, a, act, mask):
    """da <- (da * mask) * f'(a), in place, (N, F) float32; mask empty: no dropout.
    (Dropout.backward, then Activation.backward.)"""
    n, f = da.shape
    dropout = mask.size > 0
    for i in prange(n):
        for j in range(f):
            d = da[i, j]
            if dropout:
                d = d * mask[i, j]
            da[i, j] = d * _derivative(a[i, j], act)


# --------------------------------------------------------------------------- augmentation


def _clip(x, low, high):
    # np.clip for float32: max then min, each keeping NaN
    x = x if (x > low or x != x) else low
    return x if (x < high or x != x) else high


def augment(padded, strokes, stroke, thicken_is_max, src_x, src_y, disp_x, disp_y, out):
    """data/augment.py's ``Augmenter`` after its draws, one image at a time (while it sits
    in the cache): the stroke filter (``_strokes``), then bilinear reading at (src +
    displacement) (``bilinear_sample`` after ``src += displacements``).

    padded (N, S+3, S+3) float32 from ``frame``, changed in place by the strokes; strokes
    (N, 3) the stroke uniforms (chosen?, thicken?, strength) or empty for none; stroke the
    share of images chosen; thicken_is_max: thickening is a maximum filter (a bright glyph);
    src_x, src_y, out (N, S*S); src empty: no resampling (out = the image); disp_x, disp_y
    (N, S*S) the elastic displacements, or empty."""
    n, h, w = padded.shape
    s = h - 3
    for i in prange(n):
        if strokes.shape[0] > 0 and strokes[i, 0] < stroke:
            _stroke(padded[i], (strokes[i, 1] < np.float32(0.5)) == thicken_is_max,
                    strokes[i, 2], s)
        if src_x.shape[0] > 0:
            _sample(padded[i], src_x[i], src_y[i], disp_x, disp_y, i, out[i])
        else:
            for p in range(s * s):
                out[i, p] = padded[i, p // s + 1, p % s + 1]


def _stroke(img, use_max, strength, s):
    """img (S+3, S+3): the inner S x S pixels x <- x + (f - x) * strength, f the 3x3 maximum
    (use_max) or minimum around x, all read before any is written."""
    filtered = np.empty((s, s), np.float32)
    for r in range(s):
        for c in range(s):
            m = img[r, c]
            for dr in range(3):
                for dc in range(3):
                    v = img[r + dr, c + dc]
                    if use_max:
                        m = v if v > m else m
                    else:
                        m = v if v < m else m
            filtered[r, c] = m
    for r in range(s):
        for c in range(s):
            x = img[r + 1, c + 1]
            img[r + 1, c + 1] = x + (filtered[r, c] - x) * strength


def _sample(img, src_x, src_y, disp_x, disp_y, i, out):
    """out[p] = img read bilinearly at (src_x[p], src_y[p]) (+ row i of the displacements)."""
    h, w = img.shape
    elastic = disp_x.size > 0
    x_max, y_max = np.float32(w - 2), np.float32(h - 2)
    for p in range(src_x.shape[0]):
        fx, fy = src_x[p], src_y[p]
        if elastic:
            fx, fy = fx + disp_x[i, p], fy + disp_y[i, p]
        fx = _clip(fx, np.float32(0.0), x_max)
        fy = _clip(fy, np.float32(0.0), y_max)
        x0, y0 = np.floor(fx), np.floor(fy)
        fx, fy = fx - x0, fy - y0
        r, c = int(y0), int(x0)
        top = img[r, c]
        top = top + (img[r, c + 1] - top) * fx
        bottom = img[r + 1, c]
        bottom = bottom + (img[r + 1, c + 1] - bottom) * fx
        out[p] = top + (bottom - top) * fy


# --------------------------------------------------------------------------- compiling

V, M = "f4[::1]", "f4[:, ::1]"  # contiguous float32 vectors and C-order matrices
SIGNATURES = {
    "sgd_step": f"void({V}, {V}, b1, f4, f4, {V}, f4)",
    "momentum_step": f"void({V}, {V}, {V}, b1, f4, f4, f4, b1, {V}, f4)",
    "adam_step": f"void({V}, {V}, {V}, {V}, b1, f4, b1, f4, f4, f4, f4, f4, {V}, f4)",
    "ema_step": f"void({V}, {V}, f4)",
    "activation_forward": f"void({M}, {V}, i8, u4[:, ::1], u4, f4, {M}, {M})",
    "negate_bias": f"void({M}, {V})",
    "activation_backward": f"void({M}, {M}, i8, {M})",
    "augment": f"void(f4[:, :, ::1], {M}, f4, b1, {M}, {M}, {M}, {M}, {M})",
}
HELPERS = ("_decayed_grad", "_average", "_sgd", "_momentum", "_adam", "_activate",
           "_derivative", "_clip", "_stroke", "_sample")
EMPTY_VECTOR = np.empty(0, np.float32)
EMPTY_MATRIX = np.empty((0, 0), np.float32)
EMPTY_BITS = np.empty((0, 0), np.uint32)

_compiled = False


def available() -> bool:
    """Is numba importable (without importing it)?"""
    return importlib.util.find_spec("numba") is not None


# auto picks the kernels for models at least this large. They save ~2.5 ns per parameter and
# step, and starting numba costs ~1.1 s of CPU (import 0.35, cached kernels 0.8): a model of
# 500k parameters repays it in ~900 steps, the quickstart's 207k in none of its ~1200.
AUTO_MIN_PARAMS = 500_000


def resolve(choice: str, sizes: list[int] | None = None) -> str:
    """``train.kernels`` -> 'numpy' or 'numba' (auto: numba when it is installed and the MLP
    of layer ``sizes`` has at least AUTO_MIN_PARAMS parameters; both give the same weights)."""
    if choice == "auto":
        n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True)) \
            if sizes else AUTO_MIN_PARAMS
        return "numba" if available() and n_params >= AUTO_MIN_PARAMS else "numpy"
    if choice == "numba" and not available():
        from nnletters.errors import ConfigError

        raise ConfigError("train.kernels: numba needs the 'fast' extra: "
                          "pip install 'nnletters[fast]'")
    return choice


def cache_dir() -> Path:
    """Where compiled kernels are kept: $NUMBA_CACHE_DIR when set, else
    $XDG_CACHE_HOME/nnletters/kernels or ~/.cache/nnletters/kernels: never the package folder,
    which may be read-only, and not the data cache ($NNLETTERS_CACHE_DIR), which tests and
    users point elsewhere per run while compiled code is one per machine."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nnletters" / "kernels"


def _stamp() -> Path:
    """A file that exists once this source has been compiled with this numba version for
    this CPU (numba keys its cache on the CPU's name and features too, so a cache folder
    shared by two kinds of machine compiles once for each, and each says so)."""
    import llvmlite.binding as llvm
    import numba

    key = [Path(__file__).read_bytes(), numba.__version__.encode(),
           llvm.get_host_cpu_name().encode(), llvm.get_host_cpu_features().flatten().encode()]
    digest = hashlib.sha256(b"\0".join(key)).hexdigest()[:16]
    return cache_dir() / f"compiled-{digest}"


def prepare(log: Callable[[str], None] = print) -> None:
    """Compile (or load from the disk cache) every kernel now, saying so when it is the slow
    first time, rather than inside the first training step."""
    global _compiled
    if _compiled:
        return
    folder = cache_dir()
    # numba reads its settings from the environment, at import and again before compiling.
    # One thread in its pool (set_num_threads below holds only for the calling thread); the
    # pool size can only be chosen before numba starts it.
    if "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    os.environ.setdefault("NUMBA_CACHE_DIR", str(folder))
    import numba

    numba.config.reload_config()  # if numba was imported before us, it reads them now
    stamp = _stamp()
    if not stamp.exists():
        log("compiling kernels (once)...")
    _compile(numba)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stamp.touch()
    except OSError:
        pass  # no cache: kernels compile in every run, nothing else changes


def _compile(numba) -> None:
    global _compiled, prange
    numba.set_num_threads(1)
    prange = numba.prange
    names = globals()
    # error_model="numpy": x / 0 gives inf or nan as in NumPy; Python's ZeroDivisionError
    # check would also put a branch in every division and stop the loop from vectorising.
    for name in HELPERS:
        names[name] = numba.njit(cache=True, error_model="numpy")(names[name])
    for name, signature in SIGNATURES.items():
        names[name] = numba.njit(signature, cache=True, parallel=True,
                                 error_model="numpy")(names[name])
    _compiled = True

"""On-the-fly augmentation of training batches: random affine warps (translation, rotation,
shear, zoom), elastic distortion, and stroke thickening/thinning, in NumPy, over a whole
batch at once (no loop over images), float32, drawn from the run's one seeded Generator.

Every geometric change is one *inverse map*: for each output pixel p we compute where in the
source image it comes from, src(p), and read the source there by bilinear interpolation. The
affine part of the map is

    src(p) = c + M^-1 (p - c - t),   M = R(angle) . Shear(k) . zoom

(c the image centre, t the shift), so that the warped glyph is the source rotated, sheared and
zoomed about the centre and then shifted by t. An elastic displacement field is added on top
of src: random displacements at a coarse grid of nodes ``elastic_sigma`` pixels apart, each
uniform in [-elastic_alpha, elastic_alpha] pixels, upsampled to every pixel by bilinear
interpolation (Simard et al., 2003, smooth random noise; a coarse grid gives the same kind of
smooth field without a Gaussian filter over the batch). Everything lands in one sampling pass,
so an image is resampled once whatever the mix.

Strokes: a 3x3 maximum filter thickens a light glyph on a dark background (a minimum filter
thins it; the roles swap for dark ink on light paper). A random share ``stroke`` of the images
gets one of the two, blended in with a random strength u in [0, 1]: x <- x + u (filter(x) - x),
so that 1-pixel strokes thin out rather than vanish.

Pixels that come from outside the image read the background value ``fill`` (0 for light
glyphs on dark, 1 for dark on light). With augmentation disabled, or every magnitude 0, the
batch is returned unchanged and no random number is drawn.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]


class Augmenter:
    """Augment batches of flattened square images: ``x: (N, S*S) float32 -> (N, S*S)``.

    ``cfg`` is an ``AugmentConfig``; ``rng`` the run's Generator; ``fill`` the background
    value. The result lives in a buffer reused by the next call (like a layer's output).
    """

    def __init__(self, cfg, image_size: int, rng: np.random.Generator,
                 fill: float = 0.0, kernels: str = "numpy") -> None:
        """``kernels="numba"`` applies strokes and resamples with nn/kernels.py's
        ``augment``: the same pixels, bit for bit, in one pass over each image."""
        self.cfg, self.size, self.rng = cfg, image_size, rng
        self.kernels = kernels
        if kernels == "numba":
            from nnletters.nn import kernels as compiled

            compiled.prepare()
        self.fill = np.float32(fill)
        self.affine = cfg.enabled and (cfg.translate > 0 or cfg.rotate > 0 or cfg.shear > 0
                                       or cfg.scale > 0)
        self.elastic = cfg.enabled and cfg.elastic_alpha > 0
        self.stroke = cfg.enabled and cfg.stroke > 0
        self.active = self.affine or self.elastic or self.stroke
        s = image_size
        # Output pixel coordinates as rows of [x, y, 1], so that an affine map of every pixel
        # of every image is one (N, 3) @ (3, S*S) matrix product.
        ys, xs = np.divmod(np.arange(s * s, dtype=np.float32), np.float32(s))
        self.grid = np.stack([xs, ys, np.ones_like(xs)])                  # (3, S*S)
        self.upsample = elastic_upsampler(s, cfg.elastic_sigma) if self.elastic else None
        self.work = Workspace()

    def describe(self) -> str:
        """e.g. 'translate 0.1, rotate 10, elastic 1.5 px every 5 px, stroke 0.3'."""
        c, parts = self.cfg, []
        if self.affine:
            parts += [f"{k} {getattr(c, k):g}" for k in ("translate", "rotate", "shear", "scale")
                      if getattr(c, k)]
        if self.elastic:
            parts.append(f"elastic {c.elastic_alpha:g} px every {c.elastic_sigma:g} px")
        if self.stroke:
            parts.append(f"stroke {c.stroke:g}")
        return ", ".join(parts) if parts else "off"

    def __call__(self, x: F32) -> F32:
        if not self.active:
            return x
        n, s = x.shape[0], self.size
        padded = frame(x, s, self.fill, out=self.work.get("padded", (n, s + 3, s + 3)))
        out = self.work.get("out", (n, s * s))
        if self.kernels == "numba":
            return self._augment_fused(padded, out)
        if self.stroke:
            self._strokes(padded)
        if not (self.affine or self.elastic):
            out.reshape(n, s, s)[...] = padded[:, 1:s + 1, 1:s + 1]
            return out
        src_x, src_y = self._source_coordinates(n)
        return bilinear_sample(padded, src_x, src_y, out=out, work=self.work)

    def _augment_fused(self, padded: F32, out: F32) -> F32:
        """The same draws in the same order as below; then strokes, displacement and
        sampling in one kernel pass over each image."""
        from nnletters.nn import kernels

        n, empty = padded.shape[0], kernels.EMPTY_MATRIX
        strokes = self._stroke_draws(n) if self.stroke else empty
        src_x = src_y = disp = empty
        if self.affine or self.elastic:
            src_x, src_y = self._source_coordinates(n, elastic=False)
        if self.elastic:
            disp = self._displacements(n).reshape(2 * n, self.size * self.size)
        kernels.augment(padded, strokes, np.float32(self.cfg.stroke), bool(self.fill < 0.5),
                        src_x, src_y, disp[:n], disp[n:], out)
        return out

    # ----------------------------------------------------------------- geometry

    def _source_coordinates(self, n: int, elastic: bool = True) -> tuple[F32, F32]:
        """Where each output pixel reads the framed source (``frame``'s pixels, one more than
        the image's): two (N, S*S) float32 arrays (x, y); ``elastic=False`` leaves the
        displacements out (the caller adds them)."""
        s = self.size
        coef = self.work.get("coef", (2 * n, 3))
        if self.affine:
            inverse_affine(self.cfg, s, self.rng.random((n, 5), dtype=np.float32), out=coef)
        else:
            coef[:] = 0.0
            coef[:n, 0] = 1.0   # src_x = x
            coef[n:, 1] = 1.0   # src_y = y
        coef[:, 2] += 1.0       # image pixel (x, y) is framed pixel (x + 1, y + 1)
        src = np.matmul(coef, self.grid, out=self.work.get("src", (2 * n, s * s)))
        if self.elastic and elastic:
            src += self._displacements(n).reshape(2 * n, s * s)
        return src[:n], src[n:]

    def _displacements(self, n: int) -> F32:
        """(2N, S, S) float32: smooth random displacements (x for the first N, then y)."""
        g = self.upsample.shape[1]
        nodes = self.rng.random((2 * n, g, g), dtype=np.float32)
        nodes *= np.float32(2.0 * self.cfg.elastic_alpha)
        nodes -= np.float32(self.cfg.elastic_alpha)
        # Separable bilinear upsampling: D = U nodes U^T, with U (S, g).
        rows = np.matmul(self.upsample, nodes, out=self.work.get("rows", (2 * n, self.size, g)))
        return np.matmul(rows, self.upsample.T,
                         out=self.work.get("disp", (2 * n, self.size, self.size)))

    # ----------------------------------------------------------------- strokes

    def _stroke_draws(self, n: int) -> F32:
        """(N, 3) uniforms per image: chosen?, thicken?, strength."""
        return self.rng.random((n, 3), dtype=np.float32)

    def _strokes(self, padded: F32) -> None:
        """Thicken or thin a random share of the framed images (N, S+3, S+3), in place."""
        n, s = padded.shape[0], self.size
        u = self._stroke_draws(n)
        chosen = u[:, 0] < np.float32(self.cfg.stroke)
        light_glyph = self.fill < 0.5  # the glyph is bright: thickening is a max filter
        for thicken in (True, False):
            idx = np.flatnonzero(chosen & ((u[:, 1] < 0.5) == thicken))
            if idx.size == 0:
                continue
            op = np.maximum if thicken == light_glyph else np.minimum
            imgs = padded[idx]                                      # (k, S+3, S+3) copy
            filtered = extreme_filter3(imgs[:, :s + 2, :s + 2], op)  # (k, S, S)
            inner = imgs[:, 1:s + 1, 1:s + 1]
            filtered -= inner
            filtered *= u[idx, 2, None, None]
            inner += filtered
            padded[idx] = imgs


def inverse_affine(cfg, size: int, u: F32, out: F32) -> F32:
    """Coefficients of the inverse affine map for N images from uniforms ``u`` (N, 5).

    Writes ``out`` (2N, 3) float32 with src_x = out[i] . [x, y, 1] and
    src_y = out[N + i] . [x, y, 1] for image i. Angles, shear, zoom and shift are drawn as
    uniform in [-max, max] (zoom in [1 - scale, 1 + scale]).
    """
    n = u.shape[0]
    v = (2.0 * u.astype(np.float64) - 1.0)          # (N, 5) in [-1, 1], small: float64 maths
    angle = np.deg2rad(cfg.rotate) * v[:, 0]
    shear = np.tan(np.deg2rad(cfg.shear) * v[:, 1])
    zoom = 1.0 + cfg.scale * v[:, 2]
    shift_x, shift_y = (cfg.translate * size) * v[:, 3], (cfg.translate * size) * v[:, 4]
    cos, sin = np.cos(angle), np.sin(angle)
    # M = zoom * R . [[1, k], [0, 1]] has det zoom^2, so M^-1 = adj(M) / zoom^2:
    #   M^-1 = [[sin k + cos, sin - cos k], [-sin, cos]] / zoom
    a, b = (sin * shear + cos) / zoom, (sin - cos * shear) / zoom
    c, d = -sin / zoom, cos / zoom
    centre = (size - 1) / 2.0
    px, py = centre + shift_x, centre + shift_y     # where the source centre lands
    out[:n, 0], out[:n, 1], out[:n, 2] = a, b, centre - a * px - b * py
    out[n:, 0], out[n:, 1], out[n:, 2] = c, d, centre - c * px - d * py
    return out


def elastic_upsampler(size: int, sigma: float) -> F32:
    """(S, g) float32 bilinear interpolation weights from g grid nodes spaced about ``sigma``
    pixels apart (the first on pixel 0, the last on pixel S - 1) to the S pixels of a row."""
    g = max(2, math.ceil((size - 1) / sigma) + 1)
    pos = np.arange(size) * ((g - 1) / max(size - 1, 1))    # each pixel in node units
    weights = np.maximum(0.0, 1.0 - np.abs(pos[:, None] - np.arange(g)[None, :]))
    return weights.astype(np.float32)


def frame(x: F32, size: int, fill: float, out: F32 | None = None) -> F32:
    """(N, S*S) -> (N, S+3, S+3) float32: each image with a frame of background ``fill``, one
    pixel wide before it (top, left) and two after it (bottom, right), so that bilinear
    sampling anywhere in [0, S+1] finds both neighbours inside the array."""
    n = x.shape[0]
    if out is None:
        out = np.empty((n, size + 3, size + 3), dtype=np.float32)
    out[:, 0, :] = fill
    out[:, size + 1:, :] = fill
    out[:, :, 0] = fill
    out[:, :, size + 1:] = fill
    out[:, 1:size + 1, 1:size + 1] = x.reshape(n, size, size)
    return out


def bilinear_sample(padded: F32, src_x: F32, src_y: F32, out: F32 | None = None,
                    work: Workspace | None = None) -> F32:
    """Read framed images at fractional coordinates, by bilinear interpolation.

    padded: (N, H, W) float32 from ``frame`` (H = W = S + 3).
    src_x, src_y: (N, P) float32 coordinates in ``padded``'s pixels (x the column, y the row;
    image pixel (i, j) sits at (i + 1, j + 1)), *overwritten* (they become the interpolation
    weights). Points outside the image read the frame, i.e. the background.
    Returns (N, P) float32 (``out`` when given).

    The four corners around each point are gathered with ``np.take`` on flat indices into the
    whole batch; the right and lower neighbours come from the same indices read in views of
    the flat batch shifted by 1 and by a row, so only one index array is built.
    ``work`` keeps the batch-sized scratch arrays between calls.
    """
    work = work or Workspace()
    n, h, w = padded.shape
    shape = src_x.shape
    fx, fy = src_x, src_y
    # Clamp to [0, S+1]: the farthest points land on the frame with weight 0 beyond it, and
    # the corner (x0 + 1, y0 + 1) never leaves the array.
    np.clip(fx, np.float32(0.0), np.float32(w - 2), out=fx)
    np.clip(fy, np.float32(0.0), np.float32(h - 2), out=fy)
    x0 = np.floor(fx, out=work.get("x0", shape))
    y0 = np.floor(fy, out=work.get("y0", shape))
    fx -= x0                                                # weights in [0, 1)
    fy -= y0
    y0 *= np.float32(w)
    y0 += x0                          # y0 * w + x0: exact in float32 while w * h < 2^24
    idx = work.get("idx", shape, np.intp)
    np.copyto(idx, y0, casting="unsafe")
    idx += work.row_offsets(n, h * w)
    flat = padded.reshape(-1)
    # Indices are inside the batch by construction; mode="clip" skips the bounds check.
    top = np.take(flat, idx, out=work.get("top", shape), mode="clip")
    diff = np.take(flat[1:], idx, out=work.get("diff", shape), mode="clip")
    diff -= top
    diff *= fx
    top += diff                       # row y0, interpolated along x
    bottom = np.take(flat[w:], idx, out=x0, mode="clip")
    diff = np.take(flat[w + 1:], idx, out=diff, mode="clip")
    diff -= bottom
    diff *= fx
    bottom += diff                    # row y0 + 1
    bottom -= top
    bottom *= fy
    return np.add(top, bottom, out=out)


class Workspace:
    """Scratch arrays kept for reuse: a fresh batch-sized array every step costs page faults
    that, at these sizes, take longer than the arithmetic done in it."""

    def __init__(self) -> None:
        self._arrays: dict[tuple, np.ndarray] = {}

    def get(self, tag: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        key = (tag, shape, np.dtype(dtype).str)
        array = self._arrays.get(key)
        if array is None:
            array = self._arrays[key] = np.empty(shape, dtype=dtype)
        return array

    def row_offsets(self, n: int, stride: int) -> NDArray[np.intp]:
        """(n, 1) intp: where each image of the batch starts in the flat batch."""
        key = ("offsets", n, stride)
        array = self._arrays.get(key)
        if array is None:
            array = self._arrays[key] = (np.arange(n, dtype=np.intp) * stride)[:, None]
        return array


def extreme_filter3(padded: F32, op) -> F32:
    """3x3 maximum (``op=np.maximum``) or minimum filter of images framed by one pixel.

    padded: (k, S+2, S+2) -> (k, S, S) float32; separable: rows of three, then columns."""
    rows = op(padded[:, :, :-2], padded[:, :, 1:-1])
    op(rows, padded[:, :, 2:], out=rows)                        # (k, S+2, S)
    out = op(rows[:, :-2], rows[:, 1:-1])
    return op(out, rows[:, 2:], out=out)                        # (k, S, S)

"""One image file -> an 8-bit grayscale array: the only place Pillow decodes pixels.

Every mode Pillow opens ends up as ``uint8`` gray, brightness kept as the eye sees it:

- ``L``, ``1``, ``P``, ``RGB``, ``CMYK``, ``YCbCr``: Pillow's own conversion to luminance;
- ``I;16`` (16-bit PNG/TIFF) and ``I`` holding 16-bit values: scaled by 255/65535, not clipped
  (Pillow's ``convert("L")`` clips everything above 255 to white);
- ``I`` and ``F`` outside that range: stretched from their minimum to their maximum;
- with transparency (``LA``, ``RGBA``, ``PA``, ``P`` with a transparent colour): composited so
  that transparent pixels become background: black behind light ink, white behind dark ink
  (the ink's brightness is the alpha-weighted mean of the visible pixels).

EXIF orientation is applied, animated images give their first frame, a JPEG above
``DRAFT_ABOVE`` pixels is decoded reduced (a phone photo: 12-50 MP), and an image larger than
``MAX_PIXELS`` (what Pillow refuses by default) is refused before its pixels are decoded (a
decompression bomb: a few kilobytes of PNG can declare gigabytes of pixels).

``glyph_fill`` and ``data_polarity`` describe training images for the checkpoint; how other
images are made to look like them is ``nnletters.data.preparation``.
"""

from __future__ import annotations

import io
import itertools
import multiprocessing
import os
import re
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from nnletters.errors import DataError

MAX_PIXELS: int = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
"""Largest width * height decoded (Pillow's own default limit, ~179 MP); bigger images are
refused as unreadable."""

DRAFT_ABOVE: int = 2048 * 2048
"""JPEGs with more pixels than this are decoded reduced by 1/2, 1/4 or 1/8 (libjpeg's DCT
scaling, Pillow's ``draft``) to no less than DRAFT_SIDE pixels a side: a letter needs a few
hundred pixels, not a 50 MP photo's worth of memory and time."""
DRAFT_SIDE: int = 1024

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

R = TypeVar("R")

_EXIF_ORIENTATION = 0x0112
_ALPHA_MODES = frozenset({"LA", "La", "RGBA", "RGBa", "PA"})
_16BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


@dataclass(frozen=True)
class ImageInfo:
    """What the file declared, before any conversion or resizing."""

    width: int
    height: int
    mode: str           # Pillow mode, e.g. "L", "RGBA", "I;16"
    format: str | None  # Pillow format, e.g. "PNG", "JPEG"


def is_image_name(name: str) -> bool:
    """True when ``name`` ends with one of IMAGE_EXTENSIONS, in any case."""
    dot = name.rfind(".")
    return dot >= 0 and name[dot:].lower() in IMAGE_EXTENSIONS


class Unreadable(Exception):
    """Raised by the decoding helpers with the reason alone; callers add the file's name."""


def read_gray(data: bytes, name: str) -> tuple[npt.NDArray[np.uint8], ImageInfo]:
    """Decode one encoded image at its own size: -> (H, W) uint8 gray and what it declared.

    Raises DataError naming ``name`` for anything unreadable: empty, truncated, not an image,
    or larger than MAX_PIXELS.
    """
    try:
        return gray_and_info(data)
    except Unreadable as exc:
        raise DataError(f"{name}: {exc}") from None


def gray_and_info(data: bytes) -> tuple[npt.NDArray[np.uint8], ImageInfo]:
    """read_gray without a name: raises Unreadable(reason)."""
    if not data:
        raise Unreadable("empty file")
    try:
        # Image.open reads the header only; the size is checked before any pixel is decoded.
        # (Pillow's own, higher limit only matters if MAX_PIXELS is raised above it.)
        with warnings.catch_warnings():  # Pillow warns between its limit and twice it:
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we accept those
            img = Image.open(io.BytesIO(data))
        width, height = img.size
        if width * height > MAX_PIXELS:
            raise Unreadable(f"{width}x{height} pixels is above the limit of {MAX_PIXELS} "
                             f"(decompression bomb?)")
        if width == 0 or height == 0:
            raise Unreadable(f"image has no pixels ({width}x{height})")
        info = ImageInfo(width, height, img.mode, img.format)
        if img.format == "JPEG" and width * height > DRAFT_ABOVE:
            img.draft("L", (DRAFT_SIDE, DRAFT_SIDE))
        gray = _to_gray(_upright(img))
    except Unreadable:
        raise
    except Image.UnidentifiedImageError:
        raise Unreadable("not an image Pillow can read") from None
    except Image.DecompressionBombError as exc:
        # Pillow refuses gigantic sizes inside Image.open, before our check sees them.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{found.group(1)} pixels" if found else "its size"
        raise Unreadable(f"{size} is above the limit of {MAX_PIXELS} "
                         "(decompression bomb?)") from None
    except Exception as exc:  # noqa: BLE001  Pillow raises many types on corrupt input
        raise Unreadable(f"cannot decode: {type(exc).__name__}: {exc}") from None
    return gray, info


def resize_gray(gray: npt.NDArray[np.uint8], image_size: int) -> npt.NDArray[np.uint8]:
    """(H, W) uint8 -> (S, S) uint8, stretched to the square; returned as is when already S x S.

    LANCZOS with a reducing gap: large images are first shrunk by whole factors (fast), then
    resampled properly.
    """
    if gray.shape == (image_size, image_size):
        return gray
    img = Image.fromarray(gray, mode="L")
    img = img.resize((image_size, image_size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)


def decode_image(data: bytes, image_size: int, name: str) -> npt.NDArray[np.uint8]:
    """Encoded image bytes -> (S, S) uint8 gray, S = image_size. DataError names ``name``."""
    gray, _ = read_gray(data, name)
    return resize_gray(gray, image_size)


def to_unit_float(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """uint8 of any shape -> float32 in [0, 1], the one conversion used everywhere (x / 255)."""
    return np.divide(pixels, np.float32(255.0), dtype=np.float32)


CHUNK_BYTES = 1 << 20  # float32 rows converted at a time when a whole array is not needed


def chunk_rows(row_values: int) -> int:
    """How many rows of ``row_values`` float32 values make about CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // (4 * max(1, row_values)))


def gather_unit_float(pixels: npt.NDArray[np.uint8], index: npt.NDArray[np.integer],
                      chunk: int | None = None) -> npt.NDArray[np.float32]:
    """``to_unit_float(pixels[index])``, bit for bit, without its uint8 temporary of the
    whole selection: rows are gathered and converted ``chunk`` at a time (default: about
    CHUNK_BYTES of output) into the result.
    pixels: (N, D) uint8, index: (M,) -> (M, D) float32, C-contiguous."""
    out = np.empty((len(index), *pixels.shape[1:]), dtype=np.float32)
    chunk = chunk or chunk_rows(out[0].size if len(out) else 1)
    for start in range(0, len(index), chunk):
        rows = pixels[index[start:start + chunk]]
        np.divide(rows, np.float32(255.0), out=out[start:start + chunk], dtype=np.float32)
    return out


def read_file_gray(path: str | Path) -> npt.NDArray[np.uint8]:
    """An image file -> (H, W) uint8 gray; DataError names the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return read_gray(data, str(path))[0]


def glyph_fill(X: npt.NDArray[np.float32], image_size: int, light_on_dark: bool,
               sample: int = 2000) -> float:
    """Median share of the frame that training glyphs span (longer side of their bounding
    box / image size), so that ``prepare_pixels`` can frame a user's letter alike."""
    imgs = X[:sample].reshape(-1, image_size, image_size)
    longest = _glyph_spans(np.rint(imgs * 255).astype(np.uint8), light_on_dark)
    longest = longest[longest > 0]
    return float(np.median(longest)) / image_size if longest.size else 0.9


def _glyph_spans(imgs: npt.NDArray[np.uint8], light_on_dark: bool) -> npt.NDArray[np.int64]:
    """(N, S, S) uint8 -> (N,) the longer side of each glyph's bounding box in pixels (0 for
    none), the glyph being what is more than a quarter of the way from background to ink
    (x / 255 > 0.25 on dark, < 0.75 on light)."""
    ink = imgs >= 64 if light_on_dark else imgs <= 191
    spans = []
    for axis in (2, 1):  # rows that hold ink, then columns
        hit = ink.any(axis=axis)
        first = hit.argmax(axis=1)
        last = imgs.shape[1] - 1 - hit[:, ::-1].argmax(axis=1)
        spans.append(np.where(hit.any(axis=1), last - first + 1, 0))
    return np.maximum(*spans)


# --------------------------------------------------------------------------- conversion


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag, if any (cameras store rotated pixels plus a tag)."""
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001  a damaged EXIF block should not cost the pixels
        return img
    if orientation not in (2, 3, 4, 5, 6, 7, 8):
        return img
    return ImageOps.exif_transpose(img)


def _to_gray(img: Image.Image) -> npt.NDArray[np.uint8]:
    """An opened Pillow image (first frame) -> (H, W) uint8 gray; see the module docstring."""
    mode = img.mode
    if mode == "L":
        return _as_array(img)
    if mode in _16BIT_MODES:
        return _scale_16bit(np.asarray(img, dtype=np.uint32))
    if mode == "I":
        values = np.asarray(img, dtype=np.int64)
        if values.size and values.min() >= 0 and values.max() <= 65535:
            return _scale_16bit(values)
        return _stretch(values.astype(np.float64))
    if mode == "F":
        values = np.asarray(img, dtype=np.float64)
        finite = np.isfinite(values)
        if finite.all() and values.min() >= 0.0 and values.max() <= 1.0:
            return np.rint(values * 255.0).astype(np.uint8)
        return _stretch(np.where(finite, values, 0.0))
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in img.info):
        return _composite(np.asarray(img.convert("RGBA").convert("LA"), dtype=np.uint8))
    if mode == "LAB":
        return _as_array(img.getchannel("L"))
    if mode in ("CMYK", "HSV"):
        return _as_array(img.convert("RGB").convert("L"))
    return _as_array(img.convert("L"))


def _as_array(img: Image.Image) -> npt.NDArray[np.uint8]:
    """Mode-L image -> (H, W) uint8. tobytes + frombuffer is a little faster than asarray."""
    width, height = img.size
    return np.frombuffer(img.tobytes(), dtype=np.uint8).reshape(height, width)


def _scale_16bit(values: npt.NDArray) -> npt.NDArray[np.uint8]:
    """0..65535 -> 0..255, rounded: (v + 128) // 257 maps 65535 to 255 and 32896 to 128."""
    return ((values + 128) // 257).astype(np.uint8)


def _stretch(values: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    """Any real range -> 0..255 linearly; a constant image becomes black."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _composite(gray_alpha: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """(H, W, 2) gray + alpha -> (H, W) gray over a background that contrasts with the ink.

    Transparent pixels are background. Whether that background is black or white follows the
    visible pixels: light ink (alpha-weighted mean >= 128) goes on black, dark ink on white.
    """
    gray = gray_alpha[..., 0].astype(np.float32)
    alpha = gray_alpha[..., 1].astype(np.float32) * np.float32(1 / 255)
    weight = float(alpha.sum())
    ink = float((gray * alpha).sum()) / weight if weight > 0 else 255.0
    background = np.float32(0.0 if ink >= 128 else 255.0)
    out = gray * alpha + background * (np.float32(1.0) - alpha)
    return np.rint(out).astype(np.uint8)


# --------------------------------------------------------------------------- many images

Item = tuple[str, "bytes | str"]
"""(name inside the source, the encoded bytes or the path of a file to read)."""

PARALLEL_MIN_ITEMS = 2000
"""Below this many images a process pool costs more than it saves."""


def item_bytes(item: Item) -> bytes:
    """The encoded bytes of an item, reading the file when the item holds a path."""
    payload = item[1]
    if isinstance(payload, bytes):
        return payload
    try:
        with open(payload, "rb") as f:
            return f.read()
    except OSError as exc:
        raise Unreadable(f"cannot read file: {exc.strerror or exc}") from None


def decode_chunk(items: list[Item], image_size: int
                 ) -> tuple[npt.NDArray[np.uint8], list[str | None]]:
    """Decode a chunk of items: -> (n, S*S) uint8 rows (zeros where unreadable) and, per item,
    None or the reason it could not be read. Runs in worker processes."""
    pixels = np.zeros((len(items), image_size * image_size), dtype=np.uint8)
    reasons: list[str | None] = []
    for i, item in enumerate(items):
        try:
            gray, _ = gray_and_info(item_bytes(item))
            pixels[i] = resize_gray(gray, image_size).reshape(-1)
            reasons.append(None)
        except Unreadable as exc:
            reasons.append(str(exc))
    return pixels, reasons


def resolve_workers(workers: int) -> int:
    """0 -> one process per core this process may use; otherwise ``workers`` itself."""
    if workers > 0:
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def map_chunks(fn: Callable[[list[Item]], R], items: Iterable[Item], *, workers: int = 0,
               chunk_size: int = 500) -> Iterator[tuple[list[Item], R]]:
    """Apply ``fn`` to consecutive chunks of ``items``: yields (chunk, fn(chunk)) in order.

    With more than PARALLEL_MIN_ITEMS items and more than one worker, chunks go to a process
    pool as soon as they are read, so decoding overlaps reading (an archive is read once,
    front to back, by this process). ``fn`` must be picklable (a module-level function or a
    functools.partial of one).
    """
    iterator = iter(items)
    head = list(itertools.islice(iterator, PARALLEL_MIN_ITEMS + 1))
    n_workers = resolve_workers(workers)
    chunks = _chunked(itertools.chain(head, iterator), chunk_size)
    if n_workers <= 1 or len(head) <= PARALLEL_MIN_ITEMS:
        for chunk in chunks:
            yield chunk, fn(chunk)
        return
    with _pool_context().Pool(n_workers) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append((chunk, pool.apply_async(fn, (chunk,))))
            # Hand results back as they finish, and bound the memory held by queued chunks.
            while pending and (pending[0][1].ready() or len(pending) > 4 * n_workers):
                done, result = pending.popleft()
                yield done, result.get()
        while pending:
            done, result = pending.popleft()
            yield done, result.get()


def _chunked(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork on Linux: workers start in milliseconds and inherit the imported modules."""
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def data_polarity(X: npt.NDArray[np.float32], image_size: int) -> bool:
    """True when the training images are light glyphs on a dark background (like notMNIST),
    judged from the mean of their border pixels."""
    if X.shape[0] == 0:
        return True
    imgs = X[: min(2000, X.shape[0])].reshape(-1, image_size, image_size)
    border = np.concatenate([imgs[:, 0, :], imgs[:, -1, :], imgs[:, :, 0], imgs[:, :, -1]],
                            axis=1)
    return bool(border.mean() < 0.5)

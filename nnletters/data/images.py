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

``prepare_pixels`` is the one way an image becomes what a model reads, for ``predict``, ``eval
--data`` and ``report --data`` alike (see its docstring).
"""

from __future__ import annotations

import io
import itertools
import multiprocessing
import os
import re
import sys
import warnings
from collections import Counter, deque
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


# --------------------------------------------------------------------------- preparation


@dataclass(frozen=True)
class Look:
    """How a model's training images look, as its checkpoint records: their side, their
    polarity (light glyph on a dark background or the reverse) and the share of the frame
    their glyphs span (``glyph_fill``). ``prepare_pixels`` makes other images look alike."""

    image_size: int
    light_on_dark: bool = True
    glyph_fill: float = 0.9

    @classmethod
    def of(cls, meta: dict) -> Look:
        """From checkpoint metadata (older checkpoints lack the last two: the defaults)."""
        return cls(int(meta["image_size"]), bool(meta.get("light_on_dark", True)),
                   float(meta.get("glyph_fill", 0.9)))


PREPARATION_VERSION = 3
"""Part of the cache key of prepared data sets: raise it when ``prepare_pixels`` changes."""

INVERTED, FRAMED, NO_GLYPH = "inverted", "framed", "no glyph found"
"""What ``prepare_pixels`` may report having done (or found)."""

FRAMING_RANGE = (0.6, 1.35)
"""A data-set glyph whose span / the training glyphs' median span lies in this range is
framed like them (every image of notMNIST and of both synthetic styles does: their ratios
run from 0.68 to 1.2; the tests' hand-drawn letters reach 1.3); outside it, it is cropped
and framed anew (a notMNIST glyph shown to a model trained on letters with a margin)."""

SET_FRAMING = (0.85, 1.15)
"""A set of data-set images whose median span ratio lies outside this range is framed
unlike the training glyphs (whose own median ratio is 1 by definition), and all of its
images are cropped and framed: ink-style letters (ratio 0.8) shown to a model trained on
notMNIST-style ones score 56% as they are and 96% framed."""

SET_MIN = 16
"""Images handed over together from which their common polarity (and, from as many of the
model's size, their framing) is judged; fewer are judged one by one."""


@dataclass(frozen=True)
class SetView:
    """What the images handed over together say about all of them (``judge_set``):
    ``invert`` whether they are of the other polarity than the model's (None: judge each
    image alone), ``reframe`` True when their glyphs are framed unlike the training ones,
    ``side`` the side of the square images most of them share (a data set's images, like
    the model's own size; None when they share none)."""

    invert: bool | None = None
    reframe: bool = False
    side: int | None = None


@dataclass(frozen=True)
class Evidence:
    """What one image tells ``judge_set``: the mean brightness (0-255) of its outermost
    pixels and, for a small square image (a data set's, maybe), its side and its
    ``framing_ratio`` at the model's size as it is and inverted."""

    edge: float
    side: int | None = None
    ratios: tuple[float, float] = (0.0, 0.0)


EVIDENCE_SIDE = 4
"""Square images up to this many times the model's side may be a data set's (notMNIST's
28x28 files read by a model trained on them at 12x12): their framing is weighed."""


def prepare_pixels(gray: npt.NDArray[np.uint8], look: Look, view: SetView = SetView()
                   ) -> tuple[npt.NDArray[np.uint8], tuple[str, ...]]:
    """A decoded grey image (H, W) uint8 -> (S*S,) uint8 as the model reads it, plus what was
    done: () when nothing, else INVERTED and/or FRAMED, or (NO_GLYPH,) for a blank image.

    The one preparation ``predict``, ``eval --data`` and ``report --data`` share:

    - an image in the training format passes through exactly as the data loader reads it
      (``resize_gray``): a data set's image (of the model's size, or of the size the set it
      came with shares) in the model's polarity, whose glyph spans about as much of the
      frame as the training glyphs do (``FRAMING_RANGE``);
    - a data set's image of the other polarity is inverted, one framed differently is
      cropped to its glyph and framed like the training glyphs;
    - any other image (a user's photo or drawing) is inverted when its edge shows the other
      polarity, then cropped and framed.

    The polarity and the framing are those of the set the image came with when it came with
    enough others (``view``, from ``judge_set``), else the image's own.
    """
    background = _border_median(gray)
    if not _has_glyph(gray, background):
        return resize_gray(gray, look.image_size).reshape(-1), (NO_GLYPH,)
    invert = view.invert
    if gray.shape in ((look.image_size,) * 2, (view.side,) * 2):
        small = resize_gray(gray, look.image_size)
        if invert is None:
            invert = _other_polarity(small, look)
        if invert:
            small, gray = 255 - small, 255 - gray
        notes = (INVERTED,) if invert else ()
        ratio = framing_ratio(small, look)
        if not view.reframe and FRAMING_RANGE[0] <= ratio <= FRAMING_RANGE[1]:
            return small.reshape(-1), notes
        return _framed(gray, _model_background(gray, look), look), (*notes, FRAMED)
    if invert is None:
        invert = (background > 127) == look.light_on_dark
    gray, notes = (255 - gray, (INVERTED,)) if invert else (gray, ())
    return _framed(gray, _model_background(gray, look), look), (*notes, FRAMED)


def evidence(gray: npt.NDArray[np.uint8], look: Look) -> Evidence | None:
    """What ``gray`` (H, W) uint8 tells about the set it came with; None for a blank image."""
    if not _has_glyph(gray, _border_median(gray)):
        return None
    edge = float(_ring(gray).mean())
    side = gray.shape[0]
    if gray.shape != (side, side) or side > EVIDENCE_SIDE * look.image_size:
        return Evidence(edge)
    small = resize_gray(gray, look.image_size)
    return Evidence(edge, side, (framing_ratio(small, look), framing_ratio(255 - small, look)))


def judge_set(found: Iterable[Evidence | None], look: Look) -> SetView:
    """The ``SetView`` of images handed over together, from their ``evidence`` when at least
    SET_MIN hold a glyph: their polarity from the mean brightness of their edges (the rule
    ``data_polarity`` applies to training images); then, when SET_MIN or more are squares
    of one side (or of the model's), that side, and whether the median of their
    ``framing_ratio`` in that polarity is the training glyphs'."""
    found = [e for e in found if e is not None]
    if len(found) < SET_MIN:
        return SetView()
    light_on_dark = float(np.mean([e.edge for e in found])) < 127.5
    invert = light_on_dark != look.light_on_dark
    sides = Counter(e.side for e in found if e.side is not None)
    side, count = max(sides.items(), key=lambda kv: kv[1], default=(None, 0))
    ratios = [e.ratios[invert] for e in found if e.side in (side, look.image_size)]
    if count < SET_MIN:
        return SetView(invert)
    median = float(np.median(ratios))
    return SetView(invert, not SET_FRAMING[0] <= median <= SET_FRAMING[1], side)


def framing_ratio(small: npt.NDArray[np.uint8], look: Look) -> float:
    """(S, S) uint8 in the model's polarity -> its glyph's span / the training glyphs'
    (the glyph as ``_glyph_spans`` sees it, for one image)."""
    ink = small >= 64 if look.light_on_dark else small <= 191
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return 0.0
    span = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    return float(span) / small.shape[0] / max(look.glyph_fill, 1e-6)


def _has_glyph(gray: npt.NDArray[np.uint8], background: int) -> bool:
    """Whether any pixel differs clearly from the background."""
    return bool((np.abs(gray.astype(np.int16) - background) > _INK_STEP).any())


def _model_background(gray: npt.NDArray[np.uint8], look: Look) -> int:
    """The background of an image in the model's polarity: its edge's median when that is
    on the background's side of mid-grey, else black or white (a glyph that fills the frame
    makes the edge mostly glyph)."""
    edge = _border_median(gray)
    if (edge <= 127) == look.light_on_dark:
        return edge
    return 0 if look.light_on_dark else 255


def _other_polarity(gray: npt.NDArray[np.uint8], look: Look) -> bool:
    """True when the edge of one image of the model's size says its polarity is not the
    model's.

    Training glyphs that leave a margin (glyph_fill < 0.95) leave an edge of background, so
    an edge mostly on the other side of mid-grey says so. Glyphs that fill the frame make
    the edge no witness: a fifth of notMNIST's images have mostly light edges, and some of
    its fonts are drawn dark in a light box. Such an image alone is taken as it is; a set
    of them says more (``judge_set``)."""
    if look.glyph_fill >= 0.95:
        return False
    ring = _ring(gray)
    return float(((ring >= 128) if look.light_on_dark else (ring < 128)).mean()) > 0.5


def _ring(img: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The outermost pixels of an (H, W) image, as one row."""
    return np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])


def _framed(gray: npt.NDArray[np.uint8], background: int,
            look: Look) -> npt.NDArray[np.uint8]:
    """Crop to the glyph, frame it like the training glyphs, resize: -> (S*S,) uint8."""
    return resize_gray(_crop_to_glyph(gray, background, look.glyph_fill),
                       look.image_size).reshape(-1)


def prepare_gray(gray: npt.NDArray[np.uint8], look: Look) -> npt.NDArray[np.float32]:
    """``prepare_pixels`` as the float32 (S*S,) vector in [0, 1] the network reads."""
    return to_unit_float(prepare_pixels(gray, look)[0])


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


def prepare_chunk(items: list[Item], look: Look, view: SetView = SetView()
                  ) -> tuple[npt.NDArray[np.uint8], list[str | None],
                             list[tuple[tuple[str, ...], Evidence | None]]]:
    """``decode_chunk`` through ``prepare_pixels`` with the set's ``view``: -> (n, S*S) uint8
    rows (zeros where unreadable), per item None or why it is unreadable, and per item (what
    was done, its ``evidence``)."""
    pixels = np.zeros((len(items), look.image_size ** 2), dtype=np.uint8)
    reasons: list[str | None] = []
    extra: list[tuple[tuple[str, ...], Evidence | None]] = []
    for i, item in enumerate(items):
        try:
            gray, _ = gray_and_info(item_bytes(item))
        except Unreadable as exc:
            reasons.append(str(exc))
            extra.append(((), None))
            continue
        reasons.append(None)
        pixels[i], done = prepare_pixels(gray, look, view)
        extra.append((done, evidence(gray, look)))
    return pixels, reasons, extra


_INK_STEP = 64
"""Grey levels a pixel must differ from the background by to count as part of a glyph."""


def _crop_to_glyph(gray: npt.NDArray[np.uint8], background: int,
                   fill: float) -> npt.NDArray[np.uint8]:
    """Crop to the pixels that differ clearly from the background, then pad to a square whose
    side is the glyph's longer side / ``fill``. A blank image is only padded to a square."""
    ink = np.abs(gray.astype(np.int16) - background) > _INK_STEP
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return _pad_to_square(gray, background)
    glyph = gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    side = int(round(max(glyph.shape) / min(max(fill, 0.1), 1.0)))
    out = np.full((side, side), background, dtype=np.uint8)
    top, left = (side - glyph.shape[0]) // 2, (side - glyph.shape[1]) // 2
    out[top:top + glyph.shape[0], left:left + glyph.shape[1]] = glyph
    return out


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


def _border_median(gray: npt.NDArray[np.uint8]) -> int:
    """Median of the outermost ring of pixels (rounded down): the background, for a centred
    glyph. (np.median's own checks cost more than sorting a hundred pixels.)"""
    ring = np.sort(_ring(gray))
    return (int(ring[(ring.size - 1) // 2]) + int(ring[ring.size // 2])) // 2


def _pad_to_square(gray: npt.NDArray[np.uint8], fill: int) -> npt.NDArray[np.uint8]:
    """(H, W) -> (M, M), M = max(H, W), the original centred on ``fill``."""
    height, width = gray.shape
    side = max(height, width)
    if height == width:
        return gray
    out = np.full((side, side), fill, dtype=np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    out[top:top + height, left:left + width] = gray
    return out


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

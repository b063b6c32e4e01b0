"""What a model reads: any decoded image made to look like the model's training images.

``prepare_pixels`` is the one preparation ``predict``, ``eval --data`` and ``report --data``
share, decided from the image (and the images handed over with it, ``judge_set``) and what the
checkpoint records of its training images (``Look``: their size, polarity and how much of the
frame their glyphs span). An image already in the training format passes through exactly as
the data loader reads it; others are inverted, cropped to the glyph and framed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from nnletters.data.images import (
    Item,
    Unreadable,
    gray_and_info,
    item_bytes,
    resize_gray,
    to_unit_float,
)


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


PREPARATION_VERSION = 4
"""Part of the cache key of prepared data sets: raise it when ``prepare_pixels`` changes."""

INVERTED, FRAMED, NO_GLYPH = "inverted", "framed", "no glyph found"
"""What ``prepare_pixels`` may report having done (or found)."""

FRAMING_RANGE = (0.6, 1.35)
"""A lone data-set glyph whose span / the training glyphs' median span lies in this range is
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
    ``invert`` whether they are of the other polarity than the model's, ``reframe`` whether
    their glyphs are framed unlike the training ones (None for either: judge each image),
    ``side`` the side of the square images most of them share (a data set's images, like
    the model's own size; None when they share none)."""

    invert: bool | None = None
    reframe: bool | None = None
    side: int | None = None


@dataclass(frozen=True)
class Evidence:
    """What one image tells ``judge_set``: the mean brightness (0-255) of its outermost
    pixels and, for a small square image (a data set's, maybe), its side and its
    ``framing_ratio`` at the model's size as it is and inverted."""

    edge: float
    side: int | None = None
    ratios: tuple[float, float] = (0.0, 0.0)


_INK_STEP = 64
"""Grey levels a pixel must differ from the background by to count as part of a glyph."""

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
        reframe = view.reframe
        if reframe is None:
            reframe = not FRAMING_RANGE[0] <= framing_ratio(small, look) <= FRAMING_RANGE[1]
        if not reframe:
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


def as_judged(done: tuple[str, ...], found: Evidence | None, view: SetView,
              look: Look) -> bool:
    """Whether an image prepared alone (``done``: its notes) came out as ``view`` would have
    prepared it, so that a data set need not be decoded a second time."""
    if found is None:  # blank (or unreadable): the same either way
        return True
    if view.invert is not None and (INVERTED in done) != view.invert:
        return False
    if found.side == view.side != look.image_size:  # read alone as a picture
        return False
    if found.side == look.image_size and view.reframe is not None:
        return (FRAMED in done) == view.reframe
    return True


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

"""Capital letters rendered from the machine's fonts: a data source that needs no download.

Each image is one glyph drawn through a random affine map (scale, aspect, rotation, shear,
translation) with a random stroke weight, blur and noise, all drawn from a generator seeded by
``(seed, letter)``: the same seed and fonts give the same images anywhere, and the images of
letter A do not change when more letters are asked for.

Speed comes from drawing each (font, letter, stroke) glyph once at high resolution and then
only warping it: one ``Image.transform`` at twice the output size followed by a 2x2 box
reduction (anti-aliasing) per image, so thousands of images render per second.

Two styles:

- ``notmnist``: light glyph on black, scaled to fill the frame, like notMNIST.
- ``ink``: black glyph on white, centred with a margin, like the teaching series' 17x17
  images (called ``seed`` before; that name is still read).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter, features

from nnletters.config import SyntheticConfig
from nnletters.data import cache as cache_store
from nnletters.data.dataset import Dataset
from nnletters.data.fonts import (
    BUILTIN_NAME,
    builtin_font,
    candidate_fonts,
    find_fonts,
    load_faces,
)
from nnletters.data.images import to_unit_float
from nnletters.data.split import stratified_split
from nnletters.errors import DataError
from nnletters.fileio import write_text

__all__ = ["find_fonts", "load_synthetic", "parse_letters", "render_letters", "write_dataset"]

STYLES = ("notmnist", "ink")
# "seed" was ink's name before; run folders and configs that say it still work.
STYLE_ALIASES = {"seed": "ink"}
LAYOUTS = ("folders", "lists")
# Bump when rendering changes, so cached arrays from older code are not reused.
RENDER_VERSION = 2
SUPERSAMPLE = 2  # images are warped at 2x size, then 2x2-averaged: cheap anti-aliasing


@dataclass(frozen=True)
class RenderVariation:
    """Ranges of the random glyph placement for one style (all uniform unless noted)."""

    fill: tuple[float, float]  # largest side of the warped glyph, fraction of the frame
    shift: float  # translation, fraction of the free margin on each side
    aspect: float  # log of the max width/height stretch
    rotate: float  # degrees
    shear: float  # degrees
    # Stroke changes, drawn with equal probability: +k thickens each side by k units (about
    # half an output pixel each), -k thins; a glyph too light to thin is left as it is.
    strokes: tuple[int, ...]
    blur_p: float  # probability of a Gaussian blur ...
    blur: tuple[float, float]  # ... with this radius, output pixels
    noise_p: float  # probability of Gaussian pixel noise ...
    noise: tuple[float, float]  # ... with this standard deviation, grey levels
    ink: tuple[float, float]  # glyph brightness (background is 0 before inverting)


STYLE_VARIATION = {
    "notmnist": RenderVariation(fill=(0.84, 1.0), shift=0.8, aspect=0.25, rotate=6.0, shear=12.0,
                        strokes=(-1, 0, 0, 1, 2), blur_p=0.3, blur=(0.3, 0.8),
                        noise_p=0.3, noise=(2.0, 10.0), ink=(200.0, 255.0)),
    "ink": RenderVariation(fill=(0.6, 0.82), shift=0.5, aspect=0.2, rotate=8.0, shear=12.0,
                           strokes=(-1, 0, 0, 1, 2), blur_p=0.3, blur=(0.3, 0.8),
                           noise_p=0.3, noise=(2.0, 10.0), ink=(200.0, 255.0)),
}


# --------------------------------------------------------------------------- letters


def parse_letters(spec: str) -> list[str]:
    """Capital letters from a spec: ``"A-J"``, ``"A-Z"``, ``"ABC"``, ``"A-E,X-Z"``.

    Order is alphabetical and duplicates are dropped. Raises DataError on anything else.
    """
    text = re.sub(r"[\s,]", "", str(spec))
    if not text or not re.fullmatch(r"([A-Z](-[A-Z])?)+", text):
        raise DataError(f"letters: expected capital letters A-Z as a range or list, "
                        f"e.g. 'A-J', 'ABC' or 'A-E,X-Z', got {spec!r}")
    letters: set[str] = set()
    for first, last in re.findall(r"([A-Z])(?:-([A-Z]))?", text):
        last = last or first
        if last < first:
            raise DataError(f"letters: range {first}-{last} runs backwards in {spec!r}")
        letters.update(chr(c) for c in range(ord(first), ord(last) + 1))
    return sorted(letters)


# --------------------------------------------------------------------------- rendering


class _Glyphs:
    """Glyph masks drawn once per (face, letter, stroke) at the warp's input resolution."""

    def __init__(self, faces: list[tuple[str, Any]], stroke_unit: int):
        self.faces = faces
        self.unit = stroke_unit
        self._cache: dict[tuple[int, str, int], Image.Image] = {}

    def get(self, face: int, letter: str, stroke: int) -> Image.Image:
        """'L' image of the glyph's ink (255 on 0), cropped to the ink."""
        key = (face, letter, stroke)
        if key not in self._cache:
            self._cache[key] = self._draw(face, letter, stroke)
        return self._cache[key]

    def _draw(self, face: int, letter: str, stroke: int) -> Image.Image:
        font = self.faces[face][1]
        left, top, right, bottom = (int(v) for v in font.getbbox(letter))
        pad = 2 + 2 * self.unit * abs(stroke)
        image = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
        ImageDraw.Draw(image).text((pad - left, pad - top), letter, fill=255, font=font)
        ink = np.asarray(image)
        if stroke > 0:
            ink = _square_filter(ink, self.unit * stroke, np.maximum)
        elif stroke < 0:
            thin = _square_filter(ink, self.unit * -stroke, np.minimum)
            # Thinning a light font would erase it: keep it only if most ink survives.
            if thin.sum(dtype=np.int64) >= 0.55 * ink.sum(dtype=np.int64):
                ink = thin
        image = Image.fromarray(ink)
        box = image.getbbox()
        return image.crop(box) if box else image


def _square_filter(a: NDArray[np.uint8], radius: int, op: np.ufunc) -> NDArray[np.uint8]:
    """Dilation (op=np.maximum) or erosion (np.minimum) of (H, W) uint8 by a square of side
    2*radius+1. A square is separable: one pass along rows then one along columns, each the
    running op over shifted copies, which is much faster than a 2-D rank filter."""
    h, w = a.shape
    rows = np.pad(a, ((radius, radius), (0, 0)))
    out = rows[:h].copy()
    for d in range(1, 2 * radius + 1):
        op(out, rows[d:d + h], out=out)
    cols = np.pad(out, ((0, 0), (radius, radius)))
    out = cols[:, :w].copy()
    for d in range(1, 2 * radius + 1):
        op(out, cols[:, d:d + w], out=out)
    return out


def render_letters(letters: list[str], image_size: int, per_class: int, seed: int,
                   style: str = "notmnist", fonts: list[Path] | None = None,
                   ) -> tuple[NDArray[np.uint8], NDArray[np.int64], list[str]]:
    """Render ``per_class`` images of each letter.

    Returns ``X: (N, S, S) uint8`` (N = len(letters) * per_class, letter-major order),
    ``y: (N,) int64`` indices into ``letters`` and the names of the fonts drawn from.
    ``fonts=None`` uses :func:`find_fonts`; an empty list (or no font found) uses Pillow's
    built-in font. Deterministic for a given seed, fonts and Pillow/FreeType.
    """
    X, y, _, names = _render(letters, image_size, per_class, seed, style, fonts)
    return X, y, names


def _render(letters: list[str], image_size: int, per_class: int, seed: int, style: str,
            fonts: list[Path] | None, progress: bool = False,
            ) -> tuple[NDArray[np.uint8], NDArray[np.int64], NDArray[np.int16], list[str]]:
    """render_letters, also returning each image's face index ``(N,) int16``."""
    style = STYLE_ALIASES.get(style, style)
    _check_args(letters, image_size, per_class, style)
    big = SUPERSAMPLE * image_size
    # Font pixels so that a capital (~0.73 em) is about as tall as the warped frame: the warp
    # then resamples near 1:1, where bilinear interpolation loses nothing.
    faces = _faces(find_fonts() if fonts is None else fonts, size=max(16, round(1.25 * big)))
    glyphs = _Glyphs(faces, stroke_unit=max(1, round(big / 56)))
    aug = STYLE_VARIATION[style]
    n = len(letters) * per_class
    X = np.empty((n, image_size, image_size), dtype=np.uint8)
    face_of = np.empty(n, dtype=np.int16)
    bar = _progress(n) if progress else None
    for k, letter in enumerate(letters):
        rng = np.random.default_rng([seed, ord(letter)])
        rows = slice(k * per_class, (k + 1) * per_class)
        params = _draw_params(rng, per_class, len(faces), aug)
        face_of[rows] = params["face"]
        _warp_letter(glyphs, letter, params, X[rows])
        _finish(X[rows], rng, aug, invert=style == "ink")
        if bar is not None:
            bar.update(per_class)
    if bar is not None:
        bar.close()
    y = np.repeat(np.arange(len(letters), dtype=np.int64), per_class)
    return X, y, face_of, [name for name, _ in faces]


def _check_args(letters: list[str], image_size: int, per_class: int, style: str) -> None:
    if not letters or any(not (len(c) == 1 and "A" <= c <= "Z") for c in letters):
        raise DataError(f"letters: expected capital letters A-Z, got {letters!r}")
    if len(set(letters)) != len(letters):
        raise DataError(f"letters: each letter once, got {letters!r}")
    if not 4 <= image_size <= 256:
        raise DataError(f"image_size: expected a whole number from 4 to 256, got {image_size}")
    if per_class < 1:
        raise DataError(f"per_class: expected a whole number >= 1, got {per_class}")
    if style not in STYLES:
        raise DataError(f"style: expected one of {', '.join(STYLES)}, got {style!r}")


def _faces(fonts: list[Path], size: int) -> list[tuple[str, Any]]:
    # Ordered by file name, not full path: the face drawn for each image is an index into
    # this list, and the same fonts may live in other folders on another machine.
    try:
        faces = load_faces(sorted(fonts, key=lambda p: (Path(p).name, str(p))), size)
    except OSError as exc:
        raise DataError(f"fonts: cannot open a font: {exc}") from None
    return faces or [(BUILTIN_NAME, builtin_font(size))]


def _draw_params(rng: np.random.Generator, n: int, n_faces: int,
                 aug: RenderVariation) -> dict[str, NDArray]:
    """Every random choice for n images, drawn in one fixed order (this order is the format)."""
    return {
        "face": rng.integers(0, n_faces, size=n),
        "stroke": rng.choice(np.array(aug.strokes), size=n),
        "fill": rng.uniform(*aug.fill, size=n),
        "aspect": np.exp(rng.uniform(-aug.aspect, aug.aspect, size=n)),
        "rotate": np.deg2rad(rng.uniform(-aug.rotate, aug.rotate, size=n)),
        "shear": np.tan(np.deg2rad(rng.uniform(-aug.shear, aug.shear, size=n))),
        "shift": rng.uniform(-aug.shift, aug.shift, size=(n, 2)),
        "blur": np.where(rng.random(n) < aug.blur_p, rng.uniform(*aug.blur, size=n), 0.0),
    }


def _affine(params: dict[str, NDArray], sizes: NDArray, big: int) -> NDArray[np.float64]:
    """Pillow AFFINE coefficients, (n, 6), mapping each output pixel back to its glyph pixel.

    ``sizes: (n, 2)`` glyph (width, height). The forward map is ``p_out = A (p_in - half) +
    centre`` with ``A = scale * rotate . shear . stretch``; the scale makes the warped glyph
    box fill ``fill`` of the frame, and the centre moves within the margin that is left.
    """
    c, s = np.cos(params["rotate"]), np.sin(params["rotate"])
    stretch = np.sqrt(params["aspect"])
    rotate = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (n, 2, 2)
    shear = np.zeros_like(rotate)
    shear[:, 0, 0], shear[:, 0, 1], shear[:, 1, 1] = 1.0, params["shear"], 1.0
    A = rotate @ shear * np.stack([stretch, 1.0 / stretch], -1)[:, None, :]
    half = sizes / 2.0
    corners = np.array([[1, 1], [1, -1]], dtype=np.float64)  # the other two are their negatives
    warped = np.einsum("nij,nkj->nki", A, corners[None] * half[:, None])  # (n, 2, 2)
    extent = 2.0 * np.abs(warped).max(axis=1)  # (n, 2) warped box width, height at scale 1
    scale = params["fill"] * big / extent.max(axis=1)
    A *= scale[:, None, None]
    free = np.maximum(big - extent * scale[:, None], 0.0)
    centre = big / 2.0 + params["shift"] * free / 2.0
    inv = np.linalg.inv(A)
    offset = half - np.einsum("nij,nj->ni", inv, centre)
    return np.stack([inv[:, 0, 0], inv[:, 0, 1], offset[:, 0],
                     inv[:, 1, 0], inv[:, 1, 1], offset[:, 1]], -1)


def _warp_letter(glyphs: _Glyphs, letter: str, params: dict[str, NDArray],
                 out: NDArray[np.uint8]) -> None:
    """Fill ``out: (n, S, S) uint8`` with the glyphs placed in the frame, light ink on black."""
    big = SUPERSAMPLE * out.shape[1]
    images = [glyphs.get(int(f), letter, int(k))
              for f, k in zip(params["face"], params["stroke"], strict=True)]
    sizes = np.array([image.size for image in images], dtype=np.float64)
    coefficients = _affine(params, sizes, big)
    for i, image in enumerate(images):
        warped = image.transform((big, big), Image.Transform.AFFINE, tuple(coefficients[i]),
                                 Image.Resampling.BILINEAR)
        if params["blur"][i] > 0:
            radius = float(params["blur"][i]) * SUPERSAMPLE
            warped = warped.filter(ImageFilter.GaussianBlur(radius))
        out[i] = np.asarray(warped.reduce(SUPERSAMPLE))


def _finish(X: NDArray[np.uint8], rng: np.random.Generator, aug: RenderVariation,
            invert: bool) -> None:
    """In place on (n, S, S) uint8: ink brightness, pixel noise, and inversion for dark ink.

    Each image is rescaled so its brightest pixel is the drawn ink level: a thin glyph that
    blur or downsampling left faint still shows at full contrast, as a scanned letter would.
    """
    n = len(X)
    ink = rng.uniform(*aug.ink, size=n).astype(np.float32)
    sigma = np.where(rng.random(n) < aug.noise_p, rng.uniform(*aug.noise, size=n), 0.0)
    noise = rng.standard_normal(X.shape, dtype=np.float32)
    noise *= sigma.astype(np.float32)[:, None, None]
    peak = np.maximum(X.reshape(n, -1).max(axis=1), 1).astype(np.float32)
    out = X.astype(np.float32) * (ink / peak)[:, None, None] + noise
    if invert:
        out = 255.0 - out
    np.clip(np.rint(out), 0, 255, out=out)
    X[...] = out.astype(np.uint8)


def _progress(total: int) -> Any:
    from tqdm import tqdm

    # disable=None: shown only when stderr is a terminal, so logs and pipes stay clean
    return tqdm(total=total, desc="rendering letters", unit="img", leave=False, disable=None)


# --------------------------------------------------------------------------- dataset + cache


def load_synthetic(cfg: SyntheticConfig, image_size: int, seed: int, *, cache: bool = True,
                   cache_dir: str | Path | None = None, progress: bool = False,
                   fonts: list[Path] | None = None) -> Dataset:
    """The ``data.synthetic`` section as a Dataset: ``X (N, S*S) float32`` in [0, 1], ``y``.

    ``fonts``: the font files to draw from (a run's recorded ones); None finds this machine's
    (:func:`find_fonts`), so the images change when fonts are installed or removed.
    The images are kept in the dataset cache (``nnletters.data.cache``), keyed on everything
    that changes their pixels: letters, size, count, seed, style, the font files (paths and
    sizes), Pillow and FreeType versions and RENDER_VERSION. ``ds.fonts`` lists the faces
    drawn from and ``ds.font_files`` their files, for the run folder.
    """
    try:
        letters = parse_letters(cfg.letters)
    except DataError as exc:
        raise DataError(f"data.synthetic.{exc}") from None
    if not cache:
        return _rendered(letters, image_size, cfg.per_class, seed, cfg.style, fonts, progress)
    # The name is the cache file's stem; the key parts make its hash.
    style = STYLE_ALIASES.get(cfg.style, cfg.style)
    name = f"synthetic-{style}-{''.join(letters)}-n{cfg.per_class}-seed{seed}"
    file, key = cache_store.cache_file(cache_dir, name, image_size,
                                       _key_parts(letters, cfg.per_class, seed, style, fonts))
    hit = cache_store.fetch(file, key)
    if hit is not None and hit[1].get("fonts") and "font_files" in hit[1]:
        ds, extra = hit
        ds.fonts, ds.font_files = list(extra["fonts"]), list(extra["font_files"])
        return ds
    ds = _rendered(letters, image_size, cfg.per_class, seed, cfg.style, fonts, progress)
    cache_store.store(file, key, ds, extra={"fonts": ds.fonts, "font_files": ds.font_files})
    return ds


def _rendered(letters: list[str], image_size: int, per_class: int, seed: int, style: str,
              fonts: list[Path] | None, progress: bool) -> Dataset:
    files = find_fonts() if fonts is None else [Path(f) for f in fonts]
    ds = _dataset(*_render(letters, image_size, per_class, seed, style, files, progress),
                  letters)
    ds.font_files = sorted(str(f) for f in files)
    return ds


def _dataset(X: NDArray[np.uint8], y: NDArray[np.int64], face_of: NDArray[np.int16],
             fonts: list[str], letters: list[str]) -> Dataset:
    """Rendered images ``X (N, S, S) uint8`` -> Dataset with ``X (N, S*S) float32``."""

    n, size = len(X), X.shape[1]
    # Synthetic images have no file: the "path" names the font, the letter and its number,
    # which is what an error analysis wants to see.
    per_class = n // len(letters)
    paths = [f"synthetic/{fonts[face_of[i]]}/{letters[y[i]]}_{i % per_class + 1:05d}"
             for i in range(n)]
    ds = Dataset(X=to_unit_float(X.reshape(n, size * size)), y=y, classes=list(letters),
                 paths=paths, skipped=[], split=None)
    ds.fonts = list(fonts)
    return ds


def _key_parts(letters: list[str], per_class: int, seed: int, style: str,
               chosen: list[Path] | None = None) -> dict[str, Any]:
    # Candidates, not checked fonts: listing them opens no font, so a cache hit stays cheap,
    # and the checked list is a function of them.
    fonts = []
    for p in candidate_fonts() if chosen is None else sorted(Path(f) for f in chosen):
        try:
            fonts.append([str(p), p.stat().st_size])
        except OSError:
            continue
    return {"render_version": RENDER_VERSION, "letters": "".join(letters),
            "per_class": per_class, "seed": seed, "style": style, "fonts": fonts,
            "chosen": chosen is not None,
            "freetype": features.version("freetype2")}


# --------------------------------------------------------------------------- writing to disk


def write_dataset(out_dir: str | Path, letters: str | list[str], image_size: int,
                  per_class: int, seed: int, layout: str = "folders", style: str = "notmnist",
                  val_fraction: float = 0.1, test_fraction: float = 0.1,
                  progress: bool = False) -> dict[str, Any]:
    """Render letters and write them as PNG files that ``data.path`` can read back.

    ``folders``: ``OUT/<letter>/<letter>_00001.png``. ``lists``: ``OUT/images/A_00001.png``
    plus ``train.txt``, ``validate.txt``, ``test.txt`` of ``images/A_00001.png A`` lines, split
    per letter (stratified) with the seed. Both write ``fonts.txt``. ``OUT`` must be new or
    empty. Returns a summary (counts, fonts, settings).
    """
    out = Path(out_dir)
    letter_list = parse_letters(letters) if isinstance(letters, str) else list(letters)
    if layout not in LAYOUTS:
        raise DataError(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise DataError(f"val_fraction + test_fraction: expected fractions >= 0 with a sum < 1, "
                        f"got {val_fraction} + {test_fraction}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists and is not an empty folder; choose a new one")
    X, y, names = render_letters(letter_list, image_size, per_class, seed, style)
    files = [(f"{c}/{c}_{i + 1:05d}.png" if layout == "folders" else f"images/{c}_{i + 1:05d}.png")
             for c in letter_list for i in range(per_class)]
    _write_pngs(out, files, X, progress)
    summary: dict[str, Any] = {
        "out_dir": str(out), "layout": layout, "letters": "".join(letter_list),
        "image_size": image_size, "per_class": per_class, "seed": seed, "style": style,
        "images": len(files), "fonts": names}
    if layout == "lists":
        parts = dict(zip(("train", "validate", "test"),
                         stratified_split(y, val_fraction, test_fraction, seed), strict=True))
        for name, rows in parts.items():
            write_text(out / f"{name}.txt",
                       "".join(f"{files[i]} {letter_list[y[i]]}\n" for i in rows))
        summary["splits"] = {name: len(rows) for name, rows in parts.items()}
    write_text(out / "fonts.txt", "".join(f"{name}\n" for name in names))
    return summary


def _write_pngs(out: Path, files: list[str], X: NDArray[np.uint8], progress: bool) -> None:
    rows = range(len(files))
    if progress:
        from tqdm import tqdm

        rows = tqdm(rows, desc="writing PNGs", unit="img", leave=False, disable=None)
    try:
        for folder in sorted({str(Path(f).parent) for f in files}):
            (out / folder).mkdir(parents=True, exist_ok=True)
        for i in rows:
            Image.fromarray(X[i]).save(out / files[i], optimize=True)
    except OSError as exc:
        raise DataError(f"{out}: cannot write images: {exc.strerror or exc}") from None

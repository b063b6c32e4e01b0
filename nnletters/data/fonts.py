"""Finding the fonts on this machine that can draw capital letters, for the synthetic source.

Fonts come from the folders or files named in ``$NNLETTERS_FONTS`` (separated like ``PATH``)
when it is set, else from fontconfig (``fc-list``) when it is installed, else from the usual
font folders of Linux, macOS and Windows. A font is kept only if it loads and draws each of A-Z as
a visible glyph different from its "missing glyph" box, so symbol and icon fonts drop out.
When nothing usable is found, :func:`builtin_font` falls back to the scalable font shipped
inside Pillow (>= 10.1), so rendering works on any machine.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_SUFFIXES = (".ttf", ".otf", ".ttc")
BUILTIN_NAME = "pillow-builtin"
# Fonts whose letters are pictures, not letters; fontconfig's language test misses a few.
_PICTURE_FONT = re.compile(r"symbol|dingbat|wingding|webding|emoji|icon|ornament|braille|"
                           r"music|bravura|fontawesome|marlett|cursor", re.IGNORECASE)
# A code point no text font maps: drawing it shows the font's missing-glyph box (".notdef").
_UNMAPPED = "\U0010fffd"
_CAPITALS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MAX_INSTANCES = 4
# Folders or font files, separated by os.pathsep, that replace the machine's font search:
# a fixed set of fonts gives the same synthetic letters whatever else gets installed.
FONTS_ENV = "NNLETTERS_FONTS"


def find_fonts() -> list[Path]:
    """Sorted font files (TTF/OTF/TTC) on this machine that draw every capital letter A-Z.

    The result is computed once per process; the list returned is a fresh copy.
    """
    return list(_usable_fonts(tuple(candidate_fonts())))


def candidate_fonts() -> list[Path]:
    """Sorted font files found by fontconfig or in the usual folders, before any glyph check.

    Cheap (no font is opened), so it can key a cache: the checked list depends only on it.
    """
    chosen = os.environ.get(FONTS_ENV)
    found = (_scan(Path(p) for p in chosen.split(os.pathsep) if p) if chosen
             else _fc_list() or _scan(_font_folders()))
    unique = {p.resolve() for p in found
              if p.suffix.lower() in FONT_SUFFIXES and not _PICTURE_FONT.search(p.name)}
    return sorted(p for p in unique if p.is_file())


def font_label(path: Path) -> str:
    """The name a font is listed under in run folders: its file name."""
    return path.name


def load_faces(paths: list[Path], size: int) -> list[tuple[str, ImageFont.FreeTypeFont]]:
    """Open each font at ``size`` pixels, as ``(label, font)`` pairs.

    A variable font (one file, many weights) gives up to ``MAX_INSTANCES`` of its named
    instances spread from lightest to heaviest, labelled ``file.ttf#Bold``; this is where
    weight variety comes from on machines with few static fonts.
    """
    faces = []
    for path in paths:
        instances = _named_instances(path, size)
        if not instances:
            faces.append((font_label(path), ImageFont.truetype(str(path), size=size)))
            continue
        pick = np.linspace(0, len(instances) - 1, min(MAX_INSTANCES, len(instances)))
        for index in sorted({int(round(i)) for i in pick}):
            font = ImageFont.truetype(str(path), size=size)
            font.set_variation_by_name(instances[index])
            faces.append((f"{font_label(path)}#{_text(instances[index])}", font))
    return faces


def _named_instances(path: Path, size: int) -> list[bytes | str]:
    try:
        return list(ImageFont.truetype(str(path), size=size).get_variation_names())
    except (OSError, AttributeError):  # not a variable font, or FreeType without support
        return []


def _text(name: bytes | str) -> str:
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else name


def builtin_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's own font: scalable from Pillow 10.1, a small bitmap font before that.

    The synthetic renderer crops each glyph and rescales it, so the bitmap font also works,
    only blockier.
    """
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def draws_capitals(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> bool:
    """True if the font draws each of A-Z as ink that differs from its missing-glyph box."""
    missing = _glyph_pixels(font, _UNMAPPED)
    for letter in _CAPITALS:
        glyph = _glyph_pixels(font, letter)
        if glyph is None or (missing is not None and glyph.shape == missing.shape
                             and np.array_equal(glyph, missing)):
            return False
    return True


def _glyph_pixels(font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
                  text: str) -> np.ndarray | None:
    """The glyph's ink cropped to its bounding box, (h, w) uint8; None when nothing is drawn."""
    try:
        left, top, right, bottom = (int(v) for v in font.getbbox(text))
    except (OSError, ValueError, UnicodeError):
        return None
    if right <= left or bottom <= top:
        return None
    image = Image.new("L", (right - left + 2, bottom - top + 2), 0)
    ImageDraw.Draw(image).text((1 - left, 1 - top), text, fill=255, font=font)
    box = image.getbbox()
    return None if box is None else np.asarray(image.crop(box))


@functools.lru_cache(maxsize=4)
def _usable_fonts(candidates: tuple[Path, ...]) -> tuple[Path, ...]:
    usable = []
    for path in candidates:
        try:
            font = ImageFont.truetype(str(path), size=24)
        except (OSError, ValueError):
            continue  # unreadable, or a format FreeType does not know
        if draws_capitals(font):
            usable.append(path)
    return tuple(usable)


def _fc_list() -> list[Path]:
    """Font files fontconfig knows that cover English; [] if fc-list is missing or fails."""
    exe = shutil.which("fc-list")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--format", "%{file}\n", ":lang=en"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [Path(line) for line in out.splitlines() if line.strip()]


def _font_folders() -> list[Path]:
    home = Path.home()
    folders = [Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), home / ".fonts",
               home / ".local/share/fonts"]
    if sys.platform == "darwin":
        folders += [Path("/System/Library/Fonts"), Path("/Library/Fonts"), home / "Library/Fonts"]
    if os.name == "nt":
        windir = Path(os.environ.get("WINDIR", r"C:\Windows"))
        folders.append(windir / "Fonts")
        if "LOCALAPPDATA" in os.environ:
            folders.append(Path(os.environ["LOCALAPPDATA"]) / "Microsoft/Windows/Fonts")
    return folders


def _scan(places: Iterable[Path]) -> list[Path]:
    """Font files in these folders (searched recursively) or named directly."""
    found = []
    for place in places:
        if place.is_dir():
            found += [p for p in place.rglob("*") if p.suffix.lower() in FONT_SUFFIXES]
        elif place.is_file():
            found.append(place)
    return found

"""Shared fixtures: tiny datasets built with Pillow in tmp_path, and the real notMNIST path."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

NOTMNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "notMNIST_small.tar.gz"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own decoded-data cache, so no test sees another's files."""
    monkeypatch.setenv("NNLETTERS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def draw_letter(letter: str, size: int = 28, shift: int = 0, light_on_dark: bool = True,
                width: int = 3) -> Image.Image:
    """A crude but distinct glyph per letter: strokes drawn with lines (no fonts needed)."""
    bg, fg = (0, 255) if light_on_dark else (255, 0)
    img = Image.new("L", (size, size), bg)
    d = ImageDraw.Draw(img)
    s, m = size - 1, 4 + shift
    strokes = {
        "A": [(m, s - m, s // 2, m), (s // 2, m, s - m, s - m), (m + 4, s // 2 + 2,
                                                                 s - m - 4, s // 2 + 2)],
        "B": [(m, m, m, s - m), (m, m, s - m, s // 3), (s - m, s // 3, m, s // 2),
              (m, s // 2, s - m, 2 * s // 3), (s - m, 2 * s // 3, m, s - m)],
        "C": [(s - m, m, m, m), (m, m, m, s - m), (m, s - m, s - m, s - m)],
        "D": [(m, m, m, s - m), (m, m, s - m, s // 2), (s - m, s // 2, m, s - m)],
    }
    for line in strokes[letter]:
        d.line(line, fill=fg, width=width)
    return img


@pytest.fixture
def letters_folder(tmp_path) -> Path:
    """A folder dataset: 4 classes x 12 images of 28x28 grayscale PNG."""
    return write_letters(tmp_path / "letters")


def write_letters(root: Path) -> Path:
    """4 classes x 12 seeded images of 28x28 grayscale PNG in class folders under ``root``."""
    rng = np.random.default_rng(0)
    for letter in "ABCD":
        (root / letter).mkdir(parents=True)
        for i in range(12):
            img = draw_letter(letter, shift=int(rng.integers(-2, 3)), width=int(2 + i % 3))
            img.save(root / letter / f"{letter}{i:02d}.png")
    return root


@pytest.fixture
def notmnist_path() -> Path:
    if not NOTMNIST.exists():
        pytest.skip(f"real notMNIST archive not found at {NOTMNIST}")
    return NOTMNIST

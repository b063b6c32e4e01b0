"""docs/tutorial.md points each formula to the line of code that implements it, quoting the
line: every such pointer must still land on the line it quotes."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `nnletters/nn/functional.py:82` (`da *= a * (1.0 - a)`), the quote a few characters after.
POINTER = re.compile(r"`(nnletters/[\w/]+\.py):(\d+)`[^`]{0,4}`([^`]+)`")


def test_every_code_pointer_in_the_tutorial_lands_on_the_line_it_quotes():
    text = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    pointers = POINTER.findall(text)
    assert len(pointers) >= 12
    wrong = []
    for path, line, quote in pointers:
        lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
        found = lines[int(line) - 1].strip() if int(line) <= len(lines) else ""
        if found != quote:
            wrong.append(f"{path}:{line} holds {found!r}, the tutorial quotes {quote!r}")
    assert not wrong, wrong


def test_the_tutorial_shows_the_network_picture_it_ships():
    text = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert "network-part5.png" in pictures
    picture = ROOT / "docs" / "network-part5.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size < 200_000

"""Every command the README and data/README.md show, run as a user would run them, in order,
in a scratch folder laid out like a checkout (sizes cut down so that the whole walk takes
about a minute: fewer epochs, images and trials; the commands are otherwise as printed).

Benchmark commands (`python benchmarks/...`) are left to tests/test_benchmarks.py, which runs
each script with tiny sizes; `pip install` steps are the environment this test runs in.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DOCS = ["README.md", "data/README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)

# Cut-downs, by command: options appended (only when the command does not give them itself).
TINY = {
    "train": ["--set", "train.epochs=1", "--set", "data.synthetic.per_class=8",
              "--set", "model.hidden=[32]"],
    "tune": ["--trials", "2", "--set", "train.epochs=1", "--set", "data.synthetic.per_class=8"],
}
REPLACE = [(r"--per-class \d+", "--per-class 4"), (r"--trials \d+", "--trials 2")]


def doc_commands(doc: str) -> list[str]:
    """The nnletters commands of every shell block of ``doc``, in order (``a && b`` split,
    line continuations joined, pip steps and comments dropped)."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    commands = []
    for lang, body in FENCE.findall(text):
        if lang not in ("", "bash", "sh", "console"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                part = part.split(" #", 1)[0].strip()
                if part.startswith("nnletters "):
                    commands.append(part)
    return commands


def tiny(command: str) -> list[str]:
    for pattern, repl in REPLACE:
        command = re.sub(pattern, repl, command)
    args = shlex.split(command)
    verb = args[1]
    extra = TINY.get(verb, [])
    if (verb == "train" and "--resume" in args) or (verb == "tune" and "--status" in args):
        extra = []  # a resume keeps the run's own config; --status trains nothing
    return [sys.executable, "-m", "nnletters", *args[1:], *extra]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """work/ with the repository's configs and samples, and ../shared beside it."""
    base = tmp_path_factory.mktemp("docs")
    work = base / "work"
    (work / "data").mkdir(parents=True)
    (work / "configs").symlink_to(ROOT / "configs")
    (work / "data" / "samples").symlink_to(ROOT / "data" / "samples")
    if SHARED.exists():
        (base / "shared").symlink_to(SHARED)
    return work


@pytest.mark.parametrize("doc", DOCS)
def test_every_documented_command_runs(doc, checkout, tmp_path_factory):
    commands = doc_commands(doc)
    assert commands, f"{doc} shows no nnletters command"
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "NNLETTERS_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}
    have_notmnist = (SHARED / "data" / "notMNIST_small.tar.gz").exists()
    skipped: list[str] = []  # run folders of commands skipped: later ones that use them too
    for command in commands:
        if ("notmnist" in command.lower() and not have_notmnist) or \
                any(folder in command for folder in skipped):
            # the archive is not on this machine (see tests/conftest.py)
            skipped += re.findall(r"--out (\S+)", command)
            continue
        result = subprocess.run(tiny(command), cwd=checkout, env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, f"{doc}: {command}\n{result.stdout}\n{result.stderr}"

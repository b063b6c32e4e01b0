"""Atomic file writes: a crash or a full disk mid-write leaves the previous file intact.

Every file nnletters writes goes to a temporary file in the same folder first, is flushed to
disk, and only then replaces the target with ``os.replace`` (atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from nnletters.errors import NNLettersError

_UMASK = os.umask(0)
os.umask(_UMASK)

# How a zip archive (an .npz too) starts: a member, or the end record of an empty one.
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success it replaces ``path``, on error it goes."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise NNLettersError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _test_crash_point(path)
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # make the rename itself survive a power cut
    except OSError as exc:
        _remove_quietly(tmp)
        raise NNLettersError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries to disk (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temp files that writes interrupted by a crash left in ``folder``
    (``.<name>.<random>.tmp``); -> what was removed. The targets themselves are intact."""
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file():
            _remove_quietly(str(tmp))
            removed.append(tmp)
    return removed


CRASH_ENV = "NNLETTERS_TEST_CRASH_AT_WRITE"
STOP_ENV = "NNLETTERS_TEST_STOP_AT_WRITE"
_writes_seen: dict[tuple[str, str], int] = {}


def _test_crash_point(path: Path) -> None:
    """Test hooks for the crash-safety and locking tests, inert unless one is set.

    With $NNLETTERS_TEST_CRASH_AT_WRITE=NAME:N the process kills itself with SIGKILL during
    its N-th write of a file called NAME, after the temp file is complete and before it
    replaces NAME: the worst moment for a crash, reached deterministically (no timing, no
    sleeps). $NNLETTERS_TEST_STOP_AT_WRITE=NAME:N stops it there with SIGSTOP instead, so a
    test can act while the run is known to be mid-training, then let it go on with SIGCONT.
    """
    for env, signal_name in ((CRASH_ENV, "SIGKILL"), (STOP_ENV, "SIGSTOP")):
        spec = os.environ.get(env)
        if not spec:
            continue
        name, _, count = spec.rpartition(":")
        if path.name != name:
            continue
        _writes_seen[env, name] = _writes_seen.get((env, name), 0) + 1
        if _writes_seen[env, name] == int(count):
            import signal

            os.kill(os.getpid(), getattr(signal, signal_name))


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def make_dir(path: str | Path, what: str = "folder") -> Path:
    """Create ``path`` and its parents; NNLettersError naming it when the system refuses."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NNLettersError(f"cannot create {what} {path}: {exc.strerror or exc}") from None
    return path


def read_json(path: str | Path) -> Any:
    """The JSON value in ``path`` (NNLettersError naming the file when it is unreadable)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NNLettersError(f"{path}: cannot read it ({exc})") from None


def write_with(path: str | Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Atomically write a binary file produced by ``writer(file_object)``."""
    with atomic_open(path, "wb") as fh:
        writer(fh)

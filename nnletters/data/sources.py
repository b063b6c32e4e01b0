"""Where images come from: a folder of class folders, an archive of one, or list files.

``open_source(path)`` recognises the path and lists what it can without decoding anything;
``Source.items()`` then yields every image file once, in the source's own order:

- a folder: one subfolder per class; files nested deeper count for their class folder;
- an archive (.tar.gz/.tgz/.tar/.tar.bz2/.tar.xz/.zip) of such a folder, read in place, front
  to back, never extracted; members with unsafe paths (``../x``, ``/x``) and links are refused;
- a list file of ``relative/path label`` lines; ``train.txt``, ``validate.txt`` and
  ``test.txt`` side by side are the three splits.

In a folder or archive an optional single top folder (``notMNIST_small/A/...``) is looked
through, and hidden files (``.DS_Store``, ``._x.png``) and ``__MACOSX/`` are ignored.
"""

from __future__ import annotations

import os
import stat
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from nnletters.data.images import IMAGE_EXTENSIONS, Item, is_image_name
from nnletters.errors import DataError, one_line
from nnletters.fileio import ZIP_MAGIC

TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ZIP_SUFFIXES = (".zip",)
SPLIT_LISTS = ("train.txt", "validate.txt", "test.txt")  # split codes 0, 1, 2
MAX_FILE_BYTES = 256 * 2**20
"""Archive members larger than this are refused without being read into memory."""

_EXPECTED = ("expected one subfolder per class holding "
             + "/".join(sorted(e[1:] for e in IMAGE_EXTENSIONS)) + " files")


@dataclass
class Source:
    """A recognised data path.

    kind: "folder", "archive", "list" or "splits". For folders and list files the image files
    are known up front (``files``: (name, path, label, split)); archives are streamed.
    ``refused`` collects (name, reason) of files turned away before decoding.
    """

    path: Path
    kind: str
    files: list[tuple[str, str, str | None, int]] = field(default_factory=list)
    stats: list[tuple[str, int, int]] = field(default_factory=list)  # (file, size, mtime_ns)
    refused: list[tuple[str, str]] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)  # per item yielded, set by items()
    splits: list[int] = field(default_factory=list)         # per item yielded, -1 if none

    def fingerprint(self) -> list:
        """What identifies the current contents, for cache keys: sizes and mtimes of every
        file read (the archive or list files, plus each listed or found image file)."""
        return [list(s) for s in self.stats]

    def items(self) -> Iterator[Item]:
        """Every image file once, as (name, bytes or path). Fills ``labels`` and ``splits``
        alongside (labels of folders and archives are None here; see ``class_names``)."""
        self.labels, self.splits = [], []
        if self.kind == "archive":
            self.refused.clear()  # filled again while streaming
            stream = _tar_items if self.path.name.lower().endswith(TAR_SUFFIXES) else _zip_items
            for item in stream(self.path, self.refused):
                self.labels.append(None)
                self.splits.append(-1)
                yield item
            return
        for name, file, label, split in self.files:
            self.labels.append(label)
            self.splits.append(split)
            yield name, file

    @property
    def total(self) -> int | None:
        """How many items ``items()`` yields, when known before reading (not for archives)."""
        return None if self.kind == "archive" else len(self.files)


def open_source(path: str | Path, *, split_lists: bool = True) -> Source:
    """Recognise ``path`` and list its files (without decoding). DataError names the path.

    ``split_lists``: ``train.txt``, ``validate.txt`` or ``test.txt`` beside the other two
    means all three (the split to train with); False: the list file means exactly its lines
    (the data to evaluate on)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data path not found: {path}")
    path = path.resolve()
    if path.is_dir():
        lists = _split_lists(path)
        return _open_lists(path, lists) if lists else _open_folder(path)
    lower = path.name.lower()
    if lower.endswith(TAR_SUFFIXES + ZIP_SUFFIXES):
        _check_archive_start(path)
        st = path.stat()
        return Source(path, "archive", stats=[(str(path), st.st_size, st.st_mtime_ns)])
    if is_image_name(lower):
        raise DataError(f"{path}: is a single image; expected a folder, an archive "
                        f"(.tar.gz, .tgz, .tar, .zip) or a list file")
    if split_lists and lower in SPLIT_LISTS and (lists := _split_lists(path.parent)):
        return _open_lists(path.parent, lists)
    return _open_lists(path, {-1: path})


def class_names(names: list[str]) -> tuple[list[str], list[str | None]]:
    """Folder/archive names -> (names relative to the class folders' parent, class per name).

    A single top folder shared by every name is looked through when it holds class folders
    (``notMNIST_small/A/x.png`` -> ``A/x.png``, class A). A file outside any class folder gets
    class None (it is ignored).
    """
    parts = [name.split("/") for name in names]
    tops = {p[0] for p in parts}
    if len(tops) == 1 and any(len(p) >= 3 for p in parts):
        parts = [p[1:] for p in parts]
    return ["/".join(p) for p in parts], [p[0] if len(p) >= 2 else None for p in parts]


def safe_parts(name: str) -> list[str] | None:
    """Split an archive or list path into its parts; None when it is absolute or climbs out
    with '..' (such entries are refused: they could name files outside the dataset)."""
    name = name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return parts


def _ignored(parts: list[str]) -> bool:
    """Hidden files and folders, and the resource forks macOS adds to archives."""
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


# --------------------------------------------------------------------------- folders


def _open_folder(root: Path) -> Source:
    source = Source(root, "folder")
    seen: set[tuple[int, int]] = set()
    # Class folders are often links to data kept elsewhere: follow them, but only once each
    # (a link back to a parent would otherwise loop forever).
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not _ignored([d]))
        rel_dir = os.path.relpath(dirpath, root)
        for filename in sorted(filenames):
            if _ignored([filename]) or not is_image_name(filename):
                continue
            full = os.path.join(dirpath, filename)
            name = filename if rel_dir == "." else f"{rel_dir}/{filename}".replace(os.sep, "/")
            try:
                st = os.stat(full)
            except OSError as exc:  # a dangling link, or removed while we look
                source.refused.append((name, f"cannot read file: {exc.strerror or exc}"))
                continue
            source.files.append((name, full, None, -1))
            source.stats.append((name, st.st_size, st.st_mtime_ns))
    if not source.files:
        raise DataError(f"{root}: no image files found ({_EXPECTED})")
    return source


# --------------------------------------------------------------------------- archives


class _QuickTarInfo(tarfile.TarInfo):
    """TarInfo that parses a plain header's name, size, type and link only.

    tarfile's own parser decodes all sixteen fields of every header and checks the checksum
    twice; that was half the time of reading notMNIST (18,726 tiny members). Any header this
    does not fully understand (sparse files, base-256 sizes, a checksum that only matches as
    signed bytes, end-of-archive or corrupt blocks) goes to tarfile's parser, which accepts
    or rejects it as usual. Long names (GNU and pax headers) are still applied by tarfile.
    """

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        if (len(buf) != tarfile.BLOCKSIZE or buf[156:157] == tarfile.GNUTYPE_SPARSE
                or buf[124] & 0x80):
            return super().frombuf(buf, encoding, errors)
        try:
            chksum = int(_field(buf, 148, 156).strip() or b"0", 8)
            size = int(_field(buf, 124, 136).strip() or b"0", 8)
        except ValueError:
            return super().frombuf(buf, encoding, errors)
        # the checksum is the sum of the header's bytes, its own field counted as 8 spaces
        if chksum != sum(buf[:148]) + 8 * 32 + sum(buf[156:]):
            return super().frombuf(buf, encoding, errors)
        info = cls(_field(buf, 0, 100).decode(encoding, errors))
        info.size, info.chksum, info.type = size, chksum, buf[156:157]
        info.linkname = _field(buf, 157, 257).decode(encoding, errors)
        if info.type == tarfile.AREGTYPE and info.name.endswith("/"):  # old-style directory
            info.type = tarfile.DIRTYPE
        if info.isdir():
            info.name = info.name.rstrip("/")
        prefix = _field(buf, 345, 500).decode(encoding, errors)  # ustar: names > 100 bytes
        if prefix and info.type not in tarfile.GNU_TYPES:
            info.name = f"{prefix}/{info.name}"
        return info


_COMPRESSED_STARTS = {"gzip": b"\x1f\x8b", "bzip2": b"BZh", "xz": b"\xfd7zXZ\x00"}


def _check_archive_start(path: Path) -> None:
    """Refuse a file that does not begin the way its suffix promises (a renamed text file,
    an error page saved as .zip) with a plain message rather than a parser's riddle."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    lower = path.name.lower()
    if not head:
        raise DataError(f"{path}: empty file, not an archive")
    if lower.endswith(ZIP_SUFFIXES):
        expected, ok = "a zip archive", head[:4] in ZIP_MAGIC
    elif lower.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")):
        kind = "gzip" if lower.endswith(("gz", "tgz")) else \
            "bzip2" if lower.endswith(("bz2", "tbz2")) else "xz"
        expected, ok = f"a {kind}-compressed tar archive", head.startswith(
            _COMPRESSED_STARTS[kind])
    else:  # .tar: any compression is read too; old v7 tars have no magic, let tarfile judge
        starts = any(head.startswith(m) for m in _COMPRESSED_STARTS.values())
        expected, ok = "a tar archive", starts or len(head) == 512
    if not ok:
        raise DataError(f"{path}: not {expected} (the file does not start like one)")


def _field(buf: bytes, start: int, stop: int) -> bytes:
    """A NUL-terminated header field."""
    return buf[start:stop].split(b"\0", 1)[0]


def _tar_items(path: Path, refused: list[tuple[str, str]]) -> Iterator[Item]:
    """Stream a tar archive (any compression) front to back: one pass, no extraction.

    Random access into a .tar.gz re-decompresses from the start; streaming mode ('r|*')
    decompresses once.
    """
    try:
        with tarfile.open(path, mode="r|*", tarinfo=_QuickTarInfo) as tar:
            for member in tar:
                parts = _member_parts(member.name, refused)
                if parts is None:
                    continue
                if member.issym() or member.islnk():
                    refused.append((member.name, "link in archive (skipped)"))
                    continue
                if not member.isfile():
                    continue
                if member.size > MAX_FILE_BYTES:
                    refused.append((member.name, f"too large ({member.size} bytes)"))
                    continue
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                if len(data) != member.size:
                    raise DataError(f"{path}: truncated archive (at {member.name})")
                yield "/".join(parts), data
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001  tarfile and the decompressors raise many types
        raise DataError(f"{path}: truncated or corrupt archive ({one_line(exc)})") from None


def _zip_items(path: Path, refused: list[tuple[str, str]]) -> Iterator[Item]:
    """Read a zip archive's members in the order they are stored (sequential reads)."""
    try:
        archive = zipfile.ZipFile(path)
    except Exception as exc:  # noqa: BLE001  zipfile raises many types on a damaged directory
        raise DataError(f"{path}: truncated or corrupt archive ({one_line(exc)})") from None
    with archive:
        for info in sorted(archive.infolist(), key=lambda i: i.header_offset):
            if info.is_dir():
                continue
            parts = _member_parts(info.filename, refused)
            if parts is None:
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                refused.append((info.filename, "link in archive (skipped)"))
                continue
            if info.flag_bits & 0x1:
                refused.append((info.filename, "encrypted (skipped)"))
                continue
            if info.file_size > MAX_FILE_BYTES:
                refused.append((info.filename, f"too large ({info.file_size} bytes)"))
                continue
            try:
                data = archive.read(info)
            except Exception as exc:  # noqa: BLE001  a damaged member costs only itself
                refused.append((info.filename, f"damaged archive member: {one_line(exc)}"))
                continue
            yield "/".join(parts), data



def _member_parts(name: str, refused: list[tuple[str, str]]) -> list[str] | None:
    """The safe parts of an image member's name; None (and maybe a refusal) to skip it."""
    if not is_image_name(name):
        return None
    parts = safe_parts(name)
    if parts is None:
        refused.append((name, "unsafe path in archive (refused)"))
        return None
    return None if _ignored(parts) else parts


# --------------------------------------------------------------------------- list files


def _split_lists(folder: Path) -> dict[int, Path] | None:
    """The three split lists when all of them sit in ``folder``."""
    lists = {code: folder / name for code, name in enumerate(SPLIT_LISTS)}
    return lists if all(p.is_file() for p in lists.values()) else None


def _open_lists(path: Path, lists: dict[int, Path]) -> Source:
    source = Source(path, "list" if -1 in lists else "splits")
    for split, list_path in lists.items():
        st = list_path.stat()
        source.stats.append((str(list_path), st.st_size, st.st_mtime_ns))
        source.files.extend(_parse_list(list_path, split, source.stats))
    if not source.files:
        raise DataError(f"{path}: no entries (expected lines 'relative/path label')")
    return source


def _parse_list(list_path: Path, split: int,
                stats: list[tuple[str, int, int]]) -> list[tuple[str, str, str | None, int]]:
    """Lines 'relative/path label' (paths relative to the list's folder, may hold spaces);
    blank lines and '#' comments are skipped. Errors name the list file and line."""
    try:
        text = list_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{list_path}: neither a list file (not UTF-8 text) nor an archive "
                        f"(.tar.gz, .tgz, .tar, .zip)") from None
    except OSError as exc:
        raise DataError(f"{list_path}: cannot read: {exc.strerror or exc}") from None
    # os.path and os.stat, not pathlib: a cache hit still stats every listed file, and at
    # 500k lines pathlib's objects cost more than the stat calls themselves.
    base, files = str(list_path.parent), []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not files and not _looks_listed(list_path.parent, line):
            raise DataError(f"{list_path}: not a list file of 'relative/path label' lines "
                            f"(its first line: {line[:30]!r})")
        where = f"{list_path}:{lineno}"
        fields = line.rsplit(None, 1)
        if len(fields) != 2:
            raise DataError(f"{where}: expected 'relative/path label', got {line!r}")
        rel, label = fields
        parts = safe_parts(rel)
        if parts is None:
            raise DataError(f"{where}: {rel}: path leaves the list's folder (refused)")
        full = os.path.join(base, *parts)
        try:
            st = os.stat(full)
        except (OSError, ValueError):  # ValueError: a NUL byte in the name
            raise DataError(f"{where}: {rel}: file not found") from None
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{where}: {rel}: not a file")
        name = "/".join(parts)
        files.append((name, full, label, split))
        stats.append((name, st.st_size, st.st_mtime_ns))
    return files


def _looks_listed(base: Path, line: str) -> bool:
    """Whether a list file's first entry is one: two fields, the first an image's name or
    an existing file. Anything else (a README, a config) is some other text file."""
    fields = line.rsplit(None, 1)
    if len(fields) != 2:
        return False
    parts = safe_parts(fields[0])
    if is_image_name(fields[0]) or parts is None:  # a path that leaves: refused line by line
        return True
    try:
        return base.joinpath(*parts).is_file()
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------- arranging


@dataclass
class Layout:
    """Where the readable items go: sorted by class then name."""

    order: npt.NDArray[np.int64]    # (N,) item positions of the readable images, in order
    classes: list[str]              # sorted
    y: npt.NDArray[np.int64]        # (N,) class index of each
    skipped: list[tuple[str, str]]  # (name, reason), refused and unreadable files, by name
    outside: int                    # image files outside any class folder (ignored)


def arrange(source: Source, names: list[str], labels: list[str | None],
            reasons: list[str | None]) -> Layout:
    """Order the decoded items of ``source`` (``reasons[i]`` None when item i is readable).

    DataError when no image sits in a class, or a class has no readable image at all.
    """
    kept = [i for i, label in enumerate(labels) if label is not None]
    if not kept:
        found = "no image files found" if not names else "no images inside class folders"
        raise DataError(f"{source.path}: {found} ({_EXPECTED})")
    classes = sorted({labels[i] for i in kept})  # type: ignore[type-var]
    readable = [i for i in kept if reasons[i] is None]
    have = {labels[i] for i in readable}
    for name in classes:
        if name not in have:
            bad = [i for i in kept if labels[i] == name]
            raise DataError(f"{source.path}: class '{name}' has no readable images "
                            f"({len(bad)} unreadable, e.g. {names[bad[0]]}: {reasons[bad[0]]})")
    readable.sort(key=lambda i: (labels[i], names[i]))
    index = {name: k for k, name in enumerate(classes)}
    skipped = sorted(source.refused + [(names[i], reasons[i]) for i in kept  # type: ignore[misc]
                                       if reasons[i] is not None])
    return Layout(order=np.asarray(readable, dtype=np.int64), classes=classes,  # type: ignore[arg-type]
                  y=np.asarray([index[labels[i]] for i in readable], dtype=np.int64),
                  skipped=skipped, outside=len(labels) - len(kept))


def progress_bar(source: Source, action: str, enabled: bool):
    """A tqdm bar counting images on stderr; shown only when ``enabled`` and stderr is a TTY.

    tqdm is imported here, not at module level, to keep ``nnletters predict`` light."""
    from tqdm import tqdm

    class _Bar(tqdm):
        """tqdm without its monitor thread: worker processes are forked while a bar is open."""

        monitor_interval = 0

    return _Bar(total=source.total, desc=f"{action} {source.path.name}", unit="img",
                disable=None if enabled else True, leave=False, file=sys.stderr)

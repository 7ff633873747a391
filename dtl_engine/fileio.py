"""The engine's one set of file helpers: atomic writes, safe opening of user paths, leftover clean-up.

- Atomic writes go to a hidden temporary name beside the target (``.<name>.<random>.tmp``),
  are flushed to disk and then renamed over the target (``os.replace``), so a crash or a
  power cut leaves either the old or the new file, never half of one.
- A user path is opened only when it is a regular file: a FIFO, a device or a socket named
  like an image would block a read forever or stream without end. The check opens with
  ``O_NONBLOCK`` and looks at the opened descriptor, so a file swapped in between cannot
  slip through.
- A kill between writing a temporary file and renaming it leaves the hidden file behind;
  :func:`remove_leftovers` removes the engine's own leftovers (and nothing else).
"""
from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable

TMP_SUFFIX = ".tmp"         # atomic writes in progress
PART_SUFFIX = ".part"       # exports in progress
NOT_REGULAR = "not a regular file"      # the reason the folder scan gives too
# Error handler of text files that hold file names (CSV): a name that is not valid UTF-8 (Python keeps its bytes
# as surrogates) is written as its own bytes, and read back with the same handler it is the same name.
NAME_BYTES = "surrogateescape"


class NotRegularFileError(OSError):
    """A path names a FIFO, a device, a socket or a folder where a regular file is needed."""

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        super().__init__(errno.EINVAL, f"{NOT_REGULAR} ({kind})", str(path))
        self.kind = kind


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def open_regular(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open ``path`` for binary reading only if it is a regular file; never blocks on a FIFO.

    Raises :class:`NotRegularFileError` (an ``OSError``) for anything else, and the usual
    ``OSError`` subclasses for missing or unreadable files.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(path, _kind(mode))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def require_regular(path: str | os.PathLike[str]) -> None:
    """Raise :class:`NotRegularFileError` when ``path`` exists and is not a regular file (``stat`` never blocks)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(path, _kind(mode))


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The whole content of a regular file (see :func:`open_regular`)."""
    with open_regular(path) as fh:
        return fh.read()


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a regular JSON file (UTF-8)."""
    return json.loads(read_bytes(path).decode("utf-8"))


# --- writing ------------------------------------------------------------------------------

_fsync: Callable[[int], None] = os.fsync     # one place, so tests can simulate a failing disk


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a torn one.

    On any failure (a full disk included) the temporary file is removed and the old file stays.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write_all(fh, data)
            fh.flush()
            _fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_all(fh: IO[bytes], data: bytes | bytearray | memoryview) -> None:
    """``fh.write(data)`` (one place, so tests can make the disk full)."""
    fh.write(data)


def reserve_beside(path: str | os.PathLike[str], suffix: str = PART_SUFFIX, mode: int = 0o644) -> Path:
    """An empty, uniquely named hidden file next to ``path`` (``.<name>.<random><suffix>``).

    For writers that fill a file in several steps (an export that is verified before it is
    kept) and then ``os.replace`` it onto ``path``; :func:`remove_leftovers` knows the name.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(name, mode)        # mkstemp makes the file private (0600); the result is an ordinary file
    return Path(name)


def publish_new(tmp: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Move the finished file ``tmp`` to ``final`` only if ``final`` does not exist; never overwrites.

    For writers that checked ``final`` was free before a long piece of work: a file made there
    meanwhile (another process, the user) raises ``FileExistsError`` and stays as it is.
    """
    try:
        os.link(tmp, final)             # fails if ``final`` exists
    except FileExistsError:
        raise
    except OSError:                     # a file system without hard links: check, then move
        if os.path.lexists(final):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(final)) from None
        os.replace(tmp, final)
        return
    os.unlink(tmp)


def publish(tmp: str | os.PathLike[str], final: str | os.PathLike[str], overwrite: bool) -> None:
    """Move the finished file ``tmp`` onto ``final``: replacing it only when ``overwrite``, else :func:`publish_new`."""
    if overwrite:
        os.replace(tmp, final)
    else:
        publish_new(tmp, final)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, json.dumps(obj, indent=2).encode("utf-8"))


def create_exclusive(path: str | os.PathLike[str], data: bytes) -> bool:
    """Create ``path`` with ``data`` only if it does not exist yet; False when it already does."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "wb") as fh:
            write_all(fh, data)
    except BaseException:
        os.unlink(path)
        raise
    return True


# --- leftovers ----------------------------------------------------------------------------

def is_leftover_name(name: str, suffixes: tuple[str, ...] = (TMP_SUFFIX, PART_SUFFIX)) -> bool:
    """True for the hidden temporary names the engine's writers use (``.<name>.<random><suffix>``)."""
    return name.startswith(".") and name.count(".") >= 3 and name.endswith(suffixes)


def remove_leftovers(folder: str | os.PathLike[str], older_than: float | None = None,
                     stem: str | None = None, suffixes: tuple[str, ...] = (TMP_SUFFIX, PART_SUFFIX)) -> list[Path]:
    """Delete the engine's own hidden temporary files in ``folder`` left by a killed write.

    Only names of the form ``.<stem>.<random><suffix>`` are touched (``stem`` narrows it to one
    target file), and only those last modified before ``older_than`` (a time stamp; default:
    any). Returns the removed paths.
    """
    removed: list[Path] = []
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not is_leftover_name(name, suffixes) or (stem is not None and not name.startswith(f".{stem}.")):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if older_than is not None and entry.stat(follow_symlinks=False).st_mtime >= older_than:
                continue
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def newest_mtime(paths: list[Path], default: float | None = None) -> float:
    """The latest modification time among ``paths`` that exist (``default`` or now when none)."""
    times = []
    for p in paths:
        try:
            times.append(p.stat().st_mtime)
        except OSError:
            continue
    if times:
        return max(times)
    return time.time() if default is None else default

"""What a path is, checked before the engine reads or writes it: the half of :mod:`dtl_engine.fileio`
that looks and refuses, while fileio writes and deletes (and re-exports every name here, so callers
use ``fileio`` alone).

- A user path is opened only when it is a regular file: a FIFO, a device or a socket named
  like an image would block a read forever or stream without end. The check opens with
  ``O_NONBLOCK`` and looks at the opened descriptor, so a file swapped in between cannot
  slip through.
- The write guard: :func:`check_target` is asked before any file a user names is written. It
  resolves the real path (symbolic links, relative paths, the current folder) and refuses a
  target inside an image folder, inside a run folder (unless it is the one file of that run the
  caller writes), and any existing target that is not a regular file, whatever ``overwrite``
  says. While a command works on an image folder it is :func:`protecting` it: every writer of
  fileio then refuses to write there too (:func:`guard`), whatever path it was handed.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from dtl_engine.errors import DTLError, WriteRefused

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


# --- the write guard ----------------------------------------------------------------------

run_markers: set[str] = set()      # names of the file that makes a folder a run folder (runs.folder registers it)


def recognise_run_folders_by(name: str) -> None:
    """A folder holding a file called ``name`` is a run folder: no user output is written into it."""
    run_markers.add(name)


_protected: dict[Path, int] = {}        # real paths of the image folders in use -> how many users
_protected_lock = threading.Lock()


def real_path(path: str | os.PathLike[str]) -> Path:
    """The absolute path with every symbolic link resolved (``~`` expanded, relative to the current folder)."""
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path)))))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


@contextmanager
def protecting(*folders: str | os.PathLike[str] | None) -> Iterator[None]:
    """While inside, no writer of fileio writes into ``folders`` (the image folders in use)."""
    real = [real_path(f) for f in folders if f]
    with _protected_lock:
        for f in real:
            _protected[f] = _protected.get(f, 0) + 1
    try:
        yield
    finally:
        with _protected_lock:
            for f in real:
                _protected[f] -= 1
                if not _protected[f]:
                    del _protected[f]


def protected_folders() -> list[Path]:
    """The image folders no writer may write into right now."""
    with _protected_lock:
        return list(_protected)


def _data_refusal(real: Path, shown: str | os.PathLike[str],
                  data_dirs: Iterable[str | os.PathLike[str] | None]) -> str | None:
    for folder in [*(real_path(d) for d in data_dirs if d), *protected_folders()]:
        if _inside(real, folder):
            return (f"'{shown}' is in the image folder '{folder}'; DTL Studio never writes "
                    "into your data. Choose another place.")
    return None


def run_folder_of(path: str | os.PathLike[str]) -> Path | None:
    """The run folder ``path`` (a real path) lies in, if any (a folder holding the run marker)."""
    for parent in real_path(path).parents:
        if any(os.path.isfile(parent / marker) for marker in run_markers):
            return parent
    return None


def refusal(path: str | os.PathLike[str], *, overwrite: bool = False, own: Iterable[str | os.PathLike[str]] = (),
            data_dirs: Iterable[str | os.PathLike[str] | None] = ()) -> str | None:
    """Why writing the file ``path`` would be unsafe (a sentence), or None when it may be written.

    ``own``: the files of a run folder the caller writes as that run's own (the only ones allowed
    inside a run folder). ``data_dirs``: image folders besides those :func:`protecting` guards.
    """
    real = real_path(path)
    try:
        mode: int | None = os.stat(real).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        return f"'{path}' cannot be checked ({exc.strerror or exc}); choose another place."
    if mode is not None and not stat.S_ISREG(mode):
        return f"'{path}' is {_kind(mode)}, not a regular file; DTL Studio writes only files. Give a file name."
    reason = _data_refusal(real, path, data_dirs)
    if reason:
        return reason
    run = run_folder_of(real)
    if run is not None and real not in {real_path(o) for o in own}:
        return (f"'{path}' is inside the run folder '{run}', whose files only the training writes; "
                "choose another place.")
    if mode is not None and not overwrite:
        return f"'{path}' already exists; choose another name or allow replacing it (--overwrite)."
    return None


def check_target(path: str | os.PathLike[str], *, overwrite: bool = False,
                 own: Iterable[str | os.PathLike[str]] = (), data_dirs: Iterable[str | os.PathLike[str] | None] = (),
                 error: type[DTLError] = WriteRefused) -> Path:
    """The write guard: the real path to write ``path`` to, or ``error`` with the :func:`refusal` sentence."""
    reason = refusal(path, overwrite=overwrite, own=own, data_dirs=data_dirs)
    if reason:
        raise error(reason)
    return real_path(path)


def guard(path: str | os.PathLike[str]) -> None:
    """Refuse a write into a protected image folder (every writer of fileio asks)."""
    reason = _data_refusal(real_path(path), path, ())
    if reason:
        raise WriteRefused(reason)


def make_folder(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and its parents (no error when it exists), never inside a protected image folder."""
    guard(path)
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)

"""The engine's one set of file helpers: atomic writes, safe opening of user paths, leftover clean-up.

- Atomic writes go to a hidden temporary name beside the target (``.<name>.<random>.tmp``),
  are flushed to disk and then renamed over the target (``os.replace``), so a crash or a
  power cut leaves either the old or the new file, never half of one.
- Deletes only what the engine made, provably. Every temporary name carries this process's
  token (``.<name>.dtl-<token>-<random><suffix>``). In a folder of the engine's own (a run
  folder, marked) :func:`remove_leftovers` removes only such names of the files it writes there;
  beside a user's file (an export, a CSV) the temporary is also recorded in a ledger under
  DTL Studio's own folder, and :func:`clean_leftovers` removes only the recorded files of
  processes that are gone. Nothing is ever removed because its name merely looks like ours.
- The checks before a read or a write (regular files only; the write guard :func:`check_target`
  and :func:`protecting`) live in :mod:`dtl_engine.file_checks`; this module re-exports them, so
  every writer and deleter calls ``fileio`` alone, and every writer here asks the guard.
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import socket
import stat
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

import psutil

# Re-exported (``name as name``): the checks are part of this module's interface.
from dtl_engine.file_checks import (NAME_BYTES as NAME_BYTES, NOT_REGULAR as NOT_REGULAR, PART_SUFFIX as PART_SUFFIX,
                                    TMP_SUFFIX as TMP_SUFFIX, NotRegularFileError as NotRegularFileError,
                                    check_target as check_target, guard as guard, make_folder as make_folder,
                                    open_regular as open_regular, protected_folders as protected_folders,
                                    protecting as protecting, read_bytes as read_bytes, read_json as read_json,
                                    real_path as real_path, recognise_run_folders_by as recognise_run_folders_by,
                                    refusal as refusal, require_regular as require_regular,
                                    run_folder_of as run_folder_of)
from dtl_engine.file_checks import run_markers

# --- processes and this process's token ---------------------------------------------------

PROCESS_TOKEN = secrets.token_hex(6)     # in every temporary name this process makes
TOKEN_TAG = "dtl-"


def process_identity() -> dict[str, Any]:
    """This process: pid, start time (tells a live process from a reused pid) and host."""
    proc = psutil.Process()
    return {"pid": proc.pid, "pid_started": proc.create_time(), "host": socket.gethostname()}


def process_alive(pid: Any, started: Any, host: Any = None) -> bool:
    """True when the process ``pid`` that started at ``started`` still runs (on another host: assumed)."""
    if host not in (None, socket.gethostname()):
        return True                 # cannot be checked from here; never break another machine's lock
    if not isinstance(pid, int) or not psutil.pid_exists(pid):
        return False
    try:
        return started is None or abs(psutil.Process(pid).create_time() - float(started)) < 1.0
    except (psutil.Error, ValueError, TypeError):
        return False


def _temp_prefix(name: str) -> str:
    return f".{name}.{TOKEN_TAG}{PROCESS_TOKEN}-"


def _mkstemp_beside(path: Path, suffix: str) -> tuple[int, str]:
    if _token_of_temp(path.name) is not None:
        raise ValueError(f"'{path.name}' is already a temporary name")
    return tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=suffix, dir=path.parent)


def _token_of_temp(name: str, stems: Iterable[str] | Callable[[str], bool] | None = None,
                   suffixes: tuple[str, ...] = (".tmp", ".part")) -> str | None:
    """The process token in an engine temporary name ``.<stem>.dtl-<token>-<random><suffix>``, else None."""
    if not name.startswith(".") or not name.endswith(suffixes):
        return None
    stem, sep, rest = name[1:].rpartition(f".{TOKEN_TAG}")
    token = rest[:12]
    if not sep or len(rest) < 14 or rest[12] != "-" or any(c not in "0123456789abcdef" for c in token):
        return None
    if stems is not None and not (stems(stem) if callable(stems) else stem in stems):
        return None
    return token


# --- the ledger of temporaries beside users' files ------------------------------------------

_ledger_lock = threading.Lock()
_in_ledger: set[str] = set()            # this process's recorded temporaries


_ledger_home: list[Callable[[], Path]] = []     # where the ledger lives (paths registers DTL Studio's folder)


def keep_ledger_in(folder: Callable[[], Path]) -> None:
    """The ledger of temporaries lives in ``folder()`` (``dtl_engine.paths`` names DTL Studio's own folder).

    Registered rather than imported: ``paths`` creates its folders through this module's guard.
    """
    _ledger_home[:] = [folder]


def _ledger_dir() -> Path:
    return _ledger_home[0]()    # registered when dtl_engine is imported (its __init__ loads paths)


def _write_ledger() -> None:
    folder = _ledger_dir()
    make_folder(folder)
    own = folder / f"{PROCESS_TOKEN}.json"
    if _in_ledger:
        # no flush to disk: after a power cut an unrecorded temporary is only left, never wrongly removed
        atomic_write_bytes(own, json.dumps({**process_identity(), "token": PROCESS_TOKEN,
                                            "files": sorted(_in_ledger)}).encode("utf-8"), sync=False)
    else:
        try:
            os.unlink(own)
        except FileNotFoundError:
            pass


def _record(path: Path) -> None:
    with _ledger_lock:
        _in_ledger.add(str(path))
        _write_ledger()


def _unrecord(path: str | os.PathLike[str]) -> None:
    with _ledger_lock:
        if str(path) in _in_ledger:
            _in_ledger.discard(str(path))
            _write_ledger()


_cleaned: set[Path] = set()             # ledgers this process has looked at once already


def clean_leftovers(force: bool = True) -> list[Path]:
    """Remove the recorded temporaries of processes that are gone (a killed export or CSV); returns them.

    Only a file named in a gone process's ledger, still regular and still carrying that process's
    token in its name, is removed; then its ledger. ``force=False``: only the first time in this process.
    """
    removed: list[Path] = []
    folder = _ledger_dir()
    if not force and folder in _cleaned:
        return removed
    _cleaned.add(folder)
    try:
        ledgers = [e for e in os.scandir(folder) if e.name.endswith(".json") and e.is_file()]
    except OSError:
        return removed
    for ledger in ledgers:
        token = ledger.name[:-len(".json")]
        if token == PROCESS_TOKEN:
            continue
        try:
            record = read_json(ledger.path)
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or record.get("token") != token or \
                process_alive(record.get("pid"), record.get("pid_started"), record.get("host")):
            continue
        for name in record.get("files") or []:
            path = Path(str(name))
            if _token_of_temp(path.name) == token and _unlink_regular(path):
                removed.append(path)
        _unlink_regular(Path(ledger.path))
    return removed


def _unlink_regular(path: Path) -> bool:
    """Delete ``path`` only if it is a regular file (never a link, a folder or a device); True if deleted."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        os.unlink(path)
        return True
    except OSError:
        return False


def open_temp(tmp: str | os.PathLike[str], mode: str = "wb", **kwargs: Any) -> IO[Any]:
    """Open a temporary this process reserved (:func:`reserve_beside`) to fill it; nothing else."""
    if _token_of_temp(Path(tmp).name) != PROCESS_TOKEN:
        raise ValueError(f"'{tmp}' is not a temporary file of this process")
    return open(tmp, mode, **kwargs)


def discard(tmp: str | os.PathLike[str]) -> None:
    """Remove a temporary this process made (:func:`reserve_beside`) and forget it; no error when gone."""
    if _token_of_temp(Path(tmp).name) != PROCESS_TOKEN:
        raise ValueError(f"'{tmp}' is not a temporary file of this process")
    _unlink_regular(Path(tmp))
    _unrecord(tmp)


# --- writing ------------------------------------------------------------------------------

_fsync: Callable[[int], None] = os.fsync     # one place, so tests can simulate a failing disk


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, sync: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a torn one.

    On any failure (a full disk included) the temporary file is removed and the old file stays.
    ``sync=False`` skips the flush to disk (a cache entry: after a power cut it fails its check).
    """
    path = Path(path)
    guard(path)
    fd, tmp = _mkstemp_beside(path, TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            write_all(fh, data)
            fh.flush()
            if sync:
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
    """An empty, uniquely named hidden file next to ``path`` (``.<name>.dtl-<token>-<random><suffix>``).

    For writers that fill a file in several steps (an export that is verified before it is
    kept) and then :func:`publish` it onto ``path``, or :func:`discard` it. It is recorded in
    the ledger until then, so that a kill leaves a file :func:`clean_leftovers` may remove.
    """
    path = Path(path)
    guard(path)
    clean_leftovers(force=False)        # a killed process's recorded temporaries (once per process)
    fd, name = _mkstemp_beside(path, suffix)
    os.close(fd)
    try:
        os.chmod(name, mode)        # mkstemp makes the file private (0600); the result is an ordinary file
        _record(Path(name))
    except BaseException:           # not recorded (a full disk): it must not outlive this call
        _unlink_regular(Path(name))
        with _ledger_lock:
            _in_ledger.discard(name)
        raise
    return Path(name)


def publish_new(tmp: str | os.PathLike[str], final: str | os.PathLike[str]) -> None:
    """Move the finished file ``tmp`` to ``final`` only if ``final`` does not exist; never overwrites.

    For writers that checked ``final`` was free before a long piece of work: a file made there
    meanwhile (another process, the user) raises ``FileExistsError`` and stays as it is.
    """
    guard(final)
    try:
        os.link(tmp, final)             # fails if ``final`` exists
    except FileExistsError:
        raise
    except OSError:                     # a file system without hard links: check, then move
        if os.path.lexists(final):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(final)) from None
        os.replace(tmp, final)
        _unrecord(tmp)
        return
    os.unlink(tmp)
    _unrecord(tmp)


def publish(tmp: str | os.PathLike[str], final: str | os.PathLike[str], overwrite: bool) -> None:
    """Move the finished file ``tmp`` onto ``final``: replacing it only when ``overwrite``, else :func:`publish_new`."""
    if overwrite:
        guard(final)
        require_regular(final)          # a device or a FIFO is never replaced, whatever ``overwrite`` says
        os.replace(tmp, final)
        _unrecord(tmp)
    else:
        publish_new(tmp, final)


@contextmanager
def new_file(path: str | os.PathLike[str], overwrite: bool) -> Iterator[Path]:
    """A temporary of this process beside ``path`` to fill; it becomes ``path`` when the block ends.

    Published only when the block ends without an error (replacing a file there only with
    ``overwrite``: ``FileExistsError`` otherwise), and removed in every other case, a full disk too.
    """
    make_folder(Path(path).parent)
    tmp = reserve_beside(path)      # a name of its own: two writers never share one file
    try:
        yield tmp
        publish(tmp, path, overwrite)
    finally:
        discard(tmp)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, json.dumps(obj, indent=2).encode("utf-8"))


def create_exclusive(path: str | os.PathLike[str], data: bytes) -> bool:
    """Create ``path`` with ``data`` only if it does not exist yet; False when it already does."""
    guard(path)
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


# --- leftovers in the engine's own folders -----------------------------------------------

def is_leftover_name(name: str, suffixes: tuple[str, ...] = (TMP_SUFFIX, PART_SUFFIX)) -> bool:
    """True for the temporary names the engine's writers use (``.<name>.dtl-<token>-<random><suffix>``)."""
    return _token_of_temp(name, suffixes=suffixes) is not None


def remove_leftovers(folder: str | os.PathLike[str], stems: Iterable[str] | Callable[[str], bool],
                     older_than: float | None = None,
                     suffixes: tuple[str, ...] = (TMP_SUFFIX, PART_SUFFIX)) -> list[Path]:
    """Delete the engine's temporaries of the files ``stems`` in ``folder``, a folder of the engine's own.

    Only names ``.<stem>.dtl-<token>-<random><suffix>`` that are not this process's and were last
    modified before ``older_than`` (a time stamp; default: any) are touched: the caller holds the
    folder (its lock), so any other process's temporary there was left by a killed writer.
    Returns the removed paths.
    """
    removed: list[Path] = []
    stems = stems if callable(stems) else set(stems)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        token = _token_of_temp(entry.name, stems, suffixes)
        if token is None or token == PROCESS_TOKEN:
            continue
        try:
            if older_than is not None and entry.stat(follow_symlinks=False).st_mtime >= older_than:
                continue
        except OSError:
            continue
        if _unlink_regular(Path(entry.path)):
            removed.append(Path(entry.path))
    return removed


def remove_marked_folder(path: str | os.PathLike[str], marker: str) -> bool:
    """Delete the folder ``path`` only if it is a real folder (not a link) holding the file ``marker``."""
    path = Path(path)
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode) or not stat.S_ISREG(os.lstat(path / marker).st_mode):
            return False
    except OSError:
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def make_marked_folder(parent: str | os.PathLike[str], prefix: str, marker: str) -> Path:
    """A new uniquely named folder in ``parent`` holding ``marker`` (this process's identity), so that
    :func:`remove_marked_folder` may remove it later."""
    make_folder(parent)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    atomic_write_json(path / marker, {**process_identity(), "token": PROCESS_TOKEN})
    return path


def remove_signed(path: str | os.PathLike[str], signature: bytes) -> bool:
    """Delete ``path`` only if it is a regular file whose content begins with ``signature`` (an entry the
    engine wrote, e.g. a cache entry with its header); True if deleted."""
    try:
        with open_regular(path) as fh:
            if fh.read(len(signature)) != signature:
                return False
    except OSError:
        return False
    return _unlink_regular(Path(path))


def remove_named_files(folder: str | os.PathLike[str], names: Iterable[str]) -> None:
    """Delete the files ``names`` of a run folder (the engine's own files there); nothing when the folder
    is not a run folder. A name that is not a regular file is left alone."""
    folder = Path(folder)
    if not any(os.path.isfile(folder / marker) for marker in run_markers):
        return
    for name in names:
        _unlink_regular(folder / name)


def move(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename ``src`` to ``dst`` within one file system; never onto an existing ``dst``, never into an
    image folder in use."""
    guard(dst)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.replace(src, dst)


def same_content(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when the regular files ``a`` and ``b`` hold the same bytes (sizes first, then the content)."""
    try:
        if os.stat(a).st_size != os.stat(b).st_size:
            return False
        with open_regular(a) as fa, open_regular(b) as fb:
            while True:
                chunk = fa.read(1 << 20)
                if chunk != fb.read(1 << 20):
                    return False
                if not chunk:
                    return True
    except OSError:
        return False


def copy_new(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Copy the regular file ``source`` to ``dest`` (with its times), never over an existing file.

    The bytes go into a recorded temporary beside ``dest`` first, so a kill or a full disk never
    leaves a truncated file under ``dest``; ``FileExistsError`` when ``dest`` exists.
    """
    tmp = reserve_beside(dest)
    try:
        with open_regular(source) as src, open_temp(tmp) as out:
            while chunk := src.read(1 << 20):
                write_all(out, chunk)
        shutil.copystat(source, tmp)
        publish_new(tmp, dest)
    finally:
        discard(tmp)


def append_text(path: str | os.PathLike[str], text: str) -> None:
    """Append ``text`` to a regular file (created when missing) in one write, so readers see whole lines."""
    guard(path)
    require_regular(path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()


def remove_empty_folder(path: str | os.PathLike[str]) -> bool:
    """Remove ``path`` only when it is an empty folder (nothing anyone wrote is lost)."""
    try:
        os.rmdir(path)
        return True
    except OSError:
        return False


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

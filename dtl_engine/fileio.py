"""The engine's one set of file helpers: atomic writes, safe opening of user paths, leftover clean-up.

- Atomic writes go to a hidden temporary name beside the target (``.<name>.<random>.tmp``),
  are flushed to disk and then renamed over the target (``os.replace``), so a crash or a
  power cut leaves either the old or the new file, never half of one.
- A user path is opened only when it is a regular file: a FIFO, a device or a socket named
  like an image would block a read forever or stream without end. The check opens with
  ``O_NONBLOCK`` and looks at the opened descriptor, so a file swapped in between cannot
  slip through.
- Deletes only what the engine made, provably. Every temporary name carries this process's
  token (``.<name>.dtl-<token>-<random><suffix>``). In a folder of the engine's own (a run
  folder, marked) :func:`remove_leftovers` removes only such names of the files it writes there;
  beside a user's file (an export, a CSV) the temporary is also recorded in a ledger under
  DTL Studio's own folder, and :func:`clean_leftovers` removes only the recorded files of
  processes that are gone. Nothing is ever removed because its name merely looks like ours.
- The write guard: :func:`check_target` is asked before any file a user names is written. It
  resolves the real path (symbolic links, relative paths, the current folder) and refuses a
  target inside an image folder, inside a run folder (unless it is the one file of that run the
  caller writes), and any existing target that is not a regular file, whatever ``overwrite``
  says. While a command works on an image folder it is :func:`protecting` it: every writer of
  this module then refuses to write there too, whatever path it was handed.
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import stat
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

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

_run_markers: set[str] = set()      # names of the file that makes a folder a run folder (runs.folder registers it)


def recognise_run_folders_by(name: str) -> None:
    """A folder holding a file called ``name`` is a run folder: no user output is written into it."""
    _run_markers.add(name)


_protected: dict[Path, int] = {}        # real paths of the image folders in use -> how many users
_protected_lock = threading.Lock()


def real_path(path: str | os.PathLike[str]) -> Path:
    """The absolute path with every symbolic link resolved (``~`` expanded, relative to the current folder)."""
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path)))))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


@contextmanager
def protecting(*folders: str | os.PathLike[str] | None) -> Iterator[None]:
    """While inside, no writer of this module writes into ``folders`` (the image folders in use)."""
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
        if any(os.path.isfile(parent / marker) for marker in _run_markers):
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


def _guard(path: str | os.PathLike[str]) -> None:
    """Refuse a write into a protected image folder (every writer of this module asks)."""
    reason = _data_refusal(real_path(path), path, ())
    if reason:
        raise WriteRefused(reason)


def make_folder(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and its parents (no error when it exists), never inside a protected image folder."""
    _guard(path)
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


# --- processes and this process's token ---------------------------------------------------

PROCESS_TOKEN = secrets.token_hex(6)     # in every temporary name this process makes
TOKEN_TAG = "dtl-"


def process_identity() -> dict[str, Any]:
    """This process: pid, start time (tells a live process from a reused pid) and host."""
    import psutil

    proc = psutil.Process()
    return {"pid": proc.pid, "pid_started": proc.create_time(), "host": socket.gethostname()}


def process_alive(pid: Any, started: Any, host: Any = None) -> bool:
    """True when the process ``pid`` that started at ``started`` still runs (on another host: assumed)."""
    import psutil

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
    _guard(path)
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
    _guard(path)
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
    _guard(final)
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
        _guard(final)
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
    _guard(path)
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
    import shutil

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
    if not any(os.path.isfile(folder / marker) for marker in _run_markers):
        return
    for name in names:
        _unlink_regular(folder / name)


def move(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Rename ``src`` to ``dst`` within one file system; never onto an existing ``dst``, never into an
    image folder in use."""
    _guard(dst)
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
        import shutil

        shutil.copystat(source, tmp)
        publish_new(tmp, dest)
    finally:
        discard(tmp)


def append_text(path: str | os.PathLike[str], text: str) -> None:
    """Append ``text`` to a regular file (created when missing) in one write, so readers see whole lines."""
    _guard(path)
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

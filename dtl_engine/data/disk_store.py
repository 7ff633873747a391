"""Entries of bytes on disk behind a checked header, with a disk budget and LRU eviction.

The one mechanism under the decoded-image cache and the frozen-feature store:

* Damage: an entry whose header, length or CRC32 does not check out is deleted
  on read, and its owner rebuilds it.
* Budget: a default (``DEFAULT_BUDGET_MB``) and a setting (``cache budget MB``
  on the command line, :func:`set_budget_mb`), per store. Least-recently-used
  entries are evicted by :meth:`DiskStore.make_room` / :meth:`DiskStore.trim`;
  a hit refreshes an entry's modification time, which is its LRU age.
* Several processes (loader workers, two runs) may share a store: a writer
  first creates ``<entry>.lock`` exclusively (one writer per entry; the others
  skip storing), writes a private temporary file and renames it into place, so
  a reader sees no entry or a whole one, even after a crash. (No fsync: a torn
  entry after a power cut fails its CRC and is rebuilt.)
"""
from __future__ import annotations

import json
import os
import struct
import time
import zlib
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from dtl_engine.paths import feature_cache_dir, image_cache_dir

FORMAT_VERSION = 1
DEFAULT_BUDGET_MB = 4096
SETTINGS_FILE = "cache_settings.json"
_HEADER = struct.Struct("<4sHHIII")      # magic, version, reserved, a, b (e.g. width, height), crc32 of the payload
_SUFFIX = ".img"
_STALE_SECONDS = 300                     # a lock or temporary file this old belongs to a crashed writer


def _settings_path() -> Path:
    from dtl_engine.paths import cache_dir

    return cache_dir() / SETTINGS_FILE


def budget_mb() -> int:
    """The decoded-image cache budget in MB (the setting, else the default); 0 turns the cache off."""
    try:
        value = json.loads(_settings_path().read_text(encoding="utf-8")).get("image_cache_mb")
        return max(0, int(value)) if value is not None else DEFAULT_BUDGET_MB
    except (OSError, ValueError, TypeError, AttributeError):
        return DEFAULT_BUDGET_MB


def set_budget_mb(mb: int) -> None:
    """Store the decoded-image cache budget (MB; 0 turns the cache off) and trim the cache to it."""
    path = _settings_path()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"image_cache_mb": max(0, int(mb))}), encoding="utf-8")
    os.replace(tmp, path)
    for folder in (image_cache_dir(), feature_cache_dir()):
        DiskStore(folder).trim()


@dataclass(frozen=True)
class CacheInfo:
    """What the cache holds."""

    folder: str
    entries: int
    bytes: int
    budget_bytes: int


class DiskStore:
    """Entries of raw bytes behind a checked header, with a disk budget and LRU eviction (see the module doc).

    ``magic`` tells the kinds of store apart; each entry header carries two numbers
    (``a``, ``b``) the subclass gives meaning to (an image's width and height...).
    """

    magic = b"DTLB"

    def __init__(self, folder: str | os.PathLike[str], budget_bytes: int | None = None) -> None:
        self.folder = Path(folder)
        self.budget_bytes = budget_mb() * 2**20 if budget_bytes is None else max(0, int(budget_bytes))
        self._used: int | None = None     # bytes in the folder as this process believes

    def path_for(self, key_text: str) -> Path:
        key = sha256(key_text.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        return self.folder / key[:2] / (key + _SUFFIX)

    def read(self, entry: Path) -> tuple[int, int, memoryview] | None:
        """(a, b, payload) of an intact entry; a damaged one is deleted and None returned."""
        try:
            with open(entry, "rb") as fh:
                data = fh.read()
        except OSError:
            return None
        parsed = _parse(data, self.magic)
        if parsed is None:
            _unlink(entry)
            return None
        try:
            os.utime(entry)                              # LRU age
        except OSError:
            pass
        return parsed

    def write(self, entry: Path, a: int, b: int, payload: bytes) -> None:
        """Store ``payload`` atomically, unless another process is writing this entry or the budget is full."""
        blob = _HEADER.pack(self.magic, FORMAT_VERSION, 0, a, b, zlib.crc32(payload)) + payload
        if self.used_bytes() + len(blob) > self.budget_bytes:
            return                                       # full: the main process makes room between runs/epochs
        lock = entry.with_name(entry.name + ".lock")
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _remove_if_stale(lock)                       # another writer has it (or crashed holding it)
            return
        except OSError:
            return                                       # a read-only or full disk only costs speed
        tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
        try:
            os.close(fd)
            with open(tmp, "wb") as fh:
                fh.write(blob)
            os.replace(tmp, entry)
            self._used = self.used_bytes() + len(blob)
        except OSError:
            _unlink(tmp)
        finally:
            _unlink(lock)

    # --- size and eviction -------------------------------------------------------------------
    def _entries(self) -> list[tuple[float, int, Path]]:
        """(mtime, bytes, path) of every entry; stale temporary and lock files are removed on the way."""
        out: list[tuple[float, int, Path]] = []
        now = time.time()
        try:
            shards = list(os.scandir(self.folder))
        except OSError:
            return out
        for shard in shards:
            if not shard.is_dir(follow_symlinks=False):
                continue
            try:
                files = list(os.scandir(shard.path))
            except OSError:
                continue
            for f in files:
                try:
                    st = f.stat(follow_symlinks=False)
                except OSError:
                    continue
                if f.name.endswith(_SUFFIX):
                    out.append((st.st_mtime, st.st_size, Path(f.path)))
                elif now - st.st_mtime > _STALE_SECONDS:
                    _unlink(Path(f.path))
        return out

    def used_bytes(self) -> int:
        """Bytes the entries take (counted once per process, then kept up to date by its own writes)."""
        if self._used is None:
            self._used = sum(size for _, size, _ in self._entries())
        return self._used

    def make_room(self, needed_bytes: int = 0) -> int:
        """Evict least-recently-used entries until ``needed_bytes`` more fit the budget; returns bytes freed."""
        entries = sorted(self._entries())
        used = sum(size for _, size, _ in entries)
        limit = max(0, self.budget_bytes - max(0, int(needed_bytes)))
        freed = 0
        for _, size, path in entries:
            if used - freed <= limit:
                break
            if _unlink(path):
                freed += size
        self._used = used - freed
        return freed

    def trim(self) -> int:
        """Evict least-recently-used entries until the cache fits its budget; returns bytes freed."""
        return self.make_room(0)

    def info(self) -> CacheInfo:
        entries = self._entries()
        return CacheInfo(str(self.folder), len(entries), sum(size for _, size, _ in entries), self.budget_bytes)

    def clear(self) -> int:
        """Delete every entry; returns the bytes freed."""
        freed = sum(size for _, size, path in self._entries() if _unlink(path))
        self._used = 0
        return freed




def _parse(data: bytes, magic: bytes) -> tuple[int, int, memoryview] | None:
    if len(data) < _HEADER.size:
        return None
    found, version, _, a, b, crc = _HEADER.unpack_from(data)
    payload = memoryview(data)[_HEADER.size:]
    if found != magic or version != FORMAT_VERSION or zlib.crc32(payload) != crc:
        return None
    return a, b, payload


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
        return True
    except OSError:
        return False


def _remove_if_stale(path: Path) -> None:
    try:
        if time.time() - os.stat(path).st_mtime > _STALE_SECONDS:
            _unlink(path)
    except OSError:
        pass

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
from functools import partial
from hashlib import sha256
from pathlib import Path

from dtl_engine import fileio
from dtl_engine.paths import feature_cache_dir, image_cache_dir, cache_dir

FORMAT_VERSION = 1
DEFAULT_BUDGET_MB = 4096
SETTINGS_FILE = "cache_settings.json"
_HEADER = struct.Struct("<4sHHIII")      # magic, version, reserved, a, b (e.g. width, height), crc32 of the payload
_SUFFIX = ".img"
_STALE_SECONDS = 300                     # a lock or temporary file this old belongs to a crashed writer
_LOCK_CONTENT = b"DTL cache entry lock\n"  # what an entry's lock holds: only such a file is removed as stale
_SIGNATURE = b"DTL"                       # every store's magic starts so: only such a file is removed as an entry


def _settings_path() -> Path:
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
    fileio.atomic_write_json(_settings_path(), {"image_cache_mb": max(0, int(mb))})
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

    magic = b"DTLB"                 # a subclass's own starts with _SIGNATURE too

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
            fileio.remove_signed(entry, _SIGNATURE)      # a damaged entry of ours; anything else is left alone
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
            fileio.make_folder(entry.parent)
            if not fileio.create_exclusive(lock, _LOCK_CONTENT):
                _remove_if_stale(lock)                   # another writer has it (or crashed holding it)
                return
        except OSError:
            return                                       # a read-only or full disk only costs speed
        try:
            fileio.atomic_write_bytes(entry, blob, sync=False)    # a torn entry fails its CRC and is rebuilt
            self._used = self.used_bytes() + len(blob)
        except OSError:
            pass
        finally:
            fileio.remove_signed(lock, _LOCK_CONTENT)

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
                if _is_entry_name(f.name, shard.name):
                    out.append((st.st_mtime, st.st_size, Path(f.path)))
                elif now - st.st_mtime > _STALE_SECONDS and f.name.endswith(".lock") \
                        and _is_entry_name(f.name[:-len(".lock")], shard.name):     # a crashed writer's lock
                    fileio.remove_signed(f.path, _LOCK_CONTENT)
            # a crashed writer's temporary entries (the engine's names of this shard's entries only)
            fileio.remove_leftovers(shard.path, partial(_is_entry_name, shard=shard.name),
                                    older_than=now - _STALE_SECONDS)
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
            if fileio.remove_signed(path, _SIGNATURE):
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
        freed = sum(size for _, size, path in self._entries() if fileio.remove_signed(path, _SIGNATURE))
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


def _is_entry_name(name: str, shard: str) -> bool:
    """True for the names :meth:`DiskStore.path_for` gives: 40 hex digits (the first two = the shard) + .img."""
    key = name[:-len(_SUFFIX)]
    return (name.endswith(_SUFFIX) and len(key) == 40 and key.startswith(shard)
            and all(c in "0123456789abcdef" for c in key))


def _remove_if_stale(path: Path) -> None:
    try:
        if time.time() - os.stat(path).st_mtime > _STALE_SECONDS:
            fileio.remove_signed(path, _LOCK_CONTENT)
    except OSError:
        pass

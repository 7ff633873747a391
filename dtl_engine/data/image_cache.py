"""A disk cache of decoded, pre-resized images, so each photo is decoded once, not once per epoch.

An entry holds one image as raw 8-bit RGB whose short side is just what the
transform needs (:mod:`.decode_size`), behind a small header with a CRC32 of
the pixels. It lives in the per-user cache folder, never next to the photos.

* Key: the photo's absolute path, size and modification time plus the stored
  short side and the format version. A changed photo gets a new key and is
  decoded again; its old entry ages out.
* Damage: a short, torn or altered entry fails its size or CRC check, is
  deleted and rebuilt from the photo.
* Budget: a default (``DEFAULT_BUDGET_MB``) and a setting (``cache budget MB``
  on the command line, :func:`set_budget_mb`). Least-recently-used entries are
  evicted by :meth:`ImageCache.make_room` / :meth:`ImageCache.trim`; a hit
  refreshes an entry's modification time, which is its LRU age.
* Several processes (loader workers, two runs) may share the folder: a writer
  first creates ``<entry>.lock`` exclusively (one writer per entry; the others
  just use their decoded image), writes a private temporary file and renames
  it into place, so a reader sees no entry or a whole one, even after a crash.
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

from PIL import Image

from .images import load_image

FORMAT_VERSION = 1
DEFAULT_BUDGET_MB = 4096
SETTINGS_FILE = "cache_settings.json"
_MAGIC = b"DTLI"
_HEADER = struct.Struct("<4sHHIII")      # magic, version, reserved, a, b (e.g. width, height), crc32 of the payload
_SUFFIX = ".img"
_STALE_SECONDS = 300                     # a lock or temporary file this old belongs to a crashed writer
_RESAMPLE = Image.Resampling.BICUBIC


def image_cache_dir() -> Path:
    """The folder of the decoded-image cache (inside the per-user cache folder)."""
    from ..paths import cache_dir

    return cache_dir() / "images"


def _settings_path() -> Path:
    from ..paths import cache_dir

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
    ImageCache().trim()


@dataclass(frozen=True)
class CacheInfo:
    """What the cache holds."""

    folder: str
    entries: int
    bytes: int
    budget_bytes: int


def shrink_to_side(image: Image.Image, side: int) -> Image.Image:
    """Scale ``image`` down so its short side is ``side`` (never up; small images stay as they are)."""
    w, h = image.size
    short = min(w, h)
    if short <= side:
        return image
    scale = side / short
    size = (max(side, round(w * scale)), side) if w >= h else (side, max(side, round(h * scale)))
    return image.resize(size, _RESAMPLE)


class DiskStore:
    """Entries of raw bytes behind a checked header, with a disk budget and LRU eviction (see the module doc).

    ``magic`` tells the kinds of store apart; each entry header carries two numbers
    (``a``, ``b``) the subclass gives meaning to (an image's width and height...).
    """

    magic = _MAGIC

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




class ImageCache(DiskStore):
    """Decoded images on disk; :meth:`load` is a drop-in for :func:`load_image` with a short side."""

    def __init__(self, folder: str | os.PathLike[str] | None = None, budget_bytes: int | None = None) -> None:
        super().__init__(folder if folder is not None else image_cache_dir(), budget_bytes)

    def entry_path(self, path: str | os.PathLike[str], side: int, st: os.stat_result) -> Path:
        return self.path_for(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{side}\0{FORMAT_VERSION}")

    def load(self, path: str | os.PathLike[str], side: int) -> Image.Image:
        """The image at ``path`` (upright RGB, short side at most ``side``), from the cache when possible.

        Raises :class:`DataError` like :func:`load_image` when the photo cannot be read.
        """
        try:
            st = os.stat(path)
        except OSError:
            return load_image(path, min_side=side)       # load_image words the reason
        entry = self.entry_path(path, side, st)
        found = self.read(entry)
        if found is not None:
            width, height, pixels = found
            if len(pixels) == 3 * width * height:
                return Image.frombytes("RGB", (width, height), pixels)
            _unlink(entry)
        image = shrink_to_side(load_image(path, min_side=side), side)
        if self.budget_bytes > 0:
            self.write(entry, image.width, image.height, image.tobytes())
        return image


def _parse(data: bytes, magic: bytes) -> tuple[int, int, memoryview] | None:
    if len(data) < _HEADER.size:
        return None
    found, version, _, a, b, crc = _HEADER.unpack_from(data)
    payload = memoryview(data)[_HEADER.size:]
    if found != magic or version != FORMAT_VERSION or zlib.crc32(payload) != crc:
        return None
    return a, b, payload


def _decode_entry(data: bytes) -> Image.Image | None:
    """The image of an image-cache entry's bytes, or None when damaged."""
    parsed = _parse(data, _MAGIC)
    if parsed is None or len(parsed[2]) != 3 * parsed[0] * parsed[1] or parsed[0] * parsed[1] == 0:
        return None
    return Image.frombytes("RGB", (parsed[0], parsed[1]), parsed[2])


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


def default_image_cache() -> ImageCache | None:
    """The per-user image cache, or None when it is turned off (budget 0) or its folder cannot be made."""
    from ..errors import DTLError

    try:
        cache = ImageCache()
    except DTLError:
        return None                      # no cache folder: photos are simply decoded every time
    return cache if cache.budget_bytes > 0 else None


def feature_cache_dir() -> Path:
    """The folder of the frozen-feature store (linear probe features, same rules as the image cache)."""
    from ..paths import cache_dir

    return cache_dir() / "features"


def cache_size_bytes() -> int:
    """Bytes used by DTL Studio's reusable caches: decoded images and frozen features (the app's cache line)."""
    return ImageCache().info().bytes + DiskStore(feature_cache_dir()).info().bytes


def clear_caches() -> int:
    """Delete DTL Studio's reusable caches (the app's "Clear caches"); returns the bytes freed."""
    return ImageCache().clear() + DiskStore(feature_cache_dir()).clear()

"""A disk cache of decoded, pre-resized images, so each photo is decoded once, not once per epoch.

An entry holds one image as raw 8-bit RGB whose short side is just what the
transform needs (:mod:`.decode_size`). It lives in the per-user cache folder,
never next to the photos, and follows the rules of :class:`.disk_store.DiskStore`
(checked header, budget with LRU eviction, one writer per entry, atomic renames).

Key: the photo's absolute path, size and modification time plus the stored
short side and the format version. A changed photo gets a new key and is
decoded again; its old entry ages out. A damaged entry is rebuilt from the photo.
"""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from dtl_engine.data.disk_store import (  # noqa: F401
    DEFAULT_BUDGET_MB,
    FORMAT_VERSION,
    CacheInfo,
    DiskStore,
    _parse,
    budget_mb,
    set_budget_mb,
)
from dtl_engine import fileio
from dtl_engine.data.file_stamps import cache_key
from dtl_engine.data.images import load_image
from dtl_engine.paths import feature_cache_dir, image_cache_dir
from dtl_engine.errors import DTLError

_MAGIC = b"DTLI"
_RESAMPLE = Image.Resampling.BICUBIC


def shrink_to_side(image: Image.Image, side: int) -> Image.Image:
    """Scale ``image`` down so its short side is ``side`` (never up; small images stay as they are)."""
    w, h = image.size
    short = min(w, h)
    if short <= side:
        return image
    scale = side / short
    size = (max(side, round(w * scale)), side) if w >= h else (side, max(side, round(h * scale)))
    return image.resize(size, _RESAMPLE)


def load_shrunk(path: str | os.PathLike[str], side: int) -> Image.Image:
    """``path`` decoded (JPEGs at a reduced scale) and shrunk to the short side ``side``: what a cache entry holds.

    Loading without the cache goes through here too, so an image looks the same to a model
    whether the cache is on, off or full.
    """
    return shrink_to_side(load_image(path, min_side=side), side)


class ImageCache(DiskStore):
    """Decoded images on disk; :meth:`load` is a drop-in for :func:`load_image` with a short side."""

    magic = _MAGIC

    def __init__(self, folder: str | os.PathLike[str] | None = None, budget_bytes: int | None = None) -> None:
        super().__init__(folder if folder is not None else image_cache_dir(), budget_bytes)

    def entry_path(self, path: str | os.PathLike[str], side: int, st: os.stat_result) -> Path:
        # keyed on the file's change time too: content swapped with its mtime restored is a new entry
        return self.path_for(f"{os.path.abspath(path)}\0{cache_key(st)}\0{side}\0{FORMAT_VERSION}")

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
            fileio.remove_signed(entry, self.magic)     # an entry of ours with the wrong size
        image = load_shrunk(path, side)
        if self.budget_bytes > 0:
            self.write(entry, image.width, image.height, image.tobytes())
        return image


def _decode_entry(data: bytes) -> Image.Image | None:
    """The image of an image-cache entry's bytes, or None when damaged."""
    parsed = _parse(data, _MAGIC)
    if parsed is None or len(parsed[2]) != 3 * parsed[0] * parsed[1] or parsed[0] * parsed[1] == 0:
        return None
    return Image.frombytes("RGB", (parsed[0], parsed[1]), parsed[2])


def default_image_cache() -> ImageCache | None:
    """The per-user image cache, or None when it is turned off (budget 0) or its folder cannot be made."""
    try:
        cache = ImageCache()
    except DTLError:
        return None                      # no cache folder: photos are simply decoded every time
    return cache if cache.budget_bytes > 0 else None


def cache_size_bytes() -> int:
    """Bytes used by DTL Studio's reusable caches: decoded images and frozen features (the app's cache line)."""
    return ImageCache().info().bytes + DiskStore(feature_cache_dir()).info().bytes


def clear_caches() -> int:
    """Delete DTL Studio's reusable caches (the app's "Clear caches"); returns the bytes freed."""
    return ImageCache().clear() + DiskStore(feature_cache_dir()).clear()

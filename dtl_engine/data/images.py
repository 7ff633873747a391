"""Reading one image file safely: a cheap header check for scans, a full load for training.

Both paths turn every way a file can be bad (empty, not an image, truncated,
unreadable, absurdly large) into a short human reason instead of an exception
from deep inside Pillow.
"""
from __future__ import annotations

import os
import stat
import struct
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dtl_engine.errors import DataError
from dtl_engine.fileio import NOT_REGULAR, NotRegularFileError, open_regular

# Bytes at the end of a JPEG searched for its end-of-image marker (cheap truncation check).
_JPEG_TAIL = 4096
_HEIF = {".heic", ".heif", ".hif"}
_RAW = {".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".pef", ".srw", ".raw"}

# The pixel limit is enforced explicitly (``_too_large_reason``) on every open, so Pillow's
# own warning is redundant noise; a filter is thread-safe where catch_warnings() is not.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _open_file(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open a regular file for reading (one place, so tests can simulate unreadable files).

    A FIFO, device or socket named like an image is refused without blocking.
    """
    return open_regular(path)


def _too_large_reason(width: int, height: int) -> str | None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        return (f"the image is too large ({width}×{height} pixels, more than the safety limit of "
                f"{limit:,} pixels); it may be a decompression bomb")
    return None


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, NotRegularFileError):
        return "it is a folder, not a file" if exc.kind == "a folder" else f"{NOT_REGULAR} ({exc.kind})"
    if isinstance(exc, PermissionError):
        return "the file cannot be read (permission denied)"
    if isinstance(exc, FileNotFoundError):
        return "the file disappeared or is a broken link"
    if isinstance(exc, IsADirectoryError):
        return "it is a folder, not a file"
    return f"the file cannot be read ({exc.strerror or exc})"


EMPTY = "the file is empty (0 bytes)"    # one sentence for the scan, the doctor, predict and Classify a folder


def _not_image_reason(path: str | os.PathLike[str]) -> str:
    try:
        if os.path.getsize(path) == 0:
            return EMPTY
    except OSError:
        pass                            # the suffix still says what it was meant to be
    suffix = Path(path).suffix.lower()
    if suffix in _HEIF:
        return "HEIC/HEIF photos cannot be read without an extra plugin; export them as JPEG or PNG"
    if suffix in _RAW:
        return "camera RAW files are not supported; export them as JPEG or PNG"
    if suffix in Image.registered_extensions():
        return f"not an image: the content is not a picture, despite the '{suffix}' ending"
    return "not an image (its content is not a picture format Pillow can read)"


def check_image(path: str | os.PathLike[str], size: int | None = None) -> str | None:
    """Cheaply check that ``path`` holds a readable image; return None if fine, else the reason.

    Only the header is parsed and Pillow's ``verify()`` run (no full decode), so a
    folder of thousands of photos scans in seconds. JPEGs whose end marker is
    missing get one full decode to tell truncation from harmless trailing data.
    """
    try:
        if size is None:
            st = os.stat(path)
            if not stat.S_ISREG(st.st_mode):
                return _os_reason(NotRegularFileError(path, "a folder" if stat.S_ISDIR(st.st_mode) else
                                                      "a named pipe" if stat.S_ISFIFO(st.st_mode) else "a device"))
            size = st.st_size
        if size == 0:
            return EMPTY
        with _open_file(path) as fh:
            try:
                with Image.open(fh) as img:
                    fmt = img.format
                    reason = _too_large_reason(*img.size)
                    if reason:
                        return reason
                    img.verify()
            except UnidentifiedImageError:
                return _not_image_reason(path)
            except Image.DecompressionBombError:
                return "the image is too large (more pixels than the safety limit); it may be a decompression bomb"
            if fmt == "JPEG" and not _jpeg_has_end(fh, size):
                fh.seek(0)
                with Image.open(fh) as img:
                    img.draft("RGB", (64, 64))   # 1/8 scale still reads every byte: truncation shows
                    img.load()
        return None
    except OSError as exc:
        if isinstance(exc, (PermissionError, FileNotFoundError, IsADirectoryError, NotRegularFileError)):
            return _os_reason(exc)
        return f"the image data is truncated or corrupt ({exc})"
    except (ValueError, SyntaxError, EOFError, IndexError, struct.error) as exc:  # Pillow plugin parse errors
        return f"the image data is corrupt ({exc})"


def _jpeg_has_end(fh: IO[bytes], size: int) -> bool:
    fh.seek(max(0, size - _JPEG_TAIL))
    return b"\xff\xd9" in fh.read(_JPEG_TAIL)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: transparency composited on white, 16-bit scaled, CMYK converted."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(img), mode), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        mode in ("P", "L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    # Pillow's own convert() clips 16-bit values at 255 (nearly all-white); scale instead.
    arr = arr.astype(np.float64)
    if mode == "F":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if lo >= 0.0 and hi <= 1.0:
            arr = arr * 255.0
        elif hi > lo:
            arr = (arr - lo) * (255.0 / (hi - lo))
        arr = np.nan_to_num(arr)
    elif mode.startswith("I;16") or float(arr.max(initial=0)) > 255:
        arr = arr / 257.0
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def load_image(path: str | os.PathLike[str], *, min_side: int | None = None) -> Image.Image:
    """Fully decode ``path`` into an upright 8-bit RGB image; raise DataError with the reason.

    ``min_side``: when given, large JPEGs are decoded at a reduced scale (1/2, 1/4, 1/8)
    that still leaves at least ``min_side`` pixels on both sides, which is several
    times faster for camera photos that will be shrunk to the model's input anyway.
    """
    name = Path(path).name
    try:
        with _open_file(path) as fh, Image.open(fh) as img:
            reason = _too_large_reason(*img.size)
            if reason:
                raise DataError(f"Cannot load '{name}': {reason}.")
            if min_side and img.format == "JPEG":
                img.draft("RGB", (min_side, min_side))
            img.load()
            try:
                upright = ImageOps.exif_transpose(img)
            except Exception:  # broken EXIF must not lose the picture itself
                upright = img
            return to_rgb(upright).copy()
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"Cannot load '{name}': {_not_image_reason(path)}.") from None
    except Image.DecompressionBombError:
        raise DataError(f"Cannot load '{name}': the image is too large (more pixels than the safety limit); "
                        "it may be a decompression bomb.") from None
    except OSError as exc:
        if isinstance(exc, (PermissionError, FileNotFoundError, IsADirectoryError, NotRegularFileError)):
            raise DataError(f"Cannot load '{name}': {_os_reason(exc)}.") from exc
        raise DataError(f"Cannot load '{name}': the image data is truncated or corrupt ({exc}).") from exc
    except (ValueError, SyntaxError, EOFError, IndexError, struct.error) as exc:
        raise DataError(f"Cannot load '{name}': the image data is corrupt ({exc}).") from exc

"""Tiny image folders for tests, drawn with Pillow (no files from outside the test).

Each class gets its own colour plus a little seeded noise, so a model can tell the
classes apart and every call with the same arguments writes identical files.
"""
from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

_PALETTE = [(220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 200, 30), (160, 60, 200),
            (30, 200, 200), (240, 130, 20), (120, 120, 120), (250, 250, 250), (10, 10, 10)]
_EXT = {"png": ".png", "jpeg": ".jpg", "jpg": ".jpg", "bmp": ".bmp", "gif": ".gif", "tiff": ".tif", "webp": ".webp"}


def class_color(index: int) -> tuple[int, int, int]:
    return _PALETTE[index % len(_PALETTE)]


def make_array(index: int, size: tuple[int, int] = (32, 32), seed: int = 0) -> np.ndarray:
    """An RGB uint8 array (H, W, 3): the class colour plus seeded noise."""
    w, h = size
    rng = np.random.default_rng(seed)
    base = np.array(class_color(index), dtype=np.int16)
    noise = rng.integers(-20, 21, size=(h, w, 3), dtype=np.int16)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_image(path: str | Path, index: int = 0, size: tuple[int, int] = (32, 32), fmt: str = "png",
               mode: str = "RGB", seed: int = 0) -> Path:
    """Write one image file (any Pillow mode: RGB, L, P, RGBA, CMYK, I;16...) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(make_array(index, size, seed), "RGB")
    if mode == "I;16":
        gray = np.asarray(img.convert("L"), dtype=np.uint16) * 257
        img = Image.fromarray(gray)  # uint16 -> mode I;16
    elif mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    elif mode != "RGB":
        img = img.convert(mode)
    img.save(path, format="JPEG" if fmt in ("jpg", "jpeg") else fmt.upper())
    return path


def make_image_folder(root: str | Path, classes: dict[str, int] | None = None, size: tuple[int, int] = (32, 32),
                      fmt: str = "png", mode: str = "RGB", seed: int = 0) -> Path:
    """Write ``root/<class>/img_<i>.<ext>`` for each class: count; return ``root``."""
    root = Path(root)
    classes = {"a": 6, "b": 6} if classes is None else classes
    for ci, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            make_image(root / name / f"img_{i}{_EXT[fmt]}", ci, size, fmt, mode, seed=seed * 100003 + ci * 1009 + i)
    return root


def make_split_folder(root: str | Path, train: dict[str, int], val: dict[str, int] | None = None,
                      test: dict[str, int] | None = None, **kw) -> Path:
    """Write the split layout ``root/train/<class>``, ``root/val/<class>`` (+ ``root/test/<class>``)."""
    root = Path(root)
    all_names = list(dict.fromkeys([*train, *(val or {}), *(test or {})]))
    for part, classes in (("train", train), ("val", val), ("test", test)):
        if classes is None:
            continue
        # Keep one colour per class name across the parts.
        for name, count in classes.items():
            ci = all_names.index(name)
            for i in range(count):
                seed = zlib.crc32(f"{part}/{name}/{i}".encode())
                make_image(root / part / name / f"img_{i}.png", ci, seed=seed, **kw)
    return root


def png_bytes(size: tuple[int, int] = (16, 16), index: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(make_array(index, size), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(size: tuple[int, int] = (64, 64), index: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(make_array(index, size), "RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def tree_snapshot(root: str | Path) -> dict[str, tuple[int, int]]:
    """Every file and folder below ``root`` with its size and modification time (to prove nothing was written)."""
    root = Path(root)
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = (-1, 0)
            continue
        st = p.stat()
        out[str(p.relative_to(root))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out

"""The built-in sample data: handwritten digits written out as a folder of PNG images.

Source: the test part of the UCI "Optical Recognition of Handwritten Digits" data set
(E. Alpaydin, C. Kaynak, 1998; CC BY 4.0), as shipped by scikit-learn: 1797 images of
8×8 pixels with values 0..16, last column the digit. Each is drawn as dark ink on white
paper, given a one-pixel margin and scaled up smoothly (bicubic) to 48×48 pixels, which
looks like a pen stroke rather than blocks. The result is written once, deterministically,
into the user data folder as ``digits/<0..9>/digit_<row>.png``.
"""
from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dtl_engine import fileio
from dtl_engine.errors import DataError
from dtl_engine.paths import sample_data_dir

SAMPLE_VERSION = 1
IMAGE_SIDE = 48
MARKER = ".dtl-sample.json"  # hidden, so a scan passes over it
ALL_CLASSES = tuple(str(d) for d in range(10))
LICENCE = ("UCI Optical Recognition of Handwritten Digits (E. Alpaydin, C. Kaynak, 1998), "
           "UCI Machine Learning Repository, licensed CC BY 4.0.")
_CSV_NAME = "digits.csv.gz"


def _csv_path() -> Path:
    """Find the packed digits, in a source checkout or inside a frozen bundle."""
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / "resources" / "sample_data" / _CSV_NAME]
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        candidates.insert(0, Path(bundle) / "resources" / "sample_data" / _CSV_NAME)
    for c in candidates:
        if c.is_file():
            return c
    raise DataError("The sample data file (digits.csv.gz) is missing from this installation.")


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(_csv_path(), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float64)
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def render_digit(pixels: np.ndarray, side: int = IMAGE_SIDE) -> Image.Image:
    """Draw one 8×8 digit (values 0..16) as a grayscale ``side``×``side`` image: dark ink on white."""
    ink = np.clip(np.rint(255.0 - pixels * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    canvas = Image.new("L", (10, 10), 255)  # one pixel of paper around the 8×8 grid
    canvas.paste(Image.fromarray(ink, "L"), (1, 1))
    return canvas.resize((side, side), Image.Resampling.BICUBIC)


def _normalise_classes(classes: Iterable[int | str] | None) -> list[str]:
    if classes is None:
        return list(ALL_CLASSES)
    numeric = all(str(c).strip().isdigit() for c in classes)
    chosen = sorted({str(c).strip() for c in classes}, key=int if numeric else str)
    bad = [c for c in chosen if c not in ALL_CLASSES]
    if bad:
        raise DataError(f"The sample data has the digits 0 to 9; {', '.join(repr(b) for b in bad)} is not one of them.")
    if len(chosen) < 2:
        raise DataError("Choose at least two digits for the sample data; a classifier needs at least two classes.")
    return chosen


def _folder_name(classes: list[str]) -> str:
    return "digits" if classes == list(ALL_CLASSES) else "digits_" + "".join(classes)


def _expected(labels: np.ndarray, classes: list[str]) -> dict[str, int]:
    return {c: int((labels == int(c)).sum()) for c in classes}


def _is_complete(folder: Path, expected: dict[str, int]) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if marker.get("version") != SAMPLE_VERSION or marker.get("counts") != expected:
        return False
    for cls, n in expected.items():
        d = folder / cls
        if not d.is_dir() or sum(1 for p in d.iterdir() if p.suffix == ".png") != n:
            return False
    return True


def ensure_sample_dataset(classes: Iterable[int | str] | None = None) -> Path:
    """Write the sample digits as class folders of PNG images (once) and return that folder.

    ``classes`` picks a subset of the digits (e.g. ``[0, 1, 7]``); None gives all ten.
    A complete earlier copy is reused; an incomplete or older one is rewritten.
    """
    chosen = _normalise_classes(classes)
    images, labels = _load_digits()
    expected = _expected(labels, chosen)
    base = sample_data_dir()
    target = base / _folder_name(chosen)
    if _is_complete(target, expected):
        return target

    # Build beside the target and move it into place, so a half-written copy is never used.
    tmp = fileio.make_marked_folder(base, ".building-", MARKER)    # ours until complete (marker rewritten)
    try:
        for cls in chosen:
            (tmp / cls).mkdir()
        for row, (pixels, label) in enumerate(zip(images, labels)):
            cls = str(int(label))
            if cls in expected:
                render_digit(pixels).save(tmp / cls / f"digit_{row:04d}.png", optimize=False)
        marker = {"version": SAMPLE_VERSION, "counts": expected, "source": LICENCE}
        fileio.atomic_write_json(tmp / MARKER, marker)
        if target.exists():
            fileio.remove_marked_folder(target, MARKER)     # an earlier copy of ours; anything else stays
        try:
            fileio.move(tmp, target)
        except OSError:
            if not _is_complete(target, expected):  # not a concurrent writer that finished first
                raise
    except OSError as exc:
        raise DataError(f"Cannot write the sample data into '{base}': {exc.strerror or exc}.") from exc
    finally:
        if tmp.exists():
            fileio.remove_marked_folder(tmp, MARKER)
    return target


def sample_dataset_info() -> dict[str, Any]:
    """What the app shows about the sample data: name, classes, image count, size and licence line."""
    _, labels = _load_digits()
    return {
        "name": "Handwritten digits",
        "classes": list(ALL_CLASSES),
        "count": int(labels.size),
        "counts": _expected(labels, list(ALL_CLASSES)),
        "image_size": (IMAGE_SIDE, IMAGE_SIDE),
        "licence": LICENCE,
    }

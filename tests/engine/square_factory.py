"""A synthetic task whose evidence has a known place: the class is the colour of a small bright square.

Each image is dark noise with one square (side ``SQUARE`` px) at a random place; the square's
colour decides the class. Tests use it to check where a heatmap looks.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 32
SQUARE = 8
COLOURS = {"red": (255, 40, 40), "green": (40, 255, 40), "blue": (60, 60, 255)}


def square_image(colour: tuple[int, int, int],
                 rng: np.random.Generator) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """One image and its square as (top, left, bottom, right)."""
    pixels = rng.integers(0, 60, size=(SIDE, SIDE, 3)).astype(np.uint8)
    top, left = (int(v) for v in rng.integers(0, SIDE - SQUARE + 1, size=2))
    pixels[top:top + SQUARE, left:left + SQUARE] = colour
    return Image.fromarray(pixels, "RGB"), (top, left, top + SQUARE, left + SQUARE)


def make_square_folder(root: str | Path, per_class: int, seed: int = 0) -> dict[str, tuple[int, int, int, int]]:
    """Write ``root/<colour>/sq_<i>.png``; return each file's square box by path."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    boxes = {}
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img, box = square_image(colour, rng)
            path = root / name / f"sq_{i}.png"
            img.save(path)
            boxes[str(path)] = box
    return boxes

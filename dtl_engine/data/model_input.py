"""The one way an image becomes what a model sees, for evaluation, prediction and exports alike.

An image file is decoded and shrunk to the short side the model's resize needs
(:func:`.image_cache.load_shrunk`, also what the decoded-image cache holds), turned into
uint8 pixels, and then :func:`.preprocess.preprocess` resizes, crops and normalises it.
The exported file compiles that same ``preprocess`` into itself, so a run's validation,
the engine's predictions and the exported file see identical input tensors and agree
to the image.

The one deliberate difference: an exported file accepts pixels of any size from its
caller. The engine hands it pixels loaded here (large photos already shrunk with
Pillow); a program that gives it a full-size photo gets the same resize done in torch,
which can differ by about one level of a pixel.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from dtl_engine.data.preprocess import preprocess, preprocess_settings
from dtl_engine.data.image_cache import load_shrunk
from dtl_engine.data.images import load_image

#: Which evaluation transform made an image's tensor; part of the key of features kept across runs.
#: 1: timm's Pillow transform (before exports and evaluation shared one); 2: :func:`preprocess`.
PREPROCESS_VERSION = 2


def image_to_uint8(img: Any) -> torch.Tensor:
    """PIL RGB image -> uint8 tensor (3, H, W)."""
    arr = np.array(img.convert("RGB"), dtype=np.uint8, copy=True)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def input_side(settings: dict[str, Any]) -> int:
    """The short side an image is shrunk to before :func:`preprocess` with ``settings`` (its first resize)."""
    return int(max(settings["scale_size"]))


def load_pixels(path: str | os.PathLike[str], side: int | None) -> torch.Tensor:
    """uint8 (3, H, W) pixels of ``path`` as the model's loader sees them; DataError when unreadable.

    ``side`` is :func:`input_side` of the model's settings (None: the full image).
    """
    return image_to_uint8(load_shrunk(path, side) if side else load_image(path))


class EvalTransform:
    """The evaluation transform: PIL RGB image -> normalised float tensor (3, H, W) via :func:`preprocess`.

    A plain class (not a closure), so loader worker processes can receive it pickled.
    """

    def __init__(self, data_config: dict[str, Any]) -> None:
        self.settings = preprocess_settings(data_config)

    def __call__(self, img: Any) -> torch.Tensor:
        return preprocess(image_to_uint8(img), **self.settings)[0]

    def __repr__(self) -> str:
        return f"EvalTransform({self.settings})"

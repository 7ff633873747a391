"""How many pixels an image must keep for the transform that follows it.

Camera photos (12 MP and more) are shrunk to a few hundred pixels by every
transform; decoding them in full and resizing afterwards wastes most of the
time. :func:`decode_side` gives the short side an image needs so that the
transform sees the same detail it would see in the full image:

* evaluation: timm resizes the short side to ``input / crop_pct`` and crops the
  centre, so exactly that many pixels are needed;
* training (random resized crop with the smallest area share ``s`` and the
  aspect range 3/4..4/3): the smallest crop is about ``sqrt(s * 3/4)`` of the
  short side and is scaled to the input size, so the short side needs
  ``input / sqrt(s * 3/4)`` pixels, capped at ``TRAIN_DETAIL_CAP`` times the
  input (smaller crops of the ``standard`` preset are then upsampled a little,
  which is itself an augmentation).

The result drives JPEG draft decoding and the size kept in the decoded-image
cache.
"""
from __future__ import annotations

import math
from typing import Any

# Smallest crop area share per training preset (see transforms.build_transform).
_MIN_CROP_SCALE = {"light": 0.8, "standard": 0.08}
_MIN_ASPECT = 3 / 4
TRAIN_DETAIL_CAP = 2.0
_DEFAULT_CROP_PCT = 0.875


def decode_side(data_config: dict[str, Any], augment: str = "none", train: bool = False) -> int:
    """The short side (pixels) an image needs before ``build_transform(data_config, augment, train)``."""
    size = data_config.get("input_size", (3, 224, 224))
    side = max(int(size[-2]), int(size[-1]))
    crop_pct = float(data_config.get("crop_pct") or _DEFAULT_CROP_PCT)
    eval_side = math.floor(side / crop_pct)
    if not train or augment not in _MIN_CROP_SCALE:
        return eval_side
    needed = side / math.sqrt(_MIN_CROP_SCALE[augment] * _MIN_ASPECT)
    return max(eval_side, math.ceil(min(needed, side * TRAIN_DETAIL_CAP)))

"""Image -> tensor transforms from a model's data config (its own size, mean, std, crop).

Presets:

* ``none``:     the evaluation transform (resize, centre crop, normalise), also for training. It is
  :class:`.model_input.EvalTransform`, the very preprocessing an exported file compiles into
  itself, so an export scores its validation images exactly as the run did.
* ``light-noflip``: a mild random resized crop (scale 0.8-1), no flips (digits, text, anything
  whose class changes when mirrored).
* ``light``:    the same crop plus horizontal flips.
* ``standard``: timm's usual training recipe: random resized crop (scale 0.08-1), flips and
  RandAugment.

The training presets are timm's (Pillow) transforms.
Validation and test always use the evaluation transform. Small images (for
example 8×8 digits) are simply scaled up to the model's input size.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from timm.data import create_transform, resolve_data_config

from dtl_engine.errors import DataError
from dtl_engine.data.model_input import EvalTransform

AUGMENT_PRESETS = ("none", "light-noflip", "light", "standard")
# timm's RandAugment policy of its ImageNet recipes, with the sampled magnitude capped
# at 9: at 10 "posterize" keeps 0 bits, which Pillow >= 11 refuses (a crash mid-epoch).
RAND_AUGMENT = "rand-m9-mstd0.5-inc1-mmax9"


def resolved_config(data_config: dict[str, Any]) -> dict[str, Any]:
    """Fill any missing entries (mean, std, crop...) with timm's defaults, never our own constants."""
    cfg = resolve_data_config(args=dict(data_config))
    return {k: cfg[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode") if k in cfg}


def build_transform(data_config: dict[str, Any], augment: str = "none", train: bool = False,
                    *, hflip: float = 0.5) -> Callable[[Any], Any]:
    """Return a callable turning a PIL RGB image into a normalised float tensor (3, H, W).

    ``data_config`` is a timm data config (``model.data_config``); ``augment``
    one of :data:`AUGMENT_PRESETS`; ``train`` False gives the evaluation transform.
    ``hflip`` is the flip probability of the training presets (0 for text or digits).
    """
    if augment not in AUGMENT_PRESETS:
        raise DataError(f"Augmentation must be one of {', '.join(AUGMENT_PRESETS)}, not '{augment}'.")
    cfg = resolved_config(data_config)
    if not train or augment == "none":
        return EvalTransform(cfg)
    common = dict(input_size=cfg["input_size"], interpolation=cfg["interpolation"], mean=cfg["mean"],
                  std=cfg["std"], is_training=True, hflip=hflip, vflip=0.0, re_prob=0.0)
    if augment == "light-noflip":
        return create_transform(**{**common, "hflip": 0.0}, scale=(0.8, 1.0),
                                color_jitter=None)  # type: ignore[arg-type]  # None: no jitter
    if augment == "light":
        return create_transform(**common, scale=(0.8, 1.0), color_jitter=None)  # type: ignore[arg-type]  # None: no jitter
    return create_transform(**common, scale=(0.08, 1.0), auto_augment=RAND_AUGMENT)

"""The one image preprocessing used for prediction, in pure torch.

The exported TorchScript file compiles :func:`preprocess` into itself, and the
engine's own prediction calls the same function, so both see identical input
tensors. It reproduces timm's evaluation transform (resize by 1/crop_pct,
centre crop, scale to [0, 1], normalise with the backbone's mean and std) on a
uint8 batch of any size, using antialiased interpolation like PIL does.

Everything here must stay TorchScript-compatible: plain typed arguments, no
Python objects, only torch operations.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List

import torch
import torch.nn.functional as F

DEFAULT_CROP_PCT = 0.875


def preprocess_settings(data_config: Dict[str, Any]) -> Dict[str, Any]:
    """Turn a timm data config into the plain arguments of :func:`preprocess`.

    ``data_config`` is ``model.data_config`` (input_size, crop_pct, crop_mode,
    mean, std, interpolation); the result is JSON-friendly and is also stored
    in an export's metadata.
    """
    input_size = data_config["input_size"]
    height, width = int(input_size[-2]), int(input_size[-1])
    crop_pct = float(data_config.get("crop_pct") or DEFAULT_CROP_PCT)
    crop_mode = str(data_config.get("crop_mode") or "center")
    interpolation = str(data_config.get("interpolation") or "bilinear")
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        interpolation = "bilinear"  # timm also maps unusual names (e.g. 'random') to bilinear at eval
    return {
        "size": [height, width],
        # Same rule as timm's eval transform: the image is first scaled to size / crop_pct.
        "scale_size": [int(math.floor(height / crop_pct)), int(math.floor(width / crop_pct))],
        "squash": crop_mode == "squash",
        "mean": [float(m) for m in data_config["mean"]],
        "std": [float(s) for s in data_config["std"]],
        "interpolation": interpolation,
    }


def _resized_size(height: int, width: int, scale_size: List[int], squash: bool) -> List[int]:
    # Integer arithmetic only: it exports to ONNX as plain int ops and has no float rounding surprises.
    if squash:
        return [scale_size[0], scale_size[1]]
    if scale_size[0] == scale_size[1]:
        # torchvision Resize(int): the shorter side becomes scale_size, the longer keeps the aspect ratio.
        short = scale_size[0]
        if height <= width:
            return [short, (short * width) // height]
        return [(short * height) // width, short]
    # timm ResizeKeepRatio: scale so the image covers the target box, keeping the aspect ratio.
    if height * scale_size[1] <= width * scale_size[0]:
        return [scale_size[0], _div_round(width * scale_size[0], height)]
    return [_div_round(height * scale_size[1], width), scale_size[1]]


def _div_round(a: int, b: int) -> int:
    return (2 * a + b) // (2 * b)


def _crop_start(extra: int) -> int:
    # torchvision's int(round(extra / 2.0)), which rounds halves to even.
    start = extra // 2
    if extra % 2 == 1 and start % 2 == 1:
        start += 1
    return start


def preprocess(
    images: torch.Tensor,
    size: List[int],
    scale_size: List[int],
    squash: bool,
    mean: List[float],
    std: List[float],
    interpolation: str,
) -> torch.Tensor:
    """Resize, centre-crop and normalise a batch of RGB images.

    ``images`` holds pixel values 0..255 (uint8, or float in that range),
    shape (N, 3, H, W) or (3, H, W), any H and W. Returns float32
    (N, 3, size[0], size[1]), ready for the model.
    """
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.size(1) != 3:
        raise ValueError("expected RGB images shaped (N, 3, H, W)")
    x = images.to(torch.float32)
    height = x.size(2)
    width = x.size(3)
    new_size = _resized_size(height, width, scale_size, squash)
    if new_size[0] != height or new_size[1] != width:
        # The antialiased kernels F.interpolate(..., antialias=True) dispatches to, called directly so
        # the ONNX exporter sees them (it maps them to Resize with antialias=1).
        if interpolation == "bicubic":
            x = torch._C._nn._upsample_bicubic2d_aa(x, new_size, False, None, None)  # type: ignore[call-arg]
        elif interpolation == "bilinear":
            x = torch._C._nn._upsample_bilinear2d_aa(x, new_size, False, None, None)  # type: ignore[call-arg]
        else:
            x = F.interpolate(x, size=new_size, mode="nearest")
        # PIL clips bicubic overshoot to 0..255 after resizing; do the same. (Its rounding to whole
        # levels is left out on purpose: it would make tiny float differences between runtimes flip
        # pixels by a whole level; unrounded values stay within half a level of PIL's.)
        x = x.clamp(0.0, 255.0)
    # Centre crop (pad with zeros first if the image is smaller, as torchvision does).
    pad_h = size[0] - x.size(2)
    pad_w = size[1] - x.size(3)
    if pad_h > 0 or pad_w > 0:
        pad_h = pad_h if pad_h > 0 else 0
        pad_w = pad_w if pad_w > 0 else 0
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
    top = _crop_start(x.size(2) - size[0])
    left = _crop_start(x.size(3) - size[1])
    x = x[:, :, top:top + size[0], left:left + size[1]]
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x / 255.0 - mean_t) / std_t

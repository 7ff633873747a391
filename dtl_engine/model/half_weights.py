"""Memory saver: the frozen backbone's weights stored in the training's half precision.

Under bf16 / fp16 autocast every frozen Linear and Conv weight is cast to half precision at each use
anyway, so keeping an fp32 master copy of a weight that never trains only costs memory (4 bytes per
value instead of 2) plus a cast per step. Storing those weights in the autocast dtype gives the same
numbers as casting them on the fly. Norm layers, position embeddings and tokens stay in fp32: autocast
runs layer norms in fp32 and the embeddings are added to fp32 sums, so that is where precision matters.
"""
from __future__ import annotations

import torch
from torch import nn

HALF_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
# the layers autocast computes in half precision: the bulk of a transformer's bytes
_HALF_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def half_dtype(precision: str | torch.dtype | None) -> torch.dtype | None:
    """The half dtype of a precision name or autocast dtype; ``None`` for fp32 (the saver does not apply)."""
    if isinstance(precision, torch.dtype):
        return precision if precision in HALF_DTYPES.values() else None
    return HALF_DTYPES.get(str(precision)) if precision is not None else None


def frozen_half_layers(model: nn.Module) -> list[nn.Module]:
    """Linear / Conv layers whose parameters are all frozen (the side network and head train, so stay out)."""
    layers: list[nn.Module] = []
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if isinstance(module, _HALF_LAYERS) and params and not any(p.requires_grad for p in params):
            layers.append(module)
    return layers


def cast_frozen_weights(model: nn.Module, precision: str | torch.dtype | None) -> int:
    """Store every frozen Linear / Conv layer of ``model`` in the half dtype of ``precision``, in place.

    A no-op for fp32. The model must then run under autocast of that dtype (training and evaluation do).
    Returns the bytes saved.
    """
    dtype = half_dtype(precision)
    if dtype is None:
        return 0
    saved = 0
    for layer in frozen_half_layers(model):
        for p in layer.parameters(recurse=False):
            if p.is_floating_point() and p.dtype != dtype:
                saved += p.numel() * (p.element_size() - torch.finfo(dtype).bits // 8)
        layer.to(dtype)
    return saved


__all__ = ["HALF_DTYPES", "cast_frozen_weights", "frozen_half_layers", "half_dtype"]

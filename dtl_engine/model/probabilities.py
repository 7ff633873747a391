"""The engine's own class probabilities for uint8 images: the one preprocessing, then the model.

Export checks and ``predict`` compare an exported file against this, so it lives below both.
"""
from __future__ import annotations

from typing import Any, cast

import torch

from dtl_engine.data.preprocess import preprocess, preprocess_settings


def engine_probabilities(model: torch.nn.Module, images: torch.Tensor,
                         settings: dict[str, Any] | None = None) -> torch.Tensor:
    """Class probabilities of a DTLModel for uint8 images (N, 3, H, W) of any size (CPU float32 result)."""
    settings = settings or preprocess_settings(cast("dict[str, Any]", model.data_config))
    param = next(model.parameters())
    with torch.no_grad():
        x = preprocess(images.to(param.device), **settings).to(param.dtype)
        return torch.softmax(model(x).float(), dim=-1).cpu()

"""dtl_engine: Disentangled Transfer Learning (Fu, Zhu, Wu, AAAI 2024) on timm backbones.

The library behind DTL Studio. It never imports Qt; the desktop app listens to it.
"""
from __future__ import annotations

from dtl_engine.config import TrainConfig
from dtl_engine.errors import BackboneError, DataError, DTLError, ExportError, RunError, WeightsError
from dtl_engine.listener import RunListener, StopToken
from dtl_engine import paths  # noqa: F401 - tells fileio where its ledger of temporaries lives

__version__ = "0.1.0"


def __getattr__(name: str):
    # Heavy pieces (torch, timm) load on first use so `import dtl_engine` stays instant.
    if name in ("build_model", "DTLModel"):
        from dtl_engine.model import dtl as model
        return getattr(model, name)
    raise AttributeError(f"module 'dtl_engine' has no attribute '{name}'")


__all__ = [
    "TrainConfig", "RunListener", "StopToken", "build_model", "DTLModel",
    "DTLError", "DataError", "BackboneError", "WeightsError", "RunError", "ExportError",
]

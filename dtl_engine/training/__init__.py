"""Training: the run loop, its checkpoints, the feature cache, device and optimiser choices."""
from __future__ import annotations

from dtl_engine.devices import select_device
from dtl_engine.training.runner import RunResult, resume, train

__all__ = ["train", "resume", "RunResult", "select_device"]

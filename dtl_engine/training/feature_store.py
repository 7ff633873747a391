"""Frozen features kept across runs: a linear probe on photos it has seen before skips the backbone.

A linear probe without augmentation (and without drop-path) only ever needs the
frozen backbone's pooled features of each image under the evaluation
transform. After a run computed them (its in-run :class:`FeatureCache` is full
after the first epoch), they are stored in fp16 in the per-user cache folder,
one entry per image, with the decoded-image cache's rules (:class:`DiskStore`:
checked header, budget, LRU, atomic writes). The key adds to the photo's path,
size and modification time everything the features depend on: backbone,
weights (a weights file by its size and time; random weights by seed and
model arguments), input size and preprocessing.

The next run with the same images and backbone fills its in-run cache from the
store before the first epoch, so not one image is decoded.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dtl_engine.data.disk_store import DiskStore
from dtl_engine.data.file_stamps import cache_key
from dtl_engine.data.image_cache import feature_cache_dir
from dtl_engine.data import model_input

_MAGIC = b"DTLF"


def store_fits(config: Any) -> bool:
    """True when a run's features are a pure function of the image: linear probe, no augmentation, no drop-path."""
    return config.method == "linear" and config.augment == "none" and not config.drop_path


def model_identity(config: Any, model_kwargs: dict[str, Any] | None, data_config: dict[str, Any]) -> str:
    """Everything besides the image that the frozen features depend on, as one string."""
    weights = str(config.weights)
    if weights not in ("hub", "random"):
        try:
            st = os.stat(weights)
            weights = f"{os.path.abspath(weights)}:{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            pass
    elif weights == "random":
        weights = f"random:{config.seed}"

    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return json.dumps({"backbone": config.backbone, "weights": weights, "model_kwargs": model_kwargs or {},
                       "image_size": config.image_size, "data": {k: data_config.get(k) for k in keys},
                       "preprocess": model_input.PREPROCESS_VERSION},    # how those settings are applied
                      sort_keys=True, default=str)


class FeatureStore(DiskStore):
    """fp16 feature vectors per (image, model identity)."""

    magic = _MAGIC

    def __init__(self, identity: str = "", folder: str | os.PathLike[str] | None = None,
                 budget_bytes: int | None = None) -> None:
        super().__init__(folder if folder is not None else feature_cache_dir(), budget_bytes)
        self.identity = identity

    def _entry(self, path: str) -> Path | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return self.path_for(f"{os.path.abspath(path)}\0{cache_key(st)}\0{self.identity}")

    def get_all(self, paths: Sequence[str]) -> torch.Tensor | None:
        """The stored features of every path as (N, D) fp16, or None if any one is missing or damaged."""
        rows: list[np.ndarray] = []
        for path in paths:
            entry = self._entry(path)
            found = self.read(entry) if entry is not None else None
            if found is None or found[0] * 2 != len(found[2]) or (rows and found[0] != rows[0].shape[0]):
                return None
            rows.append(np.frombuffer(found[2], dtype=np.float16))
        return torch.from_numpy(np.stack(rows)) if rows else None

    def put_all(self, paths: Sequence[str], features: torch.Tensor) -> None:
        """Store one feature row per path (converted to fp16), making room for them first."""
        rows = features.detach().to("cpu", torch.float16).numpy()
        if self.budget_bytes <= 0:
            return
        self.make_room(rows.nbytes + 64 * len(rows))
        for path, row in zip(paths, rows):
            entry = self._entry(path)
            if entry is not None:
                self.write(entry, row.shape[0], 0, row.tobytes())

"""Shared pieces of the training tests (no tests here): a tiny image folder, a config, a recording listener."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dtl_engine.config import TrainConfig
from dtl_engine.listener import RunListener
from image_factory import make_image_folder
from tiny_models import TINY_VIT, TINY_VIT_IMAGE_SIZE

torch.set_num_threads(1)

MODEL_KWARGS = TINY_VIT[1]


def image_folder(tmp_path: Path, per_class: int = 10, classes: int = 3) -> Path:
    return make_image_folder(tmp_path / "images", {f"class_{c}": per_class for c in range(classes)}, size=(24, 24))


def tiny_config(data_dir: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = dict(data_dir=str(data_dir), backbone=TINY_VIT[0], weights="random", epochs=3,
                                  warmup_epochs=1, batch_size=8, lr=5e-3, image_size=TINY_VIT_IMAGE_SIZE,
                                  augment="none", cache_features="off", seed=0)
    values.update(overrides)
    return TrainConfig(**values)


class Recorder(RunListener):
    """Keeps every call as (hook name, arguments); ``on`` maps a hook to an extra callback."""

    HOOKS = ("run_started", "batch_finished", "epoch_finished", "memory_sample", "checkpoint_saved",
             "warning", "search_progress", "search_finished", "first_model", "backed_off", "run_finished",
             "run_failed")

    def __init__(self, **on: Any):
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self.on = on

    def __getattribute__(self, name: str) -> Any:
        if name in Recorder.HOOKS:
            def hook(*args: Any) -> None:
                self.events.append((name, args))
                if name in self.on:
                    self.on[name](*args)
            return hook
        return object.__getattribute__(self, name)

    def names(self) -> list[str]:
        return [n for n, _ in self.events]

    def of(self, name: str) -> list[Any]:
        return [args[0] if len(args) == 1 else args for n, args in self.events if n == name]


def run_weights(run_dir: str | Path, name: str = "checkpoint.safetensors") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(Path(run_dir) / name))

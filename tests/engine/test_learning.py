"""Proof that training learns: handwritten digits on a tiny, randomly initialised, frozen ViT.

DTL must land far above chance and clearly above the linear probe on the very
same frozen backbone (same seed, same images, same recipe). Kept small so it
runs in well under a minute on two cores: 10 classes x 60 images, 32 px
inputs with 8 px patches, 10 epochs, prefix features cached after epoch one.
"""
from __future__ import annotations

import shutil
import time

import pytest
import torch

from dtl_engine.config import TrainConfig
from dtl_engine.data import ensure_sample_dataset
from dtl_engine.training import train

torch.set_num_threads(1)

PER_CLASS = 60
MODEL_KWARGS = dict(patch_size=8, img_size=32)


def _digits_subset(dest):
    source = ensure_sample_dataset()
    for digit in range(10):
        (dest / str(digit)).mkdir(parents=True)
        for path in sorted((source / str(digit)).glob("*.png"))[:PER_CLASS]:
            shutil.copy(path, dest / str(digit) / path.name)
    return dest


def _config(data, method: str) -> TrainConfig:
    return TrainConfig(data_dir=str(data), backbone="test_vit", weights="random", method=method, rank=4,
                       epochs=10, warmup_epochs=1, batch_size=32, lr=1e-2, image_size=32, augment="none",
                       cache_features="auto", seed=0)


@pytest.mark.slow
def test_dtl_learns_digits_and_beats_the_linear_probe(tmp_path):
    data = _digits_subset(tmp_path / "digits")
    start = time.perf_counter()
    dtl = train(_config(data, "dtl"), model_kwargs=MODEL_KWARGS)
    linear = train(_config(data, "linear"), model_kwargs=MODEL_KWARGS)
    seconds = time.perf_counter() - start
    print(f"\ndigits, 10 classes x {PER_CLASS}: DTL {dtl.report.accuracy:.1%}, "
          f"linear probe {linear.report.accuracy:.1%}, {seconds:.0f} s")

    assert dtl.report.split == "val" and dtl.report.num_images == 10 * PER_CLASS // 5
    assert dtl.report.accuracy >= 0.5                               # chance is 10 %
    assert dtl.report.accuracy >= linear.report.accuracy + 0.15     # the side network is what makes the gain

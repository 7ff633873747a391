"""Proof that training learns: handwritten digits on a tiny, randomly initialised, frozen ViT.

DTL must land far above chance and clearly above the linear probe on the very
same frozen backbone (same seed, same images, same recipe). The product's
defaults decide: no learning rate, augmentation or rank is given, so the
automatic search picks them as it would for a person. Kept small so it runs
in about a minute on two cores: 10 classes x 60 images, 32 px inputs with
8 px patches, 10 epochs.
"""
from __future__ import annotations

import shutil
import time

import pytest
import torch

from dtl_engine.config import TrainConfig
from dtl_engine.data import ensure_sample_dataset
from dtl_engine.training import train
from dtl_engine.training.autotune import read_search

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
    # only the size of the test is set (tiny images, 10 epochs); everything else is the product's default
    return TrainConfig(data_dir=str(data), backbone="test_vit", weights="random", method=method, epochs=10,
                       image_size=32)


@pytest.mark.slow
def test_dtl_learns_digits_and_beats_the_linear_probe(tmp_path):
    data = _digits_subset(tmp_path / "digits")
    start = time.perf_counter()
    dtl = train(_config(data, "dtl"), model_kwargs=MODEL_KWARGS)
    linear = train(_config(data, "linear"), model_kwargs=MODEL_KWARGS)
    seconds = time.perf_counter() - start
    print(f"\ndigits, 10 classes x {PER_CLASS}: DTL {dtl.report.accuracy:.1%} ({read_search(dtl.run_dir).summary()}), "
          f"linear probe {linear.report.accuracy:.1%} ({read_search(linear.run_dir).summary()}), {seconds:.0f} s")

    assert dtl.report.split == "val" and dtl.report.num_images == 10 * PER_CLASS // 5
    for run in (dtl, linear):       # the defaults searched the learning rate and augmentation
        search = read_search(run.run_dir)
        assert search is not None and search.lr_searched and search.augment_searched
    assert dtl.report.accuracy >= 0.5                               # chance is 10 %
    assert dtl.report.accuracy >= linear.report.accuracy + 0.15     # the side network is what makes the gain

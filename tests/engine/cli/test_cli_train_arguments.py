"""The ``train`` command line rebuilt from a TrainConfig (what the app gives ``torchrun``)."""
from __future__ import annotations

import pytest

from dtl_engine.cli.main import build_parser
from dtl_engine.cli.train import _train_config, train_arguments
from dtl_engine.config import TrainConfig
from dtl_engine.errors import RunError


def _parsed(argv: list[str]) -> TrainConfig:
    return _train_config(build_parser().parse_args(["train", *argv]))


@pytest.mark.parametrize("changes", [
    {},                                                     # the defaults: nothing but the folder
    {"recipe": "paper", "lr": "auto"},
    {"backbone": "test_vit", "weights": "random", "epochs": 2, "batch_size": 7, "lr": 3e-3, "augment": "none",
     "precision": "fp32", "device": "cpu", "warmup_epochs": 0, "seed": 5, "image_size": 32},
    {"method": "dtl+", "rank": 3, "fusion_kernel": 5, "beta": 50.0, "inject_from": 2, "early_stopping": 4,
     "checkpoint_blocks": True, "low_precision_taps": True, "half_frozen_weights": False, "max_steps": 9,
     "cache_features": "off", "num_workers": 0, "val_fraction": 0.25, "label_smoothing": 0.1, "lr": 1.5e-05},
])
def test_the_command_line_rebuilds_the_config(changes):
    config = TrainConfig(data_dir="/data/flowers", **changes)
    argv = train_arguments(config)
    assert argv[0] == "/data/flowers"
    assert _parsed(argv).to_dict() == config.to_dict()


def test_only_changed_settings_are_given():
    assert train_arguments(TrainConfig(data_dir="d")) == ["d"]
    assert train_arguments(TrainConfig(data_dir="d", epochs=3)) == ["d", "--epochs", "3"]


def test_a_setting_without_an_option_is_refused_with_a_sentence():
    with pytest.raises(RunError, match="keep cannot be given"):
        train_arguments(TrainConfig(data_dir="d", keep="last"))

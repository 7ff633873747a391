"""Every number validated: each option outside its range is one sentence, exit 2, before anything is created.

The ranges live in one place, the fields of :class:`dtl_engine.config.TrainConfig`; the command line of every
command (train, bench, plan...) and the app's spin boxes read them there.
"""
from __future__ import annotations

import json

import pytest
from image_factory import make_image_folder, tree_snapshot
from test_fault_injection import TINY, _cli, _one_line_refusal
from tiny_models import TINY_VIT

from dtl_engine import paths
from dtl_engine.config import TrainConfig

_NO_SIZE = [a for i, a in enumerate(TINY) if a != "--image-size" and (i == 0 or TINY[i - 1] != "--image-size")]


def _nothing_created(tmp_path) -> list[str]:
    """Whatever a refused command left in the user's runs folder or next to the test's files."""
    runs = paths.runs_dir()
    left = [str(p) for p in runs.iterdir()]
    return left + [p.name for p in tmp_path.iterdir() if p.name not in ("data", "dtl_home")]


@pytest.mark.parametrize("option, value, words", [
    ("--image-size", "1", ["image size", "patch"]),
    ("--image-size", "7", ["image size", "multiple of its 4-pixel patches"]),
    ("--image-size", "100000", ["image size", "4096"]),
    ("--seed", "99999999999999999999999", ["seed"]),
    ("--beta", "inf", ["β"]),
    ("--beta", "1e-300", ["β"]),
    ("--warmup-epochs", "inf", ["warm-up"]),
    ("--warmup-epochs", "5", ["warm-up", "longer than the run"]),
    ("--lr", "1e39", ["learning rate"]),
    ("--lr", "nan", ["learning rate"]),
    ("--epochs", "0", ["epoch"]),
    ("--batch-size", "0", ["batch size"]),
    ("--val-fraction", "inf", ["validation share"]),
])
def test_a_training_option_out_of_range_is_one_sentence_and_leaves_nothing(tmp_path, capsys, option, value, words):
    data = make_image_folder(tmp_path / "data", {"a": 4, "b": 4}, size=(24, 24))
    before = tree_snapshot(data)
    size = [] if option == "--image-size" else ["--image-size", "32"]
    argv = ["train", str(data), *_NO_SIZE, *size, "--epochs", "2", option, value]
    code, out, err = _cli(argv, capsys)
    _one_line_refusal(code, err, *words)
    assert "Run folder" not in out
    assert tree_snapshot(data) == before
    assert _nothing_created(tmp_path) == []


@pytest.mark.parametrize("argv, words", [
    (["bench", "--image-size", "-1"], ["image size"]),
    (["bench", "--batch", "0"], ["batch size"]),
    (["plan", "--backbone", "test_vit", "--image-size", "0"], ["image size"]),
    (["bench", "--backbone", "test_vit", "--model-kwargs", json.dumps(TINY_VIT[1]), "--image-size", "7", "--batch",
      "2", "--steps", "1", "--max-steps", "1", "--device", "cpu"], ["image size", "multiple of its 4-pixel patches"]),
])
def test_other_commands_check_the_same_ranges(tmp_path, capsys, argv, words):
    code, _, err = _cli(argv, capsys)
    _one_line_refusal(code, err, *words)


def test_the_ranges_are_the_configs_and_a_value_inside_them_is_accepted(tmp_path):
    # each bound itself is accepted, and one step past it is refused, for every field that has one
    from dataclasses import fields

    bounded = [f.name for f in fields(TrainConfig) if "bounds" in f.metadata]
    assert {"image_size", "seed", "beta", "warmup_epochs", "lr", "epochs", "batch_size"} <= set(bounded)
    for name in bounded:
        lo, hi = TrainConfig.bounds(name)
        for ok in (lo, hi):
            extra = {"epochs": int(TrainConfig.bounds("epochs")[1])} if name == "warmup_epochs" else {}
            TrainConfig(data_dir="d", **{name: ok}, **extra)
        step = 1 if isinstance(hi, int) else hi * 1e-6
        for bad in (hi + step, float("inf"), float("nan")):
            with pytest.raises(Exception, match=r"must be|at least"):
                TrainConfig(data_dir="d", **{name: bad})


def test_a_saved_short_run_with_the_recipes_warm_up_still_loads():
    # the quick recipe's 2 warm-up epochs in a 1-epoch run are shortened by the schedule, as before
    config = TrainConfig(data_dir="d", epochs=1)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))).to_dict() == config.to_dict()


def test_the_largest_seed_trains_at_the_defaults(tmp_path, capsys):
    # the top of the seed's range must reach every seeded part (split, search, loader, numpy) without overflow
    data = make_image_folder(tmp_path / "data", {"a": 5, "b": 5}, size=(24, 24))
    keep = [a for i, a in enumerate(TINY) if a not in ("--augment", "--seed") and TINY[i - 1] not in ("--augment",
                                                                                                      "--seed")]
    seed = str(int(TrainConfig.bounds("seed")[1]))
    code, out, err = _cli(["train", str(data), *keep, "--epochs", "1", "--seed", seed], capsys)
    assert code == 0, err
    assert "Finished 1 epoch(s)" in out

"""Data doctor: finds flipped labels out of sample, duplicates across splits, imbalance; never edits the data."""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from image_factory import make_image_folder, make_split_folder, tree_snapshot
from PIL import Image
from tiny_models import TINY_VIT, TINY_VIT_IMAGE_SIZE

from dtl_engine.cli import main as cli
from dtl_engine.config import TrainConfig
from dtl_engine.inference.doctor import DOCTOR_CSV, diagnose_run, likely_mislabeled
from dtl_engine.errors import DataError
from dtl_engine.training import train

torch.set_num_threads(1)
CLASSES = 4
PER_CLASS = 30


def tiny_run(data: Path, run_dir: Path) -> str:
    """A finished one-epoch run on the tiny random ViT (the doctor uses its split and frozen backbone)."""
    config = TrainConfig(data_dir=str(data), backbone=TINY_VIT[0], weights="random", image_size=TINY_VIT_IMAGE_SIZE,
                         epochs=1)
    return train(config, run_dir=run_dir, model_kwargs=TINY_VIT[1]).run_dir


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    """A learnable set (one colour per class) with 10 % of the labels flipped by moving files."""
    root = tmp_path_factory.mktemp("doctor")
    data = make_image_folder(root / "images", {f"c{k}": PER_CLASS for k in range(CLASSES)}, size=(24, 24))
    rng = np.random.default_rng(0)
    files = sorted(data.rglob("*.png"))
    moved = set()
    for path in rng.choice(files, size=len(files) // 10, replace=False):
        k = int(path.parent.name[1:])
        target = data / f"c{(k + 1 + int(rng.integers(0, CLASSES - 1))) % CLASSES}" / f"flipped_{path.name}"
        shutil.move(path, target)
        moved.add(str(target))
    return data, moved, tiny_run(data, root / "run")


@pytest.mark.slow
def test_flipped_labels_are_found_with_precision_and_recall(flipped):
    data, moved, run_dir = flipped
    before = tree_snapshot(data)
    report = diagnose_run(run_dir)
    assert tree_snapshot(data) == before
    found = {f.path for f in report.of("mislabeled")}
    true_positives = len(found & moved)
    precision = true_positives / max(len(found), 1)
    recall = true_positives / len(moved)
    print(f"\nflipped {len(moved)}, flagged {len(found)}: precision {precision:.0%}, recall {recall:.0%}")
    assert precision >= 0.6 and recall >= 0.6
    for f in report.of("mislabeled"):
        if f.path in moved:     # the suggested label is the folder the file came from
            assert f.suggested_label != f.label
    assert report.num_images == CLASSES * PER_CLASS and "Likely mislabeled" in report.summary()


def test_confident_learning_rule_on_hand_made_probabilities():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7]])
    labels = np.array([0, 0, 1, 1, 1, 0])        # the third and the last look swapped
    assert [(i, k) for i, k, _ in likely_mislabeled(probs, labels)] == [(2, 0), (5, 1)]


@pytest.mark.slow
def test_duplicates_across_splits_are_leakage_and_imbalance_is_reported(tmp_path):
    data = make_split_folder(tmp_path / "images", train={"a": 12, "b": 3}, val={"a": 3, "b": 2})
    shutil.copy(data / "train" / "a" / "img_0.png", data / "val" / "a" / "copy.png")         # exact, train/val
    near = Image.open(data / "train" / "a" / "img_1.png").convert("RGB")
    near.resize((31, 31)).save(data / "val" / "a" / "near.jpg", quality=95)                     # near, train/val
    run_dir = tiny_run(data, tmp_path / "run")
    report = diagnose_run(run_dir)

    exact = {Path(f.path).name: f for f in report.of("exact_duplicate")}
    assert set(exact) == {"img_0.png", "copy.png"} and all("leakage" in f.detail for f in exact.values())
    assert exact["copy.png"].detail.startswith(f"same as {os.path.join('train', 'a', 'img_0.png')};")  # short
    near_names = {Path(f.path).parent.parent.name + "/" + Path(f.path).name for f in report.of("near_duplicate")}
    assert {"train/img_1.png", "val/near.jpg"} <= near_names
    assert [f.label for f in report.of("imbalance")] == ["b"]          # 5 vs 17 images

    # CSV into the run folder through the CLI; never into the image folder; moves only as a CSV
    assert cli.main(["doctor", run_dir, "--moves", str(tmp_path / "moves.csv")]) == 0
    rows = list(csv.DictReader((Path(run_dir) / DOCTOR_CSV).read_text(encoding="utf-8").splitlines()))
    assert {"exact_duplicate", "near_duplicate", "imbalance"} <= {r["kind"] for r in rows}
    header = (tmp_path / "moves.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "path,from_class,to_class,confidence"
    assert cli.main(["doctor", run_dir, "--csv", str(data / "doctor.csv")]) == 2
    assert not (data / "doctor.csv").exists()
    assert cli.main(["doctor", run_dir, "--moves", str(tmp_path / "moves.csv")]) == 2     # never overwritten
    with pytest.raises(DataError, match="already exists"):
        report.write_csv(tmp_path / "moves.csv")


def test_cancel_stops_the_image_pass(flipped):
    from dtl_engine.errors import RunError

    _data, _moved, run_dir = flipped
    seen = []
    with pytest.raises(RunError, match="cancelled"):
        diagnose_run(run_dir, progress=lambda done, total: seen.append(done), should_stop=lambda: len(seen) >= 5)
    assert len(seen) == 5


def test_class_sizes_name_each_class_apart_from_its_count():
    """Digit classes read "3: 183 · 1: 182", never "3 183, 1 182" (a name that looks like part of a number)."""
    from dtl_engine.inference.doctor import DoctorReport

    report = DoctorReport(classes=["1", "3"], class_counts={"1": 182, "3": 183}, num_images=365)
    line = next(line for line in report.summary().splitlines() if line.startswith("Class sizes"))
    assert line == "Class sizes: 3: 183 · 1: 182"

"""What the classify-a-folder tests build: an exported model, a folder of classes with awkward files, the CSV read back.

Shared by tests/engine/inference/test_classify_folder.py and tests/engine/safety/test_writes.py; a
builder module (found through pytest's pythonpath), so that either test file runs alone.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from image_factory import make_image_folder
from test_export import CLASSES, trained_looking_model

from dtl_engine.export import export_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("classify") / "model.pt"
    export_model(trained_looking_model(), CLASSES, out, verify=False)
    return out


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def class_tree(tmp_path: Path) -> Path:
    root = make_image_folder(tmp_path / "new photos", {"a": 3, "b": 3, "c": 2}, size=(20, 28))
    (root / "b" / "img_0.png").rename(root / "b" / "same.png")
    (root / "c" / "img_0.png").rename(root / "c" / "same.png")          # same name in two sub-folders
    (root / "a" / "broken.jpg").write_bytes(b"not really a jpeg")
    return root

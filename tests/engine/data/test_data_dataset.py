"""ImageDataset: items, bad files reported by index and left out, and nothing ever written into the data folder."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from dtl_engine.data import ImageDataset, build_transform, collate_samples, make_split, scan_folder
from dtl_engine.data.dataset import Failed
from image_factory import jpeg_bytes, make_image, make_image_folder, make_split_folder, tree_snapshot

CONFIG = {"input_size": (3, 24, 24), "interpolation": "bilinear", "crop_pct": 1.0}


def test_items_are_tensor_label_index(tmp_path):
    make_image_folder(tmp_path / "d", {"a": 3, "b": 3}, size=(10, 14))
    samples = scan_folder(tmp_path / "d").items["all"]
    ds = ImageDataset(samples, build_transform(CONFIG, "none", train=False))
    assert len(ds) == 6 and ds.labels == [0, 0, 0, 1, 1, 1]
    x, y, i = ds[4]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32
    assert (y, i) == (1, 4)
    assert ds[-1][2] == 5
    with pytest.raises(IndexError):
        ds[6]


def test_without_transform_returns_pil(tmp_path):
    p = make_image(tmp_path / "x.png", mode="L")
    img, y, _ = ImageDataset([(str(p), 3)])[0]
    assert img.mode == "RGB" and y == 3


def test_file_broken_after_the_scan_is_reported_and_left_out_never_replaced(tmp_path):
    root = make_image_folder(tmp_path / "d", {"a": 3, "b": 3})
    samples = scan_folder(root).items["all"]
    broken = samples[1][0]
    with open(broken, "r+b") as fh:   # damaged after the scan (e.g. a sync client rewriting it)
        fh.truncate(60)
    (root / "b" / "img_0.png").unlink()  # and one deleted
    seen = []
    ds = ImageDataset(samples, build_transform(CONFIG, "none", False), on_failure=lambda p, r: seen.append((p, r)))
    batches = list(DataLoader(ds, batch_size=4, shuffle=False, collate_fn=collate_samples))
    indices = torch.cat([b.indices for b in batches]).tolist()
    assert indices == [0, 2, 4, 5]                    # the bad ones are left out, nothing stands in for them
    labels = torch.cat([b.labels for b in batches]).tolist()
    assert labels == [samples[i][1] for i in indices]  # each label still belongs to its own image
    failed = [f for b in batches for f in b.failed]
    assert [(f.sample_index, f.path) for f in failed] == [(1, broken), (3, samples[3][0])]
    assert "truncated" in failed[0].reason and "disappeared" in failed[1].reason
    assert [p for p, _ in ds.failures] == [broken, samples[3][0]]   # each bad file reported once
    assert seen == ds.failures
    assert isinstance(ds[1], Failed) and ds.failures == seen          # asked again: still failed, not re-reported


def test_all_files_gone_gives_empty_batches_not_an_error(tmp_path):
    root = make_image_folder(tmp_path / "d", {"a": 2, "b": 1})
    samples = scan_folder(root).items["all"]
    for path in root.rglob("*.png"):
        path.unlink()
    batch = collate_samples([ImageDataset(samples)[i] for i in range(3)])
    assert batch.images is None and len(batch.indices) == 0 and len(batch.failed) == 3


def test_nothing_is_written_into_the_data_folder(tmp_path):
    root = make_split_folder(tmp_path / "d", train={"a": 4, "b": 4}, val={"a": 2, "b": 2})
    make_image(root / "train" / "a" / "sub" / "deep.jpg", fmt="jpeg", mode="CMYK")
    (root / "train" / "b" / "bad.jpg").write_bytes(jpeg_bytes()[:200])
    (root / "val" / "a" / "notes.txt").write_text("hello")
    (root / "train" / ".DS_Store").write_bytes(b"\0")
    (root / "val" / "b" / "loop").symlink_to(root / "val", target_is_directory=True)
    before = tree_snapshot(root)
    scan = scan_folder(root, progress=lambda d, t: None)
    split = make_split(scan, seed=0)
    for part, augment in ((split.train, "standard"), (split.val, "none")):
        ds = ImageDataset(part, build_transform(CONFIG, augment, train=augment != "none"))
        for _ in DataLoader(ds, batch_size=3, shuffle=True):
            pass
    assert tree_snapshot(root) == before
    assert len(split.train) == 9 and len(split.val) == 4

"""make_split: stratified, seeded and repeatable for a flat folder; as given for train/val folders."""
from __future__ import annotations

from collections import Counter

import pytest

from dtl_engine.data import Split, make_split, scan_folder
from dtl_engine.data.scan import ScanResult
from dtl_engine.errors import DataError
from image_factory import make_image_folder, make_split_folder


def flat_scan(n_per_class: dict[str, int]) -> ScanResult:
    # Synthetic scan: the split only looks at paths and labels, no files needed.
    classes = sorted(n_per_class)
    items = [(f"/data/{c}/img_{i:03d}.png", ci) for ci, c in enumerate(classes) for i in range(n_per_class[c])]
    return ScanResult(root="/data", layout="flat", classes=classes, items={"all": items},
                      counts=dict(n_per_class))


def test_stratified_twenty_percent_of_each_class():
    s = make_split(flat_scan({"a": 50, "b": 20, "c": 10}), val_fraction=0.2, seed=0)
    assert Counter(y for _, y in s.val) == {0: 10, 1: 4, 2: 2}
    assert Counter(y for _, y in s.train) == {0: 40, 1: 16, 2: 8}
    assert not set(s.train) & set(s.val)
    assert s.test == [] and s.val_fraction == 0.2 and s.seed == 0 and s.layout == "flat"


def test_same_seed_same_split_other_seed_other_split():
    scan = flat_scan({"a": 30, "b": 30})
    one, two, other = make_split(scan, seed=7), make_split(scan, seed=7), make_split(scan, seed=8)
    assert one.val == two.val and one.train == two.train
    assert set(one.val) != set(other.val)


def test_split_does_not_depend_on_listing_order():
    scan = flat_scan({"a": 30, "b": 30})
    shuffled = ScanResult.from_dict(scan.to_dict())
    shuffled.items["all"].reverse()
    assert set(make_split(scan, seed=3).val) == set(make_split(shuffled, seed=3).val)


def test_adding_a_class_keeps_the_other_classes_split():
    base = make_split(flat_scan({"a": 30, "b": 30}), seed=1)
    more = make_split(flat_scan({"a": 30, "b": 30, "c": 30}), seed=1)
    assert {p for p, _ in base.val} <= {p for p, _ in more.val}


def test_every_class_gets_validation_images_even_when_small():
    s = make_split(flat_scan({"a": 100, "b": 2, "c": 3}), val_fraction=0.1, seed=0)
    per_class = Counter(y for _, y in s.val)
    assert per_class[1] == 1 and per_class[2] == 1
    assert Counter(y for _, y in s.train)[1] == 1   # and keeps one to learn from


def test_single_image_class_trains_only_with_warning():
    s = make_split(flat_scan({"a": 10, "solo": 1}), seed=0)
    assert any(y == 1 for _, y in s.train) and not any(y == 1 for _, y in s.val)
    assert any("'solo'" in w for w in s.warnings)


def test_bad_fraction_is_refused():
    with pytest.raises(DataError, match="between 0 and 1"):
        make_split(flat_scan({"a": 5, "b": 5}), val_fraction=1.0)


def test_split_layout_is_used_as_given(tmp_path):
    make_split_folder(tmp_path / "d", train={"a": 4, "b": 4}, val={"a": 2, "b": 1}, test={"a": 1, "b": 1})
    scan = scan_folder(tmp_path / "d")
    s = make_split(scan, val_fraction=0.5, seed=5)
    assert (s.train, s.val, s.test) == (scan.items["train"], scan.items["val"], scan.items["test"])
    assert s.val_fraction is None and s.layout == "split"


def test_split_layout_without_val_holds_out_from_train(tmp_path):
    make_split_folder(tmp_path / "d", train={"a": 10, "b": 10}, test={"a": 2, "b": 2})
    scan = scan_folder(tmp_path / "d")
    assert any("validation" in w for w in scan.warnings)
    s = make_split(scan, val_fraction=0.2, seed=0)
    assert Counter(y for _, y in s.val) == {0: 2, 1: 2}
    assert len(s.train) == 16 and len(s.test) == 4
    assert any("held out" in w for w in s.warnings)


def test_round_trip_and_real_folder(tmp_path):
    make_image_folder(tmp_path / "d", {"x": 10, "y": 5}, size=(8, 8))
    s = make_split(scan_folder(tmp_path / "d"), seed=2)
    again = Split.from_dict(s.to_dict())
    assert again == s
    assert Counter(y for _, y in s.val) == {0: 2, 1: 1}

"""The sample digits: ten readable class folders, written once, identically every time."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from dtl_engine.data import ensure_sample_dataset, load_image, sample_dataset_info, scan_folder
from dtl_engine.data.sample import IMAGE_SIDE, MARKER, render_digit
from dtl_engine.errors import DataError
from dtl_engine.paths import sample_data_dir


def digest(folder) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_all_ten_digits_by_default():
    folder = ensure_sample_dataset()
    assert folder.parent == sample_data_dir()
    scan = scan_folder(folder)
    assert scan.classes == [str(d) for d in range(10)]
    assert scan.num_images == 1797 and scan.skipped == [] and scan.warnings == []
    info = sample_dataset_info()
    assert info["classes"] == scan.classes and info["count"] == 1797
    assert info["counts"] == scan.counts
    assert "CC BY 4.0" in info["licence"] and "Alpaydin" in info["licence"]
    img = load_image(scan.items["all"][0][0])
    assert img.size == (IMAGE_SIDE, IMAGE_SIDE) and img.mode == "RGB"


def test_written_once_and_identically(tmp_path, monkeypatch):
    first = ensure_sample_dataset(classes=[1, 0])
    stamp = {p: p.stat().st_mtime_ns for p in first.rglob("*")}
    assert ensure_sample_dataset(classes=["0", "1"]) == first
    assert {p: p.stat().st_mtime_ns for p in first.rglob("*")} == stamp   # reused, not rewritten
    monkeypatch.setenv("DTL_STUDIO_HOME", str(tmp_path / "other home"))
    second = ensure_sample_dataset(classes=[0, 1])
    assert second != first and digest(second) == digest(first)
    assert sorted(p.name for p in second.iterdir() if p.is_dir()) == ["0", "1"]


def test_incomplete_copy_is_rewritten():
    folder = ensure_sample_dataset(classes=[3, 8])
    victim = next((folder / "8").iterdir())
    victim.unlink()
    (folder / "3" / "stray.png").write_bytes(b"")
    assert ensure_sample_dataset(classes=[3, 8]) == folder
    assert victim.exists() and not (folder / "3" / "stray.png").exists()
    (folder / MARKER).write_text('{"version": 0}')   # written by an older release
    ensure_sample_dataset(classes=[3, 8])
    assert '"version": 1' in (folder / MARKER).read_text()
    assert not [p for p in sample_data_dir().iterdir() if p.name.startswith(".building")]


def test_digit_looks_like_ink_on_paper():
    one = np.zeros((8, 8))
    one[:, 3:5] = 16   # a vertical stroke
    img = render_digit(one)
    arr = np.asarray(img)
    assert img.size == (IMAGE_SIDE, IMAGE_SIDE) and img.mode == "L"
    assert arr[:, :8].min() > 240                        # paper margin stays white
    assert arr[IMAGE_SIDE // 2, IMAGE_SIDE // 2 - 1] < 60  # the stroke is dark
    assert len(np.unique(arr)) > 20                      # smooth, not blocky


@pytest.mark.parametrize("classes, phrase", [([1], "at least two"), ([1, 12], "'12'"), (["x", 1], "'x'")])
def test_bad_class_choice(classes, phrase):
    with pytest.raises(DataError, match=phrase):
        ensure_sample_dataset(classes=classes)

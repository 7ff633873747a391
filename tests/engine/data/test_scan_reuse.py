"""No second scan (a fresh scan travels with the job, checked by size and mtime) and no writes into the data."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from image_factory import make_image_folder
from run_builders import MODEL_KWARGS, image_folder, tiny_config

from dtl_engine.data import ScanResult, scan_check, scan_folder
from dtl_engine.data.image_cache import ImageCache
from dtl_engine.data.scan_check import scan_or_reuse, scan_still_valid
from dtl_engine.inference.evaluate import evaluate_run
from dtl_engine.training import train


def _no_scan(*args, **kwargs):
    raise AssertionError("the folder was scanned again")


def test_fresh_scan_is_reused_and_a_changed_file_means_a_new_scan(tmp_path, monkeypatch):
    data = image_folder(tmp_path, per_class=4, classes=2)
    scan = scan_folder(data)
    assert len(scan.stamps) == scan.num_images == 8
    travelled = ScanResult.from_dict(scan.to_dict())           # as it travels with a background job
    monkeypatch.setattr(scan_check, "scan_folder", _no_scan)
    assert scan_or_reuse(data, scan) is scan
    assert scan_or_reuse(str(data), scan.to_dict()).stamps == scan.stamps
    assert scan_still_valid(travelled, data)

    changed = Path(next(iter(scan.stamps)))
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not scan_still_valid(scan, data)
    other = image_folder(tmp_path / "other", per_class=2, classes=2)
    monkeypatch.undo()
    assert not scan_still_valid(scan_folder(other), data)      # a scan of another folder
    assert scan_or_reuse(data, scan).stamps[str(changed)][1] == st.st_mtime_ns + 10**9


def test_a_run_given_a_fresh_scan_does_not_scan_again(tmp_path, monkeypatch):
    data = image_folder(tmp_path, per_class=5, classes=2)
    scan = scan_folder(data)
    monkeypatch.setattr(scan_check, "scan_folder", _no_scan)
    result = train(tiny_config(data, epochs=1, max_steps=1), model_kwargs=MODEL_KWARGS, scan=scan.to_dict())
    assert result.status == "finished"
    (data / "class_0" / "img_0.png").unlink()                  # the folder changed since the scan
    with pytest.raises(AssertionError, match="scanned again"):
        train(tiny_config(data, epochs=1, max_steps=1), model_kwargs=MODEL_KWARGS, scan=scan)


def _checksums(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root) + "/"] = "folder"
        for name in filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def test_nothing_is_written_into_the_data_folder(tmp_path):
    data = make_image_folder(tmp_path / "photos", {"cats": 8, "dogs": 8}, size=(400, 300), fmt="jpg")
    before = _checksums(data)
    result = train(tiny_config(data, epochs=2, augment="light", cache_features="auto"), model_kwargs=MODEL_KWARGS)
    evaluate_run(result.run_dir, device="cpu")
    assert result.status == "finished"
    assert ImageCache().info().entries >= 16                   # the decoded photos went to the user cache
    assert _checksums(data) == before


def test_images_added_after_the_scan_mean_a_new_scan(tmp_path):
    """Sizes and times of the scanned files say nothing of files added since: a new image or class is seen."""
    from image_factory import make_image

    data = image_folder(tmp_path, per_class=4, classes=2)
    scan = scan_folder(data)
    travelled = ScanResult.from_dict(scan.to_dict())
    make_image(data / "class_0" / "late.png", 0, (24, 24))
    assert not scan_still_valid(travelled, data)
    assert scan_or_reuse(data, travelled).num_images == 9
    scan = scan_folder(data)
    make_image(data / "class_new" / "first.png", 1, (24, 24))
    assert scan_or_reuse(data, scan).classes == ["class_0", "class_1", "class_new"]

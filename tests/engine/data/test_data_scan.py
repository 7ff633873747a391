"""scan_folder: both layouts, every kind of bad input, junk, links, progress, cancel, warnings."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from dtl_engine.data import ScanCancelled, ScanResult, scan_folder
from dtl_engine.data import images as images_module
from dtl_engine.errors import DataError
from image_factory import jpeg_bytes, make_image, make_image_folder, make_split_folder, png_bytes


def reasons(result: ScanResult) -> dict[str, str]:
    return {Path(s.path).name: s.reason for s in result.skipped}


def used_names(result: ScanResult) -> set[str]:
    return {Path(p).name for part in result.items.values() for p, _ in part}


# --- layouts -----------------------------------------------------------------
def test_flat_layout_classes_counts_labels(tmp_path):
    make_image_folder(tmp_path / "d", {"cats": 6, "dogs": 7})
    r = scan_folder(tmp_path / "d")
    assert r.layout == "flat"
    assert r.classes == ["cats", "dogs"]
    assert r.counts == {"cats": 6, "dogs": 7}
    assert set(r.items) == {"all"}
    assert len(r.items["all"]) == 13
    for path, label in r.items["all"]:
        assert Path(path).parent.name == r.classes[label]
    assert r.skipped == [] and r.warnings == []


def test_split_layout_used_as_given_with_union_of_classes(tmp_path):
    make_split_folder(tmp_path / "d", train={"a": 5, "b": 5, "c": 5}, val={"a": 2, "b": 2}, test={"a": 1, "c": 1})
    r = scan_folder(tmp_path / "d")
    assert r.layout == "split"
    assert r.classes == ["a", "b", "c"]
    assert [len(r.items[s]) for s in ("train", "val", "test")] == [15, 4, 2]
    assert r.counts == {"a": 8, "b": 7, "c": 6}
    assert r.split_counts["val"] == {"a": 2, "b": 2, "c": 0}
    assert any("'c'" in w and "validation" in w for w in r.warnings)
    for part in ("train", "val", "test"):
        for path, label in r.items[part]:
            assert Path(path).parent.name == r.classes[label]
            assert Path(path).parent.parent.name == part


def test_class_named_train_in_flat_folder_is_a_class(tmp_path):
    make_image_folder(tmp_path / "d", {"train": 5, "bus": 5})
    r = scan_folder(tmp_path / "d")
    assert r.layout == "flat" and r.classes == ["bus", "train"]


def test_natural_class_order(tmp_path):
    make_image_folder(tmp_path / "d", {"10": 5, "2": 5, "1": 5})
    assert scan_folder(tmp_path / "d").classes == ["1", "2", "10"]


def test_nested_subfolders_belong_to_the_class(tmp_path):
    root = make_image_folder(tmp_path / "d", {"a": 5, "b": 5})
    make_image(root / "a" / "2023" / "june" / "deep.png", 0)
    r = scan_folder(root)
    assert r.counts == {"a": 6, "b": 5}
    assert "deep.png" in used_names(r)


def test_result_round_trips_through_dict(tmp_path):
    make_image_folder(tmp_path / "d", {"a": 5, "b": 5})
    (tmp_path / "d" / "a" / "bad.jpg").write_text("hello")
    r = scan_folder(tmp_path / "d")
    again = ScanResult.from_dict(r.to_dict())
    assert again == r
    assert "10 images in 2 classes" in r.summary() and "1 file skipped" in r.summary()


# --- refused folders -----------------------------------------------------------
def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_folder(tmp_path / "nope")


def test_file_instead_of_folder(tmp_path):
    f = tmp_path / "pic.png"
    f.write_bytes(png_bytes())
    with pytest.raises(DataError, match="is a file, not a folder"):
        scan_folder(f)


def test_empty_folder(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="empty"):
        scan_folder(tmp_path / "d")


def test_images_without_class_folders(tmp_path):
    for i in range(3):
        make_image(tmp_path / "d" / f"x{i}.png")
    with pytest.raises(DataError, match="no class sub-folders"):
        scan_folder(tmp_path / "d")


def test_one_class_is_refused_with_its_name(tmp_path):
    make_image_folder(tmp_path / "d", {"cats": 5})
    with pytest.raises(DataError, match=r"only one class folder.*'cats'.*at least two"):
        scan_folder(tmp_path / "d")


def test_class_folders_without_images(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "b").mkdir()
    (tmp_path / "d" / "a" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="No usable images"):
        scan_folder(tmp_path / "d")


def test_empty_class_is_left_out_with_a_warning(tmp_path):
    root = make_image_folder(tmp_path / "d", {"a": 5, "b": 5})
    (root / "c").mkdir()
    r = scan_folder(root)
    assert r.classes == ["a", "b"]
    assert any("'c'" in w and "no usable images" in w for w in r.warnings)


# --- bad files -------------------------------------------------------------------
def test_bad_files_are_skipped_with_reasons(tmp_path):
    root = make_image_folder(tmp_path / "d", {"a": 5, "b": 5})
    (root / "a" / "notes.jpg").write_text("this is text, not a picture")
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "b" / "cut.png").write_bytes(png_bytes((64, 64))[:-200])
    (root / "b" / "readme.md").write_text("# hi")
    (root / "b" / "real_png.jpg").write_bytes(png_bytes())  # wrong extension, real image
    (root / "a" / "cut.jpg").write_bytes(jpeg_bytes((64, 64))[:400])
    r = scan_folder(root)
    why = reasons(r)
    assert "not an image" in why["notes.jpg"] and "'.jpg'" in why["notes.jpg"]
    assert "empty" in why["empty.png"]
    assert "truncated" in why["cut.png"] or "corrupt" in why["cut.png"]
    assert "truncated" in why["cut.jpg"] or "corrupt" in why["cut.jpg"]
    assert "not an image" in why["readme.md"]
    assert "real_png.jpg" in used_names(r) and "real_png.jpg" not in why
    assert r.counts == {"a": 5, "b": 6}


def test_photo_formats_pillow_cannot_read_get_a_hint(tmp_path):
    root = make_image_folder(tmp_path / "d", {"a": 5, "b": 5})
    (root / "a" / "IMG_0001.HEIC").write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 64)
    (root / "b" / "DSC_0001.NEF").write_bytes(b"\1" * 64)
    why = reasons(scan_folder(root))
    assert "HEIC" in why["IMG_0001.HEIC"] and "JPEG" in why["IMG_0001.HEIC"]
    assert "RAW" in why["DSC_0001.NEF"]


def test_jpeg_with_trailing_data_is_kept(tmp_path):
    root = make_image_folder(tmp_path / "d", {"a": 5, "b": 5})
    (root / "a" / "tail.jpg").write_bytes(jpeg_bytes() + b"\0" * 8000)  # e.g. a phone's appended data
    r = scan_folder(root)
    assert "tail.jpg" in used_names(r)


def test_unreadable_file_is_skipped(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "d", {"a": 5, "b": 5})
    locked = make_image(root / "a" / "locked.png")
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads anything: simulate the refusal the OS would give a user
        real_open = images_module._open_file

        def deny(path):
            if Path(path).name == "locked.png":
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path)

        monkeypatch.setattr(images_module, "_open_file", deny)
    try:
        r = scan_folder(root)
    finally:
        locked.chmod(0o644)
    assert "permission denied" in reasons(r)["locked.png"]
    assert r.counts["a"] == 5


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_skipped(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "d", {"a": 5, "b": 5}, size=(16, 16))
    make_image(root / "a" / "huge.png", size=(80, 80))     # > 2x limit: Pillow's error
    make_image(root / "b" / "big.png", size=(40, 40))      # > 1x limit: Pillow's warning
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    r = scan_folder(root)
    why = reasons(r)
    assert "too large" in why["huge.png"] and "too large" in why["big.png"]
    assert r.counts == {"a": 5, "b": 5}


def test_odd_modes_pass_the_scan(tmp_path):
    root = make_image_folder(tmp_path / "d", {"a": 5, "b": 5})
    for mode in ("L", "P", "RGBA", "LA", "I;16", "1"):
        make_image(root / "a" / f"m_{mode.replace(';', '')}.png", mode=mode)
    make_image(root / "b" / "cmyk.jpg", fmt="jpeg", mode="CMYK")
    make_image(root / "b" / "pic.tif", fmt="tiff")
    r = scan_folder(root)
    assert r.skipped == []
    assert r.counts == {"a": 11, "b": 7}


# --- junk, hidden, links, names -------------------------------------------------------
def test_os_junk_and_hidden_files_are_ignored_silently(tmp_path):
    root = make_image_folder(tmp_path / "d", {"a": 5, "b": 5})
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "a" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "a" / "desktop.ini").write_text("[.ShellClassInfo]")
    (root / "b" / "._img_0.png").write_bytes(b"\0\5\26\7")
    make_image(root / "__MACOSX" / "a" / "img.png")
    make_image(root / "b" / ".hidden_dir" / "x.png")
    make_image(root / ".git" / "x.png")
    r = scan_folder(root)
    assert r.classes == ["a", "b"]
    assert r.counts == {"a": 5, "b": 5}
    assert r.skipped == []
    assert r.ignored == 7


def test_loose_files_at_root_are_listed(tmp_path):
    root = make_image_folder(tmp_path / "d", {"a": 5, "b": 5})
    (root / "labels.csv").write_text("x,y")
    r = scan_folder(root)
    assert "not in a class sub-folder" in reasons(r)["labels.csv"]


def test_symlink_loop_terminates(tmp_path):
    root = make_image_folder(tmp_path / "d", {"a": 5, "b": 5})
    (root / "a" / "loop").symlink_to(root / "a", target_is_directory=True)
    (root / "b" / "up").symlink_to(root, target_is_directory=True)
    (root / "b" / "dangling.png").symlink_to(root / "missing.png")
    r = scan_folder(root)
    assert r.counts == {"a": 5, "b": 5}
    assert "broken link" in reasons(r)["dangling.png"]


def test_linked_folder_outside_is_followed(tmp_path):
    make_image_folder(tmp_path / "elsewhere", {"c": 5})
    root = make_image_folder(tmp_path / "d", {"a": 5, "b": 5})
    (root / "c").symlink_to(tmp_path / "elsewhere" / "c", target_is_directory=True)
    assert scan_folder(root).counts == {"a": 5, "b": 5, "c": 5}


def test_non_ascii_names(tmp_path):
    root = tmp_path / "données"
    make_image_folder(root, {"chats_été": 5, "犬": 5, "ñandú 🐦": 5})
    make_image(root / "犬" / "写真 1.png", 1)
    r = scan_folder(root)
    assert set(r.classes) == {"chats_été", "犬", "ñandú 🐦"}
    assert r.counts["犬"] == 6
    assert "写真 1.png" in used_names(r)


# --- warnings --------------------------------------------------------------------
def test_imbalance_warning(tmp_path):
    make_image_folder(tmp_path / "d", {"big": 55, "small": 5}, size=(8, 8))
    r = scan_folder(tmp_path / "d")
    assert any("imbalanced" in w and "'big'" in w and "'small'" in w for w in r.warnings)


def test_no_imbalance_warning_when_balanced(tmp_path):
    make_image_folder(tmp_path / "d", {"a": 20, "b": 12}, size=(8, 8))
    assert scan_folder(tmp_path / "d").warnings == []


def test_few_images_warning(tmp_path):
    make_image_folder(tmp_path / "d", {"a": 6, "few": 3, "one": 1}, size=(8, 8))
    w = scan_folder(tmp_path / "d").warnings
    assert any("'few'" in x and "only 3 images" in x for x in w)
    assert any("'one'" in x and "validation" in x for x in w)


def test_split_layout_warnings(tmp_path):
    root = make_split_folder(tmp_path / "d", train={"a": 5, "b": 5}, val={"a": 2, "b": 2, "only_val": 2})
    (root / "extras").mkdir()
    r = scan_folder(root)
    assert r.classes == ["a", "b", "only_val"]
    assert any("'only_val'" in w and "no training images" in w for w in r.warnings)
    assert any("'extras'" in w for w in r.warnings)


# --- progress and cancel -------------------------------------------------------------
def test_progress_reports_counts_and_total(tmp_path):
    make_image_folder(tmp_path / "d", {"a": 5, "b": 5}, size=(8, 8))
    calls = []
    scan_folder(tmp_path / "d", progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, None)
    assert (0, 10) in calls
    assert calls[-1] == (10, 10)
    totals = [c for c in calls if c[1] is not None]
    assert [d for d, _ in totals] == sorted(d for d, _ in totals)


def test_cancel_stops_the_scan(tmp_path):
    make_image_folder(tmp_path / "d", {"a": 10, "b": 10}, size=(8, 8))
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 5

    with pytest.raises(ScanCancelled, match="cancelled"):
        scan_folder(tmp_path / "d", should_stop=stop)
    assert len(asked) == 6  # stopped at the first request, not after the whole folder
    assert isinstance(ScanCancelled("x"), DataError)


def test_split_folder_name_aliases(tmp_path):
    root = make_split_folder(tmp_path / "d", train={"a": 3, "b": 3}, val={"a": 1, "b": 1})
    (root / "train").rename(root / "Training")
    (root / "val").rename(root / "validation")
    r = scan_folder(root)
    assert r.layout == "split" and [len(r.items[s]) for s in ("train", "val")] == [6, 2]


def test_cancel_while_listing_a_huge_folder(tmp_path):
    root = tmp_path / "d"
    for cls, n in (("a", 600), ("b", 3)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            (root / cls / f"{i}.png").write_bytes(b"")   # listing only: contents never read
    asked, totals = [], []

    def stop() -> bool:
        asked.append(1)
        return len(asked) >= 3   # asked on entering 'a', then after 256 and 512 files listed in it

    with pytest.raises(ScanCancelled):
        scan_folder(root, progress=lambda d, t: totals.append(t), should_stop=stop)
    assert all(t is None for t in totals)   # stopped inside the listing, before any checking began


def test_one_imbalance_rule_for_the_scan_and_the_doctor(tmp_path):
    from dtl_engine.data import scan
    from dtl_engine.inference import doctor

    make_image_folder(tmp_path / "three", {"big": 15, "small": 5}, size=(8, 8))
    make_image_folder(tmp_path / "two", {"big": 10, "small": 5}, size=(8, 8))
    warned = [w for w in scan_folder(tmp_path / "three").warnings if "imbalanced" in w]
    assert len(warned) == 1 and "(3×)" in warned[0]
    assert not [w for w in scan_folder(tmp_path / "two").warnings if "imbalanced" in w]
    assert doctor.IMBALANCE_RATIO is scan.IMBALANCE_RATIO     # the doctor reports the classes the scan warns about

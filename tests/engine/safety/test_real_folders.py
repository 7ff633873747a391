"""Folders as users have them: any name the OS allows works end to end, and linked folders are followed once
and counted, or named with the reason they were left out; never skipped silently, never a traceback.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from image_factory import make_image, make_image_folder, tree_snapshot
from test_fault_injection import TINY, _cli

from dtl_engine.fileio import NAME_BYTES
from dtl_engine.runs.folder import RunFolder

CAFE = os.fsdecode(b"caf\xe9")              # a class folder named in Latin-1, not UTF-8
LATIN = os.fsdecode(b"lat1\xff\xfe.png")    # an image whose name is not UTF-8 either

needs_byte_names = pytest.mark.skipif(os.name == "nt" or os.fsencode(CAFE) != b"caf\xe9",
                                      reason="file names that are not UTF-8 exist on POSIX file systems")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8", errors=NAME_BYTES) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def latin_run(tmp_path_factory):
    """A data set with a non-UTF-8 class folder holding a non-UTF-8 image name, trained and exported by the CLI."""
    base = tmp_path_factory.mktemp("latin")
    data = make_image_folder(base / "data", {"a": 5, CAFE: 5}, size=(24, 24))
    shutil.copyfile(data / CAFE / "img_0.png", data / CAFE / LATIN)    # an exact duplicate: the doctor names it
    before = tree_snapshot(data)
    home = base / "home"
    old = os.environ.get("DTL_STUDIO_HOME")
    os.environ["DTL_STUDIO_HOME"] = str(home)
    try:
        from dtl_engine.cli import main as cli

        outcome = {"scan": cli.main(["scan", str(data)]),
                   "train": cli.main(["train", str(data), *TINY, "--epochs", "1", "--lr", "1e-3",
                                      "--out", str(base / "run")]),
                   "export": cli.main(["export", str(base / "run"), "--out", str(base / "model.pt"),
                                       "--no-verify"])}
    finally:
        if old is None:
            os.environ.pop("DTL_STUDIO_HOME", None)
        else:
            os.environ["DTL_STUDIO_HOME"] = old
    return base, data, before, outcome


@needs_byte_names
def test_a_class_folder_whose_name_is_not_utf8_is_scanned_trained_and_exported(latin_run, capsys):
    base, data, before, outcome = latin_run
    assert outcome == {"scan": 0, "train": 0, "export": 0}
    assert RunFolder(base / "run").read_classes() == ["a", CAFE]     # the name round-trips through classes.json
    code, out, err = _cli(["evaluate", str(base / "run")], capsys)
    assert code == 0, err
    assert tree_snapshot(data) == before


@needs_byte_names
def test_predict_folder_writes_names_that_are_not_utf8_as_their_own_bytes(latin_run, tmp_path, capsys):
    base, data, before, _ = latin_run
    photos = tmp_path / "photos"
    make_image(photos / LATIN, 1, size=(24, 24))
    make_image(photos / "plain.png", 0, size=(24, 24))
    code, out, err = _cli(["predict", str(base / "model.pt"), "--folder", str(photos), "--csv",
                           str(tmp_path / "out.csv"), "--sort-into", str(tmp_path / "sorted")], capsys)
    assert code == 0, err
    rows = {os.fsencode(Path(r["path"]).name): r for r in _read_csv(tmp_path / "out.csv")}
    assert set(rows) == {b"lat1\xff\xfe.png", b"plain.png"}
    copy = Path(rows[b"lat1\xff\xfe.png"]["copied_to"])
    assert copy.read_bytes() == (photos / LATIN).read_bytes() and os.fsencode(copy.name) == b"lat1\xff\xfe.png"
    # and one image named on the command line, printed and as JSON
    code, out, err = _cli(["predict", str(base / "model.pt"), str(photos / LATIN), "--json"], capsys)
    assert code == 0, err
    assert os.fsencode(json.loads(out)[0]["image"]) == os.fsencode(photos / LATIN)


@needs_byte_names
def test_doctor_writes_names_that_are_not_utf8_as_their_own_bytes(latin_run, tmp_path, capsys):
    base, data, before, _ = latin_run
    run = tmp_path / "run"
    shutil.copytree(base / "run", run)
    code, out, err = _cli(["doctor", str(run), "--csv", str(tmp_path / "findings.csv")], capsys)
    assert code == 0, err
    named = [os.fsencode(v) for row in _read_csv(tmp_path / "findings.csv") for v in row.values() if v]
    assert any(b"lat1\xff\xfe.png" in v for v in named), named
    assert tree_snapshot(data) == before


# --- linked folders -------------------------------------------------------------------------------------

def test_a_linked_sub_folder_is_classified_and_a_loop_is_named(latin_run, tmp_path, capsys):
    base = latin_run[0]
    photos = make_image_folder(tmp_path / "photos", {"here": 2}, size=(24, 24))
    elsewhere = make_image_folder(tmp_path / "elsewhere", {"there": 3}, size=(24, 24))
    os.symlink(elsewhere / "there", photos / "linked")
    os.symlink(photos, photos / "here" / "loop")              # back up to the folder itself
    code, out, err = _cli(["predict", str(base / "model.pt"), "--folder", str(photos), "--csv",
                           str(tmp_path / "out.csv")], capsys)
    assert code == 0, err
    rows = _read_csv(tmp_path / "out.csv")
    assert len(rows) == 5 and sum(Path(r["path"]).parent.name == "linked" for r in rows) == 3   # each once
    skipped = [line for line in out.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 1 and "loop" in skipped[0] and "already" in skipped[0], out


def test_a_class_folder_linking_to_another_class_leaves_that_class_whole(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", {"birds": 4, "cats": 4}, size=(24, 24))
    os.symlink(data / "cats", data / "animals")              # sorts before 'birds' and 'cats'
    code, out, err = _cli(["scan", str(data), "--json"], capsys)
    assert code == 0, err
    scan = json.loads(out)
    assert scan["classes"] == ["birds", "cats"] and scan["counts"] == {"birds": 4, "cats": 4}
    about = [w for w in scan["warnings"] if "animals" in w]
    assert len(about) == 1 and "cats" in about[0], scan["warnings"]
    assert not any("no usable images" in w for w in scan["warnings"]), scan["warnings"]
    assert any(Path(s["path"]).name == "animals" and "link" in s["reason"] for s in scan["skipped"])


def test_a_link_loop_inside_a_class_is_named_not_walked(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", {"birds": 4, "cats": 4}, size=(24, 24))
    os.symlink(data, data / "cats" / "up")
    code, out, err = _cli(["scan", str(data), "--json"], capsys)
    assert code == 0, err
    scan = json.loads(out)
    assert scan["counts"] == {"birds": 4, "cats": 4}
    assert any(Path(s["path"]).name == "up" and "link" in s["reason"] for s in scan["skipped"]), scan["skipped"]

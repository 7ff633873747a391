"""Writes land only where they may: never in the image folder (from any current folder, through any
symbolic link), never into a run folder's files, never onto a device, a FIFO or a folder, whatever
--overwrite says (issue 20, reproductions 1 and 5)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from image_factory import make_image_folder
from safety_helpers import checksums
from classify_builders import class_tree, model_file, read_rows  # noqa: F401  (a fixture)
from test_fault_injection import TINY, _cli, _one_line_refusal

from dtl_engine.runs.folder import RunFolder


@pytest.fixture(scope="module")
def relative_run(tmp_path_factory) -> Path:
    """A 1-epoch run trained from its parent folder with the image folder given as 'data' (relative)."""
    from dtl_engine.cli import main as cli

    base = tmp_path_factory.mktemp("relative")
    make_image_folder(base / "data", {"red": 5, "blue": 5}, size=(24, 24))
    cwd = os.getcwd()
    os.chdir(base)
    try:
        assert cli.main(["train", "data", *TINY, "--epochs", "1", "--out", "run"]) == 0
    finally:
        os.chdir(cwd)
    return base / "run"


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """The command runs from an unrelated folder."""
    where = tmp_path / "elsewhere"
    where.mkdir()
    monkeypatch.chdir(where)
    return where


def _data(run: Path) -> Path:
    return run.parent / "data"


def test_the_run_records_its_image_folder_as_an_absolute_real_path(relative_run):
    recorded = RunFolder(relative_run).read_config()["data_dir"]
    assert Path(recorded).is_absolute() and Path(recorded) == _data(relative_run).resolve()


@pytest.mark.parametrize("command", ["explain-onto-photo", "explain-new-file", "doctor-csv", "export-out"])
def test_1_no_command_from_another_folder_writes_into_the_images(relative_run, elsewhere, capsys, command):
    data = _data(relative_run)
    photo = sorted((data / "red").iterdir())[0]
    before = checksums(data)
    argv = {
        "explain-onto-photo": ["explain", str(relative_run), str(photo), "--out", str(photo), "--overwrite"],
        "explain-new-file": ["explain", str(relative_run), str(photo), "--out", str(data / "red" / "heat.png")],
        "doctor-csv": ["doctor", str(relative_run), "--csv", str(data / "findings.csv")],
        "export-out": ["export", str(relative_run), "--out", str(data / "model.pt"), "--no-verify"],
    }[command]
    code, _, err = _cli(argv, capsys)
    _one_line_refusal(code, err, "image folder")
    assert checksums(data) == before


def test_1_a_link_outside_pointing_at_a_photo_is_refused(relative_run, elsewhere, capsys):
    data = _data(relative_run)
    photo = sorted((data / "red").iterdir())[0]
    (elsewhere / "heat.png").symlink_to(photo)
    before = checksums(data)
    code, _, err = _cli(["explain", str(relative_run), str(photo), "--out", "heat.png", "--overwrite"], capsys)
    _one_line_refusal(code, err, "image folder")
    assert checksums(data) == before and (elsewhere / "heat.png").is_symlink()


def test_1_an_older_run_with_a_relative_image_folder_is_refused_from_elsewhere(relative_run, tmp_path, capsys,
                                                                                 monkeypatch):
    old = tmp_path / "base"
    shutil.copytree(relative_run.parent, old, symlinks=True)
    run = old / "run"
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "data_dir": "data"}))
    # its split names the images relative to where it was trained, as older runs did
    split = json.loads((run / "split.json").read_text())
    split["files"] = {os.path.relpath(p, old): v for p, v in split["files"].items()}
    (run / "split.json").write_text(json.dumps(split))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()             # a folder of the same name here is not the run's image folder
    before = checksums(old / "data")
    code, _, err = _cli(["doctor", str(run), "--csv", str(old / "data" / "x.csv")], capsys)
    _one_line_refusal(code, err, "relative")
    monkeypatch.chdir(old)                  # from where it was trained, the image folder is known again
    code, _, err = _cli(["doctor", str(run), "--csv", "data/x.csv"], capsys)
    _one_line_refusal(code, err, "image folder")
    assert checksums(old / "data") == before


def _fifo(folder: Path) -> Path:
    path = folder / "pipe"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("command", ["doctor", "explain", "export"])
def test_5_overwrite_never_replaces_a_fifo(relative_run, elsewhere, capsys, command):
    fifo = _fifo(elsewhere)
    photo = sorted((_data(relative_run) / "red").iterdir())[0]
    argv = {"doctor": ["doctor", str(relative_run), "--csv", str(fifo)],
            "explain": ["explain", str(relative_run), str(photo), "--out", str(fifo)],
            "export": ["export", str(relative_run), "--out", str(fifo), "--no-verify"]}[command]
    code, _, err = _cli([*argv, "--overwrite"], capsys)
    _one_line_refusal(code, err, "named pipe")
    assert fifo.is_fifo()


def test_5_overwrite_never_replaces_a_folder(relative_run, elsewhere, capsys):
    (elsewhere / "sub").mkdir()
    (elsewhere / "sub" / "mine.txt").write_text("mine")
    code, _, err = _cli(["doctor", str(relative_run), "--csv", str(elsewhere / "sub"), "--overwrite"], capsys)
    _one_line_refusal(code, err, "folder")
    assert (elsewhere / "sub" / "mine.txt").read_text() == "mine"


def test_5_a_csv_onto_the_runs_resume_state_is_refused(relative_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(relative_run, run)
    before = checksums(run)
    code, _, err = _cli(["doctor", str(run), "--csv", str(run / "state.pt"), "--overwrite"], capsys)
    _one_line_refusal(code, err, "run folder")
    assert checksums(run) == before


def test_5_overwrite_through_a_link_replaces_the_file_it_names_not_the_link(relative_run, elsewhere, capsys):
    target = elsewhere / "findings.csv"
    target.write_text("old findings")
    (elsewhere / "link.csv").symlink_to(target)
    code, _, err = _cli(["doctor", str(relative_run), "--csv", "link.csv", "--overwrite"], capsys)
    assert code == 0, err
    assert (elsewhere / "link.csv").is_symlink() and target.read_text().startswith("kind,") is not None
    assert target.read_text() != "old findings"


def test_the_runs_own_findings_file_is_still_written_by_default(relative_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(relative_run, run)
    for _ in range(2):                      # made, then replaced: it is the run's own
        code, _, err = _cli(["doctor", str(run)], capsys)
        assert code == 0, err
    assert (run / "doctor.csv").is_file()


# --- classifying a folder: a kill, a full disk (issue 20, reproductions 7 and 8) ----------------------

KILLED_ON_THIRD_COPY = """
import os, sys
from dtl_engine import fileio
from dtl_engine.cli.main import main

real, calls = fileio.copy_new, []

def copy_then_die(source, dest):
    calls.append(dest)
    if len(calls) == 3:                     # killed in the middle of the third copy, as kill -9 would
        part = fileio.reserve_beside(dest)
        with fileio.open_temp(part) as fh:
            fh.write(b"half an image")
        os._exit(9)
    real(source, dest)

fileio.copy_new = copy_then_die
sys.exit(main(sys.argv[1:]))
"""


def _engine_leftovers(*folders: Path) -> list[Path]:
    from dtl_engine import fileio

    return [p for f in folders for p in f.rglob(".*") if fileio.is_leftover_name(p.name)]


@pytest.mark.slow
def test_8_predict_folder_killed_then_run_again_resumes_without_duplicates(model_file, tmp_path, capsys):
    import subprocess
    import sys

    folder = class_tree(tmp_path)
    before = checksums(folder)
    sorted_dir, csv_out = tmp_path / "sorted", tmp_path / "out" / "k.csv"
    argv = ["predict", str(model_file), "--folder", str(folder), "--csv", str(csv_out), "--sort-into", str(sorted_dir)]
    killed = subprocess.run([sys.executable, "-c", KILLED_ON_THIRD_COPY, *argv], capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    assert _engine_leftovers(sorted_dir, csv_out.parent)            # what a kill leaves: temporaries
    code, _, err = _cli(argv, capsys)
    assert code == 0, err
    copies = [p for p in sorted_dir.rglob("*") if p.is_file()]
    readable = [p for p in folder.rglob("*") if p.is_file() and p.name != "broken.jpg"]
    # each image once (a second copy of the same bytes would be 'name (2).png')
    assert sorted(p.read_bytes() for p in copies) == sorted(p.read_bytes() for p in readable)
    assert _engine_leftovers(sorted_dir, csv_out.parent) == []      # the killed pass's temporaries are gone
    assert len(read_rows(csv_out)) == len(readable) + 1 and checksums(folder) == before


def test_7_a_full_disk_while_sorting_names_the_file_and_keeps_the_rows_done(model_file, tmp_path, capsys,
                                                                            monkeypatch):
    import errno

    from dtl_engine import fileio

    folder = class_tree(tmp_path)
    sorted_dir, csv_out = tmp_path / "sorted", tmp_path / "k.csv"
    real, written = fileio.write_all, []

    def disk_fills_up(fh, data):
        if str(getattr(fh, "name", "")).startswith(str(sorted_dir)):
            written.append(fh.name)
            if len(written) == 4:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, data)

    monkeypatch.setattr(fileio, "write_all", disk_fills_up)
    code, _, err = _cli(["predict", str(model_file), "--folder", str(folder), "--csv", str(csv_out),
                         "--sort-into", str(sorted_dir)], capsys)
    _one_line_refusal(code, err, "No space left on device", "rows done are kept")
    partial = [p for p in tmp_path.iterdir() if p.name.startswith("k (partial, ")]
    assert len(partial) == 1 and partial[0].name in err and not csv_out.exists()
    rows = read_rows(partial[0])
    assert len(rows) >= 3 and rows[-1]["path"] != ""
    failed = [p for p in folder.rglob("*") if str(p) in err]
    assert failed                                                    # the file being copied is named
    assert _engine_leftovers(sorted_dir, tmp_path) == []

"""The run folder's layout (runs/folder.py): its file names in one module, reads that name the file, the
schema version, the engine's own cache folders and run names."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import dtl_engine
from dtl_engine.errors import RunError
from dtl_engine.runs import folder as run_folder
from dtl_engine.runs.folder import RunFolder, new_run_dir

ROOT = Path(dtl_engine.__file__).resolve().parents[1]        # the tree whose code is under test
NAMES = [run_folder.RUN_FILE, run_folder.CONFIG, run_folder.CLASSES, run_folder.SPLIT, run_folder.SPEC,
         run_folder.LAST_WEIGHTS, run_folder.BEST_WEIGHTS, run_folder.STATE, run_folder.METRICS, run_folder.REPORT,
         run_folder.EVENT_LOG, run_folder.SEARCH, run_folder.DOCTOR_CSV]


def test_the_run_file_names_appear_in_one_module_only():
    pattern = re.compile("|".join(re.escape(n) for n in NAMES))
    offenders = []
    for package in ("dtl_engine", "app"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "dtl_engine" / "runs" / "folder.py":
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == [], "\n".join(offenders)
    assert len(set(NAMES)) == len(NAMES) == len(run_folder.RUN_FILES) + len(run_folder.CHECK_FILES)


def test_reads_name_the_missing_damaged_or_odd_file(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    with pytest.raises(RunError, match=r"'run' is not a complete run folder: config.json is missing"):
        folder.read_config()
    (folder.path / run_folder.CONFIG).write_text('{"epochs": 3')           # truncated
    with pytest.raises(RunError, match=r"config.json of the run 'run' is damaged"):
        folder.read_config()
    (folder.path / run_folder.CLASSES).write_text('{"a": 1}')               # valid JSON, wrong shape
    with pytest.raises(RunError, match=r"classes.json .* damaged \(unexpected content\)"):
        folder.read_classes()
    os.mkfifo(folder.path / run_folder.SPEC)                                # would block a plain open()
    with pytest.raises(RunError, match="not a regular file"):
        folder.read_spec()
    assert folder.read_metrics() == [] and folder.read_report() is None     # not there yet: nothing to show


def test_run_file_of_a_newer_schema_is_refused(tmp_path):
    folder = RunFolder(tmp_path)
    folder.update_run(status="finished")
    assert folder.read_run()["schema"] == run_folder.SCHEMA_VERSION
    data = json.loads((tmp_path / run_folder.RUN_FILE).read_text())
    data["schema"] = run_folder.SCHEMA_VERSION + 1
    (tmp_path / run_folder.RUN_FILE).write_text(json.dumps(data))
    with pytest.raises(RunError, match="newer version"):
        folder.read_run()


def test_cache_folders_are_marked_and_only_the_own_ones_removed(tmp_path):
    users = tmp_path / ".cache-mine"
    users.mkdir()
    (users / "keep.txt").write_text("x")
    made = run_folder.new_cache_dir(tmp_path)
    assert made.name.startswith(run_folder.CACHE_PREFIX) and (made / run_folder.CACHE_MARK).is_file()
    assert not run_folder.remove_cache_dir(users) and (users / "keep.txt").exists()
    assert not run_folder.remove_cache_dir(tmp_path) and made.exists()
    assert run_folder.remove_cache_dir(made) and not made.exists()


def test_a_run_name_says_the_size_it_trains_at(tmp_path):
    assert new_run_dir("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "dtl", tmp_path, image_size=96).name.endswith(
        "_vit_tiny_patch16_96_dtl")
    assert new_run_dir("vit_tiny_patch16_224", "dtl+", tmp_path, image_size=224).name.endswith(
        "_vit_tiny_patch16_224_dtlplus")
    assert new_run_dir("test_vit", "dtl", tmp_path, image_size=32).name.endswith("_test_vit_32px_dtl")
    assert new_run_dir("vit_tiny_patch16_224", "dtl", tmp_path).name.endswith("_vit_tiny_patch16_224_dtl")

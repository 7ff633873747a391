"""The run folder's one owner: names in one module, typed reads with sentences, the lock, the marked cache,
atomic writes on a full disk, regular files only."""
from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dtl_engine
from dtl_engine import fileio
from dtl_engine.runs import folder as run_folder
from dtl_engine.errors import RunError
from dtl_engine.runs.claim import claim_new
from dtl_engine.runs.folder import RunFolder
from dtl_engine.runs.lock import lock_run

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


def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    fileio.atomic_write_json(target, [1, 2])

    def full(fh, data):
        fh.write(bytes(data)[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio, "write_all", full)
    with pytest.raises(OSError, match="No space left"):
        fileio.atomic_write_json(target, [1, 2, 3])
    assert json.loads(target.read_text()) == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_open_regular_refuses_fifo_device_and_folder_without_blocking(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "named pipe"), (Path("/dev/null"), "device"), (tmp_path, "folder")):
        started = time.monotonic()
        with pytest.raises(fileio.NotRegularFileError, match=kind):
            fileio.open_regular(path)
        assert time.monotonic() - started < 5
    regular = tmp_path / "a.bin"
    regular.write_bytes(b"abc")
    with fileio.open_regular(regular) as fh:
        assert fh.read() == b"abc"


def test_leftover_temporaries_are_removed_only_when_they_are_the_engines_and_old(tmp_path):
    old = time.time() - 3600
    killed = "dtl-0123456789ab-x1y2"                    # the engine's name, with a killed process's token
    keep_user = tmp_path / ".notes.txt"                  # the user's own hidden file
    keep_lookalike = tmp_path / ".metrics.json.x1y2.tmp"    # looks like a temporary, carries no token
    keep_fresh = tmp_path / f".state.pt.{killed}.tmp"   # a writer may be busy with it
    keep_other = tmp_path / f".notes.txt.{killed}.tmp"  # a temporary of a file the caller did not name
    gone = tmp_path / f".metrics.json.{killed}.tmp"
    gone_part = tmp_path / f".model.pt.{killed}.part"
    for p in (keep_user, keep_lookalike, keep_fresh, keep_other, gone, gone_part):
        p.write_bytes(b"x")
    for p in (keep_user, keep_lookalike, keep_other, gone, gone_part):
        os.utime(p, (old, old))
    removed = fileio.remove_leftovers(tmp_path, ["metrics.json", "model.pt", "state.pt"],
                                      older_than=time.time() - 60)
    assert sorted(p.name for p in removed) == sorted([gone.name, gone_part.name])
    assert all(p.exists() for p in (keep_user, keep_lookalike, keep_fresh, keep_other))


# --- claiming ------------------------------------------------------------------------------

def test_claim_refuses_a_non_empty_folder_and_one_overlapping_the_data(tmp_path):
    data = tmp_path / "data"
    (data / "cats").mkdir(parents=True)
    for out in (data, data / "runs", tmp_path):
        with pytest.raises(RunError, match="image folder"):
            claim_new(out, data, "test_vit", "dtl")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("my own notes")
    with pytest.raises(RunError, match="not empty"):
        claim_new(mine, data, "test_vit", "dtl")
    assert (mine / "config.json").read_text() == "my own notes"
    claim = claim_new(tmp_path / "fresh", data, "test_vit", "dtl")
    assert claim.created and (tmp_path / "fresh" / run_folder.LOCK).exists()
    claim.discard()
    assert not (tmp_path / "fresh").exists()


def test_a_second_writer_is_refused_at_once_and_a_dead_holder_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from dtl_engine.runs.folder import RunFolder; "
         "from dtl_engine.runs.lock import lock_run; lock_run(RunFolder(sys.argv[1])); "
         "print('locked', flush=True); time.sleep(600)", str(run)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(RunError, match=rf"in use by another training process \(pid {holder.pid}\)"):
            lock_run(RunFolder(run))
        assert time.monotonic() - started < 5
    finally:
        holder.kill()           # kill -9: the lock file stays behind, stale
        holder.wait()
    assert (run / run_folder.LOCK).exists()
    with lock_run(RunFolder(run)):
        lock = json.loads((run / run_folder.LOCK).read_text())
        assert lock["pid"] == os.getpid() and lock["host"]
    assert not (run / run_folder.LOCK).exists()


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
    from dtl_engine.runs.folder import new_run_dir

    assert new_run_dir("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "dtl", tmp_path, image_size=96).name.endswith(
        "_vit_tiny_patch16_96_dtl")
    assert new_run_dir("vit_tiny_patch16_224", "dtl+", tmp_path, image_size=224).name.endswith(
        "_vit_tiny_patch16_224_dtlplus")
    assert new_run_dir("test_vit", "dtl", tmp_path, image_size=32).name.endswith("_test_vit_32px_dtl")
    assert new_run_dir("vit_tiny_patch16_224", "dtl", tmp_path).name.endswith("_vit_tiny_patch16_224_dtl")

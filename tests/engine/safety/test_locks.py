"""Locks and DTL Studio's own folder: a lock left by another machine is refused with a sentence that
names the lock file and the way out (--break-lock); DTL Studio's own folder inside the image folder
never receives a run or a cache (issue 20, reproduction 8)."""
from __future__ import annotations

import json

from image_factory import make_image_folder
from safety_helpers import checksums
from test_fault_injection import TINY, _cli, _copy, _one_line_refusal, finished  # noqa: F401  (a fixture)

from dtl_engine.runs import folder as run_folder
from dtl_engine.runs.folder import RunFolder
from dtl_engine.runs.lock import lock_run


def _lock_from_another_host(run) -> None:
    content = json.dumps({"pid": 4242, "pid_started": 1.0, "host": "node-17.cluster", "token": "0" * 16,
                          "since": "2026-01-01T00:00:00+00:00"}).encode("utf-8")
    (run / run_folder.LOCK).write_bytes(content)


def test_8_a_lock_from_another_host_names_the_lock_file_and_the_way_out(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    RunFolder(run).update_run(status="stopped")          # after its last epoch: resume only finishes
    _lock_from_another_host(run)
    before = checksums(run)
    code, _, err = _cli(["resume", str(run)], capsys)
    _one_line_refusal(code, err, "node-17.cluster", str(run / run_folder.LOCK), "--break-lock")
    assert checksums(run) == before
    code, _, err = _cli(["resume", str(run), "--break-lock"], capsys)
    assert code == 0, err
    assert not (run / run_folder.LOCK).exists() and RunFolder(run).status() == "finished"


def test_8_break_lock_never_takes_a_lock_of_a_live_process_here(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    held = lock_run(RunFolder(run))                         # this very process holds it
    try:
        code, _, err = _cli(["resume", str(run), "--break-lock"], capsys)
        _one_line_refusal(code, err, "in use")
        assert (run / run_folder.LOCK).exists()
    finally:
        held.release()


def test_8_dtl_studios_folder_inside_the_image_folder_gets_no_run_and_no_cache(tmp_path, capsys, monkeypatch):
    data = make_image_folder(tmp_path / "photos", {"a": 4, "b": 4}, size=(24, 24))
    monkeypatch.setenv("DTL_STUDIO_HOME", str(data / "a" / ".dtl"))
    before = checksums(data)
    code, _, err = _cli(["train", str(data), *TINY, "--epochs", "1"], capsys)
    _one_line_refusal(code, err, "DTL_STUDIO_HOME")
    assert checksums(data) == before
    # with --out elsewhere the run goes there, and still nothing (no cache) lands among the images
    code, _, err = _cli(["train", str(data), *TINY, "--epochs", "1", "--out", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert checksums(data) == before

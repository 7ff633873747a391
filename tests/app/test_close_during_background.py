"""Closing the window during each kind of background job: no crash, no Qt warning, no half-written file.

Each case runs the real window in a fresh process (close_during_job.py), because what goes
wrong here — a running thread destroyed, a signal emitted from a deleted object, a file cut
short at exit — only shows in the exit code, on stderr and on disk once the process has ended.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("close_during_job.py")
ROOT = Path(__file__).resolve().parents[2]
FULL_SIZE = {"export": 120 * 1000}        # bytes close_during_job.py writes per kind (default 30 kB)
BAD_STDERR = ("QThread: Destroyed while thread is still running", "Signal source has been deleted",
              "Traceback", "Error calling Python override")


def _close_during(kind: str, tmp_path: Path, answer: str = "stop") -> tuple[subprocess.CompletedProcess, list[str]]:
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path),
           "DTL_STUDIO_SETTINGS": str(tmp_path / "settings.ini"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(SCRIPT), kind, str(work), answer], env=env, capture_output=True,
                          text=True, timeout=300, cwd=str(tmp_path))
    log = (work / "log.txt").read_text(encoding="utf-8").splitlines() if (work / "log.txt").exists() else []
    return proc, log


def _assert_clean_exit(proc: subprocess.CompletedProcess, log: list[str]) -> None:
    assert proc.returncode == 0, proc.stderr
    for text in BAD_STDERR:
        assert text not in proc.stderr, proc.stderr
    assert "closing" in log and "exit 0" in log, log


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sample", "estimate", "explain", "explain-try", "predict", "list-runs",
                                  "compare-runs"])
def test_closing_waits_for_a_job_that_writes(kind, tmp_path):
    """The window closes only after the job ended: its file is whole, never cut short."""
    proc, log = _close_during(kind, tmp_path)
    _assert_clean_exit(proc, log)
    assert "entered" in log and "wrote" in log, log
    assert log.index("wrote") < log.index("exit 0")
    assert (tmp_path / "work" / "out.bin").stat().st_size == FULL_SIZE.get(kind, 30 * 1000)
    assert not any(line.startswith("asked") for line in log)     # nothing is lost: no question


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "answer"), [("export", "wait"), ("evaluate", "stop"), ("doctor", "stop"),
                                              ("export", "keep")])
def test_closing_during_work_that_would_be_lost_asks_first(kind, answer, tmp_path):
    """An export, an evaluation, a data check: the window asks; whichever answer, it closes only after the job."""
    proc, log = _close_during(kind, tmp_path, answer)
    _assert_clean_exit(proc, log)
    assert f"asked: {kind}" in log, log
    assert ("kept working" in log) == (answer == "keep")
    assert "wrote" in log and log.index("wrote") < log.index("exit 0")
    assert (tmp_path / "work" / "out.bin").stat().st_size == FULL_SIZE.get(kind, 30 * 1000)


@pytest.mark.slow
def test_closing_cancels_a_scan(tmp_path):
    proc, log = _close_during("scan", tmp_path)
    _assert_clean_exit(proc, log)
    assert "cancelled" in log and "ran to the end" not in log, log


@pytest.mark.slow
def test_closing_cancels_thumbnail_loading(tmp_path):
    proc, log = _close_during("thumbnails", tmp_path)
    _assert_clean_exit(proc, log)
    assert 0 < log.count("thumbnail") < 100, log      # stopped well before the last of 100 images


@pytest.mark.slow
def test_closing_during_training_asks_then_stops_and_keeps_the_checkpoint(tmp_path):
    proc, log = _close_during("train", tmp_path)
    _assert_clean_exit(proc, log)
    assert "asked: train" in log and "stop requested" in log and "wrote" in log, log
    assert (tmp_path / "work" / "out.bin").stat().st_size == 30 * 1000


@pytest.mark.slow
def test_closing_while_classifying_a_folder_asks_then_stops_and_keeps_the_rows_done(tmp_path):
    proc, log = _close_during("classify-folder", tmp_path)
    _assert_clean_exit(proc, log)
    assert "asked: classify-folder" in log and "stopped" in log, log
    rows = (tmp_path / "work" / "out.csv").read_text(encoding="utf-8").splitlines()
    assert 0 < len(rows) < 400 and f"wrote {len(rows)} rows" in log
    assert log.index(f"wrote {len(rows)} rows") < log.index("exit 0")      # the window waited for it


@pytest.mark.slow
def test_closing_during_a_real_run_with_loader_workers_ends_them_and_keeps_the_checkpoint(tmp_path):
    """The real engine with two loader workers: the window asks, the run stops, no worker outlives it."""
    import psutil

    from dtl_engine.runs import checkpoint as ckpt

    proc, log = _close_during("train-workers", tmp_path)
    _assert_clean_exit(proc, log)
    assert "asked: train" in log and "run ended stopped" in log, log
    workers = [int(pid) for line in log if line.startswith("workers ") for pid in line.split()[1:]]
    assert len(workers) == 2, log                    # the run decoded in two worker processes
    def running(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    assert [pid for pid in workers if running(pid)] == []
    saved = [line.split(" ", 1)[1] for line in log if line.startswith("checkpoint ")]
    assert saved and ckpt.load_weights(saved[-1])     # the last checkpoint is whole

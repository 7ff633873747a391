"""Runs → "Open run folder…" on a run another process is writing: the Train step follows its event log live.

The writer is a plain Python process (tests/app/event_writer.py) that writes run.json and the event
log in parts, one of them ending in half a line; the test lets it go on part by part and checks
what the Train step shows in between. Every wait is bounded.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.run_life import RunState
from dtl_engine.formatting import format_bytes

WRITER = Path(__file__).with_name("event_writer.py")
WAIT_MS = 30_000


@pytest.fixture
def writer(tmp_path):
    """Start the writer on ``tmp_path/runs/live``; returns (run_dir, process, go(n))."""
    run_dir = tmp_path / "runs" / "live"
    proc = subprocess.Popen([sys.executable, str(WRITER), str(run_dir)])

    def go(n: int) -> None:
        (run_dir.parent / f"go-{n}").touch()

    yield run_dir, proc, go
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def _steps(page) -> int:
    return len(page.charts.loss.series("train (step)")[0])


@pytest.fixture
def window(qtbot, settings, monkeypatch):
    from app.main_window import MainWindow

    win = MainWindow(settings)
    qtbot.addWidget(win)
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(win.results_page, "show_run", lambda d: calls.append(("results", str(d))))
    monkeypatch.setattr(win.export_page, "set_run", lambda d: calls.append(("export", str(d))))
    win.taken_up = calls
    return win


@pytest.mark.slow
def test_open_run_folder_follows_a_run_written_by_another_process(qtbot, window, writer):
    run_dir, proc, go = writer
    page = window.train_page
    qtbot.waitUntil(lambda: (run_dir / "events.jsonl").exists() and b"CPU" in (run_dir / "events.jsonl").read_bytes(),
                    timeout=WAIT_MS)

    assert window.runs_page.open_run_folder(str(run_dir))
    assert window.current_step() == 2                   # the Train step, not Results: the run is not over
    # part 1: the two whole batch lines are drawn; the half-written third waits
    qtbot.waitUntil(lambda: page.life.state is RunState.RUNNING and _steps(page) == 2, timeout=WAIT_MS)
    assert "CPU (2 threads) × 2 processes" in page.info_label.text()
    assert "another program" in page.state_label.text()
    assert window.step_states()[2][1] == "Training elsewhere, followed live"   # not "Waiting for an image folder"
    assert not page.stop_button.isEnabled() and not page.pause_button.isEnabled()   # not ours to stop
    assert page.start_button.isEnabled() and window.train_action.isEnabled()
    qtbot.wait(800)                                     # a few polls: the half line is still not taken
    assert _steps(page) == 2 and window.taken_up == []

    go(1)   # part 2: the rest of the line, an epoch, memory, a checkpoint
    qtbot.waitUntil(lambda: _steps(page) == 3 and len(page.charts.accuracy.series("validation")[0]) == 1,
                    timeout=WAIT_MS)
    assert page.charts.accuracy.series("validation")[1][-1] == pytest.approx(75.0)
    log = page.log_view.toPlainText()
    assert "Epoch 1/2" in log and "Checkpoint saved after epoch 1" in log
    assert "step 3/3" in page.progress.format()
    assert f"peak {format_bytes(320_000_000)}" in page.memory_label.text()     # the memory sample
    assert page.life.state is RunState.RUNNING and window.taken_up == []

    go(2)   # part 3: the run ends
    qtbot.waitUntil(lambda: page.life.state is RunState.FINISHED, timeout=WAIT_MS)
    assert proc.wait(timeout=30) == 0
    assert "Finished" in page.state_label.text() and "75.0 %" in page.state_label.text()
    assert ("results", str(run_dir)) in window.taken_up and ("export", str(run_dir)) in window.taken_up
    assert window.current_step() == 3                   # a finished run shows its results
    assert page.status()[0]


def test_a_followed_run_whose_process_dies_is_interrupted(qtbot, window, writer):
    run_dir, proc, _go = writer
    page = window.train_page
    qtbot.waitUntil(lambda: (run_dir / "run.json").exists() and (run_dir / "events.jsonl").exists(),
                    timeout=WAIT_MS)
    window.open_run(str(run_dir))
    qtbot.waitUntil(lambda: page.life.state is RunState.RUNNING and _steps(page) == 2, timeout=WAIT_MS)
    proc.kill()                                         # no last event: only its status can tell
    proc.wait(timeout=30)
    qtbot.waitUntil(lambda: page.life.state is RunState.INTERRUPTED, timeout=WAIT_MS)
    assert "Interrupted" in page.state_label.text()
    # No epoch was completed, but Results and Export take this run up (to say it has no model yet):
    # they must not keep showing the previous run's figures.
    assert ("results", str(run_dir)) in window.taken_up and ("export", str(run_dir)) in window.taken_up
    assert page.start_button.isEnabled() and page.resume_button.isEnabled()     # resumable where it stopped


def test_starting_a_run_leaves_a_followed_one_to_itself(qtbot, window, writer):
    run_dir, proc, go = writer
    page = window.train_page
    qtbot.waitUntil(lambda: (run_dir / "run.json").exists() and (run_dir / "events.jsonl").exists(),
                    timeout=WAIT_MS)
    page.follow_run(str(run_dir))
    qtbot.waitUntil(lambda: page.life.state is RunState.RUNNING, timeout=WAIT_MS)
    page.load_history(str(run_dir))                     # e.g. the Runs table's Open on another run
    assert page.life.state is not RunState.RUNNING and "No longer following" in page.log_view.toPlainText()
    go(1)
    go(2)
    assert proc.wait(timeout=30) == 0                   # the run went on by itself


def test_not_a_run_folder_is_refused_with_a_sentence(qtbot, window, tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert not window.runs_page.open_run_folder(str(empty))
    assert "holds no run" in window.runs_page.error_dialog.message_label.text()
    window.runs_page.error_dialog.close()

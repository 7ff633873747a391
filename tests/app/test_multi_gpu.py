"""The Train step's "Use all N GPUs": torchrun started as a subprocess, followed live, stopped, awaited.

The GPU count is injected; with ``device=cpu`` torchrun's two processes use gloo, so the real
launch runs here on the CPU on a tiny test_vit. The window's side (ask before closing, await the
processes, a refused run's sentence, a launcher that ignores the stop) uses a stand-in launcher
(tests/app/fake_launcher.py) so it costs no torch start-up. Every wait is bounded.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psutil
import pytest
from PySide6.QtCore import Qt

from app.run_life import RunState
from run_fixtures import TINY_MODEL_KWARGS, tiny_config

FAKE = Path(__file__).with_name("fake_launcher.py")
LAUNCH_MS = 300_000         # torchrun and two processes importing torch and timm on two busy cores
WAIT_MS = 30_000


def _page(qtbot, config, gpus: int = 2):
    from app.pages.train_page import TrainPage

    page = TrainPage(lambda: config, gpu_count=lambda: gpus,
                     launch_args=["--model-kwargs", json.dumps(TINY_MODEL_KWARGS)])
    qtbot.addWidget(page)
    return page


def _fake(monkeypatch, mode: str, marker: Path) -> list[Path]:
    """Launch the stand-in instead of torchrun; returns the run folders the page asked for."""
    import app.subprocess_run as subprocess_run

    asked: list[Path] = []

    def command(config, run_dir, processes, extra_args=()):
        asked.append(Path(run_dir))
        return [sys.executable, str(FAKE), mode, str(marker)]
    monkeypatch.setattr(subprocess_run, "torchrun_command", command)
    return asked


def test_the_button_is_offered_only_with_several_gpus(qtbot, tiny_dataset):
    config = tiny_config(tiny_dataset)
    assert _page(qtbot, config, gpus=1).gpus_button.isHidden()
    assert _page(qtbot, config, gpus=0).gpus_button.isHidden()
    page = _page(qtbot, config, gpus=4)
    assert not page.gpus_button.isHidden() and page.gpus_button.text() == "Use all 4 GPUs"


def test_the_command_is_torchrun_with_the_settings(tiny_dataset, tmp_path):
    from app.subprocess_run import torchrun_command

    config = tiny_config(tiny_dataset, epochs=3)
    cmd = torchrun_command(config, tmp_path / "run", 2)
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert cmd[5:8] == ["-m", "dtl_engine", "train"] and cmd[8] == str(tiny_dataset)
    assert cmd[cmd.index("--epochs") + 1] == "3" and cmd[cmd.index("--out") + 1] == str(tmp_path / "run")


@pytest.mark.slow
def test_all_gpus_trains_under_torchrun_follows_live_and_stops(qtbot, tiny_dataset):
    from dtl_engine.runs.folder import RunFolder

    config = tiny_config(tiny_dataset, epochs=200)          # far longer than the test lets it run
    page = _page(qtbot, config)
    ended: list = []
    page.run_finished.connect(ended.append)
    qtbot.mouseClick(page.gpus_button, Qt.MouseButton.LeftButton)
    assert page.is_running() and page.life.state is RunState.STARTING
    assert not page.start_button.isEnabled() and not page.pause_button.isEnabled()  # a subprocess is not paused
    assert page.stop_button.isEnabled()
    run_dir = Path(page.run_dir)
    # followed live: step points, then a validated epoch, while the processes train
    qtbot.waitUntil(lambda: page.life.state is RunState.RUNNING
                    and len(page.charts.accuracy.series("validation")[0]) >= 1, timeout=LAUNCH_MS)
    assert len(page.charts.loss.series("train (step)")[0]) >= 1
    assert "× 2 processes" in page.info_label.text()
    saved = RunFolder(run_dir).read_config()
    assert saved["world_size"] == 2 and saved["epochs"] == 200 and saved["backbone"] == "test_vit"

    page.stop()
    assert page.life.state is RunState.STOPPING
    t0 = time.monotonic()
    qtbot.waitUntil(lambda: page.life.state is RunState.STOPPED and not page.is_running(), timeout=WAIT_MS * 2)
    stopped_in = time.monotonic() - t0
    assert stopped_in < 60, f"the processes took {stopped_in:.0f} s to stop"
    run = RunFolder(run_dir).read_run()
    assert run["status"] == "stopped" and run["epochs_done"] >= 1
    assert RunFolder(run_dir).last_weights.is_file()
    assert ended and ended[-1].status == "stopped" and Path(ended[-1].run_dir) == run_dir
    assert page.start_button.isEnabled() and page.gpus_button.isEnabled()


def test_a_refused_launch_says_why_and_leaves_no_folder(qtbot, tiny_dataset, monkeypatch, tmp_path):
    asked = _fake(monkeypatch, "refuse", tmp_path / "marker")
    page = _page(qtbot, tiny_config(tiny_dataset))
    page.start_on_all_gpus()
    qtbot.waitUntil(lambda: page.life.state is RunState.FAILED and not page.is_running(), timeout=WAIT_MS)
    assert "only one class" in page.state_label.text()
    assert page.error_dialog.message_label.text().startswith("The image folder has only one class")
    assert asked and not asked[0].exists()          # the empty folder the app made for the run is gone
    page.error_dialog.close()


def test_a_launcher_that_ignores_stop_is_killed_after_the_bounded_wait(qtbot, tiny_dataset, monkeypatch, tmp_path):
    import app.subprocess_run as subprocess_run

    monkeypatch.setattr(subprocess_run, "STOP_WAIT_S", 1.0)
    marker = tmp_path / "marker"
    _fake(monkeypatch, "ignore", marker)
    page = _page(qtbot, tiny_config(tiny_dataset))
    page.start_on_all_gpus()
    qtbot.waitUntil(lambda: marker.exists(), timeout=WAIT_MS)
    pid = page.session.launch.pid
    page.stop()
    qtbot.waitUntil(lambda: not page.is_running(), timeout=WAIT_MS)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    # the launcher never started a run: stopped before it started, and its empty folder is gone
    qtbot.waitUntil(lambda: page.life.state is RunState.STOPPED, timeout=WAIT_MS)
    assert "before the run started" in page.state_label.text() and not Path(page.run_dir).exists()
    assert page.start_button.isEnabled() and not page.status()[0]


def test_closing_the_window_asks_then_stops_and_awaits_the_processes(qtbot, settings, tiny_dataset, wait_scan,
                                                                      monkeypatch, tmp_path):
    from app import jobs
    from app.main_window import MainWindow

    marker = tmp_path / "marker"
    _fake(monkeypatch, "wait", marker)
    window = MainWindow(settings)
    qtbot.addWidget(window)
    window.show()
    window.data_page.open_folder(str(tiny_dataset))
    wait_scan(window.data_page)
    window.train_page.set_gpu_count(2)
    window.train_page.start_on_all_gpus()
    qtbot.waitUntil(lambda: marker.exists() and marker.read_text() == "started", timeout=WAIT_MS)
    assert any(job.kind == "train" and job.loses_work for job in jobs.active_jobs())
    asked: list = []
    monkeypatch.setattr(window, "confirm_quit", lambda losing: asked.append(losing) or None)
    window.close()
    assert asked and window.isVisible() and window.train_page.is_running()     # "no": nothing stops
    monkeypatch.setattr(window, "confirm_quit", lambda losing: "stop")
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=WAIT_MS)
    assert marker.read_text() == "stopped"          # the launcher got the stop and ended before the window closed
    assert not window.train_page.is_running()

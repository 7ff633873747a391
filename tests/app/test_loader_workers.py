"""The app's runs decode in loader worker processes, safely beside Qt's threads.

A run in the app trains on a background thread; its loader workers start from the fork
server (Linux) or are spawned (macOS, Windows), never forked from the app's process. These
tests drive the real engine on a tiny model through the app's RunController, with the
default (automatic) worker count on a machine said to have three cores (so two workers).
"""
from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import psutil
import pytest

pytest.importorskip("pytestqt")

from app.worker import RunController
from dtl_engine.data import loader as loader_mod
from run_fixtures import tiny_config, tiny_train

WAIT_MS = 180_000           # bounded waits: a loaded two-core machine starts the fork server slowly


@pytest.fixture
def three_cores(monkeypatch):
    """The automatic worker count as on a three-core machine: two workers."""
    monkeypatch.setattr(loader_mod, "available_cores", lambda: 3)


def fork_server_children() -> list[psutil.Process]:
    """Live processes forked by the fork server (the loader workers on Linux); [] elsewhere."""
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid is None or not psutil.pid_exists(pid):
        return []
    return [p for p in psutil.Process(pid).children() if _alive(p)]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def no_workers_left() -> bool:
    return multiprocessing.active_children() == [] and fork_server_children() == []


def pausing_at(hook: str, train_fn, on_start=None):
    """``train_fn`` whose run pauses itself (as the Pause button does) at the first ``hook`` call.

    ``on_start()`` runs on the run's thread when the run has started (its folder scanned).
    """
    def run(config, listener=None, token=None, **kwargs):
        original, started = getattr(listener, hook), listener.run_started

        def hook_then_pause(*args):
            if not getattr(run, "paused", False):
                run.paused = True
                token.pause()
            original(*args)

        def start_then_act(info):
            if on_start is not None:
                on_start()
            started(info)
        setattr(listener, hook, hook_then_pause)
        listener.run_started = start_then_act
        return train_fn(config, listener=listener, token=token, **kwargs)
    return run


def _workers_while_paused(qtbot, controller: RunController) -> list[multiprocessing.Process]:
    qtbot.waitUntil(controller.is_paused, timeout=WAIT_MS)
    workers = multiprocessing.active_children()
    if loader_mod.worker_context().get_start_method() == "forkserver":   # not forked from the app
        assert all(psutil.Process(w.pid).ppid() != os.getpid() for w in workers)
        assert {w.pid for w in workers} <= {p.pid for p in fork_server_children()}
    return workers


def test_a_run_in_the_app_decodes_in_worker_processes_and_leaves_none(qtbot, tiny_dataset, three_cores):
    controller = RunController(train_fn=pausing_at("batch_finished", tiny_train()))
    with qtbot.waitSignal(controller.finished, timeout=WAIT_MS) as finished:
        controller.start_training(tiny_config(tiny_dataset, epochs=2))
        workers = _workers_while_paused(qtbot, controller)
        assert len(workers) == 2 and all(w.is_alive() for w in workers)   # the training loader's two
        controller.resume()
    assert finished.args[0].status == "finished" and finished.args[0].epochs_done == 2
    qtbot.waitUntil(no_workers_left, timeout=30_000)


def _jpeg(path: Path) -> Path:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path, quality=95)
    return path


def _truncate(path: Path) -> None:
    """Cut a JPEG short half-way (after the scan accepted it, as a file being rewritten is)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_corrupt_image_met_in_a_worker_is_reported_once_and_skipped(qtbot, tiny_dataset, three_cores):
    bad = _jpeg(tiny_dataset / "red" / "red_truncated.jpg")
    controller = RunController(train_fn=pausing_at("warning", tiny_train(), on_start=lambda: _truncate(bad)))
    warnings: list[str] = []
    controller.warning.connect(warnings.append)
    with qtbot.waitSignal(controller.finished, timeout=WAIT_MS) as finished:
        controller.start_training(tiny_config(tiny_dataset, epochs=2))
        assert _workers_while_paused(qtbot, controller)       # the image was met by a worker
        controller.resume()
    result = finished.args[0]
    assert result.status == "finished" and result.epochs_done == 2      # skipped, not fatal
    about_it = [w for w in warnings if bad.name in w]
    assert len(about_it) == 1 and about_it[0].startswith("Left out an image"), warnings
    qtbot.waitUntil(no_workers_left, timeout=30_000)


def test_stop_during_a_run_with_workers_ends_promptly_and_keeps_the_checkpoint(qtbot, tiny_dataset, three_cores):
    from dtl_engine.runs import checkpoint as ckpt

    controller = RunController(train_fn=tiny_train())
    with qtbot.waitSignal(controller.checkpoint, timeout=WAIT_MS) as saved:
        controller.start_training(tiny_config(tiny_dataset, epochs=200))
    assert multiprocessing.active_children()                      # workers are serving epoch 2
    with qtbot.waitSignal(controller.finished, timeout=30_000) as finished:
        controller.stop()
    result = finished.args[0]
    assert result.status == "stopped" and 1 <= result.epochs_done < 200
    assert ckpt.load_weights(saved.args[0])                       # the last checkpoint loads
    qtbot.waitUntil(no_workers_left, timeout=30_000)


def test_a_worker_killed_mid_run_fails_the_run_with_a_sentence_and_leaves_the_gui_thread_alone(
        qtbot, tiny_dataset, three_cores):
    # torch's SIGCHLD handler, once installed by a loader on the main thread (the command line
    # does so), checks the workers on every child's exit and raises in whatever the main thread
    # runs: with forked workers that was a chart's paint. Workers from the fork server are not
    # this process's children, so their end reaches the run's own thread only.
    import signal

    import torch.utils.data._utils.signal_handling as torch_signals

    torch_signals._set_SIGCHLD_handler()
    assert callable(signal.getsignal(signal.SIGCHLD))
    controller = RunController(train_fn=pausing_at("batch_finished", tiny_train()))
    ended: list[tuple] = []
    controller.failed.connect(lambda *args: ended.append(("failed", *args)))
    controller.finished.connect(lambda result: ended.append(("finished", result.status)))
    # light augmentation: every epoch decodes again (no feature cache), so epoch 2 needs every worker
    controller.start_training(tiny_config(tiny_dataset, epochs=3, augment="light"))
    workers = _workers_while_paused(qtbot, controller)
    os.kill(workers[0].pid, signal.SIGKILL)
    controller.resume()
    qtbot.waitUntil(lambda: bool(ended), timeout=WAIT_MS)
    assert ended[0][0] == "failed", ended
    message = ended[0][1]
    assert message.startswith("A process that loads the images ended unexpectedly") and "resumed" in message, message
    qtbot.waitUntil(no_workers_left, timeout=30_000)

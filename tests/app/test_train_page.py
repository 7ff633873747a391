"""Train page with the real engine on a tiny model: live curves, stop, pause / resume, errors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from app.pages.train_page import TrainPage
from dtl_engine.formatting import format_duration
from run_fixtures import tiny_config, tiny_train, train_now

SCREENS = os.environ.get("DTL_SCREENSHOT_DIR")  # optional: keep the page grabs for a human to look at


def _page(qtbot, config):
    page = TrainPage(lambda: config, train_fn=tiny_train())
    qtbot.addWidget(page)
    page.resize(1100, 760)
    page.show()
    return page


def _grab(page, tmp_path, name):
    page.charts.refresh()
    path = Path(SCREENS or tmp_path) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    assert page.grab().save(str(path))
    assert path.stat().st_size > 10_000  # a real picture, not an empty widget
    return path


def _buttons(page):
    return (page.start_button.isEnabled(), page.pause_button.isEnabled(),
            page.resume_button.isEnabled(), page.stop_button.isEnabled())


def test_a_run_draws_curves_and_finishes(qtbot, tiny_dataset, tmp_path, themed):
    page = _page(qtbot, tiny_config(tiny_dataset, epochs=3))
    page.set_reference_memory(3_000_000_000)
    assert _buttons(page) == (True, False, False, False)
    assert page.status()[0] is False

    with qtbot.waitSignal(page.run_started, timeout=120000) as started:
        page.start()
    assert _buttons(page)[0] is False and page.is_running()
    assert Path(started.args[0]).is_dir()
    with qtbot.waitSignal(page.run_finished, timeout=120000) as finished:
        pass
    result = finished.args[0]
    assert result.status == "finished"
    qtbot.waitUntil(lambda: not page.is_running(), timeout=5000)

    # Curves: every step's loss, 3 epochs of validation, accuracy per epoch, memory and speed.
    page.charts.refresh()
    steps = page.progress.maximum()
    assert page.charts.loss.drawn_points("train (step)") == steps
    assert page.charts.loss.drawn_points("validation") == 3
    assert page.charts.accuracy.drawn_points("validation") == 3
    assert page.charts.memory.drawn_points("now") == steps
    assert page.charts.throughput.drawn_points("images/s (smoothed)") == steps
    # A CPU run's curve is the whole process: the accelerator estimate is not drawn beside it,
    x, _ = page.charts.memory.series("full fine-tuning (est.)")
    assert len(x) == 0
    page.charts.set_memory_kind("cuda")     # but on a GPU run it is
    x, y = page.charts.memory.series("full fine-tuning (est.)")
    assert list(y) == [3e9, 3e9] and x[-1] >= 3
    assert page.progress.value() == steps
    assert "CPU" in page.info_label.text() and "fp32" in page.info_label.text()
    assert "Trainable" in page.info_label.text()
    assert "Finished" in page.log_view.toPlainText()
    ready, text = page.status()
    assert ready and "Finished" in text
    qtbot.waitUntil(lambda: _buttons(page) == (True, False, False, False), timeout=30_000)
    _grab(page, tmp_path, "train_after_run.png")


def test_stop_mid_run_leaves_a_checkpoint(qtbot, tiny_dataset, tmp_path, themed):
    page = _page(qtbot, tiny_config(tiny_dataset, epochs=40))
    with qtbot.waitSignal(page.controller.checkpoint, timeout=120000):
        page.start()
    assert _buttons(page) == (False, True, False, True)
    _grab(page, tmp_path, "train_mid_run.png")
    with qtbot.waitSignal(page.run_finished, timeout=60000) as finished:
        page.stop()
        assert page.status()[1].startswith("Stopping")
    result = finished.args[0]
    assert result.status == "stopped" and 1 <= result.epochs_done < 40
    assert Path(result.run_dir, "checkpoint.safetensors").exists()
    run = json.loads(Path(result.run_dir, "run.json").read_text())
    assert run["status"] == "stopped"
    assert page.status()[1].startswith("Stopped after ") and not page.status()[0]     # no green check
    assert "press Resume to continue at epoch" in page.state_label.text()
    # Start and Resume come back once the run's thread has returned, which may be just after the final signal.
    qtbot.waitUntil(lambda: _buttons(page) == (True, False, True, False), timeout=30_000)


@pytest.mark.slow
def test_pause_holds_and_resume_continues(qtbot, tiny_dataset):
    page = _page(qtbot, tiny_config(tiny_dataset, epochs=6))
    with qtbot.waitSignal(page.controller.batch, timeout=120000):
        page.start()
    page.pause()
    assert _buttons(page) == (False, False, True, True)
    qtbot.wait(400)  # let the batch in flight land
    before = page.progress.value()
    qtbot.wait(600)
    assert page.progress.value() == before and page.is_running()
    page.resume()
    assert _buttons(page) == (False, True, False, True)
    with qtbot.waitSignal(page.run_finished, timeout=120000) as finished:
        pass
    assert finished.args[0].status == "finished" and finished.args[0].epochs_done == 6


def test_engine_failure_shows_a_readable_dialog(qtbot, tmp_path):
    page = _page(qtbot, tiny_config(tmp_path / "nowhere"))
    with qtbot.waitSignal(page.run_failed, timeout=120000) as failed:
        page.start()
    message = failed.args[0]
    assert message and "Traceback" not in message
    dialog = page.error_dialog
    assert dialog.isVisible() and dialog.message_label.text() == message
    assert not dialog.details_view.isVisible() and dialog.details_button.isEnabled()
    dialog.details_button.click()
    assert dialog.details_view.isVisible() and "Error" in dialog.details_view.toPlainText()
    assert page.status() == (False, message)
    # one can fix the input and start again, once the run's thread has returned
    qtbot.waitUntil(lambda: _buttons(page)[0] is True, timeout=30_000)
    dialog.close()


def test_a_bad_config_never_starts_and_says_why(qtbot):
    def provider():
        from dtl_engine.config import TrainConfig
        return TrainConfig(data_dir="x", epochs=0)

    page = TrainPage(provider)
    qtbot.addWidget(page)
    with qtbot.waitSignal(page.run_failed, timeout=2000) as failed:
        page.start()
    assert "at least one epoch" in failed.args[0]
    assert not page.is_running()
    page.error_dialog.close()


def test_load_history_draws_a_finished_run(qtbot, tiny_dataset, tmp_path):
    result = train_now(tiny_dataset, epochs=2)
    page = TrainPage(lambda: None)
    qtbot.addWidget(page)
    page.load_history(result.run_dir)
    assert page.charts.accuracy.drawn_points("validation") == 2
    assert page.charts.loss.drawn_points("validation") == 2
    ready, text = page.status()
    assert ready and text.startswith("Opened — 2 epoch(s), best ")
    assert Path(result.run_dir).name in page.state_label.text()       # the page names the run


def test_format_duration():
    assert format_duration(42) == "0:42"
    assert format_duration(3725) == "1:02:05"


def test_the_search_is_a_phase_with_a_determinate_bar_its_figures_and_stop(qtbot, tiny_dataset, tmp_path):
    import threading

    from dtl_engine.listener import RunListener

    real = tiny_train()
    held, release = threading.Event(), threading.Event()

    class HoldAfterFirstTrials(RunListener):
        """Passes every call on; holds the run (in its own thread) once the first trials have reported."""

        def __init__(self, inner):
            self.inner = inner

        def __getattribute__(self, name):
            if name in ("inner", "search_progress"):
                return object.__getattribute__(self, name)
            return getattr(object.__getattribute__(self, "inner"), name)

        def search_progress(self, progress):
            self.inner.search_progress(progress)
            if progress.trial and not held.is_set():
                held.set()
                release.wait(60)

    def train_fn(config, listener=None, token=None, **kw):
        return real(config, listener=HoldAfterFirstTrials(listener), token=token, **kw)

    # the product's defaults: the rate and the augmentation are searched
    page = TrainPage(lambda: tiny_config(tiny_dataset, lr="auto", augment="auto", cache_features="auto"),
                     train_fn=train_fn)
    qtbot.addWidget(page)
    page.show()
    page.start()
    try:
        qtbot.waitUntil(lambda: "trial" in page.progress.format(), timeout=60000)
        assert page.progress.maximum() > 0                     # determinate, not the busy bar
        assert 0 < page.progress.value() < page.progress.maximum()
        assert page.progress.format().startswith("Choosing the learning rate and augmentation — trial ")
        assert " of " in page.progress.format()
        assert "Choosing the learning rate and augmentation" in page.status()[1]
        assert "Search, trial " in page.log_view.toPlainText()    # its figures, as they come
        assert page.stop_button.isEnabled()
        page.resize(1100, 760)
        _grab(page, tmp_path, "train_search_phase.png")
        page.stop()
    finally:
        release.set()
    with qtbot.waitSignal(page.run_finished, timeout=60000) as finished:
        pass
    assert finished.args[0].status == "stopped"


def test_the_first_model_is_shown_before_epoch_1(qtbot, tiny_dataset):
    page = TrainPage(lambda: tiny_config(tiny_dataset, lr="auto", augment="auto", cache_features="auto", epochs=1),
                     train_fn=tiny_train())
    qtbot.addWidget(page)
    page.show()
    with qtbot.waitSignal(page.run_finished, timeout=120000):
        page.start()
    log = page.log_view.toPlainText()
    first = log.index("First model: ")
    assert "% — refining with DTL…" in log[first:]
    assert first < log.index("Epoch 1/1")


def test_the_bar_shows_the_time_left_as_a_range_until_it_settles(qtbot, themed):
    # Issue 23, item 7: while a phase of the run is unmeasured the engine sends a range, and the bar says it.
    from dtl_engine.events import make
    from dtl_engine.listener import BatchStats
    from run_fixtures import relayed_run_page

    page = relayed_run_page(qtbot)

    def batch(step: int, low: float, high: float) -> str:
        page.session._relay(make("batch", BatchStats(
            epoch=0, step=step, steps_per_epoch=10, global_step=step + 1, total_steps=20, loss=1.0, lr=0.1,
            images_per_sec=8.0, eta_seconds=(low + high) / 2, memory_bytes=0, peak_memory_bytes=0,
            eta_low_seconds=low, eta_high_seconds=high)))
        page._show_progress()
        return page.progress.format()

    assert "about 3–9 min left" in batch(0, 180, 540)            # epoch 1 measured, the cached epochs not yet
    assert "3 min 11 s left" in batch(1, 191, 191)              # every phase timed: one figure


def test_the_headline_follows_the_best_accuracy_kept(qtbot, themed):
    # The walk-through at the defaults read "First model: 36.5 % — refining with DTL…" through epoch 5 while
    # the run kept 45.1 %.
    from dtl_engine.events import make
    from dtl_engine.listener import EpochStats, FirstModel
    from run_fixtures import relayed_run_page

    page = relayed_run_page(qtbot)
    page.session._relay(make("first_model", FirstModel(val_loss=1.8, val_acc=0.365, seconds=60.0, path="best")))
    assert page.state_label.text().endswith("First model: 36.5 % — refining with DTL…</b></span>")

    def epoch(n: int, acc: float, best: bool) -> str:
        page.session._relay(make("epoch", EpochStats(epoch=n, epochs=10, train_loss=1.5, train_acc=acc,
                                                     val_loss=1.5, val_acc=acc, seconds=30.0, is_best=best)))
        return page.state_label.text()

    assert "Best so far: 36.5 %" in epoch(0, 0.348, False)       # epoch 1 below the first model: it stays
    assert "Best so far: 45.1 %" in epoch(1, 0.451, True)
    assert "Best so far: 45.1 %" in epoch(2, 0.423, False)

"""The Train step's run session: Resume where Stop is, a re-opened run's state, the log and curves that
stay, a run stopped before epoch 1 on Results and Export, and the texts and one-click answers of a first run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from app.main_window import EXPORT, RESULTS, TRAIN, MainWindow
from app.pages.run_words import what_runs
from app.pages.train_page import TrainPage
from app.run_life import RunState
from dtl_engine.config import TrainConfig
from dtl_engine.errors import WeightsError
from dtl_engine.events import RunEnded
from run_fixtures import make_image_folder, stopped_run, tiny_config, tiny_train

WAIT_MS = 120_000


def _window(qtbot, settings, **kwargs) -> MainWindow:
    window = MainWindow(settings, **kwargs)
    qtbot.addWidget(window)
    window.resize(1100, 760)
    return window


def _step_xs(page) -> list[float]:
    page.charts.refresh()
    return list(page.charts.loss.series("train (step)")[0])


# --- item 3: Resume lives where Stop is ----------------------------------------------------------------
def test_a_stopped_run_resumes_from_the_train_step_and_keeps_its_curves(qtbot, settings, tmp_path, monkeypatch):
    monkeypatch.setenv("DTL_STUDIO_HOME", str(tmp_path / "home"))
    data = make_image_folder(tmp_path / "images")
    window = _window(qtbot, settings, train_fn=tiny_train())
    page = window.train_page
    page._config_provider = lambda: tiny_config(data, epochs=3)
    with qtbot.waitSignal(page.controller.epoch, timeout=WAIT_MS):
        window.start_training()
    with qtbot.waitSignal(page.run_finished, timeout=WAIT_MS) as finished:
        page.stop()
    ended = finished.args[0]
    assert isinstance(ended, RunEnded) and ended.status == "stopped" and 1 <= ended.epochs_done < 3
    # Resume is where Stop is: on the Train step and in the Run menu (once the run's thread has returned),
    # and the state says how far it came.
    qtbot.waitUntil(lambda: page.resume_button.isEnabled() and window.resume_action.isEnabled(), timeout=30_000)
    assert not page.is_running()
    assert f"Stopped after {ended.epochs_done} of 3 epochs" in page.state_label.text()
    assert not page.status()[0], "no green check for a stopped run"
    assert "Resume it from the Runs page" not in page.log_view.toPlainText()
    before = [x for x in _step_xs(page) if x <= ended.epochs_done]
    assert before

    # item 10: the resumed run keeps the step curves (and speed, memory) of the epochs it keeps
    with qtbot.waitSignal(page.controller.batch, timeout=WAIT_MS):
        window.resume_action.trigger()
    assert page.life.busy
    assert "Best so far: " in page.state_label.text(), "the resumed run's headline forgot what it kept"
    qtbot.waitUntil(lambda: len([x for x in _step_xs(page) if x <= ended.epochs_done]) == len(before),
                    timeout=30_000)
    assert page.charts.throughput.drawn_points("images/s (smoothed)") >= len(before)
    with qtbot.waitSignal(page.run_finished, timeout=WAIT_MS) as finished:
        pass
    assert finished.args[0].status == "finished" and finished.args[0].epochs_done == 3
    xs = _step_xs(page)
    assert xs == sorted(xs), "the resumed epochs are drawn once, after the kept ones"


def test_a_reopened_stopped_run_says_so_and_resumes(qtbot, settings, tmp_path, monkeypatch, themed):
    monkeypatch.setenv("DTL_STUDIO_HOME", str(tmp_path / "home"))
    result = stopped_run(make_image_folder(tmp_path / "images"), stop_after_epoch=0, epochs=3)
    assert result.status == "stopped" and result.epochs_done == 1
    window = _window(qtbot, settings)
    window.open_run(result.run_dir)
    page = window.train_page
    assert page.life.state is RunState.IDLE and page.session.shown.run_dir == result.run_dir
    text = page.state_label.text()
    assert "Stopped after 1 of 3 epochs" in text and "press Resume to continue at epoch 2" in text
    ready, line = window.step_states()[TRAIN]
    assert not ready and line.startswith("Opened — stopped after 1 of 3 epochs")
    assert page.progress.value() < page.progress.maximum(), "no full bar for a stopped run"
    assert page.resume_button.isEnabled() and window.resume_action.isEnabled()
    with qtbot.waitSignal(page.run_finished, timeout=WAIT_MS) as finished:
        page.resume_button.click()
    assert finished.args[0].status == "finished" and finished.args[0].epochs_done == 3
    assert json.loads(Path(result.run_dir, "run.json").read_text())["status"] == "finished"


# --- item 10: the log follows new lines after an Open ---------------------------------------------------
def test_the_log_follows_new_lines_after_a_run_is_opened_while_hidden(qtbot, finished_run):
    page = TrainPage(lambda: None)
    qtbot.addWidget(page)
    page.resize(900, 500)
    page.load_history(finished_run.run_dir)         # filled while the page is not on screen
    qtbot.waitUntil(lambda: "Epoch 3/3" in page.log_view.toPlainText(), timeout=30_000)
    for i in range(80):
        page.log(f"a later line {i}")
    page.show()
    qtbot.waitExposed(page)
    page.log("the newest line")
    bar = page.log_view.verticalScrollBar()
    assert bar.maximum() > 0 and bar.value() == bar.maximum(), "the newest line is out of sight"


# --- item 5: a run stopped before epoch 1 replaces the last run's figures --------------------------------
def test_results_and_export_say_no_model_yet_after_a_run_stopped_before_epoch_1(qtbot, settings, tmp_path,
                                                                                  finished_run):
    window = _window(qtbot, settings)
    window.results_page.show_run(finished_run.run_dir)
    window.export_page.set_run(finished_run.run_dir)
    assert window.export_page.export_button.isEnabled()
    empty = tmp_path / "runs" / "stopped"
    empty.mkdir(parents=True)
    (empty / "run.json").write_text(json.dumps({"schema": 1, "status": "stopped", "epochs_done": 0}))
    window.train_page.run_finished.emit(RunEnded(str(empty), "stopped", 0))
    assert window.results_page.run_dir == str(empty) and window.export_page.run_dir == str(empty)
    assert "No model yet" in window.results_page.headline.text()
    assert not window.export_page.export_button.isEnabled()
    assert not window.step_states()[RESULTS][0] and not window.step_states()[EXPORT][0]


def test_a_run_stopped_with_its_first_model_can_be_exported(qtbot, tmp_path, finished_run):
    from app.pages.export_page import ExportPage
    from dtl_engine.runs.folder import RunFolder

    first = tmp_path / "first"
    first.mkdir()
    (first / "run.json").write_text(json.dumps({"schema": 1, "status": "stopped", "epochs_done": 0}))
    best = RunFolder(finished_run.run_dir).best_weights
    (first / best.name).write_bytes(best.read_bytes())     # the step-0 model is the run's best weights
    page = ExportPage()
    qtbot.addWidget(page)
    page.set_run(str(first))
    assert page.export_button.isEnabled() and "nothing to export" not in page.status()[1]


def test_the_steps_of_a_run_stopped_after_an_epoch_say_what_it_has(qtbot, settings, tmp_path, monkeypatch):
    # The walk-through at the defaults, stopped after 4 of 10 epochs: Export read "Waiting for a trained model"
    # beside a page ready to export, and Results "Waiting for a finished run" while it loaded that run's results.
    monkeypatch.setenv("DTL_STUDIO_HOME", str(tmp_path / "home"))
    result = stopped_run(make_image_folder(tmp_path / "images", per_class=6), stop_after_epoch=0)
    assert result.status == "stopped" and result.epochs_done == 1
    window = _window(qtbot, settings)
    window.train_page.run_finished.emit(RunEnded(result.run_dir, "stopped", 1, epochs=3))
    assert window.step_states()[EXPORT] == (False, "Ready to export")
    assert window.step_states()[RESULTS][1].startswith("Loading the results of ")
    qtbot.waitUntil(lambda: window.step_states()[RESULTS][0], timeout=WAIT_MS)
    assert window.step_states()[RESULTS][1].startswith("accuracy ")


# --- items 14 and 15: what the Train step says on a first run ----------------------------------------------
def test_the_start_line_says_what_runs():
    config = TrainConfig(data_dir="x", backbone="vit_tiny_patch16_224.augreg_in21k_ft_in1k", weights="random",
                         image_size=64, epochs=10)
    line = what_runs(config)
    assert line.startswith("vit_tiny_patch16_224 with random weights, 64 px") and "augreg" not in line


def test_a_stop_before_any_epoch_does_not_promise_a_kept_epoch(qtbot, tiny_dataset):
    page = TrainPage(lambda: tiny_config(tiny_dataset, epochs=2), train_fn=tiny_train())
    qtbot.addWidget(page)
    with qtbot.waitSignal(page.controller.batch, timeout=WAIT_MS):
        page.start()
    with qtbot.waitSignal(page.run_finished, timeout=WAIT_MS) as finished:
        page.stop()
    assert finished.args[0].epochs_done == 0
    log = page.log_view.toPlainText()
    assert "keeps its last completed epoch" not in log and "keeps nothing yet" in log


def _offline_train(config, listener=None, token=None, **_kwargs):
    raise WeightsError("The pretrained weights could not be downloaded: this computer is offline.")


def test_weights_that_cannot_be_had_offer_random_weights_in_one_click(qtbot, settings, image_folder, wait_scan):
    calls = []
    window = _window(qtbot, settings, train_fn=_offline_train)
    window.data_page.open_folder(str(image_folder))
    wait_scan(window.data_page)
    assert not window.statusBar().currentMessage().startswith("Drop an image folder"), "a folder is loaded"
    window.model_page.w_hub.setChecked(True)
    page = window.train_page
    with qtbot.waitSignal(page.run_failed, timeout=WAIT_MS):
        window.start_training()
    labels = [b.text() for b in page.error_dialog.action_buttons]
    assert labels == ["Use random weights", "Choose a weights file…"]
    page.session.controller.start_task = lambda task: calls.append(task)     # the next run is not run here
    page.error_dialog.action_buttons[0].click()     # the failed run's thread may not have let go yet
    qtbot.waitUntil(lambda: bool(calls), timeout=WAIT_MS)
    assert window.model_page.w_random.isChecked(), "random weights chosen and the run started"
    assert "could not be downloaded" not in page.state_label.text()


def test_the_weights_error_goes_once_the_settings_change(qtbot, settings, image_folder, wait_scan):
    window = _window(qtbot, settings, train_fn=_offline_train)
    window.data_page.open_folder(str(image_folder))
    wait_scan(window.data_page)
    window.model_page.w_hub.setChecked(True)
    page = window.train_page
    with qtbot.waitSignal(page.run_failed, timeout=WAIT_MS):
        window.start_training()
    page.error_dialog.close()
    assert page.life.state is RunState.FAILED
    window.model_page.w_random.setChecked(True)
    assert page.life.state is RunState.IDLE and "offline" not in page.state_label.text()


# --- item 14: the status bar's drop hint holds only while no folder is loaded ---------------------------------
def test_the_drop_hint_shows_without_a_folder_and_goes_once_one_is_loaded(qtbot, settings, image_folder,
                                                                          wait_scan):
    def hint(window) -> bool:
        return window.statusBar().currentMessage().startswith("Drop an image folder")

    window = _window(qtbot, settings)
    assert hint(window), "a first launch says how to begin"
    window.data_page.open_folder(str(image_folder))
    wait_scan(window.data_page)
    assert not hint(window), "a folder is loaded"

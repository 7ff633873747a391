"""Main window: step bar statuses, wiring between pages, shortcuts, settings, closing during a run, main()."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
from PySide6.QtCore import QByteArray
from PySide6.QtWidgets import QApplication, QMessageBox

from app import main as app_main
from app.main_window import DATA, EXPORT, MODEL, RESULTS, RUNS, TRAIN, MainWindow
from app.settings import Settings
from dtl_engine.events import RunEnded
from dtl_engine.listener import RunStarted


def slow_train(started: threading.Event, seen: dict):
    """A stand-in for the engine's train(): runs until asked to stop, like a real run between batches."""
    def train(config, listener=None, token=None, run_dir=None, scan=None):
        seen["config"], seen["scan"] = config, scan
        listener.run_started(RunStarted("run-fake", "cpu", "CPU", "fp32", 1, 1000, 0, ["a", "b"], 8, 2, 10, 100))
        started.set()
        for _ in range(3000):
            token.wait_while_paused()
            if token.stop_requested:
                seen["stopped"] = True
                return SimpleNamespace(run_dir="run-fake", status="stopped", epochs_done=0, best_epoch=None,
                                       best_val_acc=None, report=None)
            time.sleep(0.01)
        raise AssertionError("the run was never asked to stop")
    return train


@pytest.fixture
def window(qtbot, settings, themed):
    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.resize(1280, 820)
    w.show()
    yield w


def test_step_bar_says_what_each_step_waits_for(qtbot, window, image_folder, wait_scan, screens_dir):
    states = window.step_states()
    assert states[DATA] == (False, "Waiting for an image folder")
    assert states[MODEL][0] is True and states[MODEL][1].startswith("test_vit · DTL")
    assert states[TRAIN] == (False, "Waiting for an image folder")
    assert states[RESULTS] == (False, "Waiting for a finished run")
    assert states[EXPORT] == (False, "Waiting for a trained model")

    window.data_page.open_folder(str(image_folder))
    wait_scan(window.data_page)
    states = window.step_states()
    assert states[DATA] == (True, "3 classes · 18 images")
    assert states[TRAIN][1] != "Waiting for an image folder"
    assert window.model_page.num_classes == 3            # the scan reached the model page
    QApplication.processEvents()
    assert window.grab().save(str(screens_dir / "window_data.png"))
    window.show_step(MODEL)
    QApplication.processEvents()
    assert window.grab().save(str(screens_dir / "window_model.png"))


def test_step_shortcuts_and_menu_actions(window):
    assert window.open_action.shortcut().toString() == "Ctrl+O"
    assert window.train_action.shortcut().toString() == "Ctrl+R"
    assert window.export_action.shortcut().toString() == "Ctrl+E"
    assert window.quit_action.shortcut().toString() == "Ctrl+Q"
    for i, action in enumerate(window.step_actions):
        assert action.shortcut().toString() == f"Ctrl+{i + 1}"
        action.trigger()
        assert window.current_step() == i
        assert window.step_bar.buttons[i].isChecked()
    window.export_action.trigger()
    assert window.current_step() == EXPORT
    window.step_bar.buttons[RUNS].click()               # clicking a step shows its page
    assert window.current_step() == RUNS


def test_train_without_data_explains(qtbot, window):
    window.start_training()
    assert window.current_step() == TRAIN
    assert not window.train_page.is_running()
    with pytest.raises(Exception, match="image folder"):
        window.config_for_run()


def test_finished_run_is_shown_in_results_and_export(window, monkeypatch):
    calls = []
    monkeypatch.setattr(window.results_page, "show_run", lambda d: calls.append(("results", d)))
    monkeypatch.setattr(window.export_page, "set_run", lambda d: calls.append(("export", d)))
    monkeypatch.setattr(window.train_page, "load_history", lambda d: calls.append(("train", d)))
    window.train_page.run_finished.emit(RunEnded("runs/a", "finished", 2))
    assert calls == [("results", "runs/a"), ("export", "runs/a")]
    assert window.current_step() == RESULTS
    calls.clear()
    window.show_step(RUNS)
    window.runs_page.open_run.emit("runs/b")
    assert sorted(calls) == [("export", "runs/b"), ("results", "runs/b"), ("train", "runs/b")]
    assert window.current_step() == RESULTS


def test_settings_round_trip(private_settings, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    first = Settings()
    first.add_recent_folder(str(folder))
    first.set_last_config({"backbone": "test_vit", "rank": 3})
    first.set_geometry(QByteArray(b"geometry-bytes"))
    again = Settings()
    assert again.last_folder() == str(folder)
    assert again.recent_folders() == [str(folder)]
    assert again.last_config() == {"backbone": "test_vit", "rank": 3}
    assert bytes(again.geometry().data()) == b"geometry-bytes"
    assert private_settings.exists()              # the private INI file, not the user's settings


@pytest.mark.slow
def test_window_geometry_is_remembered(qtbot, settings, themed, monkeypatch):
    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.resize(1111, 777)
    w.show()
    saved = bytes(w.saveGeometry().data())
    w.close()
    assert bytes(settings.geometry().data()) == saved
    restored = []
    # The headless screen is smaller than the window, so Qt clamps sizes: check what is handed back instead.
    monkeypatch.setattr(MainWindow, "restoreGeometry", lambda self, g: restored.append(bytes(g.data())) or True)
    again = MainWindow(settings)
    qtbot.addWidget(again)
    assert restored == [saved]


def _answer(monkeypatch, choice: str) -> list[str]:
    """Make the close question answer ``choice`` ('stop' and quit, or 'cancel') without showing it."""
    asked = []

    def fake_exec(box):
        asked.append(box.text())
        return 0

    def fake_clicked(box):
        if choice == "cancel":
            return box.button(QMessageBox.StandardButton.Cancel)
        return next(b for b in box.buttons() if b.text().startswith("Stop"))

    monkeypatch.setattr(QMessageBox, "exec", fake_exec)
    monkeypatch.setattr(QMessageBox, "clickedButton", fake_clicked)
    return asked


@pytest.mark.slow
def test_closing_during_a_run_asks_then_stops_cleanly(qtbot, settings, themed, image_folder, wait_scan,
                                                      monkeypatch):
    started, seen = threading.Event(), {}
    w = MainWindow(settings, train_fn=slow_train(started, seen))
    qtbot.addWidget(w)
    w.show()
    w.data_page.open_folder(str(image_folder))
    wait_scan(w.data_page)
    w.train_action.trigger()
    qtbot.waitUntil(started.is_set, timeout=10_000)
    assert w.train_page.is_running()
    assert seen["config"].data_dir == str(image_folder)
    assert seen["scan"] is w.data_page.scan_result()        # the Data step's scan travels: no second scan

    asked = _answer(monkeypatch, "cancel")
    assert w.close() is False
    assert len(asked) == 1 and "A run is training" in asked[0]
    assert w.isVisible() and w.train_page.is_running()

    asked = _answer(monkeypatch, "stop")
    w.close()
    assert len(asked) == 1
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=20_000)
    assert seen.get("stopped") is True and not w.train_page.is_running()


def test_main_without_display_says_so(monkeypatch, capsys):
    for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(app_main.sys, "platform", "linux")
    assert app_main.main([]) == 2
    out = capsys.readouterr().out.strip()
    assert "no display" in out and "--self-test" in out and out.count("\n") == 0


def test_main_dispatches_the_self_test(monkeypatch):
    import app.self_test

    seen = []
    monkeypatch.setattr(app.self_test, "run", lambda argv: seen.append(list(argv)) or 0)
    assert app_main.main(["--self-test"]) == 0
    assert seen == [["--self-test"]]


def test_recent_menu_reopens_a_folder(qtbot, window, image_folder, wait_scan):
    window.settings.add_recent_folder(str(image_folder))
    window._fill_recent_menu()
    actions = [a for a in window.recent_menu.actions() if a.text() == str(image_folder)]
    assert len(actions) == 1
    actions[0].trigger()
    assert window.current_step() == DATA
    wait_scan(window.data_page)
    assert window.data_page.data_root() == str(image_folder)


def test_theme_follows_a_dark_system_scheme(qapp, monkeypatch):
    from PySide6.QtGui import QPalette

    import app.theme as theme

    monkeypatch.setattr(theme, "is_dark", lambda: True)
    theme.apply_theme(qapp)
    dark = qapp.palette().color(QPalette.ColorRole.Window).lightness()
    assert dark < 80 and "#262a31" in qapp.styleSheet()
    monkeypatch.setattr(theme, "is_dark", lambda: False)
    theme.apply_theme(qapp)
    assert qapp.palette().color(QPalette.ColorRole.Window).lightness() > 200


def test_main_opens_the_window_with_the_sample(qtbot, settings, monkeypatch):
    from PySide6.QtWidgets import QApplication as QApp

    from app.pages.data_page import DataPage

    opened = []
    monkeypatch.setattr(DataPage, "use_sample", lambda self: opened.append(self))
    monkeypatch.setattr(QApp, "exec", lambda *a: 0)       # do not enter the event loop
    assert app_main.main(["--sample"]) == 0
    assert len(opened) == 1
    windows = [w for w in QApp.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
    assert windows and windows[-1].data_page is opened[0]
    for w in windows:
        w.close()
        w.deleteLater()

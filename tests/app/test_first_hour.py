"""A new user's first hour, through the real widgets: sample data → model → train → stop → resume
→ results → export → try it → runs, checking what the user sees at each step.

The engine runs for real on timm's tiny ``test_vit`` with random weights; the sample set is
replaced by a small folder of coloured images so the hour takes well under a minute.
Each defect of the first try has its own test in test_first_hour_fixes.py; this one keeps the
whole path working together.
"""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt

from app.main_window import DATA, EXPORT, MODEL, RESULTS, RUNS, TRAIN, MainWindow
from app.pages.runs_page import COLUMNS
from run_fixtures import make_image_folder, tiny_train
from test_first_hour_fixes import _wheel, slowed

# The knobs a tiny model needs (32 px images, a CPU, no augmentation); everything else is the default.
TINY = {"backbone": "test_vit", "weights": "random", "epochs": 2, "batch_size": 4, "image_size": 32,
        "augment": "none", "device": "cpu", "precision": "fp32"}


def click(qtbot, button) -> None:
    assert button.isEnabled(), f"“{button.text()}” is disabled"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


@pytest.mark.slow
def test_the_first_hour(qtbot, tmp_path, monkeypatch, themed, wait_scan):
    import dtl_engine.data.sample as sample
    from app.settings import Settings
    from dtl_engine.training import resume

    monkeypatch.setenv("DTL_STUDIO_HOME", str(tmp_path / "home"))
    digits = make_image_folder(tmp_path / "sample", per_class=12)
    monkeypatch.setattr(sample, "ensure_sample_dataset", lambda: digits)
    settings = Settings()
    settings.set_last_config(dict(TINY))
    window = MainWindow(settings, train_fn=slowed(tiny_train(), 0.25), resume_fn=resume)
    qtbot.addWidget(window)
    window.resize(1000, 680)
    window.show()
    states = window.step_states

    # Start: nothing yet; the run list is read in the background and says so.
    qtbot.waitUntil(lambda: states()[RUNS] == (False, "No runs yet."), timeout=60_000)
    assert states()[DATA] == (False, "Waiting for an image folder")
    assert states()[RESULTS] == (False, "Waiting for a finished run")
    assert states()[EXPORT] == (False, "Waiting for a trained model")

    # Data: the sample.
    click(qtbot, window.data_page.sample_button)
    qtbot.waitUntil(lambda: states()[DATA][0], timeout=60_000)
    wait_scan(window.data_page)
    assert states()[DATA] == (True, "3 classes · 36 images")

    # Model: random weights, no green check lie; the wheel over a setting leaves it alone.
    window.step_actions[MODEL].trigger()
    ready, line = states()[MODEL]
    assert ready and line.endswith("random weights")
    batch = window.model_page.batch_size
    window.step_bar.setFocus()
    _wheel(batch)
    assert batch.value() == 4

    # Train, then Stop inside the first epoch: the first model (the search's probe, epoch 0) is kept, and the
    # app says so.
    page = window.train_page
    window.show_step(TRAIN)
    with qtbot.waitSignal(page.controller.batch, timeout=120_000):
        click(qtbot, page.start_button)
    assert window.stop_action.isEnabled() and not window.train_action.isEnabled()
    assert "left" in page.progress.format() or page.progress.format().startswith("Epoch")
    with qtbot.waitSignal(page.run_finished, timeout=60_000) as finished:
        click(qtbot, page.stop_button)
    first = finished.args[0]
    assert first.status == "stopped" and first.epochs_done == 0
    qtbot.waitUntil(lambda: not page.is_running(), timeout=30_000)   # the steps update when the thread returns
    assert window.current_step() == TRAIN
    ready, line = states()[TRAIN]
    # the first model (epoch 0, the search's probe) is kept; a stopped run gets no check, and Resume is where Stop is
    assert not ready and "first model" in line
    assert not (window.pause_action.isEnabled() or window.stop_action.isEnabled())
    assert window.resume_action.isEnabled() and page.resume_button.isEnabled()
    assert "left" not in page.progress.format()

    # Runs: the stopped run is listed and can be resumed; it restarts at epoch 1 and finishes.
    window.step_actions[RUNS].trigger()
    qtbot.waitUntil(lambda: window.runs_page.table.rowCount() == 1, timeout=30_000)
    runs = window.runs_page
    runs.table.selectRow(0)
    assert runs.table.item(0, COLUMNS.index("Status")).text() == "stopped"
    with qtbot.waitSignal(page.run_finished, timeout=120_000) as finished:
        click(qtbot, runs.resume_button)
        assert window.current_step() == TRAIN
        assert "starts again at epoch 1" in page.log_view.toPlainText()
    result = finished.args[0]
    assert result.status == "finished" and result.epochs_done == 2
    ready, line = states()[TRAIN]
    assert ready and line.startswith("Finished — 2 epoch(s)")

    # Results: shown at once, with counts that agree with each other.
    assert window.current_step() == RESULTS
    results = window.results_page
    qtbot.waitUntil(lambda: states()[RESULTS][0], timeout=60_000)
    ev = results.evaluation
    assert results.headline.text() == f"Accuracy {100 * ev.accuracy:.1f} %"
    total = sum(map(sum, ev.confusion))
    wrong = total - sum(row[i] for i, row in enumerate(ev.confusion))
    assert results.gallery_box.title().startswith(f"Misclassified images: {wrong} ")
    assert results.per_class.rowCount() == 3

    # Export: to a chosen file, verified; then Try it on three images.
    window.export_action.trigger()
    export = window.export_page
    assert export.status()[1].startswith("Ready to export")
    assert not export.add_button.isEnabled()
    out = tmp_path / "exports" / "digits.pt"
    out.parent.mkdir()
    export.path_edit.setText(str(out))
    with qtbot.waitSignal(export.exported, timeout=120_000):
        click(qtbot, export.export_button)
    assert "Verified ✓" in export.result_label.text() and out.is_file()
    assert states()[EXPORT][0] is True
    assert export.add_button.isEnabled()
    images = sorted(str(p) for p in Path(digits, "red").glob("*.png"))[:3]
    with qtbot.waitSignal(export.predicted, timeout=60_000):
        export.try_images(images)
    assert export.try_table.rowCount() == 3
    assert export.try_hint.text() == "3 image(s) tried with digits.pt."

    # Runs: one run, finished, its weights and its whole name.
    window.step_actions[RUNS].trigger()
    qtbot.waitUntil(lambda: runs.table.item(0, COLUMNS.index("Status")).text() == "finished", timeout=30_000)
    assert runs.table.rowCount() == 1 and states()[RUNS] == (True, "1 past run(s)")
    assert runs.table.item(0, COLUMNS.index("Weights")).text() == "random"
    name = runs.table.item(0, COLUMNS.index("Name")).text()
    assert name == Path(result.run_dir).name and name.endswith("_test_vit_32px_dtl")
    assert runs.table.columnWidth(0) >= runs.table.fontMetrics().horizontalAdvance(name)

    # Open it again: Results, Export and the Train curves know it.
    runs.table.selectRow(0)
    click(qtbot, runs.open_button)
    assert window.current_step() == RESULTS
    qtbot.waitUntil(lambda: f"The log of {name}" in page.log_view.toPlainText(), timeout=30_000)
    assert "Epoch 2/2" in page.log_view.toPlainText()
    page.charts.refresh()
    assert page.charts.loss.drawn_points("train (step)") > 0

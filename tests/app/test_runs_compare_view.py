"""Runs step, Compare: 2–4 selected runs, their settings side by side (differences marked), curves overlaid."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QItemSelectionModel, Qt

from app.pages.runs_page import RunsPage
from run_fixtures import train_now


def _select(page, *run_dirs):
    page.table.clearSelection()
    model = page.table.selectionModel()
    for run_dir in run_dirs:
        row = next(r for r in range(page.table.rowCount())
                   if page.table.item(r, 0).data(Qt.ItemDataRole.UserRole) == str(run_dir))
        model.select(page.table.model().index(row, 0),
                     QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)


def test_compare_shows_the_differing_setting_and_overlays_the_curves(qtbot, tiny_dataset, themed, screens_dir):
    slow = train_now(tiny_dataset, epochs=2, lr=1e-3)
    fast = train_now(tiny_dataset, epochs=3, lr=1e-2)
    page = RunsPage()
    qtbot.addWidget(page)
    page.resize(1000, 420)
    page.show()
    page.refresh()
    assert page.table.rowCount() == 2

    page.select_run(slow.run_dir)
    assert not page.compare_button.isEnabled() and page.open_button.isEnabled()     # one run: nothing to compare
    _select(page, slow.run_dir, fast.run_dir)
    assert page.compare_button.isEnabled()
    assert not page.open_button.isEnabled()                   # Open and Resume act on one run
    assert sorted(page.selected_runs()) == sorted([slow.run_dir, fast.run_dir])

    page.refresh()                                            # a refresh keeps both selected
    assert sorted(page.selected_runs()) == sorted([slow.run_dir, fast.run_dir])

    page.compare_button.click()
    dialog = page.compare_dialog
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.loaded, timeout=60_000) as loaded:
        pass
    comparison = loaded.args[0]
    names = [run.run_dir for run in comparison.runs]
    assert sorted(names) == sorted([slow.run_dir, fast.run_dir])
    # Exactly the settings that differ are marked: the learning rate and the epochs, not the backbone.
    assert set(dialog.differing_rows()) == {"lr", "epochs"}
    row = dialog.setting_rows.index("lr")
    shown = {dialog.settings_table.item(row, col).text() for col in range(2)}
    assert shown == {"0.001", "0.01"}
    assert dialog.settings_table.item(row, 0).font().bold()
    backbone = dialog.setting_rows.index("backbone")
    assert not dialog.settings_table.item(backbone, 0).font().bold()
    dialog.only_differences.setChecked(True)
    assert dialog.settings_table.isRowHidden(backbone) and not dialog.settings_table.isRowHidden(row)

    # One validation-accuracy and one loss curve per run, with a point per finished epoch.
    for i, run in enumerate(comparison.runs):
        series = f"{i + 1}. {run.name}"
        epochs = 2 if run.run_dir == slow.run_dir else 3
        assert dialog.accuracy_chart.drawn_points(series) == epochs
        assert dialog.loss_chart.drawn_points(series) == epochs
        xs, ys = dialog.accuracy_chart.series(series)
        assert list(xs) == [1.0, 2.0, 3.0][:epochs] and all(0 <= y <= 100 for y in ys)
    # Final figures side by side, and F1 per class.
    labels = [dialog.results_table.verticalHeaderItem(r).text() for r in range(dialog.results_table.rowCount())]
    assert "Best val. accuracy" in labels and {"F1 · red", "F1 · green", "F1 · blue"} <= set(labels)
    acc_row = labels.index("Best val. accuracy")
    for col, run in enumerate(comparison.runs):
        assert dialog.results_table.item(acc_row, col).text() == f"{100 * run.best_val_acc:.1f} %"
    # Each run's column names it in the header's own text colour, with a swatch of its curve colour.
    from app.widgets.run_compare import RUN_COLORS
    for table in (dialog.settings_table, dialog.results_table):
        for col in range(2):
            header = table.horizontalHeaderItem(col)
            assert header.foreground().style() == Qt.BrushStyle.NoBrush
            swatch = header.icon().pixmap(12, 12).toImage()
            assert swatch.pixelColor(6, 6).name() == RUN_COLORS[col].lower()
    dialog.only_differences.setChecked(False)
    qtbot.wait(100)
    assert dialog.grab().save(str(screens_dir / "run_compare.png"))

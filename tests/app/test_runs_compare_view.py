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


def _fake_comparison():
    from types import SimpleNamespace

    def run(i, name, weights, lr):
        settings = {"backbone": "vit_tiny_patch16_224.augreg_in21k_ft_in1k", "weights": weights, "lr": lr,
                    "epochs": 3, "data_dir": "/home/someone/Pictures/a rather long folder of images/digits"}
        return SimpleNamespace(name=name, run_dir=f"/home/someone/runs/{name}", settings=settings, status="finished",
                               epochs_done=3, best_val_acc=0.5 + i / 10, final_accuracy=0.5, final_split="val",
                               per_class_f1={"0": 0.5, "1": 0.6},
                               curve=lambda key: ([1, 2, 3], [0.3, 0.4, 0.5]))
    runs = [run(0, "20261207-000054_vit_tiny_patch16_64", "random", 0.01),
            run(1, "20261207-001512_vit_tiny_patch16_224", "hub", 0.003)]
    return SimpleNamespace(runs=runs, differing=["weights", "lr"], settings=list(runs[0].settings),
                           classes=lambda: ["0", "1"])


@pytest.mark.parametrize("size", [(1000, 680), (1600, 1000)])
def test_compare_headers_are_whole_and_a_random_run_shows_the_backbone_it_ran(qtbot, themed, monkeypatch, size):
    """No header cut to "0261207-000054_vit_tiny_patch16_64" or "Run :"; no pretrained tag on a random run."""
    from app.widgets import run_compare
    from clipping import clipped_headers

    comparison = _fake_comparison()
    monkeypatch.setattr(run_compare, "_compare", lambda _dirs: comparison)
    dialog = run_compare.RunCompareDialog([r.run_dir for r in comparison.runs])
    qtbot.addWidget(dialog)
    dialog.resize(*size)
    dialog.show()
    qtbot.waitSignal(dialog.loaded, timeout=10_000)
    qtbot.waitUntil(lambda: dialog.comparison is not None, timeout=10_000)
    for table in (dialog.settings_table, dialog.results_table):
        assert clipped_headers(table) == []
    row = dialog.setting_rows.index("backbone")
    assert dialog.settings_table.item(row, 0).text() == "vit_tiny_patch16_224"              # random weights
    assert dialog.settings_table.item(row, 1).text() == "vit_tiny_patch16_224.augreg_in21k_ft_in1k"

"""Runs page with real run folders: listing, statuses, open, and resume through the Train page."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from app.pages.runs_page import COLUMNS, RunsPage
from app.pages.train_page import TrainPage
from run_fixtures import stopped_run, tiny_train, train_now

SCREENS = os.environ.get("DTL_SCREENSHOT_DIR")


def _row_of(page, run_dir):
    assert page.select_run(run_dir), f"{run_dir} is not listed"
    return page.table.currentRow()


def _cell(page, row, column):
    from app.pages.runs_page import COLUMNS
    return page.table.item(row, COLUMNS.index(column)).text()


@pytest.mark.slow
def test_lists_runs_and_resumes_only_what_can_be_resumed(qtbot, tiny_dataset, tmp_path, themed):
    finished = train_now(tiny_dataset, epochs=2)
    stopped = stopped_run(tiny_dataset, stop_after_epoch=0, epochs=3)
    assert stopped.status == "stopped" and stopped.epochs_done == 1
    # A run whose process died mid-way ("running" with a dead pid) is listed as interrupted.
    crashed = Path(shutil.copytree(stopped.run_dir, Path(stopped.run_dir).with_name("crashed_run")))
    run_file = crashed / "run.json"
    run = json.loads(run_file.read_text())
    run.update(status="running", pid=2**22 + 12345, pid_started=1.0)
    run_file.write_text(json.dumps(run))

    page = RunsPage()
    qtbot.addWidget(page)
    page.resize(1000, 420)
    page.show()
    with qtbot.waitSignal(page.status_changed, timeout=5000):
        page.refresh()
    assert page.table.rowCount() == 3
    assert page.status() == (True, "3 past run(s)")
    assert "2 can be resumed" in page.summary.text()

    row = _row_of(page, finished.run_dir)
    assert _cell(page, row, "Status") == "finished" and _cell(page, row, "Backbone") == "test_vit"
    assert _cell(page, row, "Method") == "dtl" and _cell(page, row, "Epochs") == "2 / 2"
    assert _cell(page, row, "Best val. acc.") == f"{100 * finished.best_val_acc:.1f} %"
    assert page.open_button.isEnabled() and not page.resume_button.isEnabled()
    with qtbot.waitSignal(page.open_run, timeout=2000) as opened:
        page.open_button.click()
    assert opened.args[0] == finished.run_dir

    row = _row_of(page, str(crashed))
    assert _cell(page, row, "Status") == "interrupted" and page.resume_button.isEnabled()

    row = _row_of(page, stopped.run_dir)
    assert _cell(page, row, "Status") == "stopped" and _cell(page, row, "Epochs") == "1 / 3"
    assert page.resume_button.isEnabled()
    shot = Path(SCREENS or tmp_path) / "runs_page.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert page.grab().save(str(shot))

    # Resume goes through the Train page (as the window wires it) and finishes the run.
    train = TrainPage(lambda: None, train_fn=tiny_train())
    qtbot.addWidget(train)
    page.resume_run.connect(train.resume_run)
    with qtbot.waitSignal(train.run_finished, timeout=180000) as done:
        page.resume_button.click()
    result = done.args[0]
    assert result.run_dir == stopped.run_dir
    assert result.status == "finished" and result.epochs_done == 3
    assert train.charts.accuracy.drawn_points("validation") == 3  # epoch 1 from history + 2 live
    page.refresh()
    row = _row_of(page, stopped.run_dir)
    assert _cell(page, row, "Status") == "finished" and _cell(page, row, "Epochs") == "3 / 3"
    assert not page.resume_button.isEnabled()


def test_empty_runs_folder_says_so(qtbot):
    page = RunsPage()
    qtbot.addWidget(page)
    page.show()
    page.refresh()
    assert page.table.rowCount() == 0
    assert page.status() == (False, "No runs yet.")
    assert page.empty_label.isVisible()
    assert not page.open_button.isEnabled() and not page.resume_button.isEnabled()


def test_a_damaged_run_is_listed_as_damaged_and_cannot_be_opened(qtbot, tiny_dataset, themed):
    finished = train_now(tiny_dataset, epochs=1)
    damaged = Path(shutil.copytree(finished.run_dir, Path(finished.run_dir).with_name("damaged_run")))
    (damaged / "config.json").write_text('{"backbone": ')          # cut short
    page = RunsPage()
    qtbot.addWidget(page)
    page.resize(1000, 300)
    page.show()
    with qtbot.waitSignal(page.status_changed, timeout=5000):
        page.refresh()
    assert page.table.rowCount() == 2
    row = _row_of(page, str(damaged))
    status = page.table.item(row, COLUMNS.index("Status"))
    assert status.text() == "damaged" and "config.json" in status.toolTip()
    assert not page.open_button.isEnabled() and not page.resume_button.isEnabled()
    assert page.grab().save(str(Path(SCREENS or damaged.parent) / "runs_page_damaged.png"))


def test_the_cache_line_measures_and_clears_the_caches_in_the_background(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from app.widgets.cache_line import CacheLine
    from dtl_engine.data.image_cache import ImageCache, cache_size_bytes

    photo = tmp_path / "photo.png"
    from PIL import Image
    Image.new("RGB", (400, 300), (10, 120, 200)).save(photo)
    ImageCache().load(str(photo), 64)                         # one decoded photo in the per-user cache
    assert cache_size_bytes() > 0
    line = CacheLine()
    qtbot.addWidget(line)
    line.refresh()
    qtbot.waitUntil(lambda: line.bytes is not None, timeout=10_000)
    assert line.bytes == cache_size_bytes() > 0 and "Caches:" in line.label.text()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    line.clear()
    qtbot.waitUntil(lambda: "cleared" in line.label.text(), timeout=10_000)
    assert cache_size_bytes() == 0 and photo.exists()         # the caches go, the user's image stays


@pytest.mark.parametrize("width", [738, 1338])         # the page's width in a 1000- and a 1600-pixel window
def test_every_column_is_in_view_and_no_status_or_figure_is_cut(qtbot, themed, width):
    """At 1000×680 the table scrolled sideways: "finishec", "stoppec", the epochs and accuracy off-screen."""
    from types import SimpleNamespace

    from clipping import clipped_cells, clipped_headers, columns_out_of_view

    runs = [SimpleNamespace(name=f"20261207-00{i}054_vit_tiny_patch16_224", run_dir=f"/home/someone/runs/{i}",
                            created="2026-12-07T00:00:54", backbone="vit_tiny_patch16_224.augreg_in21k_ft_in1k",
                            weights=weights, method="dtl", status=status, epochs_done=3, epochs=10,
                            best_val_acc=0.512)
            for i, (weights, status) in enumerate([("hub", "finished"), ("random", "stopped"),
                                                   ("/home/someone/weights/vit_tiny.safetensors", "interrupted")])]
    page = RunsPage()
    qtbot.addWidget(page)
    page.resize(width, 600)
    page.show()
    page._fill(runs)
    table = page.table
    assert columns_out_of_view(table) == []
    assert clipped_headers(table) == []
    short = [COLUMNS.index(c) for c in ("Date", "Method", "Status", "Epochs", "Best val. acc.")]
    assert clipped_cells(table, short) == []

"""What a new user met in the first hour, one defect per test: each failed before its fix.

A run stopped inside its first epoch, the mouse wheel over settings, past runs at start-up,
stale or wrong numbers, cut-off text, chart legends, a re-opened run, the Runs table, and the
smaller points. The whole first hour in one go is tests/app/test_first_hour.py.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from run_fixtures import make_image_folder, tiny_config, tiny_train, train_now
def slowed(train_fn, seconds: float = 0.25):
    """``train_fn`` on a slow machine: each step takes at least ``seconds`` (so Stop lands in epoch 1)."""
    from dtl_engine.listener import RunListener

    class Slow(RunListener):
        def __init__(self, inner):
            self.inner = inner

        def __getattribute__(self, name):
            inner = object.__getattribute__(self, "inner")
            if name == "batch_finished":
                def batch_finished(stats):
                    time.sleep(seconds)
                    inner.batch_finished(stats)
                return batch_finished
            if name == "inner":
                return inner
            return getattr(inner, name)

    def run(config_or_dir, listener=None, token=None, **kw):
        return train_fn(config_or_dir, listener=Slow(listener), token=token, **kw)
    return run


def _wheel(widget, dy: int = -120) -> None:
    """A mouse-wheel turn over the middle of ``widget``."""
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    glob = QPointF(widget.mapToGlobal(pos.toPoint()))
    event = QWheelEvent(pos, glob, QPoint(0, 0), QPoint(0, dy), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


# --- 2: stopped before the first epoch ended -------------------------------------------------------
@pytest.mark.slow
def test_a_run_stopped_inside_epoch_one_is_not_trained(qtbot, tmp_path, monkeypatch, themed):
    from app.pages.export_page import ExportPage
    from app.pages.results_page import ResultsPage
    from app.pages.train_page import TrainPage

    monkeypatch.setenv("DTL_STUDIO_HOME", str(tmp_path / "home"))
    data = make_image_folder(tmp_path / "images", per_class=12)
    page = TrainPage(lambda: tiny_config(data, epochs=2), train_fn=slowed(tiny_train()))
    qtbot.addWidget(page)
    page.resize(1000, 700)
    page.show()
    with qtbot.waitSignal(page.controller.batch, timeout=120_000):
        page.start()
    with qtbot.waitSignal(page.run_finished, timeout=60_000) as finished:
        page.stop()
    result = finished.args[0]
    assert result.status == "stopped" and result.epochs_done == 0
    run = json.loads(Path(result.run_dir, "run.json").read_text())
    assert run["epochs_done"] == 0 and run.get("best_val_acc") is None

    ready, line = page.status()
    assert not ready, "no green check for a run that trained nothing"
    assert "before the first epoch" in line and "Resume starts again at epoch 1" in page.state_label.text()
    assert "left" not in page.progress.format() and "images/s" not in page.progress.format()
    log = page.log_view.toPlainText()
    assert "Resume starts again at epoch 1" in log and "saving a checkpoint" not in log

    results = ResultsPage()
    qtbot.addWidget(results)
    results.show_run(result.run_dir)
    assert results.status()[0] is False
    assert "Accuracy" not in results.headline.text() and "first epoch" in results.headline.text()
    export = ExportPage()
    qtbot.addWidget(export)
    export.set_run(result.run_dir)
    assert not export.export_button.isEnabled()
    assert "Ready" not in export.status()[1] and "nothing to export" in export.status()[1]

    # Resume says where it restarts: epoch 1, nothing was kept.
    resume = TrainPage(lambda: None, resume_fn=slowed(_tiny_resume(), 0.0))
    qtbot.addWidget(resume)
    with qtbot.waitSignal(resume.run_finished, timeout=120_000):
        resume.resume_run(result.run_dir)
    assert "starts again at epoch 1" in resume.log_view.toPlainText()


def _tiny_resume():
    from dtl_engine.training import resume     # the run folder remembers the tiny model's settings

    return resume


def test_the_window_says_no_model_yet_after_an_untrained_stop(qtbot, settings, themed, tmp_path):
    # Results and Export take the new run up (never keep the last run's figures) and say it has no model.
    from app.main_window import EXPORT, RESULTS, TRAIN, MainWindow
    from dtl_engine.events import RunEnded

    window = MainWindow(settings)
    qtbot.addWidget(window)
    window.show_step(TRAIN)
    run_dir = tmp_path / "runs" / "a"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text('{"schema": 1, "status": "stopped", "epochs_done": 0}')
    run_dir = str(run_dir)
    window.train_page.run_finished.emit(RunEnded(run_dir, "stopped", 0))
    assert window.current_step() == TRAIN
    assert window.export_page.run_dir == run_dir and window.results_page.run_dir == run_dir
    assert not window.export_page.export_button.isEnabled()
    assert window.step_states()[RESULTS][0] is False and window.step_states()[EXPORT][0] is False


# --- 3: the mouse wheel -------------------------------------------------------------------------------
def test_the_wheel_scrolls_the_page_instead_of_changing_a_setting(qtbot, settings, themed):
    from PySide6.QtWidgets import QAbstractSpinBox, QComboBox

    from app.main_window import MODEL, MainWindow

    window = MainWindow(settings)
    qtbot.addWidget(window)
    window.resize(1000, 680)
    window.show()
    window.show_step(MODEL)
    page = window.model_page
    page.advanced.set_expanded(True) if hasattr(page, "advanced") else None
    qtbot.wait(50)
    boxes = [w for w in page.findChildren(QAbstractSpinBox) + page.findChildren(QComboBox) if w.isVisible()]
    assert len(boxes) >= 3
    window.step_bar.setFocus()
    for box in boxes:
        before = box.value() if isinstance(box, QAbstractSpinBox) else box.currentIndex()
        _wheel(box)
        _wheel(box, 120)
        _wheel(box)
        after = box.value() if isinstance(box, QAbstractSpinBox) else box.currentIndex()
        assert after == before, f"the wheel changed {box.objectName() or type(box).__name__} without focus"
    # With focus (the user clicked it), the wheel is the box's.
    spin = page.batch_size
    spin.setFocus()
    qtbot.waitUntil(spin.hasFocus, timeout=2000)
    before = spin.value()
    _wheel(spin, 120)
    assert spin.value() != before


@pytest.mark.slow
def test_the_wheel_over_a_box_scrolls_the_model_page(qtbot, settings, themed):
    from PySide6.QtWidgets import QAbstractSpinBox

    from app.main_window import MODEL, MainWindow

    window = MainWindow(settings)
    qtbot.addWidget(window)
    window.resize(1000, 680)
    window.show()
    window.show_step(MODEL)
    qtbot.wait(50)
    bar = window.model_page._scroll.verticalScrollBar()
    if bar.maximum() == 0:
        pytest.skip("the Model page fits without scrolling at this font size")
    spin = next(w for w in window.model_page.findChildren(QAbstractSpinBox) if w.isVisible())
    window.step_bar.setFocus()
    _wheel(spin)
    assert bar.value() > 0


# --- 4: past runs at start-up ---------------------------------------------------------------------------
def test_past_runs_are_listed_when_the_app_starts(qtbot, settings, themed, tmp_path, monkeypatch):
    from app.main_window import RUNS, MainWindow

    monkeypatch.setenv("DTL_STUDIO_HOME", str(tmp_path / "home"))
    train_now(make_image_folder(tmp_path / "images"), epochs=1)
    window = MainWindow(settings)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: window.step_states()[RUNS][0], timeout=60_000)
    assert window.step_states()[RUNS] == (True, "1 past run(s)")
    assert window.runs_page.table.rowCount() == 1


# --- 6: wrong or stale numbers --------------------------------------------------------------------------
def test_the_gallery_counts_every_mistake_not_only_those_shown(qtbot, themed):
    from app.pages.results_page import ResultsPage
    from dtl_engine.inference.evaluate import Evaluation

    page = ResultsPage()
    qtbot.addWidget(page)
    confusion = [[10, 150], [167, 32]]          # 317 of 359 wrong
    mistakes = [{"path": f"/nowhere/{i}.png", "true": "a", "predicted": "b", "confidence": 0.9} for i in range(200)]
    per_class = [{"name": c, "precision": 0.1, "recall": 0.1, "f1": 0.1, "support": 160} for c in "ab"]
    page.show_evaluation(Evaluation(accuracy=42 / 359, classes=["a", "b"], confusion=confusion,
                                    per_class=per_class, mistakes=mistakes, num_images=359, total_images=359))
    assert page.gallery_box.title().startswith("Misclassified images: 317 ")
    assert "the 60 most confident shown" in page.gallery_box.title()    # the gallery shows at most 60 tiles


def test_progress_shows_the_smoothed_speed_and_time_left_in_words(qtbot, themed):
    from dtl_engine.events import make
    from dtl_engine.listener import BatchStats
    from run_fixtures import relayed_run_page

    page = relayed_run_page(qtbot)
    for step, speed in enumerate((5.0, 9.0, 81.0, 12.0)):
        page.session._relay(make("batch", BatchStats(
            epoch=0, step=step, steps_per_epoch=10, global_step=step + 1, total_steps=20, loss=1.0, lr=0.1,
            images_per_sec=speed, eta_seconds=191, memory_bytes=0, peak_memory_bytes=0)))
    page._show_progress()
    text = page.progress.format()
    assert "3 min 11 s left" in text and "ETA" not in text
    shown = float(text.split(" images/s")[0].rsplit("·", 1)[1])
    _, ys = page.charts.throughput.series("images/s (smoothed)")
    assert shown == pytest.approx(ys[-1], abs=0.5), "the bar and the chart disagree on the speed"
    assert shown != 12                           # not the last batch's raw figure


def test_a_settings_error_goes_once_the_settings_change(qtbot, settings, themed, image_folder, wait_scan):
    from app.main_window import TRAIN, MainWindow

    window = MainWindow(settings)
    qtbot.addWidget(window)
    window.start_training()                     # no folder yet: an error on the Train step
    if getattr(window.train_page, "error_dialog", None) is not None:
        window.train_page.error_dialog.close()
    assert "image folder" in window.step_states()[TRAIN][1]
    window.data_page.open_folder(str(image_folder))
    wait_scan(window.data_page)
    line = window.step_states()[TRAIN][1]
    assert "Choose an image folder" not in line and "Not started" in line


def test_pretrained_weights_not_downloaded_get_no_green_check(qtbot, settings, themed):
    from app.main_window import MODEL, TRAIN, MainWindow

    window = MainWindow(settings)
    qtbot.addWidget(window)
    page = window.model_page
    page.w_hub.setChecked(True)
    page.picker._cached_loaded({page.picker.current(): False})
    ready, line = window.step_states()[MODEL]
    assert not ready and "download" in line
    assert window.step_states()[TRAIN][1] != "Waiting for the model settings"
    page.picker._cached_loaded({page.picker.current(): True})
    assert window.step_states()[MODEL][0] is True


# --- 7: cut-off text, the smallest window ------------------------------------------------------------
def test_step_statuses_wrap_instead_of_being_cut_at_1600_px(qtbot, settings, themed):
    from app.main_window import MainWindow

    window = MainWindow(settings)
    qtbot.addWidget(window)
    window.resize(1600, 1000)
    window.show()
    qtbot.wait(50)
    lines = {"Data": "digits · 10 classes · 1,797 images", "Model": "ViT-Ti/16 · DTL · rank 2 · random weights",
             "Results": "accuracy 91.3 % on 312 of 359 validation images",
             "Train": "Finished — 3 epoch(s), best 91.3 %"}
    for button in window.step_bar.buttons:
        if button.title in lines:
            button.set_state(True, lines[button.title])
            shown = button.status_lines()
            assert " ".join(shown) == lines[button.title], f"{button.title}: {shown}"
    train = window.step_bar.buttons[2]
    for line in ("Not started. Press Start (Ctrl+R) to train.", "Waiting for the model settings"):
        train.set_state(False, line)
        assert " ".join(train.status_lines()) == line
    # At the smallest window the steps' own lines still fit: the long run name is on the pages.
    window.resize(860, 600)
    qtbot.wait(50)
    window.export_page.run_dir = "runs/20261201-224321_vit_tiny_patch16_96_dtlplus"
    for line in ("Ready to export", "Exported and verified", "Stopped before the first epoch: nothing to export"):
        window.step_bar.buttons[4].set_state(False, line)
        assert not window.step_bar.buttons[4].status_lines()[-1].endswith("…"), line


def test_the_train_status_line_wraps_rather_than_being_clipped(qtbot, themed):
    from app.pages.train_page import TrainPage

    page = TrainPage(lambda: None)
    qtbot.addWidget(page)
    page.resize(760, 600)
    page.show()
    page._fail_now("Stopped — 3 epoch(s), best validation accuracy 91.3 % at epoch 2; the last checkpoint "
                   "could not be downloaded", "")
    page.error_dialog.close()
    qtbot.wait(50)
    # A label that cannot wrap asks for its whole text's width: in the window, it is cut at the right.
    assert page.minimumSizeHint().width() <= 700
    label = page.state_label
    assert label.heightForWidth(label.width()) <= label.height() + 1, "the status needs more room than it has"


def test_the_window_shrinks_to_a_small_laptop_screen(qtbot, settings, themed):
    from app.main_window import MainWindow

    window = MainWindow(settings)
    qtbot.addWidget(window)
    window.show()
    window.resize(800, 560)
    qtbot.wait(50)
    assert window.width() <= 900 and window.height() <= 620


def test_long_backbone_names_wrap_in_the_picker(qtbot, themed):
    from PySide6.QtCore import QRect
    from PySide6.QtGui import QFont, QFontMetrics

    from app.widgets.backbone_picker import BackbonePicker

    picker = BackbonePicker()
    qtbot.addWidget(picker)
    font = QFont(picker.font())
    font.setPointSizeF(font.pointSizeF() * 1.4)     # a desktop font larger than Qt's default
    picker.table.setFont(font)
    picker.resize(360, 500)
    picker.show()
    qtbot.wait(50)
    table = picker.table
    fm = QFontMetrics(table.font())
    wrapped = 0
    for row in range(table.rowCount()):
        text = table.item(row, 0).text()
        need = fm.boundingRect(QRect(0, 0, table.columnWidth(0) - 8, 10_000), Qt.TextFlag.TextWordWrap, text)
        wrapped += need.height() > fm.lineSpacing() + 1
        assert table.rowHeight(row) >= need.height(), f"{text} is cut short"
    assert wrapped, "make the picker narrower: no name needs two lines"


# --- 12: smaller points ------------------------------------------------------------------------------
def test_the_export_folder_is_never_a_folder_made_for_the_user(tmp_path, monkeypatch):
    from app.pages import export_page

    monkeypatch.setattr(export_page.QStandardPaths, "writableLocation", lambda _loc: str(tmp_path / "Documents"))
    monkeypatch.setattr(export_page.Path, "home", lambda: tmp_path)
    assert export_page.documents_folder() == tmp_path
    assert not (tmp_path / "Documents").exists()


def test_a_reopened_run_can_be_tried_with_its_earlier_export(qtbot, tmp_path, monkeypatch, themed):
    from app.pages import export_page

    monkeypatch.setenv("DTL_STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(export_page, "documents_folder", lambda: tmp_path / "out")
    data = make_image_folder(tmp_path / "images")
    result = train_now(data, epochs=1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / f"{Path(result.run_dir).name}.pt").write_bytes(b"an earlier export")
    page = export_page.ExportPage()
    qtbot.addWidget(page)
    page.set_run(result.run_dir)
    assert page.add_button.isEnabled()
    assert page.export_path() == str(tmp_path / "out" / f"{Path(result.run_dir).name}.pt")
    assert export_page.run_data_folder(result.run_dir) == data       # "Add images…" starts in the data


def test_help_offers_more_than_about(qtbot, settings):
    from app.main_window import MainWindow

    window = MainWindow(settings)
    qtbot.addWidget(window)
    from PySide6.QtWidgets import QMenu

    help_menu = next(m for m in window.findChildren(QMenu) if m.title() == "&Help")
    texts = [a.text() for a in help_menu.actions() if not a.isSeparator()]
    assert len(texts) >= 3 and "&About DTL Studio" in texts


def test_the_catalog_does_not_promise_a_fast_cpu(qtbot):
    from app.backbones import CURATED

    assert not any("fast enough" in b.note for b in CURATED)


# --- 10: a re-opened run ----------------------------------------------------------------------------------
def test_a_reopened_run_shows_its_step_curves_and_its_log(qtbot, tmp_path, monkeypatch, themed):
    from app.pages.train_page import TrainPage

    monkeypatch.setenv("DTL_STUDIO_HOME", str(tmp_path / "home"))
    result = train_now(make_image_folder(tmp_path / "images"), epochs=2)
    steps = sum(1 for line in Path(result.run_dir, "events.jsonl").read_text().splitlines() if '"batch"' in line)
    page = TrainPage(lambda: None)
    qtbot.addWidget(page)
    page.load_history(result.run_dir)
    qtbot.waitUntil(lambda: "Epoch 2/2" in page.log_view.toPlainText(), timeout=30_000)
    page.charts.refresh()
    assert page.charts.loss.drawn_points("train (step)") == steps > 2
    assert page.charts.throughput.drawn_points("images/s (smoothed)") == steps
    assert page.charts.memory.drawn_points("now") == steps
    log = page.log_view.toPlainText()
    assert "Run folder" in log and "Checkpoint saved after epoch 2" in log and "Finished: 2 epoch(s)" in log


# --- 11: the Runs table ------------------------------------------------------------------------------------
def test_the_runs_table_says_which_weights_and_shows_whole_names(qtbot, tmp_path, monkeypatch, themed):
    from app.pages import runs_page

    monkeypatch.setenv("DTL_STUDIO_HOME", str(tmp_path / "home"))
    data = make_image_folder(tmp_path / "images")
    train_now(data, epochs=1, image_size=32)
    page = runs_page.RunsPage()
    qtbot.addWidget(page)
    page.resize(900, 300)
    page.show()
    page.refresh()
    qtbot.wait(50)
    col = runs_page.COLUMNS.index
    name = page.table.item(0, col("Name")).text()
    assert name.endswith("_test_vit_32px_dtl")
    assert page.table.item(0, col("Weights")).text() == "random"
    # A random-weight run of a tagged backbone shows no pretrained tag.
    assert runs_page.backbone_text("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "random") == "vit_tiny_patch16_224"
    assert runs_page.backbone_text("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "hub").endswith(".augreg_in21k_ft_in1k")
    fm = page.table.fontMetrics()
    assert page.table.columnWidth(col("Name")) >= fm.horizontalAdvance(name), "the run's name is cut short"


# --- 9: chart keys ------------------------------------------------------------------------------------------
def test_chart_keys_stay_off_the_plots_and_name_only_what_is_drawn(qtbot, themed):
    from app.widgets.charts import TrainingCharts
    from dtl_engine.listener import EpochStats

    charts = TrainingCharts()
    qtbot.addWidget(charts)
    charts.resize(560, 380)                         # the charts of a small window
    charts.show()
    charts.set_epochs(3)
    for epoch in range(3):
        charts.add_epoch(EpochStats(epoch=epoch, epochs=3, train_loss=1.0, train_acc=0.2 + 0.3 * epoch,
                                    val_loss=1.0, val_acc=0.1 + 0.35 * epoch, seconds=1.0, is_best=True))
    charts.set_reference_memory(3_000_000_000)
    charts.set_memory_kind("cpu")
    charts.refresh()
    qtbot.wait(50)
    for chart in charts.charts:
        view = chart.getPlotItem().getViewBox().sceneBoundingRect()
        legend = chart.legend
        on_plot = legend.isVisible() and legend.sceneBoundingRect().intersects(view)
        assert not on_plot, f"{chart.title}: key on the plot"
        assert not chart.getPlotItem().titleLabel.sceneBoundingRect().intersects(view)
    assert "validation" in charts.accuracy.title_text() and "train" in charts.accuracy.title_text()
    assert "full fine-tuning" not in charts.memory.title_text()       # a CPU run does not draw it
    charts.set_memory_kind("cuda")
    assert "full fine-tuning" in charts.memory.title_text()


def test_the_per_class_table_keeps_its_headers_whole_on_a_small_window(qtbot, themed):
    from app.pages.results_page import ResultsPage
    from dtl_engine.inference.evaluate import Evaluation

    page = ResultsPage()
    qtbot.addWidget(page)
    page.resize(720, 560)                           # the Results page of a 1000x680 window
    page.show()
    classes = [str(i) for i in range(10)]
    confusion = [[10 if i == j else 1 for j in range(10)] for i in range(10)]
    per_class = [{"name": c, "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 19} for c in classes]
    page.show_evaluation(Evaluation(accuracy=0.5, classes=classes, confusion=confusion, per_class=per_class,
                                    mistakes=[], num_images=190, total_images=190))
    qtbot.wait(50)
    table, fm = page.per_class, page.per_class.horizontalHeader().fontMetrics()
    assert table.verticalScrollBar().isVisible()    # as on a small window: the rows scroll
    for col in range(table.columnCount()):
        title = table.horizontalHeaderItem(col).text()
        assert table.columnWidth(col) >= fm.horizontalAdvance(title) + 8, f"the header {title!r} is cut short"


def test_no_step_line_of_a_first_launch_is_cut_at_any_window_size(qtbot, settings, themed):
    # Round two: the Model step of a first launch read "ViT-Ti/16 · DTL · rank 2 · pretrained weights downloa…".
    from app.main_window import MODEL, MainWindow

    window = MainWindow(settings)
    qtbot.addWidget(window)
    window.model_page.w_hub.setChecked(True)
    window.model_page.picker._cached_loaded({window.model_page.picker.current(): False})
    assert "download" in window.step_states()[MODEL][1]
    window.show()
    for size in ((1000, 680), (1240, 820), (1600, 1000)):
        window.resize(*size)
        qtbot.wait(50)
        window.update_steps()
        for button in window.step_bar.buttons:
            shown = button.status_lines()
            assert not shown or not shown[-1].endswith("…"), f"{size}, {button.title}: {shown}"
        window.show_step(MODEL)
        qtbot.wait(50)
        search = window.model_page.picker.search      # its hint was cut to "e.g. vit_large_patch16_…"
        assert search.fontMetrics().horizontalAdvance(search.placeholderText()) + 16 <= search.width(), size

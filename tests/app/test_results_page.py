"""Results page on a real finished tiny run: headline, confusion matrix, per-class table, mistakes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from app.pages.results_page import ResultsPage
from app.widgets.confusion_matrix import ConfusionMatrixView


SCREENS = os.environ.get("DTL_SCREENSHOT_DIR")


def _page(qtbot):
    page = ResultsPage()
    qtbot.addWidget(page)
    page.resize(1100, 760)
    page.show()
    return page


def test_show_run_fills_every_part_from_report_json(qtbot, finished_run, tmp_path, themed):
    report = json.loads(Path(finished_run.run_dir, "report.json").read_text())
    page = _page(qtbot)
    assert page.status()[0] is False
    with qtbot.waitSignal(page.evaluation_shown, timeout=30000):
        page.show_run(finished_run.run_dir)

    assert page.headline.text() == f"Accuracy {100 * report['accuracy']:.1f} %"
    assert f"best epoch ({report['best_epoch'] + 1})" in page.subline.text()
    classes = report["classes"]
    m = page.matrix
    assert m.rowCount() == m.columnCount() == len(classes) == 4
    assert [m.horizontalHeaderItem(i).text() for i in range(4)] == classes
    for r in range(4):
        for c in range(4):
            assert m.count(r, c) == report["confusion"][r][c]
    assert page.per_class.rowCount() == 4
    names = {page.per_class.item(r, 0).text() for r in range(4)}
    assert names == set(classes)
    supports = sorted(int(page.per_class.item(r, 4).text()) for r in range(4))
    assert supports == sorted(row["support"] for row in report["per_class"])
    # Mistakes: one tile per misclassified image, thumbnails loaded in the background.
    n_wrong = len(report["mistakes"])
    assert page.gallery.count() == max(1, n_wrong)
    if n_wrong:
        qtbot.waitUntil(lambda: page.gallery.thumbnails_loaded == n_wrong, timeout=10000)
        first = report["mistakes"][0]
        assert page.gallery.item(0).text().startswith(f"{first['true']} → {first['predicted']}")
        assert page.gallery.mistake(0) == first
        assert page.gallery.item(0).toolTip() == first["path"]
    ready, text = page.status()
    assert ready and "accuracy" in text
    out = Path(SCREENS or tmp_path) / "results_page.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    assert page.grab().save(str(out))


def test_show_result_uses_the_run_result_report(qtbot, finished_run):
    page = _page(qtbot)
    page.show_result(finished_run)  # RunResult.report is the Evaluation: no file reading needed
    assert page.evaluation is finished_run.report
    assert page.matrix.rowCount() == len(finished_run.report.classes)


def test_a_run_without_report_is_evaluated_in_the_background(qtbot, finished_run, tmp_path):
    import shutil

    copy = Path(shutil.copytree(finished_run.run_dir, tmp_path / "copy"))
    (copy / "report.json").unlink()
    page = _page(qtbot)
    with qtbot.waitSignal(page.evaluation_shown, timeout=60000) as shown:
        page.show_run(str(copy))
    assert (copy / "report.json").exists()
    assert shown.args[0].accuracy == pytest.approx(finished_run.report.accuracy)


def test_a_fresh_evaluation_shows_its_progress_not_blank_panels(qtbot, finished_run, tmp_path):
    import shutil

    copy = Path(shutil.copytree(finished_run.run_dir, tmp_path / "copy"))
    (copy / "report.json").unlink()
    total = finished_run.report.num_images
    page = _page(qtbot)
    statuses: list[str] = []
    bars: list[tuple[str, bool]] = []
    page.status_changed.connect(lambda: statuses.append(page.status()[1]))
    page.status_changed.connect(lambda: bars.append((page.progress.text(), page.body.isVisible())))
    page.show_run(str(copy))
    assert page.progress.isVisible() and not page.body.isVisible()     # no empty panels meanwhile
    with qtbot.waitSignal(page.evaluation_shown, timeout=60000):
        pass
    assert f"Evaluating {total} / {total} images…" in statuses           # the step's status line counts
    assert (f"Evaluating {total} / {total} images…", False) in bars      # and so does the bar on the page
    assert not page.progress.isVisible() and page.body.isVisible()
    assert page.status()[0] and "accuracy" in page.status()[1]


def test_images_changed_since_training_are_left_out_and_the_figure_says_so(qtbot, finished_run, tmp_path, themed):
    import shutil

    copy = Path(shutil.copytree(finished_run.run_dir, tmp_path / "copy"))
    split = json.loads((copy / "split.json").read_text())
    part = "test" if split["test"] else "val"
    changed = split[part][0][0]
    split["files"][changed][0] += 1              # as if the file had been rewritten since the run was trained
    (copy / "split.json").write_text(json.dumps(split))
    report_before = (copy / "report.json").read_bytes()
    page = _page(qtbot)
    with qtbot.waitSignal(page.evaluation_shown, timeout=60000) as shown:
        page.show_run(str(copy))
    evaluation = shown.args[0]
    total = finished_run.report.num_images
    assert (evaluation.num_images, evaluation.total_images) == (total - 1, total)
    assert [d["path"] for d in evaluation.left_out] == [changed]
    assert changed not in {m["path"] for m in evaluation.mistakes}
    assert f"{total - 1} of {total}" in page.subline.text() and "1 left out" in page.subline.text()
    assert (copy / "report.json").read_bytes() == report_before     # the run's own report is kept
    assert page.grab().save(str(Path(SCREENS or tmp_path) / "results_page_partial.png"))


def test_a_broken_run_folder_shows_an_error_not_a_crash(qtbot, tmp_path):
    page = _page(qtbot)
    page.show_run(str(tmp_path))  # no run files at all
    qtbot.waitUntil(lambda: hasattr(page, "error_dialog") and page.error_dialog.isVisible(), timeout=30000)
    assert page.status()[0] is False
    assert page.error_dialog.message_label.text() == page.status()[1]
    page.error_dialog.close()


@pytest.mark.parametrize("n", [2, 20])
def test_matrix_readable_for_2_to_20_classes(qtbot, n, tmp_path):
    view = ConfusionMatrixView()
    qtbot.addWidget(view)
    classes = [f"class_{i:02d}_with_a_long_name" for i in range(n)]
    matrix = [[(5 if r == c else (r + c) % 3) for c in range(n)] for r in range(n)]
    matrix[0][n - 1] = 0
    view.set_matrix(classes, matrix)
    view.resize(900, 700)
    view.show()
    assert view.count(n - 1, n - 1) == 5 and view.count(0, 1) == matrix[0][1]
    assert view.horizontalHeaderItem(0).toolTip().endswith(classes[0])
    # An empty cell stays white; colour strength follows the count within the row.
    assert view.item(0, n - 1).background().color().name() == "#ffffff"
    def lightness(r, c):
        return view.item(r, c).background().color().lightness()

    assert lightness(n - 1, n - 1) < lightness(n - 1, 0) < 255  # more images in a cell -> stronger colour
    cell = view.visualItemRect(view.item(0, 0))
    text_w = view.fontMetrics().horizontalAdvance("55")
    assert cell.width() > text_w and cell.height() > view.fontMetrics().height()
    out = Path(SCREENS or tmp_path) / f"confusion_{n}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    assert view.grab().save(str(out))


# --- the clickable confusion matrix ------------------------------------------------------------------
def _click_cell(qtbot, matrix, r, c):
    from PySide6.QtCore import Qt

    rect = matrix.visualItemRect(matrix.item(r, c))
    qtbot.mouseClick(matrix.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def test_a_click_on_each_cell_shows_exactly_its_images(qtbot, finished_run, themed, tmp_path):
    from app.widgets.mistakes_gallery import MAX_SHOWN

    report = json.loads(Path(finished_run.run_dir, "report.json").read_text())
    classes, confusion = report["classes"], report["confusion"]
    page = _page(qtbot)
    with qtbot.waitSignal(page.evaluation_shown, timeout=30000):
        page.show_run(finished_run.run_dir)
    qtbot.waitUntil(lambda: page.matrix.size() == page.matrix.sizeHint())     # laid out, as a user sees it
    assert not page.all_mistakes_button.isVisible()
    for r, true in enumerate(classes):
        for c, predicted in enumerate(classes):
            _click_cell(qtbot, page.matrix, r, c)
            assert page.cell == (r, c)
            expected = {p["path"] for p in report["predictions"] if (p["true"], p["predicted"]) == (true, predicted)}
            assert len(expected) == confusion[r][c]
            shown = [page.gallery.mistake(i) for i in range(page.gallery.count())
                     if page.gallery.mistake(i)]
            assert {m["path"] for m in shown} == expected and len(shown) == min(len(expected), MAX_SHOWN)
            what = f"Correct {true}" if r == c else f"True {true}, predicted {predicted}"
            assert page.gallery_box.title().startswith(f"{what}: {confusion[r][c]} image")
            if shown:
                assert page.gallery.item(0).text().startswith(f"{true} ✓" if r == c else f"{true} → {predicted}")
                assert Path(shown[0]["path"]).name in page.gallery.item(0).text()     # the file name is on the tile
            assert page.all_mistakes_button.isVisible()
    page.matrix.setFocus()
    qtbot.waitUntil(lambda: page.gallery.thumbnails_loaded == min(confusion[-1][-1], MAX_SHOWN))
    assert page.grab().save(str(Path(SCREENS or tmp_path) / "results_page_cell.png"))
    page.all_mistakes_button.click()
    wrong = sum(map(sum, confusion)) - sum(confusion[i][i] for i in range(len(classes)))
    assert page.cell is None and not page.all_mistakes_button.isVisible()
    assert page.gallery_box.title().startswith(f"Misclassified images: {wrong} ")


def test_the_matrix_is_keyboard_navigable(qtbot, finished_run):
    from PySide6.QtCore import Qt

    page = _page(qtbot)
    page.show_result(finished_run)
    m = page.matrix
    m.setFocus()
    m.setCurrentCell(0, 0)
    qtbot.keyClick(m, Qt.Key.Key_Right)
    qtbot.keyClick(m, Qt.Key.Key_Down)
    assert (m.currentRow(), m.currentColumn()) == (1, 1)
    assert page.cell is None                    # moving does not open
    qtbot.keyClick(m, Qt.Key.Key_Left)
    qtbot.keyClick(m, Qt.Key.Key_Return)
    assert page.cell == (1, 0)
    classes = finished_run.report.classes
    assert page.gallery_box.title().startswith(f"True {classes[1]}, predicted {classes[0]}:")


def test_cell_counts_come_from_the_matrix_even_beyond_what_is_shown(qtbot, themed):
    from app.widgets.mistakes_gallery import MAX_SHOWN
    from dtl_engine.inference.evaluate import Evaluation

    confusion = [[10, 150], [167, 32]]
    predictions = [{"path": f"/nowhere/{t}{p}{i}.png", "true": t, "predicted": p, "confidence": 0.5 + i / 1000}
                   for (t, p, n) in (("a", "a", 10), ("a", "b", 150), ("b", "a", 167), ("b", "b", 32))
                   for i in range(n)]
    per_class = [{"name": c, "precision": 0.1, "recall": 0.1, "f1": 0.1, "support": 160} for c in "ab"]
    page = ResultsPage()
    qtbot.addWidget(page)
    page.show_evaluation(Evaluation(accuracy=42 / 359, classes=["a", "b"], confusion=confusion, per_class=per_class,
                                    mistakes=[p for p in predictions if p["true"] != p["predicted"]][:200],
                                    num_images=359, total_images=359, predictions=predictions))
    page.open_cell(1, 0)
    assert page.gallery_box.title() == f"True b, predicted a: 167 images (the {MAX_SHOWN} most confident shown)"
    assert page.gallery.count() == MAX_SHOWN
    assert page.gallery.mistake(0)["confidence"] == pytest.approx(0.5 + 166 / 1000)   # most confident first
    page.open_cell(0, 0)
    assert page.gallery_box.title() == "Correct a: 10 images (least sure first)"
    assert page.gallery.mistake(0)["confidence"] == pytest.approx(0.5)


def test_show_in_folder_opens_the_folder_of_the_chosen_image(qtbot, finished_run, monkeypatch):
    from PySide6.QtGui import QDesktopServices

    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    page = _page(qtbot)
    page.show_result(finished_run)
    diagonal = [finished_run.report.confusion[i][i] for i in range(len(finished_run.report.classes))]
    best = diagonal.index(max(diagonal))
    page.open_cell(best, best)                  # the correct ones of a class
    assert not page.folder_button.isEnabled()   # nothing chosen yet
    page.gallery.setCurrentRow(0)
    assert page.folder_button.isEnabled()
    page.folder_button.click()
    assert opened == [str(Path(page.gallery.mistake(0)["path"]).parent)]


# --- why-heatmaps ----------------------------------------------------------------------------------------
def test_why_shows_the_heatmap_of_the_chosen_image_computed_in_the_background(qtbot, finished_run, themed, tmp_path):
    import numpy as np
    from PySide6.QtGui import QImage

    from app import jobs
    from dtl_engine.inference.explain import explain_image, overlay
    from dtl_engine.runs.listing import load_run_model

    page = _page(qtbot)
    page.show_result(finished_run)
    qtbot.waitUntil(lambda: page.matrix.size() == page.matrix.sizeHint())
    diagonal = [finished_run.report.confusion[i][i] for i in range(len(finished_run.report.classes))]
    best = diagonal.index(max(diagonal))
    page.open_cell(best, best)
    assert not page.why_button.isEnabled() and not page.why_view.isVisible()
    page.gallery.setCurrentRow(0)
    record = page.gallery.selected_record()
    page.why_button.click()
    # The click returns at once: the heatmap is a background job, and the panel says it is coming.
    assert page.why_view.isVisible() and page.why_view.image is None
    assert "Finding where the model looked" in page.why_view.caption.text()
    assert any(job.kind == "explain" for job in jobs.active_jobs())
    qtbot.waitUntil(lambda: page.why_view.image is not None, timeout=60_000)
    assert not page.is_explaining()

    model, classes = load_run_model(finished_run.run_dir, which="best", device="cpu")
    expected = explain_image(model, classes, record["path"])
    picture = np.asarray(overlay(record["path"], expected.heatmap))
    shown = page.why_view.image.convertToFormat(QImage.Format.Format_RGB888)
    assert (shown.width(), shown.height()) == (picture.shape[1], picture.shape[0])
    pixels = np.frombuffer(bytes(shown.constBits()), np.uint8).reshape(shown.height(), shown.bytesPerLine())
    pixels = pixels[:, :3 * shown.width()].reshape(shown.height(), shown.width(), 3)
    assert np.abs(pixels.astype(int) - picture.astype(int)).max() <= 2      # that image's heatmap, overlaid
    assert f"<b>{expected.class_name}</b>" in page.why_view.caption.text()
    assert page.grab().save(str(Path(SCREENS or tmp_path) / "results_page_why.png"))

    page.show_all_mistakes()                  # other images: the old heatmap goes away
    assert not page.why_view.isVisible()


def test_why_from_the_context_menu_and_closing_while_it_runs(qtbot, finished_run):
    from app import jobs

    page = ResultsPage()                        # not handed to qtbot: this test deletes it itself
    page.show()
    page.show_result(finished_run)
    page.open_cell(0, 0)
    page.gallery.setCurrentRow(0)
    record = page.gallery.selected_record()
    if record is None:                          # an empty cell: take any mistake instead
        page.show_all_mistakes()
        page.gallery.setCurrentRow(0)
        record = page.gallery.selected_record()
    page.gallery.why_requested.emit(record)     # what the tile's context action sends
    assert page.is_explaining()
    page.close()
    page.deleteLater()
    jobs.cancel_all()
    assert jobs.wait_all(60_000)               # the job ends; no callback reaches the deleted page
    qtbot.wait(50)


@pytest.mark.parametrize("size", [(738, 630), (1338, 950)])     # the page in a 1000x680 and a 1600x1000 window
def test_every_per_class_column_is_in_view_and_whole(qtbot, themed, size):
    """At 1000x680 the per-class table's last column read "Ima" (the columns outgrew the table)."""
    from clipping import clipped_headers, columns_out_of_view

    page = ResultsPage()
    qtbot.addWidget(page)
    page.resize(*size)
    page.show()
    page._fill_table([{"name": str(c), "precision": 0.516, "recall": 0.444, "f1": 0.478, "support": 36}
                      for c in range(10)])
    assert columns_out_of_view(page.per_class) == []
    assert clipped_headers(page.per_class) == []
    from PySide6.QtCore import Qt

    page.per_class.sortByColumn(3, Qt.SortOrder.DescendingOrder)     # sorted: the arrow shows where it is
    assert page.per_class.horizontalHeader().isSortIndicatorShown()

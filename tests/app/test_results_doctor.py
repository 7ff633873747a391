"""Results' "Data doctor" tab on a real tiny run: background check, findings with thumbnails, suggested moves."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from app.pages.results_page import ResultsPage
from run_fixtures import ReplaceAnswers, make_image_folder, train_now
def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def run_with_duplicates(tmp_path_factory):
    """A tiny finished run whose folder holds an exact copy of a red image, once filed under blue."""
    root = tmp_path_factory.mktemp("doctor_run")
    data = make_image_folder(root / "images", per_class=8)
    shutil.copyfile(data / "red" / "red_1.png", data / "blue" / "looks_red.png")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DTL_STUDIO_HOME", str(root / "home"))
        result = train_now(data, epochs=1)
    return result, data


def _page(qtbot, result):
    page = ResultsPage()
    qtbot.addWidget(page)
    page.resize(1100, 760)
    page.show()
    page.show_result(result)
    page.tabs.setCurrentWidget(page.doctor)
    return page


def test_the_data_doctor_runs_in_the_background_and_lists_findings_with_thumbnails(qtbot, run_with_duplicates,
                                                                                  themed, tmp_path):
    import os

    from app import jobs

    result, data = run_with_duplicates
    before = _tree(data)
    page = _page(qtbot, result)
    doctor = page.doctor
    assert doctor.run_button.isEnabled() and not doctor.save_button.isEnabled()
    seen: list[str] = []
    doctor.progress.valueChanged.connect(lambda _v: seen.append(doctor.progress.text()))
    with qtbot.waitSignal(doctor.finished, timeout=120_000) as done:
        doctor.run_button.click()
        assert doctor.is_running() and doctor.progress.isVisible()
        assert doctor.run_button.text() == "Stop the check"
        assert any(job.kind == "doctor" for job in jobs.active_jobs())
    report = done.args[0]
    assert report.num_images == 25
    assert any(text.startswith("Reading ") and "/ 25 images" in text for text in seen)   # progress was shown
    assert not doctor.progress.isVisible() and doctor.run_button.text() == "Check again"
    # Every finding is a row, worst kind first; the copied image and its original are both there.
    rows = doctor.rows()
    assert doctor.table.rowCount() == len(rows) == len(report.findings)
    copies = {str(data / "red" / "red_1.png"), str(data / "blue" / "looks_red.png")}
    duplicate_rows = [r for r, f in enumerate(rows) if f.path in copies and f.kind == "exact_duplicate"]
    assert len(duplicate_rows) == 2
    for r in duplicate_rows:
        assert "duplicate" in doctor.table.item(r, 0).text().lower()
        assert doctor.table.item(r, 1).text() in {"red_1.png", "looks_red.png"}
    images = sum(1 for f in rows if f.kind not in ("imbalance", "unreadable"))
    qtbot.waitUntil(lambda: doctor.thumbnails_loaded == images, timeout=30_000)
    assert doctor.table.item(duplicate_rows[0], 1).icon().isNull() is False
    assert doctor.summary.text().startswith("Checked 25 images")
    assert _tree(data) == before                          # the image folder is only read
    out = Path(os.environ.get("DTL_SCREENSHOT_DIR") or tmp_path) / "results_page_doctor.png"
    assert page.grab().save(str(out))


def test_the_check_can_be_stopped(qtbot, run_with_duplicates):
    result, _ = run_with_duplicates
    page = _page(qtbot, result)
    doctor = page.doctor
    doctor.run_button.click()
    assert doctor.is_running()
    doctor.run_button.click()                             # "Stop the check"
    assert not doctor.is_running() and doctor.run_button.text() == "Check the data"
    assert doctor.summary.text() == "The data check was stopped."
    qtbot.wait(200)
    assert doctor.report is None and doctor.table.rowCount() == 0


def _report_with_a_move(data: Path):
    from dtl_engine.inference.doctor import DoctorReport, Finding

    return DoctorReport(["blue", "red"], {"blue": 9, "red": 8}, 17, [
        Finding("mislabeled", str(data / "blue" / "looks_red.png"), "train", "blue", "red", 0.93)])


def test_suggested_moves_are_saved_as_csv_and_an_existing_file_is_replaced_only_after_asking(
        qtbot, run_with_duplicates, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    result, data = run_with_duplicates
    page = _page(qtbot, result)
    doctor = page.doctor
    doctor._done(_report_with_a_move(data))     # as a finished check hands it over
    assert doctor.save_button.isEnabled()
    out = tmp_path / "moves.csv"
    written = doctor.save_moves(str(out))
    assert written == out.resolve()
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "path,from_class,to_class,confidence"
    assert lines[1].startswith(f"{data / 'blue' / 'looks_red.png'},blue,red,0.93")
    assert "Nothing was moved" in doctor.summary.text()

    out.write_text("mine", encoding="utf-8")
    replace = ReplaceAnswers(monkeypatch)
    replace.answer(QMessageBox.StandardButton.No)
    assert doctor.save_moves(str(out)) is None
    assert out.read_text(encoding="utf-8") == "mine" and "already exists" in replace.asked[-1]
    replace.answer(QMessageBox.StandardButton.Yes)
    assert doctor.save_moves(str(out)) == out.resolve()
    assert out.read_text(encoding="utf-8").startswith("path,from_class")


def test_nothing_is_written_into_the_image_folder(qtbot, run_with_duplicates):
    result, data = run_with_duplicates
    before = _tree(data)
    page = _page(qtbot, result)
    doctor = page.doctor
    doctor._done(_report_with_a_move(data))
    assert doctor.save_moves(str(data / "moves.csv")) is None
    assert "image folder" in doctor.summary.text()
    assert _tree(data) == before


def _report(n: int = 12):
    from dtl_engine.inference.doctor import DoctorReport, Finding

    findings = [Finding("exact_duplicate", f"/data/digits/{i % 10}/digit_{i:04d}.png", "train", str(i % 10),
                        score=2.0, group=i // 2 + 1,
                        detail=f"same as {i % 10}/digit_{i + 1000:04d}.png; across train/val (leakage)")
                for i in range(n)]
    return DoctorReport(classes=[str(c) for c in range(10)], class_counts={str(c): 180 for c in range(10)},
                        num_images=1797, findings=findings)


@pytest.mark.parametrize(("size", "rows"), [((978, 770), 4), ((738, 630), 3)])  # in a 1240x820, 1000x680 window
def test_the_doctor_shows_its_findings_whole_and_several_at_once(qtbot, themed, size, rows):
    """One row showed at 1240x820 until the splitter was dragged; a detail read "same as 0/digi…/val (leakage)"."""
    from PySide6.QtCore import QRect, Qt
    from PySide6.QtGui import QFontMetrics
    from PySide6.QtWidgets import QApplication

    page = ResultsPage()
    qtbot.addWidget(page)
    page.resize(*size)
    page.show()
    page.tabs.setCurrentWidget(page.doctor)
    page.doctor._done(_report())
    QApplication.processEvents()
    table = page.doctor.table
    assert table.viewport().height() >= rows * table.rowHeight(0), f"fewer than {rows} findings in view"
    from clipping import clipped_headers, columns_out_of_view

    assert columns_out_of_view(table) == [] and clipped_headers(table) == []
    detail = 5
    fm = QFontMetrics(table.font())
    for row in range(table.rowCount()):
        text = table.item(row, detail).text()
        need = fm.boundingRect(QRect(0, 0, table.columnWidth(detail) - 8, 10_000),
                               int(Qt.TextFlag.TextWordWrap), text).height()
        assert need <= table.rowHeight(row), f"cut short: {text}"

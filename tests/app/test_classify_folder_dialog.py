"""Export step, "Classify a folder…": one CSV row per file, sorted copies, an untouched input, Stop keeps rows."""
from __future__ import annotations

import csv
import hashlib
import time
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QMessageBox

from app.pages.export_page import ExportPage
from app.widgets import classify_folder_dialog as dialog_module
from run_fixtures import COLOURS, ReplaceAnswers, make_image_folder


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _dialog(qtbot, exported, tmp_path):
    run, model = exported
    page = ExportPage()
    qtbot.addWidget(page)
    page.set_run(run.run_dir)
    page.last_result = type("Exported", (), {"path": str(model), "verified": True})()
    page._update_buttons()
    assert page.classify_button.isEnabled()
    places = tmp_path / "Documents"
    places.mkdir()
    page.open_classify_folder()
    dialog = page.classify_dialog
    dialog.places = [places]
    assert dialog.model_edit.text() == str(model)       # the model just exported
    return page, dialog, places


@pytest.mark.slow
def test_classifies_every_file_sorts_copies_and_leaves_the_input_unchanged(qtbot, exported, tmp_path,
                                                                           monkeypatch, themed, screens_dir):
    new = make_image_folder(tmp_path / "new photos", per_class=3)
    (new / "red" / "broken.png").write_bytes(b"not a picture")
    files = [p for p in new.rglob("*") if p.is_file()]
    before = _hashes(new)
    page, dialog, places = _dialog(qtbot, exported, tmp_path)
    dialog.set_folder(str(new))
    # Suggested places: free names in Documents, outside the folder being classified.
    assert Path(dialog.csv_edit.text()) == places / "new photos predictions.csv"
    assert Path(dialog.sort_edit.text()) == places / "new photos sorted"
    assert not dialog.sort_check.isChecked()
    dialog.sort_check.setChecked(True)
    dialog.confidence_spin.setValue(99)         # a tiny random-weight model is rarely this sure
    with qtbot.waitSignal(dialog.classified, timeout=120_000) as done:
        dialog.start_button.click()
    result = done.args[0]
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=10_000)

    assert _hashes(new) == before                # byte for byte, nothing added or removed
    rows = _rows(places / "new photos predictions.csv")
    assert sorted(r["path"] for r in rows) == sorted(str(p.resolve()) for p in files)
    broken = next(r for r in rows if r["path"].endswith("broken.png"))
    assert broken["top1"] == "" and broken["error"]
    good = [r for r in rows if not r["error"]]
    assert len(good) == 9 and result.classified == 9 and not result.cancelled
    classes = set(exported[0].report.classes)
    assert {r["top1"] for r in good} <= classes
    # One copy per classified image: in its class's folder, or in _unsure below 99 %.
    copies = [p for p in (places / "new photos sorted").rglob("*") if p.is_file()]
    assert len(copies) == 9
    for r in good:
        folder = "_unsure" if float(r["confidence"]) < 0.99 else r["top1"]
        assert Path(r["copied_to"]).parent == places / "new photos sorted" / folder
    # The summary: counts per class, unsure, unreadable (with the reason), and Show in folder.
    summary = dialog.summary_label.text()
    for name, n in result.counts.items():
        assert f"{name}:&nbsp;{n}" in summary
    assert f"Unsure, below 99 % (copies in _unsure): {result.unsure}" in summary
    assert "could not be read: 1" in summary
    assert dialog.unreadable_view.isVisible() and "broken.png" in dialog.unreadable_view.toPlainText()
    assert "Done: 9 of 10 files classified" in dialog.message_label.text()
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    assert dialog.show_button.isVisible()
    dialog.show_button.click()
    assert opened == [str(places / "new photos sorted")]
    assert dialog.grab().save(str(screens_dir / "classify_folder.png"))

    # Classifying again suggests fresh names: nothing is proposed over the first results.
    dialog.csv_edit.clear()
    dialog.sort_edit.clear()
    dialog.set_folder(str(new))
    assert Path(dialog.csv_edit.text()) == places / "new photos predictions (2).csv"


def test_stop_keeps_the_rows_done(qtbot, exported, tmp_path, monkeypatch):
    import dtl_engine.inference.classify_folder as engine

    new = make_image_folder(tmp_path / "many", per_class=12)
    before = _hashes(new)
    real = engine._classify_one

    def slow(*args, **kwargs):          # a slow disk: Stop lands while images remain
        time.sleep(0.05)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "_classify_one", slow)
    page, dialog, places = _dialog(qtbot, exported, tmp_path)
    dialog.set_folder(str(new))
    with qtbot.waitSignal(dialog.classified, timeout=120_000) as done:
        dialog.start_button.click()
        qtbot.waitUntil(lambda: dialog.progress.value() >= 3, timeout=60_000)
        assert dialog.stop_button.isEnabled() and not dialog.start_button.isEnabled()
        dialog.stop_button.click()
    result = done.args[0]
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=10_000)
    assert result.cancelled
    assert not Path(dialog.csv_edit.text()).exists()        # never a truncated file under the name asked for
    rows = _rows(Path(result.csv_path))
    assert 3 <= len(rows) < 36 and len(rows) == result.classified and "(partial, " in result.csv_path
    text = dialog.message_label.text()
    assert "Stopped after" in text and f"those {len(rows)} rows are kept" in text and result.csv_path in text
    assert _hashes(new) == before and dialog.start_button.isEnabled()


def test_refusals_are_the_engines_sentences_and_an_existing_csv_is_asked_about(qtbot, exported, tmp_path,
                                                                                monkeypatch):
    new = make_image_folder(tmp_path / "photos", per_class=2, classes={"red": COLOURS["red"]})
    before = _hashes(new)
    page, dialog, places = _dialog(qtbot, exported, tmp_path)
    dialog.set_folder(str(new))
    dialog.csv_edit.setText(str(new / "inside.csv"))            # into the folder being classified
    dialog.start_button.click()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=60_000)
    assert dialog.message_label.text() == ("The results are never written into the folder being classified "
                                           f"('{new.resolve()}').")
    assert _hashes(new) == before and dialog.result is None

    existing = places / "old.csv"
    existing.write_text("keep me", encoding="utf-8")
    dialog.csv_edit.setText(str(existing))
    replace = ReplaceAnswers(monkeypatch)
    replace.answer(QMessageBox.StandardButton.No)
    dialog.start_button.click()
    qtbot.wait(200)
    assert len(replace.asked) == 1 and "already exists" in replace.asked[0]
    assert not dialog.is_running() and existing.read_text(encoding="utf-8") == "keep me"

    replace.answer(QMessageBox.StandardButton.Yes)
    with qtbot.waitSignal(dialog.classified, timeout=120_000):
        dialog.start_button.click()
    qtbot.waitUntil(lambda: not dialog.is_running(), timeout=10_000)
    assert len(_rows(existing)) == 2
    assert sorted(p.name for p in places.iterdir()) == ["old.csv"]       # no temporary file left beside it
    assert _hashes(new) == before


def test_suggested_places_are_never_inside_the_input_folder(tmp_path):
    docs = tmp_path / "home" / "Documents"
    docs.mkdir(parents=True)
    # The user classifies their whole home folder: Documents is inside it, so the suggestion goes beside it.
    place = dialog_module.suggest_place(tmp_path / "home", "home predictions.csv", [docs, tmp_path])
    assert place == tmp_path / "home predictions.csv"
    (tmp_path / "home predictions.csv").write_text("x")
    assert dialog_module.suggest_place(tmp_path / "home", "home predictions.csv", [docs, tmp_path]) == \
        tmp_path / "home predictions (2).csv"


def test_a_new_folder_clears_the_last_summary(qtbot, tmp_path, themed):
    """"Done: 24 of 26" was about the folder before; it goes once another folder is picked."""
    from types import SimpleNamespace

    first, second = make_image_folder(tmp_path / "first", per_class=1), make_image_folder(tmp_path / "second",
                                                                                         per_class=1)
    dialog = dialog_module.ClassifyFolderDialog(str(tmp_path / "model.pt"), [tmp_path])
    qtbot.addWidget(dialog)
    dialog.set_folder(str(first))
    dialog._sort_into = None
    dialog._done(SimpleNamespace(classified=24, total=26, unreadable=[(str(first / "x.png"), "empty")],
                                 cancelled=False, partial=False, csv_path=str(tmp_path / "first predictions.csv"),
                                 counts={"red": 24}, unsure=0, copied=0))
    assert dialog.message_label.text().startswith("Done: 24 of 26")
    dialog.show()
    qtbot.waitExposed(dialog)
    summary = dialog.summary_label                  # the summary's last line was cut off by the buttons below
    assert summary.height() >= summary.heightForWidth(summary.width()) and "Could not be read: 1" in summary.text()
    dialog.set_folder(str(second))
    assert dialog.message_label.text() == "" and dialog.summary_label.text() == "" and dialog.result is None
    assert not dialog.unreadable_view.isVisibleTo(dialog) and not dialog.show_button.isVisibleTo(dialog)


def test_a_long_model_path_shows_both_ends_and_all_of_it_as_tooltip(qtbot, tmp_path, themed):
    """Not "oot/2026…": the start of the path and the file name, elided in the middle, fitting the field."""
    from PySide6.QtGui import QFontMetrics

    model = "/home/someone/.local/share/DTL Studio/runs/20261207-000054_vit_tiny_patch16_224/export/model.pt"
    dialog = dialog_module.ClassifyFolderDialog(model, [tmp_path])
    qtbot.addWidget(dialog)
    dialog.resize(dialog.minimumWidth(), dialog.sizeHint().height())
    dialog.show()
    qtbot.waitExposed(dialog)
    dialog.start_button.setFocus()
    edit = dialog.model_edit
    shown = edit.shown_text()
    assert edit.toolTip() == model
    assert shown != model and "…" in shown, "make the path longer: it fits the field"
    assert shown.startswith("/home/") and shown.endswith("model.pt")
    assert QFontMetrics(edit.font()).horizontalAdvance(shown) <= edit._text_rect().width()

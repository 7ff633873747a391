"""Data page: drops (good and bad), the background scan, classes, split, warnings, recent folders."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from app.pages.data_page import DataPage
from app.widgets.drop_zone import folder_from_mime


@pytest.fixture
def page(qtbot, settings, themed):
    p = DataPage(settings)
    qtbot.addWidget(p)
    p.resize(1100, 760)
    p.show()
    yield p


def drop(widget, mime: QMimeData) -> None:
    """Deliver drag-enter then drop events, as a drag from the file manager would."""
    centre = widget.rect().center()
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    with warnings.catch_warnings():  # only the QPoint constructor exists for drag-enter
        warnings.simplefilter("ignore", DeprecationWarning)
        enter = QDragEnterEvent(centre, *args)
    assert QApplication.sendEvent(widget, enter) and enter.isAccepted()
    assert QApplication.sendEvent(widget, QDropEvent(QPointF(centre), *args))


def test_dropped_folder_is_scanned_and_shown(qtbot, page, image_folder, wait_scan, screens_dir, folder_mime):
    ready = []
    page.scan_ready.connect(ready.append)
    drop(page.drop_zone, folder_mime(image_folder))
    assert page.is_scanning()
    assert page.status() == (False, "Scanning the folder…")
    wait_scan(page)

    assert page.message_text() == ""
    assert page.status() == (True, "3 classes · 18 images")
    assert len(ready) == 1 and ready[0].classes == ["birds", "cats", "dogs"]
    table = page.class_table
    rows = {table.item(r, 0).text(): int(table.item(r, 1).text()) for r in range(table.rowCount())}
    assert rows == {"birds": 2, "cats": 8, "dogs": 8}
    # The split uses 20 % by default and covers every image.
    split = page.split()
    assert len(split.train) + len(split.val) == 18 and len(split.val) >= 3
    assert "Split: train" in page.split_label.text()
    warnings = "\n".join(page.warnings())
    assert "broken.jpg" in warnings           # the unreadable image is listed with its reason
    assert "birds" in warnings                # imbalance (2 vs 8) is called out
    qtbot.waitUntil(lambda: table.thumbnails_loaded() == 3, timeout=10_000)
    assert page.settings.recent_folders()[0] == str(image_folder)
    QApplication.processEvents()
    assert page.grab().save(str(screens_dir / "data_page.png"))


@pytest.mark.parametrize("kind", ["file", "two_folders", "text", "missing"])
def test_bad_drops_explain_in_place(qtbot, page, image_folder, tmp_path, kind, folder_mime):
    if kind == "file":
        mime = folder_mime(image_folder / "cats" / "cats_0.png")
        expected = "is a file"
    elif kind == "two_folders":
        mime = folder_mime(image_folder / "cats", image_folder / "dogs")
        expected = "one folder at a time"
    elif kind == "text":
        mime = QMimeData()
        mime.setText("hello")
        expected = "not a folder"
    else:
        mime = folder_mime(tmp_path / "gone")
        expected = "does not exist"
    drop(page.drop_zone, mime)
    assert expected in page.message_text()
    assert not page.is_scanning()
    assert page.status()[0] is False
    assert page.scan_result() is None


def test_folder_from_mime_accepts_exactly_one_folder(image_folder, folder_mime):
    folder, problem = folder_from_mime(folder_mime(image_folder))
    assert folder == str(image_folder) and problem is None
    folder, problem = folder_from_mime(folder_mime(image_folder, image_folder / "cats"))
    assert folder is None and "2 items" in problem


def test_data_error_sentence_is_shown(qtbot, page, one_class_folder, wait_scan):
    page.open_folder(str(one_class_folder))
    wait_scan(page)
    text = page.message_text()
    assert "class" in text.lower() and "Traceback" not in text
    assert page.status() == (False, "That folder cannot be used — choose another")
    assert page.results.isHidden()


def test_validation_share_updates_the_split(qtbot, page, image_folder, wait_scan):
    page.open_folder(str(image_folder))
    wait_scan(page)
    before = len(page.split().val)
    page.set_val_fraction(0.5)
    after = len(page.split().val)
    assert after > before
    assert "50%" in page.split_label.text()


def test_cancel_stops_a_slow_scan(qtbot, page, image_folder, monkeypatch):
    import dtl_engine.data as data

    stopped = []

    def slow_scan(root, progress=None, should_stop=None):
        for i in range(400):
            if should_stop and should_stop():
                stopped.append(True)
                raise data.ScanCancelled("The scan was cancelled.")
            if progress:
                progress(i, 400)
            time.sleep(0.01)
        raise AssertionError("the scan was not cancelled")

    monkeypatch.setattr(data, "scan_folder", slow_scan)
    page.open_folder(str(image_folder))
    qtbot.waitUntil(lambda: page.progress.maximum() == 400, timeout=30_000)
    assert page.progress_box.isVisible()
    page.cancel_scan()
    assert not page.is_scanning()
    assert page.status() == (False, "Waiting for an image folder")
    qtbot.waitUntil(lambda: bool(stopped), timeout=10_000)
    assert page.message_text() == ""


def test_recent_folders_offer_the_last_folder(qtbot, page, image_folder, wait_scan):
    page.open_folder(str(image_folder))
    wait_scan(page)
    combo = page.recent_combo
    assert combo.isEnabled() and combo.itemData(1) == str(image_folder)
    page.open_folder(str(image_folder / "cats"))  # a folder without classes: an error, the list stays
    wait_scan(page)
    combo.activated.emit(1)
    assert page.is_scanning()
    wait_scan(page)
    assert page.data_root() == str(image_folder)


def test_sample_data_button_loads_the_digits(qtbot, page, wait_scan, monkeypatch, image_folder):
    # The real sample set writes ~1,800 PNGs; here the engine call is replaced by our tiny folder.
    import dtl_engine.data.sample as sample

    monkeypatch.setattr(sample, "ensure_sample_dataset", lambda: Path(image_folder))
    qtbot.mouseClick(page.sample_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.scan_result() is not None or bool(page.message_text()), timeout=90_000)
    assert page.data_root() == str(image_folder)


def test_cancel_while_the_sample_is_prepared(qtbot, page, monkeypatch):
    import dtl_engine.data.sample as sample

    release = __import__("threading").Event()

    def slow_sample():
        release.wait(10)
        return Path("never-used")

    monkeypatch.setattr(sample, "ensure_sample_dataset", slow_sample)
    page.use_sample()
    assert page.is_scanning() and page.progress_box.isVisible()
    page.cancel_scan()
    assert not page.is_scanning() and not page.progress_box.isVisible()
    release.set()
    qtbot.wait(300)
    assert page.status() == (False, "Waiting for an image folder") and page.message_text() == ""

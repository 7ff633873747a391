"""The table of classes found by a scan: thumbnail, name, image count, train / val counts.

Thumbnails load in a background thread pool (QImage is safe off the GUI thread);
the table fills in each icon as it arrives.
"""
from __future__ import annotations

from PySide6.QtCore import QObject, QRunnable, QSize, Qt, QThreadPool, Signal
from PySide6.QtGui import QIcon, QImage, QImageReader, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget

THUMB = 40


class _ThumbSignals(QObject):
    loaded = Signal(int, int, QImage)      # generation, row, image


class _ThumbJob(QRunnable):
    def __init__(self, signals: _ThumbSignals, generation: int, row: int, path: str) -> None:
        super().__init__()
        self.signals, self.generation, self.row, self.path = signals, generation, row, path

    def run(self) -> None:
        reader = QImageReader(self.path)
        reader.setAutoTransform(True)       # honour EXIF orientation like the engine does
        size = reader.size()
        if size.isValid() and size.width() > 0 and size.height() > 0:
            reader.setScaledSize(size.scaled(THUMB * 2, THUMB * 2, Qt.AspectRatioMode.KeepAspectRatio))
        image = reader.read()
        if not image.isNull():
            try:
                self.signals.loaded.emit(self.generation, self.row, image)
            except RuntimeError:    # the table went away meanwhile
                pass


def load_thumbnail_sync(path: str) -> QImage:
    """Read one thumbnail in the calling thread (used by tests and small lists)."""
    reader = QImageReader(path)
    reader.setAutoTransform(True)
    return reader.read()


class ClassTable(QTableWidget):
    """Rows: one per class. ``set_classes`` replaces the content; thumbnails arrive later."""

    COLUMNS = ("Class", "Images", "Train", "Val", "Share")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(self.COLUMNS), parent)
        self.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.setIconSize(QSize(THUMB, THUMB))
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(THUMB + 10)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setAlternatingRowColors(True)
        self.setShowGrid(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(self.COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(2)
        self._signals = _ThumbSignals()
        self._signals.loaded.connect(self._on_thumb)
        self._generation = 0

    def set_classes(self, rows: list[dict]) -> None:
        """Fill the table. Each row: name, count, train, val (ints or None), first (image path or None)."""
        self._generation += 1
        self.setRowCount(len(rows))
        total = sum(r["count"] for r in rows) or 1
        for i, r in enumerate(rows):
            name = QTableWidgetItem(r["name"])
            name.setToolTip(r.get("first") or r["name"])
            self.setItem(i, 0, name)
            for col, value in ((1, r["count"]), (2, r.get("train")), (3, r.get("val"))):
                item = QTableWidgetItem("—" if value is None else f"{value:,}")
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.setItem(i, col, item)
            share = QTableWidgetItem(f"{100.0 * r['count'] / total:.1f} %")
            share.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.setItem(i, 4, share)
            if r.get("first"):
                self.pool.start(_ThumbJob(self._signals, self._generation, i, r["first"]))

    def _on_thumb(self, generation: int, row: int, image: QImage) -> None:
        if generation != self._generation or row >= self.rowCount():
            return                      # a late thumbnail from a previous folder
        item = self.item(row, 0)
        if item is not None:
            item.setIcon(QIcon(QPixmap.fromImage(image)))

    def thumbnails_loaded(self) -> int:
        """How many rows already show a thumbnail."""
        return sum(1 for i in range(self.rowCount()) if self.item(i, 0) and not self.item(i, 0).icon().isNull())

    def shutdown(self) -> None:
        """Drop queued thumbnail work and wait for running jobs (window closing)."""
        self.pool.clear()
        self.pool.waitForDone(2000)

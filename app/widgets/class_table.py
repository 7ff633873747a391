"""The table of classes found by a scan: thumbnail, name, image count, train / val counts.

Thumbnails load in one background job (QImage is safe off the GUI thread);
the table fills in each icon as it arrives.
"""
from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from app import jobs
from app.widgets.thumbnails import read_thumbnail

THUMB = 40


def _load_thumbnails(firsts: list[tuple[int, str]], job: jobs.Job) -> None:
    """Report (row, image) for each class's first image; stops when the job is cancelled."""
    for row, path in firsts:
        if job.is_cancelled:
            return
        image = read_thumbnail(path, THUMB * 2)
        if not image.isNull():
            job.report((row, image))


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

    def set_classes(self, rows: list[dict]) -> None:
        """Fill the table. Each row: name, count, train, val (ints or None), first (image path or None)."""
        jobs.drop(self, "thumbnails")       # thumbnails of the previous folder are not wanted any more
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
        firsts = [(i, r["first"]) for i, r in enumerate(rows) if r.get("first")]
        # on_progress is connected before the job starts: a thumbnail reported at once is not lost
        jobs.submit(lambda job: _load_thumbnails(firsts, job), kind="thumbnails", what="Loading thumbnails",
                    context=self, lane="thumbnails", supersede="thumbnails",
                    on_progress=lambda answer: self._on_thumb(*answer))

    def _on_thumb(self, row: int, image: QImage) -> None:
        if row >= self.rowCount():
            return
        item = self.item(row, 0)
        if item is not None:
            item.setIcon(QIcon(QPixmap.fromImage(image)))

    def thumbnails_loaded(self) -> int:
        """How many rows already show a thumbnail."""
        return sum(1 for i in range(self.rowCount()) if self.item(i, 0) and not self.item(i, 0).icon().isNull())

"""Gallery of evaluated images: thumbnail, true class, predicted class, confidence, file name.

Shows the misclassified images, or the images of one confusion-matrix cell (the
diagonal holds the correct ones). Thumbnails are read off the main thread (QImage
is safe there; QPixmap is made on the main thread when each batch arrives). A
right click offers "Why?" (a heatmap, computed by the page) and "Show in folder".
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint, QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QImage, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView, QListWidget, QListWidgetItem, QMenu, QWidget

from app import jobs
from app.widgets.open_folder import open_folder
from app.widgets.thumbnails import THUMB, read_thumbnail

MAX_SHOWN = 60  # more than a screenful is not useful; the report keeps the full list


def show_in_folder(path: str, parent: QWidget | None = None) -> bool:
    """Open the folder that holds ``path`` in the system's file manager (or say where it is)."""
    return open_folder(Path(path).parent, parent, f"The folder of {Path(path).name}")


def tile_text(record: dict) -> str:
    """Three short lines: what the model said, how sure it was, and the file name."""
    true, predicted = record.get("true", "?"), record.get("predicted", "?")
    verdict = f"{true} ✓" if true == predicted else f"{true} → {predicted}"
    conf = float(record.get("confidence", 0.0))
    return f"{verdict}\n{100 * conf:.0f} % sure\n{Path(str(record.get('path', ''))).name}"


class MistakesGallery(QListWidget):
    """Icon grid of evaluated images; the tooltip gives the file path."""

    why_requested = Signal(dict)        # the record of the image whose heatmap is asked for

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setGridSize(QSize(THUMB + 72, THUMB + 70))
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setWordWrap(True)
        self.setUniformItemSizes(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setSpacing(4)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._context_menu)
        self.thumbnails_loaded = 0
        self.empty_text = "No mistakes to show."

    def set_mistakes(self, mistakes: list[dict], empty_text: str | None = None) -> None:
        """Show up to :data:`MAX_SHOWN` images ({path, true, predicted, confidence}), in the given order."""
        self.clear()
        jobs.drop(self, "thumbnails")       # the gallery shows other images now
        self.thumbnails_loaded = 0
        placeholder = QPixmap(THUMB, THUMB)
        placeholder.fill(QColor("#eeeeee"))
        shown = mistakes[:MAX_SHOWN]
        for m in shown:
            conf = float(m.get("confidence", 0.0))
            true, predicted = m.get("true", "?"), m.get("predicted", "?")
            item = QListWidgetItem(QIcon(placeholder), tile_text(m))
            item.setToolTip(str(m.get("path", "")))
            item.setData(Qt.ItemDataRole.UserRole, dict(m))
            item.setStatusTip(f"true: {true}, predicted: {predicted} ({100 * conf:.0f} % sure)")
            item.setTextAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
            self.addItem(item)
        if not shown:
            item = QListWidgetItem(empty_text or self.empty_text)
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.addItem(item)
            return
        paths = [str(m.get("path", "")) for m in shown]
        jobs.submit(lambda _job: [read_thumbnail(p) for p in paths], kind="thumbnails", what="Loading thumbnails",
                    context=self, lane="thumbnails", supersede="thumbnails", on_done=self._set_thumbnails)

    def _set_thumbnails(self, images: list[QImage]) -> None:
        for row, image in enumerate(images):
            item = self.item(row)
            if item is not None and not image.isNull():
                item.setIcon(QIcon(QPixmap.fromImage(image)))
                self.thumbnails_loaded += 1

    def paths(self) -> list[str]:
        return [self.item(i).toolTip() for i in range(self.count()) if self.item(i).toolTip()]

    def mistake(self, row: int) -> dict:
        """The record shown in tile ``row`` ({path, true, predicted, confidence})."""
        return self.item(row).data(Qt.ItemDataRole.UserRole)

    def selected_record(self) -> dict | None:
        """The record of the chosen tile, or None."""
        item = self.currentItem()
        if item is None or not item.isSelected():
            return None
        return item.data(Qt.ItemDataRole.UserRole)

    def _context_menu(self, pos: QPoint) -> None:
        item = self.itemAt(pos)
        record = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        if not record:
            return
        self.setCurrentItem(item)
        menu = QMenu(self)
        menu.addAction("Why? Show where the model looked", lambda: self.why_requested.emit(dict(record)))
        menu.addAction("Show in folder", lambda: show_in_folder(str(record.get("path", "")), self))
        menu.exec(self.viewport().mapToGlobal(pos))

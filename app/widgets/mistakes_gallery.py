"""Gallery of misclassified images: thumbnail, true class, predicted class, confidence.

Thumbnails are read off the main thread (QImage is safe there; QPixmap is
made on the main thread when each batch arrives).
"""
from __future__ import annotations


from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QIcon, QImage, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView, QListWidget, QListWidgetItem, QWidget

from app import jobs
from app.widgets.thumbnails import THUMB, read_thumbnail

MAX_SHOWN = 60  # more than a screenful is not useful; the report keeps the full list


class MistakesGallery(QListWidget):
    """Icon grid of mistakes; the tooltip gives the file path."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setIconSize(QSize(THUMB, THUMB))
        self.setGridSize(QSize(THUMB + 72, THUMB + 52))
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setWordWrap(True)
        self.setUniformItemSizes(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setSpacing(4)
        self._generation = 0
        self._thumb_job: jobs.Job | None = None
        self.thumbnails_loaded = 0
        self.empty_text = "No mistakes to show."

    def set_mistakes(self, mistakes: list[dict]) -> None:
        """Show up to :data:`MAX_SHOWN` mistakes ({path, true, predicted, confidence})."""
        self.clear()
        self._generation += 1
        self.thumbnails_loaded = 0
        generation = self._generation
        placeholder = QPixmap(THUMB, THUMB)
        placeholder.fill(QColor("#eeeeee"))
        shown = mistakes[:MAX_SHOWN]
        for m in shown:
            conf = float(m.get("confidence", 0.0))
            true, predicted = m.get("true", "?"), m.get("predicted", "?")
            item = QListWidgetItem(QIcon(placeholder), f"{true} → {predicted}\n{100 * conf:.0f} % sure")
            item.setToolTip(str(m.get("path", "")))
            item.setData(Qt.ItemDataRole.UserRole, dict(m))
            item.setStatusTip(f"true: {true}, predicted: {predicted} ({100 * conf:.0f} % sure)")
            item.setTextAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
            self.addItem(item)
        if not shown:
            item = QListWidgetItem(self.empty_text)
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.addItem(item)
            return
        paths = [str(m.get("path", "")) for m in shown]
        if self._thumb_job is not None:
            self._thumb_job.cancel()
        self._thumb_job = jobs.submit(lambda _job: [read_thumbnail(p) for p in paths], kind="thumbnails",
                                      what="Loading thumbnails", context=self, lane="thumbnails",
                                      on_done=lambda images: self._set_thumbnails(generation, images))

    def _set_thumbnails(self, generation: int, images: list[QImage]) -> None:
        if generation != self._generation:
            return  # an older request; the gallery shows another run now
        for row, image in enumerate(images):
            item = self.item(row)
            if item is not None and not image.isNull():
                item.setIcon(QIcon(QPixmap.fromImage(image)))
                self.thumbnails_loaded += 1

    def paths(self) -> list[str]:
        return [self.item(i).toolTip() for i in range(self.count()) if self.item(i).toolTip()]

    def mistake(self, row: int) -> dict:
        """The mistake record shown in tile ``row`` ({path, true, predicted, confidence})."""
        return self.item(row).data(Qt.ItemDataRole.UserRole)


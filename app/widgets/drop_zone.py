"""A large target for dropping one image folder from the file manager."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMimeData, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QDragEnterEvent, QDropEvent, QFont, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from app.theme import colors


def folder_from_mime(mime: QMimeData) -> tuple[str | None, str | None]:
    """Read one local folder out of drag data: (folder, None) or (None, a sentence why not)."""
    if not mime.hasUrls():
        return None, "That is not a folder: drop a folder of images from your file manager."
    urls = [u for u in mime.urls()]
    local = [u.toLocalFile() for u in urls if u.isLocalFile()]
    if not local:
        return None, "Only folders on this computer can be used; that item is not a local folder."
    if len(urls) > 1:
        return None, (f"Drop one folder at a time (you dropped {len(urls)} items): the folder that holds one "
                      "sub-folder per class.")
    path = Path(local[0])
    if path.is_file():
        return None, (f"'{path.name}' is a file. Drop the folder that holds one sub-folder "
                      "of images per class.")
    if not path.is_dir():
        return None, f"'{path}' does not exist or is not a folder."
    return str(path), None


class DropZone(QWidget):
    """Dashed rounded area; emits ``folder_dropped(path)`` or ``drop_rejected(sentence)``."""

    folder_dropped = Signal(str)
    drop_rejected = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self._hover = False
        self._title = "Drop an image folder here"
        self._hint = "One sub-folder per class (cats/, dogs/ …) or train/ + val/ folders"

    def set_text(self, title: str, hint: str) -> None:
        """Change the two lines shown inside the zone."""
        self._title, self._hint = title, hint
        self.update()

    # --- drag and drop -----------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt name)
        # Accept anything so that a wrong drop gets an explanation instead of a silent "no".
        event.acceptProposedAction()
        self._hover = True
        self.update()

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        event.acceptProposedAction()

    def dragLeaveEvent(self, event) -> None:  # noqa: N802
        self._hover = False
        self.update()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        self._hover = False
        self.update()
        event.acceptProposedAction()
        self.handle_mime(event.mimeData())

    def handle_mime(self, mime: QMimeData) -> str | None:
        """Process drop data; return the folder when it was usable (signals tell the page)."""
        folder, problem = folder_from_mime(mime)
        if folder is None:
            self.drop_rejected.emit(problem or "That cannot be used.")
        else:
            self.folder_dropped.emit(folder)
        return folder

    # --- painting --------------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802
        c = colors()
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(1.5, 1.5, -1.5, -1.5)
        accent = QColor(c["accent"])
        fill = QColor(accent)
        fill.setAlpha(38 if self._hover else 14)
        pen = QPen(accent if self._hover else QColor(c["border"]).darker(115), 2, Qt.PenStyle.DashLine)
        painter.setPen(pen)
        painter.setBrush(fill)
        painter.drawRoundedRect(rect, 10, 10)

        # A simple folder glyph above the two lines of text.
        h = self.height()
        glyph_h = 30 if h >= 140 else 0
        text_block = glyph_h + 52
        top = (h - text_block) / 2
        if glyph_h:
            gx = self.width() / 2 - 22
            painter.setPen(QPen(accent, 2))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawRoundedRect(QRectF(gx, top + 6, 44, 26), 3, 3)
            painter.drawLine(int(gx + 2), int(top + 6), int(gx + 6), int(top))
            painter.drawLine(int(gx + 6), int(top), int(gx + 18), int(top))
            painter.drawLine(int(gx + 18), int(top), int(gx + 21), int(top + 6))
        title_font = QFont(self.font())
        title_font.setPointSizeF(self.font().pointSizeF() * 1.35)
        title_font.setWeight(QFont.Weight.DemiBold)
        painter.setFont(title_font)
        painter.setPen(QColor(c["text"]))
        y = top + glyph_h + 8
        painter.drawText(QRectF(8, y, self.width() - 16, 26), Qt.AlignmentFlag.AlignCenter, self._title)
        painter.setFont(self.font())
        painter.setPen(QColor(c["muted"]))
        painter.drawText(QRectF(8, y + 26, self.width() - 16, 22), Qt.AlignmentFlag.AlignCenter, self._hint)

"""A path field that shows both ends of a long path: elided in the middle while it is not being edited."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import QLineEdit, QStyle, QStyleOptionFrame, QWidget


class PathEdit(QLineEdit):
    """A QLineEdit for a file or folder path; the whole path is its tooltip.

    A plain line edit shows a long path from wherever its cursor scrolled to ("oot/2026…"), hiding both
    the place and the file name; this one shows "/home/ann/…/model.pt" until it gets the focus.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.textChanged.connect(self.setToolTip)

    def _text_rect(self):
        option = QStyleOptionFrame()
        self.initStyleOption(option)
        rect = self.style().subElementRect(QStyle.SubElement.SE_LineEditContents, option, self)
        m = self.textMargins()
        return rect.adjusted(m.left() + 2, m.top(), -m.right() - 2, -m.bottom())

    def shown_text(self) -> str:
        """What the field shows now: the path, elided in the middle when it does not fit and is not edited."""
        text = self.text()
        if self.hasFocus() or not text:
            return text
        return self.fontMetrics().elidedText(text, Qt.TextElideMode.ElideMiddle, self._text_rect().width())

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        shown = self.shown_text()
        if shown == self.text():
            super().paintEvent(event)
            return
        option = QStyleOptionFrame()
        self.initStyleOption(option)
        painter = QPainter(self)
        self.style().drawPrimitive(QStyle.PrimitiveElement.PE_PanelLineEdit, option, painter, self)
        painter.setPen(self.palette().color(self.foregroundRole()))
        painter.drawText(self._text_rect(), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), shown)
        painter.end()

"""The left step bar: Data → Model → Train → Results → Export, plus Runs.

Each step shows its number (a check mark once ready), its title and one status
line: what it shows, or what it is waiting for.
"""
from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPen
from PySide6.QtWidgets import QAbstractButton, QButtonGroup, QFrame, QLabel, QVBoxLayout, QWidget

from app.theme import colors, readable_on, selection_tint

MIN_WIDTH, MAX_WIDTH = 262, 360
STATUS_LINES = 2        # a step's status wraps onto a second line before it is cut short


def status_line_color(c: dict[str, str], ready: bool, selected: bool) -> QColor:
    """The colour of a step's status line: ok or muted, darkened where the selection tint would make it faint."""
    colour = QColor(c["ok"] if ready else c["muted"])
    return readable_on(colour, selection_tint(c)) if selected else colour


class StepButton(QAbstractButton):
    """One step: a round marker, a bold title and a status of up to two lines."""

    def __init__(self, number: int, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.number = number
        self.title = title
        self.ready = False
        self.status = ""
        self.setCheckable(True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        self.setMinimumHeight(54)
        self.setAccessibleName(title)

    def set_state(self, ready: bool, status: str) -> None:
        """Show ``ready`` (check mark) and the one-line ``status``; the full text goes in the tooltip."""
        self.ready, self.status = ready, status
        self.setToolTip(f"{self.title}: {status}" if status else self.title)
        self.setAccessibleDescription(("Ready. " if ready else "Waiting. ") + status)
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802
        fm = QFontMetrics(self.font())
        return QSize(220, max(54, fm.height() * (1 + STATUS_LINES) + 22))

    def status_lines(self, width: int | None = None) -> list[str]:
        """The status as drawn: wrapped at word boundaries into at most two lines, the last one elided."""
        fm = QFontMetrics(self.font())
        width = int(width if width is not None else self._text_width())
        words, lines, line = self.status.split(), [], ""
        for word in words:
            candidate = f"{line} {word}".strip()
            if line and fm.horizontalAdvance(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        if line:
            lines.append(line)
        if len(lines) > STATUS_LINES:
            lines = lines[:STATUS_LINES - 1] + [" ".join(lines[STATUS_LINES - 1:])]
        if lines and fm.horizontalAdvance(lines[-1]) > width:     # (elidedText may cut a line that fits)
            lines[-1] = fm.elidedText(lines[-1], Qt.TextElideMode.ElideRight, width)
        return lines

    def _text_width(self) -> float:
        # Must match paintEvent: row inset 6, marker at 12 (24 wide), 12 before the text, 8 after it.
        return self.width() - 12 - 12 - 24 - 12 - 8

    def paintEvent(self, event) -> None:  # noqa: N802
        c = colors()
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        r = QRectF(self.rect()).adjusted(6, 2, -6, -2)
        accent = QColor(c["accent"])
        if self.isChecked():
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(selection_tint(c))
            p.drawRoundedRect(r, 7, 7)
            p.setBrush(accent)
            p.drawRoundedRect(QRectF(r.left(), r.top() + 8, 3, r.height() - 16), 1.5, 1.5)
        elif self.underMouse() or self.hasFocus():
            bg = QColor(c["border"])
            bg.setAlpha(90)
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(bg)
            p.drawRoundedRect(r, 7, 7)
        marker = self._paint_marker(p, c, r)
        self._paint_text(p, c, r, marker)

    def _paint_marker(self, p: QPainter, c: dict[str, str], r: QRectF) -> QRectF:
        """The step's marker: a filled green check when ready, an outlined number otherwise."""
        accent = QColor(c["accent"])
        d = 24.0
        mx, my = r.left() + 12, r.center().y() - d / 2
        marker = QRectF(mx, my, d, d)
        if self.ready:
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(c["ok"]))
            p.drawEllipse(marker)
            pen = QPen(QColor("#ffffff"), 2.2)
            pen.setCapStyle(Qt.PenCapStyle.RoundCap)
            p.setPen(pen)
            p.drawLine(int(mx + 7), int(my + 12.5), int(mx + 10.5), int(my + 16))
            p.drawLine(int(mx + 10.5), int(my + 16), int(mx + 17.5), int(my + 8))
        else:
            p.setPen(QPen(accent if self.isChecked() else QColor(c["muted"]), 1.6))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawEllipse(marker.adjusted(1, 1, -1, -1))
            f = QFont(self.font())
            f.setWeight(QFont.Weight.DemiBold)
            p.setFont(f)
            p.drawText(marker, Qt.AlignmentFlag.AlignCenter, str(self.number))
        return marker

    def _paint_text(self, p: QPainter, c: dict[str, str], r: QRectF, marker: QRectF) -> None:
        """The step's title and its status line, right of the marker."""
        mx, d = marker.left(), marker.width()
        tx = mx + d + 12
        tw = r.right() - tx - 8
        title_font = QFont(self.font())
        title_font.setWeight(QFont.Weight.DemiBold)
        title_font.setPointSizeF(self.font().pointSizeF() * 1.08)
        fm_title = QFontMetrics(title_font)
        fm = QFontMetrics(self.font())
        lines = self.status_lines(int(tw))
        block = fm_title.height() + fm.height() * max(1, len(lines)) + 2
        ty = r.center().y() - block / 2
        p.setFont(title_font)
        p.setPen(QColor(c["text"]))
        p.drawText(QRectF(tx, ty, tw, fm_title.height()), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                   self.title)
        p.setFont(self.font())
        p.setPen(status_line_color(c, self.ready, self.isChecked()))
        for i, line in enumerate(lines):
            p.drawText(QRectF(tx, ty + fm_title.height() + 2 + i * fm.height(), tw, fm.height()),
                       Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, line)

    def enterEvent(self, event) -> None:  # noqa: N802
        self.update()
        super().enterEvent(event)

    def leaveEvent(self, event) -> None:  # noqa: N802
        self.update()
        super().leaveEvent(event)


class StepBar(QFrame):
    """A vertical list of :class:`StepButton`; emits ``step_selected(index)``."""

    step_selected = Signal(int)

    def __init__(self, titles: list[str], extra: list[str] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("sidebar")
        self.setMinimumWidth(MIN_WIDTH)
        self.setMaximumWidth(MAX_WIDTH)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 14, 4, 12)
        layout.setSpacing(2)
        brand = QLabel("DTL Studio")
        brand.setProperty("role", "big")
        brand.setContentsMargins(16, 0, 0, 2)
        tagline = QLabel("Transfer learning, no code")
        tagline.setProperty("role", "muted")
        tagline.setContentsMargins(16, 0, 0, 12)
        layout.addWidget(brand)
        layout.addWidget(tagline)
        self.group = QButtonGroup(self)
        self.group.setExclusive(True)
        self.buttons: list[StepButton] = []
        for i, title in enumerate(titles):
            self._add(layout, i, title)
        layout.addStretch(1)
        for title in extra or []:
            line = QFrame()
            line.setFrameShape(QFrame.Shape.HLine)
            line.setStyleSheet(f"color: {colors()['border']};")
            layout.addWidget(line)
            self._add(layout, len(self.buttons), title)
        self.group.idClicked.connect(self.step_selected.emit)

    def _add(self, layout: QVBoxLayout, index: int, title: str) -> None:
        button = StepButton(index + 1, title)
        self.group.addButton(button, index)
        self.buttons.append(button)
        layout.addWidget(button)

    def fit_to_window(self, window_width: int) -> None:
        """A fifth of the window, within bounds: a wide window shows the statuses whole."""
        self.setFixedWidth(max(MIN_WIDTH, min(MAX_WIDTH, window_width // 5)))

    def set_current(self, index: int) -> None:
        """Highlight step ``index`` (no signal)."""
        self.buttons[index].setChecked(True)

    def set_state(self, index: int, ready: bool, status: str) -> None:
        """Update one step's ready flag and status line."""
        self.buttons[index].set_state(ready, status)

    def state(self, index: int) -> tuple[bool, str]:
        """(ready, status line) shown for step ``index``."""
        b = self.buttons[index]
        return b.ready, b.status

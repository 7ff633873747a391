"""Confusion matrix as a table of coloured cells: rows = true class, columns = predicted.

A table (not an image) keeps class names and counts crisp and readable from 2
to 20 classes; colour strength is the share of the row (the true class), so a
small class is as readable as a big one. The diagonal is blue, mistakes orange.

A cell opens (``cell_opened``) on a click or with Enter; the arrow keys move
between cells, so the matrix is usable without a mouse.
"""
from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QKeyEvent, QPainter, QPalette, QPen
from PySide6.QtWidgets import (QAbstractItemView, QAbstractScrollArea, QHeaderView, QSizePolicy, QStyle,
                               QStyledItemDelegate, QStyleOptionViewItem, QTableWidget, QTableWidgetItem, QWidget)

_DIAGONAL = QColor("#0072B2")
_MISTAKE = QColor("#D55E00")


def _blend(color: QColor, share: float, base: QColor) -> QColor:
    """``color`` mixed into ``base`` by ``share`` (0 = base, 1 = full colour)."""
    share = max(0.0, min(1.0, share))
    return QColor(round(base.red() + (color.red() - base.red()) * share),
                  round(base.green() + (color.green() - base.green()) * share),
                  round(base.blue() + (color.blue() - base.blue()) * share))


class _FramedCell(QStyledItemDelegate):
    """Paints the chosen (or keyboard-current) cell with a frame, keeping its colour: the colour is the information."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        chosen = bool(option.state & (QStyle.StateFlag.State_Selected | QStyle.StateFlag.State_HasFocus))
        plain = QStyleOptionViewItem(option)
        plain.state &= ~(QStyle.StateFlag.State_Selected | QStyle.StateFlag.State_HasFocus)
        super().paint(painter, plain, index)
        if chosen:
            palette = option.palette
            painter.save()
            painter.setPen(QPen(palette.color(QPalette.ColorRole.Text), 3))
            painter.drawRect(option.rect.adjusted(1, 1, -2, -2))
            painter.setPen(QPen(palette.color(QPalette.ColorRole.Base), 1))
            painter.drawRect(option.rect.adjusted(3, 3, -4, -4))
            painter.restore()


class ConfusionMatrixView(QTableWidget):
    """Counts with class labels on both axes; hover shows the row percentage; a cell opens its images."""

    cell_opened = Signal(int, int)      # (true class index, predicted class index)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectItems)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)      # Tab reaches it; arrows move, Enter opens
        self.setTabKeyNavigation(False)                      # Tab leaves the matrix instead of walking its cells
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setAccessibleName("Confusion matrix: rows are the true class, columns the predicted class; "
                               "press Enter on a cell to show its images")
        self.cellClicked.connect(self.cell_opened)
        self.setShowGrid(True)
        self.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustToContents)
        self.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Maximum)
        self.setStyleSheet("QTableWidget { gridline-color: palette(mid); }")
        self._delegate = _FramedCell(self)
        self.setItemDelegate(self._delegate)
        self.horizontalHeader().setDefaultAlignment(Qt.AlignmentFlag.AlignCenter)
        self.verticalHeader().setDefaultAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.classes: list[str] = []
        self.matrix: list[list[int]] = []

    def set_matrix(self, classes: list[str], matrix: list[list[int]]) -> None:
        """Show ``matrix`` (rows = true class) for ``classes``."""
        self.classes, self.matrix = list(classes), [list(map(int, row)) for row in matrix]
        n = len(classes)
        self.clear()
        self.setRowCount(n)
        self.setColumnCount(n)
        # Many classes: numbered columns (the rows carry number and name) keep cells square.
        numbered = n > 8 and max(len(c) for c in classes) > 3   # '0'…'9' fit as they are
        short = [c if len(c) <= 16 else c[:15] + "…" for c in classes]
        self.setHorizontalHeaderLabels([str(i + 1) for i in range(n)] if numbered else short)
        self.setVerticalHeaderLabels([f"{i + 1}  {s}" for i, s in enumerate(short)] if numbered else short)
        for i, name in enumerate(classes):
            self.horizontalHeaderItem(i).setToolTip(f"predicted: {name}")
            self.verticalHeaderItem(i).setToolTip(f"true: {name}")
        paper = self.palette().color(QPalette.ColorRole.Base)   # white, or dark in a dark theme
        ink = self.palette().color(QPalette.ColorRole.Text)
        bold = QFont(self.font())
        bold.setBold(True)
        for r, row in enumerate(self.matrix):
            total = sum(row)
            for c, count in enumerate(row):
                share = count / total if total else 0.0
                item = QTableWidgetItem(str(count))
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                base = _DIAGONAL if r == c else _MISTAKE
                background = _blend(base, 0.08 + 0.85 * share if count else 0.0, paper)
                item.setBackground(QBrush(background))
                # Dark cells get white text; light cells the theme's text colour.
                item.setForeground(QBrush(QColor("white") if background.lightness() < 150 else ink))
                if r == c:
                    item.setFont(bold)
                item.setToolTip(f"true {classes[r]}, predicted {classes[c]}: {count} of {total} "
                                f"({100 * share:.1f} %)")
                self.setItem(r, c, item)
        # Square-ish cells that shrink for many classes but stay readable.
        side = 56 if n <= 6 else 44 if n <= 12 else 34
        header = self.horizontalHeader()
        header.setMinimumSectionSize(side)
        for c in range(n):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.Fixed)
            width = side if numbered else max(side, header.fontMetrics().horizontalAdvance(short[c]) + 16)
            self.setColumnWidth(c, width)
        rows = self.verticalHeader()
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(side)
        self.setCurrentCell(-1, -1)     # no cell looks chosen until one is; the arrow keys start at the first
        self.updateGeometry()  # AdjustToContents: the view asks for exactly its cells

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Space) and self.currentRow() >= 0:
            self.cell_opened.emit(self.currentRow(), self.currentColumn())
            return
        super().keyPressEvent(event)

    def choose(self, true_index: int, predicted_index: int) -> None:
        """Mark one cell as the chosen one (without opening it)."""
        self.setCurrentCell(true_index, predicted_index)

    def count(self, true_index: int, predicted_index: int) -> int:
        """The number shown in one cell (for tests and tooltips)."""
        return int(self.item(true_index, predicted_index).text())

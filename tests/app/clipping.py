"""Checks that text is not cut off: table headers and cells as wide as their text, columns in view."""
from __future__ import annotations

from PySide6.QtWidgets import QApplication, QTableWidget


def clipped_headers(table: QTableWidget) -> list[str]:
    """The column headers narrower than Qt's own size for their text (bold font, padding, icon, sort arrow)."""
    QApplication.processEvents()
    header = table.horizontalHeader()
    return [table.horizontalHeaderItem(i).text() for i in range(table.columnCount())
            if not table.isColumnHidden(i) and header.sectionSize(i) < header.sectionSizeFromContents(i).width()]


def clipped_cells(table: QTableWidget, columns: list[int] | None = None) -> list[str]:
    """The texts of cells in ``columns`` (default: all) narrower than their text, as the view would draw it."""
    QApplication.processEvents()
    cut = []
    for col in columns if columns is not None else range(table.columnCount()):
        if table.isColumnHidden(col):
            continue
        for row in range(table.rowCount()):
            item = table.item(row, col)
            if item is None or not item.text():
                continue
            need = table.sizeHintForIndex(table.model().index(row, col)).width()
            if table.columnWidth(col) < need:
                cut.append(item.text())
    return cut


def columns_out_of_view(table: QTableWidget) -> list[str]:
    """The column headers whose column does not lie wholly in the table's visible width (scrolled to the left)."""
    QApplication.processEvents()
    table.horizontalScrollBar().setValue(0)
    header, width = table.horizontalHeader(), table.viewport().width()
    return [table.horizontalHeaderItem(i).text() for i in range(table.columnCount())
            if not table.isColumnHidden(i)
            and header.sectionViewportPosition(i) + header.sectionSize(i) > width]

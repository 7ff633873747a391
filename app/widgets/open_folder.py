"""Open a folder in the system's file manager, and say where it is when none opens.

The one place for "Show in folder" and "Open the runs folder": a desktop without a file manager
(or with a broken one) used to do nothing visible at all, with only a line on the terminal.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QMessageBox, QWidget


def open_folder(folder: Path, parent: QWidget | None, what: str = "The folder") -> bool:
    """Open ``folder``; when it is gone or nothing can show it, tell the user where it is. True when it opened."""
    if not folder.is_dir():
        QMessageBox.information(parent, "Folder not found", f"{what} no longer exists:\n{folder}")
        return False
    if QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
        return True
    box = QMessageBox(QMessageBox.Icon.Information, "No file manager",
                      f"No file manager could be opened on this computer. {what} is:\n{folder}",
                      QMessageBox.StandardButton.Close, parent)
    copy = box.addButton("Copy the path", QMessageBox.ButtonRole.ActionRole)
    copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(str(folder)))
    box.exec()
    return False

"""A readable error message with a collapsible "Details" section (the traceback)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QMessageBox, QPlainTextEdit,
                               QPushButton, QStyle, QVBoxLayout, QWidget)


def ask_to_replace(parent: QWidget | None, path: Path, question: str = "Do you want to replace it?") -> bool:
    """Ask before replacing the existing file ``path`` (No is the default); True when the user says Yes."""
    answer = QMessageBox.question(
        parent, "Replace the file?", f"“{path.name}” already exists in {path.parent}.\n{question}",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


class ErrorDialog(QDialog):
    """Shows ``message`` in plain words; ``details`` stay folded until asked for."""

    def __init__(self, title: str, message: str, details: str = "", parent: QWidget | None = None,
                 actions: Sequence[tuple[str, Callable[[], None]]] = ()) -> None:
        """``actions``: (label, what it does) buttons that answer the error in one click (they close the dialog)."""
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setMinimumWidth(460)

        icon = QLabel()
        icon.setPixmap(self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxCritical).pixmap(40, 40))
        icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.message_label = QLabel(message)
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        top = QHBoxLayout()
        top.addWidget(icon)
        top.addWidget(self.message_label, 1)

        self.details_view = QPlainTextEdit(details)
        self.details_view.setReadOnly(True)
        self.details_view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.details_view.setMinimumHeight(180)
        self.details_view.setVisible(False)

        self.details_button = QPushButton("Show details")
        self.details_button.setCheckable(True)
        self.details_button.setEnabled(bool(details.strip()))
        self.details_button.toggled.connect(self._toggle_details)
        copy_button = QPushButton("Copy")
        copy_button.setToolTip("Copy the message and details to the clipboard")
        copy_button.clicked.connect(self.copy_to_clipboard)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.addButton(self.details_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.action_buttons = []
        for label, act in actions:
            button = QPushButton(label)
            button.clicked.connect(lambda _=False, act=act: (self.accept(), act()))
            buttons.addButton(button, QDialogButtonBox.ButtonRole.AcceptRole)
            self.action_buttons.append(button)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.details_view, 1)
        layout.addWidget(buttons)

    def _toggle_details(self, shown: bool) -> None:
        self.details_view.setVisible(shown)
        self.details_button.setText("Hide details" if shown else "Show details")
        self.adjustSize()

    def copy_to_clipboard(self) -> None:
        text = self.message_label.text()
        if self.details_view.toPlainText():
            text += "\n\n" + self.details_view.toPlainText()
        QGuiApplication.clipboard().setText(text)


def show_error(parent: QWidget | None, title: str, message: str, details: str = "",
               actions: Sequence[tuple[str, Callable[[], None]]] = ()) -> ErrorDialog:
    """Open an :class:`ErrorDialog` without blocking the event loop and return it."""
    dialog = ErrorDialog(title, message, details, parent, actions)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.open()
    return dialog

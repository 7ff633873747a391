"""One line that shows the size of DTL Studio's reusable caches and clears them.

The caches (decoded photos, frozen features) live in the per-user cache folder, never
in an image folder. Measuring walks that folder and clearing deletes files, so both run
as background jobs: the window never waits for the disk.
"""
from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QMessageBox, QPushButton, QWidget

from app import jobs
from dtl_engine.formatting import format_bytes


def _size(_job: jobs.Job) -> int:
    from dtl_engine.data.image_cache import cache_size_bytes

    return cache_size_bytes()


def _clear(_job: jobs.Job) -> int:
    from dtl_engine.data.image_cache import clear_caches

    return clear_caches()


class CacheLine(QWidget):
    """"Caches: 1.2 GB (decoded photos and frozen features)  [Clear caches]"."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel("Caches: measuring…")
        self.label.setStyleSheet("color: palette(placeholder-text);")
        self.label.setToolTip("Decoded photos and frozen features kept so that later epochs and runs skip the "
                              "work. They are rebuilt when needed; your images are never touched.")
        self.clear_button = QPushButton("Clear caches")
        self.clear_button.clicked.connect(self.clear)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.clear_button)
        self.bytes: int | None = None

    def refresh(self) -> None:
        """Measure the caches in the background; the label updates when done."""
        jobs.submit(_size, kind="cache", what="Measuring the caches", context=self, lane="cache",
                    on_done=self._measured, on_error=lambda text, _details: self.label.setText(f"Caches: {text}"))

    def clear(self) -> None:
        answer = QMessageBox.question(self, "Clear caches",
                                      "Delete the decoded photos and frozen features DTL Studio keeps? They are "
                                      "rebuilt when needed (the next run on a folder decodes its photos again). "
                                      "Runs and your images are not touched.")
        if answer != QMessageBox.StandardButton.Yes:
            return
        self.clear_button.setEnabled(False)
        self.label.setText("Caches: clearing…")
        jobs.submit(_clear, kind="cache", what="Clearing the caches", context=self, lane="cache",
                    on_done=self._cleared, on_error=lambda text, _details: self._measured(self.bytes or 0, text))

    def _cleared(self, freed: int) -> None:
        self.label.setText(f"Caches cleared ({format_bytes(freed)} freed).")
        self.bytes = 0

    def _measured(self, size: int, problem: str = "") -> None:
        self.bytes = int(size)
        self.clear_button.setEnabled(self.bytes > 0)           # nothing to clear: nothing to press
        text = f"Caches: {format_bytes(size)} (decoded photos and frozen features)"
        self.label.setText(f"{text} — {problem}" if problem else text)

"""A run's log: read-only lines in a fixed font that keep following the newest line.

A plain ``QPlainTextEdit`` follows a new line only when its last line is on screen before the line
arrives. A log filled while the Train step was hidden (a run opened or resumed from the Runs step)
is laid out again once shown and once its splitter settles, which grows the scroll range but not
the bar's value: the last line is then below the view, and every later line arrives out of sight
for good. This view follows by its own flag instead of the bar's position: until the user scrolls
up, and again once they scroll back to the bottom.
"""
from __future__ import annotations

import time

from PySide6.QtCore import QTimer
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QPlainTextEdit, QWidget


class LogView(QPlainTextEdit):
    """Lines of a run's log; :meth:`add` stamps one with the clock time, :meth:`set_lines` replaces them all."""

    def __init__(self, parent: QWidget | None = None, max_lines: int = 2000) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setMaximumBlockCount(max_lines)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.following = True
        # Only the user's own scrolling (wheel, drag, keys on the bar) decides whether to follow.
        self.verticalScrollBar().actionTriggered.connect(lambda _action: QTimer.singleShot(0, self._user_scrolled))

    def _user_scrolled(self) -> None:
        bar = self.verticalScrollBar()
        self.following = bar.value() >= bar.maximum()

    def follow(self) -> None:
        """Show the newest line (when following)."""
        if self.following:
            bar = self.verticalScrollBar()
            bar.setValue(bar.maximum())

    def add(self, message: str) -> None:
        """Append one line stamped with the clock time."""
        self.appendPlainText(f"{time.strftime('%H:%M:%S')}  {message}")
        self.follow()

    def set_lines(self, lines: list[str]) -> None:
        """Replace the log with ``lines`` (a run's log read back) and follow its end."""
        self.clear()
        self.following = True
        self.appendPlainText("\n".join(lines))
        self.follow()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self.follow()               # lines added while hidden: the bar's range grew without its value

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self.follow()               # a splitter or window resize changes the range, not the value

"""The rounded "card" panel the pages group their controls in (styled by the theme's #card rule)."""
from __future__ import annotations

from PySide6.QtWidgets import QFrame, QVBoxLayout


def card() -> tuple[QFrame, QVBoxLayout]:
    """A card frame and its vertical layout, with the pages' common margins."""
    frame = QFrame()
    frame.setObjectName("card")
    layout = QVBoxLayout(frame)
    layout.setContentsMargins(16, 14, 16, 14)
    layout.setSpacing(8)
    return frame, layout

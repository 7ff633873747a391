"""The mouse wheel scrolls the page unless a spin box or combo box has focus.

Without this, scrolling a settings page over a spin box silently changes its value
(a batch size of 32 became 28). One application-wide event filter covers every spin
box and combo box, present and future: a wheel event over one that has no keyboard
focus scrolls the nearest scroll area instead; a click gives the box focus, and then
the wheel changes its value as usual.
"""
from __future__ import annotations

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt
from PySide6.QtWidgets import QAbstractScrollArea, QAbstractSpinBox, QComboBox, QWidget


class WheelGuard(QObject):
    """Application event filter: see the module docstring."""

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        kind = event.type()
        if kind not in (QEvent.Type.Wheel, QEvent.Type.Polish) or not isinstance(obj, (QAbstractSpinBox, QComboBox)):
            return False
        if kind == QEvent.Type.Polish:
            # Qt gives a spin box focus on a mere wheel turn (WheelFocus), before any filter sees the
            # wheel: only a click or Tab may give it focus.
            if obj.focusPolicy() == Qt.FocusPolicy.WheelFocus:
                obj.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            return False
        if obj.hasFocus():
            return False                    # the user chose this box: the wheel is theirs to use
        area = _scroll_area_of(obj)
        if area is not None:
            bar = area.verticalScrollBar() if area.verticalScrollBar().isVisible() else area.horizontalScrollBar()
            QCoreApplication.sendEvent(bar, event)
        return True                         # the value never changes without focus


def _scroll_area_of(widget: QWidget) -> QAbstractScrollArea | None:
    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QAbstractScrollArea):
            return parent
        parent = parent.parentWidget()
    return None


_GUARD: WheelGuard | None = None


def install_wheel_guard() -> None:
    """Install the filter on the running application once (later calls do nothing)."""
    global _GUARD
    app = QCoreApplication.instance()
    if app is None or _GUARD is not None:
        return
    _GUARD = WheelGuard(app)
    app.installEventFilter(_GUARD)


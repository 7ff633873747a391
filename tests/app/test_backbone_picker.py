"""The backbone picker's search: its refusal sentence and the "Use" button beside the suggestions."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication

from app.widgets.backbone_picker import BackbonePicker


@pytest.fixture
def picker(qtbot, themed):
    p = BackbonePicker()
    qtbot.addWidget(p)
    p.resize(600, 500)
    p.show()
    qtbot.waitExposed(p)
    return p


def test_a_refusal_goes_once_another_name_is_typed(qtbot, picker):
    qtbot.keyClicks(picker.search, "convnext_tiny")
    qtbot.keyClick(picker.search, Qt.Key.Key_Return)
    assert picker.search_message.isVisibleTo(picker) and "convnext_tiny" in picker.search_message.text()
    picker.search.clear()
    qtbot.keyClicks(picker.search, "vit_small")       # still typing a good name: the old refusal is gone
    assert not picker.search_message.isVisibleTo(picker)


def test_use_works_with_one_click_while_suggestions_are_open(qtbot, picker):
    picker.completer_model.setStringList(["vit_small_patch16_224", "vit_base_patch16_224"])
    picker._known_names = ["vit_small_patch16_224", "vit_base_patch16_224"]
    picker.search.setFocus()
    qtbot.keyClicks(picker.search, "vit_small_patch16_224")
    popup = picker.search.completer().popup()
    picker.search.completer().complete()
    qtbot.waitUntil(popup.isVisible, timeout=2000)
    # While the list is open, Qt hands every click to it, also one that lands on the button.
    at = picker.use_button.mapToGlobal(picker.use_button.rect().center())
    press = QMouseEvent(QEvent.Type.MouseButtonPress, QPointF(popup.mapFromGlobal(at)), QPointF(at),
                        Qt.MouseButton.LeftButton, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(popup, press)
    assert picker.current() == "vit_small_patch16_224"
    assert not popup.isVisible()

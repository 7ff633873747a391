"""Issue 23, item 10: the Train log keeps following new lines after a run is opened or resumed.

The defect's mechanism: lines set while the Train step is hidden, then the step shown and its
splitter settling, leave a plain ``QPlainTextEdit``'s bar short of the bottom, and it never follows
again. The scenario is run on a plain one too, so the test shows it reproduces the defect.
"""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QSplitter, QStackedWidget, QVBoxLayout, QWidget

from app.widgets.log_view import LogView


def _opened_while_hidden(qtbot, log: QPlainTextEdit, add) -> QStackedWidget:
    """The app's shape: a log under charts in a splitter, on a step of a stack that shows another step."""
    stack, other, step = QStackedWidget(), QWidget(), QWidget()
    splitter = QSplitter(Qt.Orientation.Vertical)
    splitter.addWidget(QLabel("charts"))
    splitter.addWidget(log)
    QVBoxLayout(step).addWidget(splitter)
    stack.addWidget(other)
    stack.addWidget(step)
    qtbot.addWidget(stack)
    stack.resize(900, 500)
    stack.show()
    qtbot.waitExposed(stack)
    log.clear()
    log.appendPlainText("\n".join(f"a past line {i}" for i in range(100)))   # the opened run's log
    stack.setCurrentWidget(step)
    qtbot.wait(20)
    splitter.setSizes([100, 400])
    qtbot.wait(20)
    for i in range(20):                                                      # the resumed run goes on
        add(log, f"a new line {i}")
        qtbot.wait(1)
    return stack                    # the caller holds the window, or Python frees it with the log


def _at_bottom(log: QPlainTextEdit) -> bool:
    bar = log.verticalScrollBar()
    return bar.maximum() > 0 and bar.value() == bar.maximum()


def test_the_scenario_loses_a_plain_text_edit(qtbot):
    log = QPlainTextEdit()
    _window = _opened_while_hidden(qtbot, log, lambda view, line: view.appendPlainText(line))
    if _at_bottom(log):
        pytest.fail("the scenario no longer reproduces the defect on a plain QPlainTextEdit; revisit this test")


def test_the_log_follows_new_lines_after_being_filled_while_hidden(qtbot):
    log = LogView()
    _window = _opened_while_hidden(qtbot, log, lambda view, line: view.add(line))
    assert _at_bottom(log), "the newest line is out of sight"


def test_the_log_stops_following_while_the_user_reads_above_and_follows_again_at_the_bottom(qtbot):
    log = LogView()
    _window = _opened_while_hidden(qtbot, log, lambda view, line: view.add(line))
    bar = log.verticalScrollBar()
    bar.triggerAction(bar.SliderAction.SliderPageStepSub)        # the user scrolls up to read
    qtbot.waitUntil(lambda: not log.following)
    held = bar.value()
    log.add("a line while reading")
    assert bar.value() == held, "a new line pulled the user away from what they read"
    bar.triggerAction(bar.SliderAction.SliderToMaximum)
    qtbot.waitUntil(lambda: log.following)
    log.add("the newest line")
    assert _at_bottom(log)

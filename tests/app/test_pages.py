"""Every step's page implements the typed page interface the window talks to."""
from __future__ import annotations

import inspect

import app.main_window as main_window
from app.main_window import MainWindow
from app.pages import StepPage


def test_every_page_is_a_step_page(qtbot, settings, themed):
    window = MainWindow(settings)
    qtbot.addWidget(window)
    assert len(window.pages) == 6
    for page in window.pages:
        assert isinstance(page, StepPage), type(page).__name__


def test_the_window_calls_no_page_method_by_name():
    source = inspect.getsource(main_window)
    assert "_call_if" not in source and "_connect_if" not in source
    assert "getattr(page" not in source and "getattr(self." not in source

"""Closing the window while background work still runs must neither crash nor lose that work."""
from __future__ import annotations

import threading

from app.main_window import MainWindow
from app.scan_worker import wait_for_orphans


def test_closing_while_the_sample_is_written_keeps_the_thread_alive(qtbot, settings, themed, monkeypatch, tmp_path):
    release, entered, finished = threading.Event(), threading.Event(), threading.Event()

    def slow_sample():
        entered.set()
        release.wait(30)          # writing the sample files outlasts the window's patience
        finished.set()
        return tmp_path

    monkeypatch.setattr("dtl_engine.data.sample.ensure_sample_dataset", slow_sample)
    window = MainWindow(settings=settings)   # not handed to qtbot: this test destroys it itself
    window.show()
    window.data_page.use_sample()
    assert entered.wait(30)

    window.close()                          # waits a few seconds, then must let the thread go on
    window.deleteLater()
    qtbot.wait(50)                          # the page and its children are destroyed here
    # Qt aborts the whole process when a running QThread is destroyed; reaching this line means
    # the thread was detached from the window instead, and it still completes its work.
    release.set()
    assert wait_for_orphans(30000)
    assert finished.is_set()

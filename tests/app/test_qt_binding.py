"""The Qt binding must not corrupt Python's reference counts when a signal is emitted.

PySide6 6.12.0 drops one reference to ``True`` on every ``emit()``; after a few
thousand emits (a training run sends one per batch) Python aborts with
"Fatal Python error: bool_dealloc". pyproject.toml keeps PySide6 below 6.11
(6.11.3 also crashed in the GC beside a job thread).
"""
from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal


class _Emitter(QObject):
    value = Signal(object)
    bare = Signal()


def test_emitting_signals_leaves_reference_counts_alone(qapp):
    emitter = _Emitter()
    received = []
    emitter.value.connect(received.append)
    before = sys.getrefcount(True), sys.getrefcount(False)
    for i in range(50):
        emitter.value.emit(i)
        emitter.bare.emit()
    after = sys.getrefcount(True), sys.getrefcount(False)
    assert len(received) == 50
    # A few references may come and go with the interpreter's own work; 100 emits must not cost 100.
    assert abs(after[0] - before[0]) < 10 and abs(after[1] - before[1]) < 10, (before, after)

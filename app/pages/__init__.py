"""The pages of the main window, one per step (Data, Model, Train, Results, Export, Runs).

Every page implements :class:`StepPage`: the window talks to pages only through
that interface and through each page's own typed methods, never by name.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from PySide6.QtCore import SignalInstance


@runtime_checkable
class StepPage(Protocol):
    """What the main window needs from every step's page."""

    #: Emitted whenever :meth:`status` may have changed.
    status_changed: SignalInstance

    def status(self) -> tuple[bool, str]:
        """(ready, one line for the step bar)."""
        ...

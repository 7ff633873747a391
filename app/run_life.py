"""The one owner of a run's life: starting → running ⇄ paused → stopping → stopped / finished / failed.

A run folder read back from disk may also be *interrupted* (the process ended while it
trained). The Train step moves a live run through these states; the Runs table and the
step bar read the same states and words, so every view agrees on whether a run ended,
how, and what can be done with it.
"""
from __future__ import annotations

from enum import Enum

from PySide6.QtCore import QObject, Signal

from dtl_engine.runs.folder import RunFolder
from dtl_engine.errors import RunError


class RunState(str, Enum):
    """Where a run is in its life (the value is the word the engine writes to a run folder)."""

    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def busy(self) -> bool:
        """A run is live: it holds the training thread."""
        return self in (RunState.STARTING, RunState.RUNNING, RunState.PAUSED, RunState.STOPPING)

    @property
    def ended(self) -> bool:
        """The run is over, one way or another."""
        return self in (RunState.STOPPED, RunState.FINISHED, RunState.FAILED, RunState.INTERRUPTED)

    @property
    def resumable(self) -> bool:
        """It ended early and its last checkpoint can continue it."""
        return self in (RunState.STOPPED, RunState.INTERRUPTED)

    @classmethod
    def of(cls, word: str | None) -> RunState:
        """The state a run folder's status word names; an unknown word shows as idle (nothing to do)."""
        try:
            return cls(word or "")
        except ValueError:
            return cls.IDLE


# Which state may follow which; anything else is a bug in the caller.
# A run followed from another process (app.run_follower) may end interrupted (its process died),
# and one the page no longer shows goes on by itself (idle here). A past run shown from disk is no
# state of this life: the Train step is idle then (app.run_session.RunSession.shown says which run).
_NEXT: dict[RunState, tuple[RunState, ...]] = {
    RunState.IDLE: (RunState.STARTING,),
    RunState.STARTING: (RunState.RUNNING, RunState.PAUSED, RunState.STOPPING, RunState.FINISHED, RunState.STOPPED,
                        RunState.FAILED, RunState.INTERRUPTED, RunState.IDLE),
    RunState.RUNNING: (RunState.PAUSED, RunState.STOPPING, RunState.FINISHED, RunState.STOPPED, RunState.FAILED,
                       RunState.INTERRUPTED, RunState.IDLE),
    # Pause pressed during the last step: the run ends finished while the window shows it paused.
    RunState.PAUSED: (RunState.RUNNING, RunState.STOPPING, RunState.STOPPED, RunState.FINISHED, RunState.FAILED),
    RunState.STOPPING: (RunState.STOPPED, RunState.FINISHED, RunState.FAILED, RunState.INTERRUPTED),
}
for _ended in (RunState.STOPPED, RunState.FINISHED, RunState.FAILED, RunState.INTERRUPTED):
    # An ended run can start again (a new run or a resume), or the step goes back to idle (a past run shown).
    _NEXT[_ended] = (RunState.STARTING, RunState.IDLE)


class RunLife(QObject):
    """The state of the run on the Train step; ``changed(state)`` after every move."""

    changed = Signal(object)        # RunState

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = RunState.IDLE

    def move(self, state: RunState) -> None:
        """Go to ``state``; raises ValueError for a move the life cycle does not allow."""
        if state is self.state:
            return
        if state not in _NEXT.get(self.state, ()):
            raise ValueError(f"A run cannot go from {self.state.value} to {state.value}.")
        self.state = state
        self.changed.emit(state)

    @property
    def busy(self) -> bool:
        """True while the run holds the training thread."""
        return self.state.busy


NOT_TRAINED = "Stopped before the first epoch ended: nothing was trained yet."


def has_model(run_dir: str | None) -> bool:
    """False when the run folder is known to hold no model: no epoch completed and no first model (step 0).

    Reads only its status file and whether its best weights exist (the GUI thread may call it).
    """
    if not run_dir:
        return False

    if RunFolder(run_dir).best_weights.is_file():    # the first model or the best epoch
        return True
    return epochs_done(run_dir) != 0                 # unknown (None) or trained: let the page try and say


def epochs_done(run_dir: str | None) -> int | None:
    """How many epochs the run folder says were completed (None when it cannot tell).

    A run stopped inside its first epoch has no validated weights: it has no accuracy,
    nothing to export, and resuming it starts again at epoch 1. Reads only the run's
    status file (no torch), so the GUI thread may call it.
    """
    if not run_dir:
        return None

    folder = RunFolder(run_dir)
    if not folder.has_run_file():
        return None
    try:
        return int(folder.read_run().get("epochs_done", 0) or 0)
    except (RunError, TypeError, ValueError):
        return None

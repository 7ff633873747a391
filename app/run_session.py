"""The one owner of the Train step's run: its life, its one source, how it ended, and the past run shown.

A run comes from exactly one source at a time:

- this process (:class:`app.worker.RunController`, the engine on a background job),
- ``torchrun`` on every GPU (:class:`app.subprocess_run.SubprocessRun`, read back through its event log),
- another program (:class:`app.run_follower.RunFollower`, following the run folder's event log).

Whichever it is, the session relays its :class:`~dtl_engine.events.Event` s on ``event``, moves
:class:`app.run_life.RunLife` (starting → running ⇄ paused → stopping → ended), and hands back one
result, a :class:`~dtl_engine.events.RunEnded`. A past run opened from disk is *shown*
(:attr:`RunSession.shown`), not a state of the life: the step is idle then, and a shown run that
stopped early can be resumed like one that stopped in this session. The Train step and the
Run menu ask :meth:`can_start`, :meth:`can_resume`, … rather than looking at the sources.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal

from app.run_follower import RunFollower
from app.run_life import RunLife, RunState, epochs_done
from app.subprocess_run import SubprocessRun, remove_if_empty
from app.worker import RunController
from dtl_engine.events import Event, RunEnded, ended_of
from dtl_engine.errors import RunError
from dtl_engine.runs.folder import RunFolder, effective_status


def read_past(run_dir: str) -> RunEnded | None:
    """How a run folder's run ended (or stands), from its small status and config files; None if unreadable."""
    folder = RunFolder(run_dir)
    try:
        run = dict(folder.read_run()) if folder.has_run_file() else {}
        epochs = folder.read_config().get("epochs") if run else None
    except (RunError, OSError, ValueError):
        return None
    if not run:
        return None
    return ended_of({**run, "run_dir": str(run_dir), "status": effective_status(run),
                     "epochs": int(epochs) if isinstance(epochs, int) else None})


class RunSession(QObject):
    """The Train step's run. ``event``: each run event; ``changed``: the state, the source or the shown run moved."""

    event = Signal(object)          # Event, from whichever source runs now
    caught_up = Signal(object)      # LogDigest: a followed run's log so far, before its first event
    changed = Signal()

    def __init__(self, train_fn: Callable[..., Any] | None = None, resume_fn: Callable[..., Any] | None = None,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.life = RunLife(self)
        self.controller = RunController(train_fn, resume_fn, self)
        self.controller.event.connect(self._relay)
        self.controller.running_changed.connect(lambda _running: self.changed.emit())
        self.follower: RunFollower | None = None
        self.launch: SubprocessRun | None = None
        self.run_dir: str | None = None         # the run live or last ended here
        self.started: Any = None                # its RunStarted, once it said
        self.ended: RunEnded | None = None      # how it ended
        self.epochs_done = 0                    # epochs it completed (counting those before a resume)
        self.shown: RunEnded | None = None      # a past run opened from disk (the step is idle then)
        self.life.changed.connect(lambda _state: self.changed.emit())

    # --- questions ------------------------------------------------------------------------------
    @property
    def state(self) -> RunState:
        return self.life.state

    def holds_worker(self) -> bool:
        """True while this app's thread or torchrun processes are training (until they have returned)."""
        return self.controller.is_running() or (self.launch is not None and self.launch.is_running())

    def is_live(self) -> bool:
        """True while a run is on: ours, or another program's that is followed."""
        return self.holds_worker() or self.life.busy

    def following_elsewhere(self) -> bool:
        """True while following a run another program writes (a new run leaves it running there)."""
        return self.follower is not None and self.follower.following and self.launch is None

    def can_start(self) -> bool:
        return not self.holds_worker() and (not self.life.busy or self.following_elsewhere())

    def can_pause(self) -> bool:
        return self.state in (RunState.STARTING, RunState.RUNNING) and self.follower is None

    def can_stop(self) -> bool:
        return self.state in (RunState.STARTING, RunState.RUNNING, RunState.PAUSED) and not self.following_elsewhere()

    def resumable_run(self) -> str | None:
        """The run folder Resume would continue: one stopped or interrupted here, or a shown past one."""
        if not self.can_start() or self.life.busy:
            return None
        if self.state.resumable and self.run_dir:
            return self.run_dir
        if self.state is RunState.IDLE and self.shown is not None and self.shown.stopped_early:
            return self.shown.run_dir
        return None

    def can_resume(self) -> bool:
        """Resume continues a paused run, or a stopped / interrupted one from its last checkpoint."""
        return self.state is RunState.PAUSED or self.resumable_run() is not None

    # --- starting -------------------------------------------------------------------------------
    def _begin(self, run_dir: str | None, launch: SubprocessRun | None = None, follow: bool = False) -> None:
        """Forget the last run and take up the new one's source before its state moves (the buttons read both)."""
        self.leave_followed()
        self.run_dir, self.started, self.ended, self.shown = run_dir, None, None, None
        self.epochs_done = 0
        if launch is not None:
            launch.ended.connect(lambda code, message: self._launch_ended(launch, code, message))
            self.launch = launch
        if follow and run_dir is not None:
            self._follow(run_dir)
        self.life.move(RunState.STARTING)

    def start(self, config: Any, scan: Any = None) -> None:
        """Train ``config`` in this process."""
        self._begin(None)
        self.controller.start_training(config, scan)

    def resume_run(self, run_dir: str) -> None:
        """Continue a stopped or interrupted run from its last checkpoint, in this process."""
        self._begin(str(run_dir))
        self.epochs_done = epochs_done(run_dir) or 0
        self.controller.start_resume(str(run_dir))

    def start_launch(self, command: list[str], run_dir: str) -> None:
        """Train on several GPUs: ``command`` (torchrun) writes ``run_dir``, followed here."""
        launch = SubprocessRun(command, parent=self)
        self._begin(str(run_dir), launch, follow=True)
        launch.start()
        if self.follower is not None:
            self.follower.start()

    def follow(self, run_dir: str) -> None:
        """Follow a run another program trains (command line, torchrun, a cluster job)."""
        self._begin(str(run_dir), follow=True)
        if self.follower is not None:
            self.follower.start()

    def _follow(self, run_dir: str) -> RunFollower:
        follower = RunFollower(run_dir, self)
        follower.caught_up.connect(self._caught_up)
        follower.event.connect(self._relay)
        self.follower = follower
        return follower

    def leave_followed(self) -> bool:
        """Stop following another program's run (it goes on there); True when one was followed live."""
        follower, self.follower = self.follower, None
        if follower is None:
            return False
        follower.stop()
        follower.deleteLater()
        if self.life.busy and self.launch is None:
            self.life.move(RunState.IDLE)
            return True
        return False

    def show_past(self, run_dir: str) -> RunEnded | None:
        """Show a past run opened from disk: the step is idle, the run is :attr:`shown`."""
        self.leave_followed()
        if self.life.state is not RunState.IDLE:
            self.life.move(RunState.IDLE)
        self.run_dir, self.started, self.ended = str(run_dir), None, None
        self.shown = read_past(str(run_dir))
        self.changed.emit()
        return self.shown

    # --- control --------------------------------------------------------------------------------
    def pause(self) -> None:
        if self.can_pause():
            self.controller.pause()
            self.life.move(RunState.PAUSED)

    def unpause(self) -> None:
        if self.state is RunState.PAUSED:
            self.controller.resume()
            self.life.move(RunState.RUNNING)

    def stop(self) -> None:
        if self.can_stop():
            if self.launch is not None:
                self.launch.stop()          # every process stops after its batch (SIGTERM to the group)
            else:
                self.controller.stop()
            self.life.move(RunState.STOPPING)

    def stop_and_wait(self, timeout_ms: int) -> bool:
        """Stop a run and wait for its thread or its processes (the window is closing)."""
        if not self.holds_worker():
            return True
        self.stop()
        if self.launch is not None:
            return self.launch.wait(timeout_ms)
        return self.controller.stop_and_wait(timeout_ms)

    def fail_now(self) -> None:
        """A run refused before it started (its settings): the step shows the failure."""
        if self.life.busy:
            return
        if self.state is not RunState.IDLE:
            self.life.move(RunState.IDLE)
        self.life.move(RunState.STARTING)
        self.life.move(RunState.FAILED)

    def clear_failure(self) -> None:
        """The settings changed: the failure about the old ones no longer holds."""
        if self.state is RunState.FAILED:
            self.life.move(RunState.IDLE)

    # --- the run's events -----------------------------------------------------------------------
    def _relay(self, event: Event) -> None:
        if event.kind == "run_started":
            self.started = event.data
            self.run_dir = str(event.data.run_dir)
            self.epochs_done = int(event.data.start_epoch)
            if self.state is RunState.STARTING:
                self.life.move(RunState.RUNNING)
        elif event.kind == "epoch":
            self.epochs_done = max(self.epochs_done, int(event.data.epoch) + 1)
        elif event.kind == "finished":
            ended = event.data
            epochs = ended.epochs or (self.started.epochs if self.started is not None else None)
            self.ended = replace(ended, run_dir=ended.run_dir or self.run_dir or "", epochs=epochs)
            self.run_dir = self.ended.run_dir or self.run_dir
            event = Event("finished", self.ended, event.time)
            self.life.move({"stopped": RunState.STOPPED, "interrupted": RunState.INTERRUPTED}.get(
                self.ended.status, RunState.FINISHED))
        elif event.kind == "failed" and self.life.busy:
            self.life.move(RunState.FAILED)
        self.event.emit(event)

    def _caught_up(self, digest: Any) -> None:
        self.caught_up.emit(digest)         # its history first, then where it stands
        if digest.started is not None:
            self._relay(Event("run_started", digest.started))

    def _launch_ended(self, launch: SubprocessRun, code: int, message: str) -> None:
        run_dir = self.run_dir or ""
        follower = self.follower if self.follower is not None and self.follower.run_dir == run_dir else None
        if follower is not None and launch.stop_requested and not RunFolder(run_dir).has_run_file():
            follower.stop()                 # stopped while the processes started: no run was made
            self._relay(Event("finished", RunEnded(run_dir, "stopped", 0)))
        elif follower is not None:
            follower.writer_ended(message)
        remove_if_empty(run_dir)
        if self.launch is launch:
            self.launch = None
        self.changed.emit()             # the processes have exited: later steps may update

    def name(self) -> str:
        """The run folder's name ('' before a run)."""
        return Path(self.run_dir).name if self.run_dir else ""

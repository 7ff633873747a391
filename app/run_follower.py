"""Follows a run that another process writes (the command line, ``torchrun``, a cluster job) from its event log.

Every poll is a short job of :mod:`app.jobs` that reads only the bytes the run's event log
gained since the last poll (:func:`dtl_engine.runs.event_log.read_events`: a half-written last line
waits for the next poll) and the run's status (:meth:`dtl_engine.runs.folder.RunFolder.status`,
which tells a dead writer's "running" run as interrupted). A job, not the GUI thread, because a
cluster's run folder may sit on a network file system that answers slowly. The next poll is
asked for only when the last one has answered, so polls never pile up.

The first poll reads the whole log and digests it with the Train step's history reader
(:func:`app.run_history.event_history`); later polls decode each new event
(:func:`dtl_engine.events.decode`) and relay it as an in-app run's :class:`app.worker.RunController`
does, so the Train step draws a followed run with the code that draws its own.

The run has ended when its log says so (``finished`` / ``failed``), or when its status does
(a killed process writes no last event), or when the process that wrote it, if it is ours,
has exited (:meth:`RunFollower.writer_ended`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from app import jobs
from app.run_history import event_history
from app.worker import RunSignals
from dtl_engine.events import Event, RunEnded, decode_all, ended_of, make
from dtl_engine.listener import BatchStats, MemorySample, RunStarted
from dtl_engine.errors import RunError
from dtl_engine.runs.event_log import read_events
from dtl_engine.runs.folder import EVENT_LOG, RunFolder, effective_status

POLL_MS = 300               # how often the log is read (the charts redraw at 10 Hz anyway)
END_GRACE_S = 10.0          # a run status that says "ended" before the log's last event: wait this long for it
ENDED = ("finished", "stopped", "failed", "interrupted")


@dataclass
class LogDigest:
    """What a run's event log held when following began."""

    started: RunStarted | None = None       # the latest run_started (a resumed run has several)
    epochs: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    last_batch: BatchStats | None = None
    memory: MemorySample | None = None
    end: Event | None = None                # a finished / failed event after the latest run_started


def digest_events(records: list[dict]) -> LogDigest:
    """Digest a whole log: the history reader's steps and lines, plus where the run stands."""
    events = decode_all(records)
    digest = LogDigest()
    digest.steps, digest.lines = event_history(events)
    epochs: dict[int, dict] = {}
    for event in events:
        if event.kind == "run_started":
            digest.started, digest.end = event.data, None
        elif event.kind == "epoch":
            epochs[event.data.epoch] = vars(event.data)    # a resumed run trains its later epochs again
        elif event.kind == "batch":
            digest.last_batch = event.data
        elif event.kind == "memory":
            digest.memory = event.data
        elif event.kind in ("finished", "failed"):
            digest.end = event
    digest.epochs = [epochs[k] for k in sorted(epochs)]
    return digest


def read_new(run_dir: str, offset: int) -> tuple[list[dict], int, dict | None]:
    """(events after ``offset``, the offset to go on from, the run record with its effective status or None)."""
    events, offset = read_events(Path(run_dir) / EVENT_LOG, offset)
    folder = RunFolder(run_dir)
    run: dict | None = None
    if folder.has_run_file():
        try:
            run = dict(folder.read_run())
            run["status"] = effective_status(run)
        except RunError:
            run = None
    return events, offset, run


def is_live(run_dir: str | Path) -> bool:
    """True when another process is training the run now (its status says running and its writer lives).

    A writer on another machine cannot be checked from here and counts as live until the run's log
    or status says it ended. Reads one small file (the GUI thread may call it).
    """
    folder = RunFolder(run_dir)
    try:
        return folder.has_run_file() and folder.status() == "running"
    except RunError:
        return False


class RunFollower(RunSignals):
    """Follows one run folder until the run ends, with the same signals as a run in the app (RunSignals)."""

    caught_up = Signal(object)      # LogDigest, once, before any other signal

    def __init__(self, run_dir: str | Path, parent: QObject | None = None, *, poll_ms: int = POLL_MS) -> None:
        super().__init__(parent)
        self.run_dir = str(run_dir)
        self.following = False
        self._offset = 0
        self._first = True
        self._end_event: Event | None = None
        self._ended_since: float | None = None     # the status said "ended" while the log had no last event yet
        self._writer_gone = False
        self._writer_message = ""
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self._poll)

    def start(self) -> None:
        """Read the log so far, then follow it."""
        self.following = True
        self._poll()

    def stop(self) -> None:
        """Follow no more (the page shows something else); the run itself goes on."""
        self.following = False
        self._timer.stop()

    def writer_ended(self, message: str = "") -> None:
        """The process writing the run (one this app started) has exited; ``message``: its error sentence."""
        self._writer_gone = True
        self._writer_message = message
        if self.following and not self._timer.isActive():
            return                          # a poll is reading now; the next one is the last
        if self.following:
            self._timer.stop()
            self._poll()

    # --- polling ----------------------------------------------------------------------------
    def _poll(self) -> None:
        if not self.following:
            return
        run_dir, offset, final, first = self.run_dir, self._offset, self._writer_gone, self._first

        def read(_job: jobs.Job) -> tuple[Any, int, dict | None]:
            events, new_offset, run = read_new(run_dir, offset)
            return (digest_events(events) if first else events), new_offset, run

        jobs.submit(read, kind="follow", what="Reading the run's log", context=self, lane=f"follow:{run_dir}",
                    on_done=lambda out: self._polled(out[0], out[1], out[2], final),
                    on_error=lambda message, _details: self._poll_failed(message))

    def _poll_failed(self, message: str) -> None:
        if self.following:
            self.relay(make("warning", message))
            self._timer.start()

    def _polled(self, events: Any, offset: int, run: dict | None, final: bool) -> None:
        if not self.following:
            return
        self._offset = offset
        if isinstance(events, LogDigest):       # the first poll: the whole log so far, digested
            self._first = False
            self._end_event = events.end
            self.caught_up.emit(events)
        else:
            for event in events:
                self._dispatch(event)
                if not self.following:
                    return
        if self._end_event is not None:
            self._end_from_event(self._end_event)
            return
        status = run.get("status") if run else None
        if status in ENDED:
            now = time.monotonic()
            self._ended_since = self._ended_since or now
            if status == "interrupted" or final or now - self._ended_since > END_GRACE_S:
                self._end_from_run(run or {})
                return
        elif final:                 # our process has exited and its log holds no last event
            if run is None:
                self._end(None, self._writer_message or "The run ended before it started.")
            else:
                self._end_from_run({**run, "status": "interrupted"})
            return
        if self._writer_gone:
            self._poll()            # the writer left while this poll read: one last read
        else:
            self._timer.start()

    def _dispatch(self, record: dict) -> None:
        for event in decode_all([record]):
            if event.kind in ("finished", "failed"):
                self._end_event = event     # said once the poll has read everything before it
            else:
                self.relay(event)

    # --- the end ------------------------------------------------------------------------------
    def _end_from_event(self, event: Event) -> None:
        if event.kind == "failed":
            self._end(None, event.data.message or "The run failed.")
        else:
            self._end(ended_of({**vars(event.data), "run_dir": event.data.run_dir or self.run_dir}), "")

    def _end_from_run(self, run: dict) -> None:
        status = str(run.get("status") or "interrupted")
        if status == "failed":
            self._end(None, str(run.get("error") or "The run failed."))
        else:
            self._end(ended_of({**run, "run_dir": self.run_dir, "status": status}), "")

    def _end(self, result: RunEnded | None, message: str) -> None:
        self.stop()
        self.relay(make("failed", message, "") if result is None else make("finished", result))

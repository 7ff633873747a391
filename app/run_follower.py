"""Follows a run that another process writes (the command line, ``torchrun``, a cluster job) from its event log.

Every poll is a short job of :mod:`app.jobs` that reads only the bytes the run's event log
gained since the last poll (:func:`dtl_engine.runs.event_log.read_events`: a half-written last line
waits for the next poll) and the run's status (:meth:`dtl_engine.runs.folder.RunFolder.status`,
which tells a dead writer's "running" run as interrupted). A job, not the GUI thread, because a
cluster's run folder may sit on a network file system that answers slowly. The next poll is
asked for only when the last one has answered, so polls never pile up.

The first poll reads the whole log and digests it with the Train step's history reader
(:func:`app.run_history.event_history`); later polls hand each new event on as the same
signal an in-app run's :class:`app.worker.RunController` sends, so the Train step draws a
followed run with the code that draws its own.

The run has ended when its log says so (``finished`` / ``failed``), or when its status does
(a killed process writes no last event), or when the process that wrote it, if it is ours,
has exited (:meth:`RunFollower.writer_ended`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from app import jobs
from app.run_history import event_history
from app.worker import RunSignals
from dtl_engine.listener import (BackedOff, BatchStats, EpochStats, FirstModel, MemorySample, RunStarted,
                                 SearchProgress)

POLL_MS = 300               # how often the log is read (the charts redraw at 10 Hz anyway)
END_GRACE_S = 10.0          # a run status that says "ended" before the log's last event: wait this long for it
ENDED = ("finished", "stopped", "failed", "interrupted")


@dataclass
class EndedRun:
    """How a followed run ended (the fields of the engine's RunResult that the pages read)."""

    run_dir: str
    status: str                 # finished, stopped or interrupted
    epochs_done: int
    best_epoch: int | None = None
    best_val_acc: float | None = None


@dataclass
class LogDigest:
    """What a run's event log held when following began."""

    started: RunStarted | None = None       # the latest run_started (a resumed run has several)
    epochs: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    last_batch: BatchStats | None = None
    memory: MemorySample | None = None
    end: dict | None = None                 # a finished / failed event after the latest run_started


def as_record(cls: type, event: dict) -> Any:
    """The listener dataclass ``cls`` from a logged event (the log writes NaN as null); None if malformed."""
    values = {}
    for f in fields(cls):
        if f.name in event:
            value = event[f.name]
            values[f.name] = math.nan if value is None and f.type == "float" else value
    try:
        return cls(**values)
    except TypeError:
        return None


def digest_events(events: list[dict]) -> LogDigest:
    """Digest a whole log: the history reader's steps and lines, plus where the run stands."""

    digest = LogDigest()
    digest.steps, digest.lines = event_history(events)
    epochs: dict[int, dict] = {}
    for event in events:
        kind = event.get("event")
        if kind == "run_started":
            digest.started, digest.end = as_record(RunStarted, event), None
        elif kind == "epoch" and isinstance(event.get("epoch"), int):
            epochs[event["epoch"]] = event      # a resumed run trains its later epochs again: the last counts
        elif kind == "batch":
            digest.last_batch = as_record(BatchStats, event)
        elif kind == "memory":
            digest.memory = as_record(MemorySample, event)
        elif kind in ("finished", "failed"):
            digest.end = event
    digest.epochs = [epochs[k] for k in sorted(epochs)]
    return digest


def read_new(run_dir: str, offset: int) -> tuple[list[dict], int, dict | None]:
    """(events after ``offset``, the offset to go on from, the run record with its effective status or None)."""
    from dtl_engine.errors import RunError
    from dtl_engine.runs.event_log import read_events
    from dtl_engine.runs.folder import EVENT_LOG, RunFolder, effective_status

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
    from dtl_engine.errors import RunError
    from dtl_engine.runs.folder import RunFolder

    folder = RunFolder(run_dir)
    try:
        return folder.has_run_file() and folder.status() == "running"
    except RunError:
        return False


class RunFollower(RunSignals):
    """Follows one run folder until the run ends, with the same signals as a run in the app (RunSignals)."""

    caught_up = Signal(object)      # LogDigest, once, before any other signal; finished carries an EndedRun

    def __init__(self, run_dir: str | Path, parent: QObject | None = None, *, poll_ms: int = POLL_MS) -> None:
        super().__init__(parent)
        self.run_dir = str(run_dir)
        self.following = False
        self._offset = 0
        self._first = True
        self._end_event: dict | None = None
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
            self.warning.emit(message)
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

    def _dispatch(self, event: dict) -> None:
        kind = event.get("event")
        record = {"run_started": RunStarted, "batch": BatchStats, "epoch": EpochStats, "memory": MemorySample,
                  "search_progress": SearchProgress, "first_model": FirstModel,
                  "backed_off": BackedOff}.get(str(kind))
        if record is not None:
            value = as_record(record, event)
            if value is not None:
                {"run_started": self.started, "batch": self.batch, "epoch": self.epoch, "memory": self.memory,
                 "search_progress": self.search, "first_model": self.first_model,
                 "backed_off": self.backed_off}[str(kind)].emit(value)
        elif kind == "checkpoint":
            self.checkpoint.emit(str(event.get("path", "")), int(event.get("epoch") or 0))
        elif kind == "warning":
            self.warning.emit(str(event.get("message", "")))
        elif kind in ("finished", "failed"):
            self._end_event = event

    # --- the end ------------------------------------------------------------------------------
    def _end_from_event(self, event: dict) -> None:
        if event.get("event") == "failed":
            self._end(None, str(event.get("message") or "The run failed."))
        else:
            self._end(EndedRun(self.run_dir, str(event.get("status") or "finished"),
                               int(event.get("epochs_done") or 0), event.get("best_epoch"),
                               event.get("best_val_acc")), "")

    def _end_from_run(self, run: dict) -> None:
        status = str(run.get("status") or "interrupted")
        if status == "failed":
            self._end(None, str(run.get("error") or "The run failed."))
        else:
            self._end(EndedRun(self.run_dir, status, int(run.get("epochs_done") or 0), run.get("best_epoch"),
                               run.get("best_val_acc")), "")

    def _end(self, result: EndedRun | None, message: str) -> None:
        self.stop()
        if result is None:
            self.failed.emit(message, "")
        else:
            self.finished.emit(result)

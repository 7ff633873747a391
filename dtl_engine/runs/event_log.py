"""The run folder's append-only event log: one JSON object per line, so any run can be followed live.

Training (in the app, on the command line, under ``torchrun`` on a cluster) appends one
line per event: ``run_started``, ``batch``, ``epoch``, ``memory``, ``checkpoint``,
``warning``, ``search_progress``, ``search_finished``, ``first_model``, ``backed_off``, ``finished``,
``failed`` (:mod:`dtl_engine.events` is the vocabulary: :func:`~dtl_engine.events.decode` reads a line back).
Each line is written with one ``write`` call and flushed, so a reader sees whole lines,
except that a crash or a reader racing the writer can leave a partly written last line.
:func:`read_events` never consumes a line without its newline; :class:`EventFollower`
returns only the events added since its last call.

    follower = EventFollower(run_dir)
    while True:
        for event in follower.poll():
            print(event["event"], event.get("loss"))
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dtl_engine import fileio
from dtl_engine.events import Event, EventSink, encode
from dtl_engine.fileio import open_regular
from dtl_engine.runs.folder import EVENT_LOG


class EventLogWriter(EventSink):
    """A listener that appends every run event to the run folder's event log (:func:`dtl_engine.events.encode`).

    Writes nothing while the run folder does not exist (a run refused before it started).
    """

    def __init__(self, run_dir: str | Path):
        super().__init__(self.append)
        self.path = Path(run_dir) / EVENT_LOG

    def append(self, event: Event) -> None:
        if not self.path.parent.is_dir():
            return
        line = json.dumps(encode(event), allow_nan=False) + "\n"
        fileio.append_text(self.path, line)      # one write: readers see whole lines


def read_events(path: str | Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The events after byte ``offset`` of an event log, and the offset to continue from.

    A last line without its newline (being written, or cut by a crash) is left for the next
    call; a complete line that is not valid JSON is skipped. A missing file gives no events.
    """
    path = Path(path)
    try:
        with open_regular(path) as fh:          # a FIFO in its place would block the reader for ever
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1                 # only whole lines are consumed
    events = []
    for raw in data[:end].splitlines():
        try:
            event = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(event, dict):
            events.append(event)
    return events, offset + end


class EventFollower:
    """Follows one run folder's event log: each :meth:`poll` returns the events added since the last."""

    def __init__(self, run_dir: str | Path, offset: int = 0):
        self.path = Path(run_dir) / EVENT_LOG
        self.offset = offset

    def poll(self) -> list[dict[str, Any]]:
        events, self.offset = read_events(self.path, self.offset)
        return events

"""The run folder's append-only event log: one JSON object per line, so any run can be followed live.

Training (in the app, on the command line, under ``torchrun`` on a cluster) appends one
line per event: ``run_started``, ``batch``, ``epoch``, ``memory``, ``checkpoint``,
``warning``, ``search_progress``, ``first_model``, ``backed_off``, ``finished``, ``failed``.
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
import math
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, cast

from dtl_engine import fileio
from dtl_engine.fileio import open_regular
from dtl_engine.listener import RunListener
from dtl_engine.runs.folder import EVENT_LOG



def _clean(value: Any) -> Any:
    """JSON-safe: NaN / inf become None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class EventLogWriter(RunListener):
    """A listener that appends every run event to the run folder's event log.

    Writes nothing while the run folder does not exist (a run refused before it started).
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / EVENT_LOG

    def append(self, event: str, **fields: Any) -> None:
        if not self.path.parent.is_dir():
            return
        line = json.dumps(_clean({"event": event, "time": time.time(), **fields}), allow_nan=False) + "\n"
        fileio.append_text(self.path, line)      # one write: readers see whole lines

    def run_started(self, info: Any) -> None:
        self.append("run_started", **asdict(info))

    def batch_finished(self, stats: Any) -> None:
        self.append("batch", **asdict(stats))

    def epoch_finished(self, stats: Any) -> None:
        self.append("epoch", **asdict(stats))

    def memory_sample(self, sample: Any) -> None:
        self.append("memory", **asdict(sample))

    def checkpoint_saved(self, path: str, epoch: int) -> None:
        self.append("checkpoint", path=path, epoch=epoch)

    def warning(self, message: str) -> None:
        self.append("warning", message=message)

    def search_progress(self, progress: Any) -> None:
        self.append("search_progress", **asdict(progress))

    def first_model(self, stats: Any) -> None:
        self.append("first_model", **asdict(stats))

    def backed_off(self, event: Any) -> None:
        self.append("backed_off", **asdict(event))

    def run_finished(self, result: Any) -> None:
        if hasattr(result, "to_dict"):
            data = result.to_dict()
        else:               # (is_dataclass narrows to "instance or class"; a result is an instance)
            data = asdict(cast(Any, result)) if is_dataclass(result) else {}
        data.pop("report", None)                # the report has its own run file; the log stays small
        self.append("finished", **data)

    def run_failed(self, message: str, details: str) -> None:
        self.append("failed", message=message)


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

"""A run's history as the Train step shows it: per-step curve records and log lines, read from its event log.

The live page, a re-opened run and a run followed from another process word each event with
:func:`dtl_engine.events.describe`, so the three logs (and the command line) read alike.
"""
from __future__ import annotations

from pathlib import Path

from dtl_engine.events import Event, decode_all, stamped
from dtl_engine.runs.folder import EVENT_LOG, RunFolder
from dtl_engine.runs.event_log import read_events


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The per-epoch records of a run (the steps come from :func:`read_event_history`)."""
    return RunFolder(run_dir).read_metrics()


def read_event_history(run_dir: str | Path) -> tuple[list[dict], list[str], str | None]:
    """(per-step records, log lines, device kind) from the run's event log (a background job: the log can be long).

    A resumed run logs the steps it trained again after the resume point; the later ones count. The
    device kind ("cpu", "cuda", "mps"; None when the log never said) tells what its memory curve measures.
    """
    events = decode_all(read_events(Path(run_dir) / EVENT_LOG)[0])
    devices = [e.data.device for e in events if e.kind == "run_started" and e.data.device]
    return (*event_history(events), devices[-1] if devices else None)


def step_record(stats) -> dict:
    """One BatchStats as the charts' history takes it."""
    return {"x": stats.epoch + (stats.step + 1) / max(1, stats.steps_per_epoch), "loss": stats.loss,
            "images_per_sec": stats.images_per_sec, "memory_bytes": stats.memory_bytes,
            "peak_memory_bytes": stats.peak_memory_bytes}


def event_history(events: list[Event]) -> tuple[list[dict], list[str]]:
    """(per-step records, log lines) of a run's decoded events (a run followed live starts from these)."""
    steps: dict[int, dict] = {}
    lines: list[str] = []
    for event in events:
        if event.kind == "batch":
            steps[int(event.data.global_step)] = step_record(event.data)
            continue
        line = stamped(event)
        if line:
            lines.append(line)
    return [steps[k] for k in sorted(steps) if steps[k]["loss"] == steps[k]["loss"]], lines

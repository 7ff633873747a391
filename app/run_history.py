"""A run's history as the Train step shows it: per-step curve records and log lines, read from its event log.

The live page, a re-opened run and a run followed from another process all describe an event
with :func:`event_line`, so the three logs read alike.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dtl_engine.listener import BACKOFF_REASONS
from dtl_engine.formatting import format_count, format_duration


def read_metrics(run_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """(per-epoch records, per-step records) of a run; the steps come from :func:`read_event_history`."""
    from dtl_engine.runs.folder import RunFolder

    return RunFolder(run_dir).read_metrics(), []


def read_event_history(run_dir: str | Path) -> tuple[list[dict], list[str], str | None]:
    """(per-step records, log lines, device kind) from the run's event log (a background job: the log can be long).

    A resumed run logs the steps it trained again after the resume point; the later ones count. The
    device kind ("cpu", "cuda", "mps"; None when the log never said) tells what its memory curve measures.
    """
    from dtl_engine.runs.event_log import read_events
    from dtl_engine.runs.folder import EVENT_LOG

    events, _ = read_events(Path(run_dir) / EVENT_LOG)
    devices = [str(e["device"]) for e in events if e.get("event") == "run_started" and e.get("device")]
    return (*event_history(events), devices[-1] if devices else None)


def event_history(events: list[dict]) -> tuple[list[dict], list[str]]:
    """(per-step records, log lines) of events read from a run's log (a run followed live starts from these)."""
    steps: dict[int, dict] = {}
    lines: list[str] = []
    for event in events:
        kind = event.get("event")
        if kind == "batch":
            per_epoch = max(1, int(event.get("steps_per_epoch") or 1))
            x = int(event.get("epoch", 0)) + (int(event.get("step", 0)) + 1) / per_epoch
            steps[int(event.get("global_step", len(steps)))] = {
                "x": x, "loss": event.get("loss"), "images_per_sec": event.get("images_per_sec"),
                "memory_bytes": event.get("memory_bytes"), "peak_memory_bytes": event.get("peak_memory_bytes")}
            continue
        line = event_line(event)
        if line:
            stamp = time.strftime("%H:%M:%S", time.localtime(float(event.get("time") or 0)))
            lines.append(f"{stamp}  {line}")
    return [steps[k] for k in sorted(steps) if steps[k]["loss"] is not None], lines


def event_line(event: dict) -> str:
    """The log line the Train step showed live for one event ('' for events it does not log)."""
    kind = event.get("event")
    if kind == "run_started":
        start = int(event.get("start_epoch") or 0)
        again = f", continuing at epoch {start + 1}" if start else ""
        return (f"Run folder {Path(str(event.get('run_dir', ''))).name} on {event.get('device_name', '?')}, "
                f"{event.get('precision', '?')}, {format_count(event.get('trainable_params'))} trainable "
                f"parameters{again}")
    if kind == "epoch":
        val_loss = event.get("val_loss")
        val_loss_text = "—" if val_loss is None else f"{val_loss:.4f}"
        best = " (best so far)" if event.get("is_best") else ""
        return (f"Epoch {int(event['epoch']) + 1}/{event.get('epochs', '?')}: train loss "
                f"{event.get('train_loss', float('nan')):.4f}, val loss {val_loss_text}, val accuracy "
                f"{100 * float(event.get('val_acc') or 0):.1f} %{best} [{format_duration(event.get('seconds') or 0)}]")
    if kind == "search_progress":
        note = event.get("note")
        return f"Search, trial {event.get('trial')} of {event.get('trials')}: {note}" if note else ""
    if kind == "first_model":
        return (f"{first_model_headline(float(event.get('val_acc') or 0))} (validation loss "
                f"{float(event.get('val_loss') or 0):.4f}, after {format_duration(event.get('seconds') or 0)})")
    if kind == "backed_off":
        why = BACKOFF_REASONS.get(str(event.get("reason")), str(event.get("reason")))
        return (f"⚠ Epoch {int(event.get('epoch', 0)) + 1} diverged ({why}): back to the weights of epoch "
                f"{int(event.get('best_epoch', 0)) + 1}, learning rate {float(event.get('lr_before') or 0):.2g} → "
                f"{float(event.get('lr_after') or 0):.2g}")
    if kind == "checkpoint":
        return f"Checkpoint saved after epoch {int(event.get('epoch', 0)) + 1}"
    if kind == "warning":
        return f"⚠ {event.get('message', '')}"
    if kind == "failed":
        return f"✗ {event.get('message', '')}"
    if kind == "finished":
        done = int(event.get("epochs_done") or 0)
        if event.get("status") == "stopped":
            return "Stopped before the first epoch ended" if done == 0 else f"Stopped after {done} epoch(s)"
        acc = event.get("best_val_acc")
        return f"Finished: {done} epoch(s)" + ("" if acc is None else f", best validation accuracy {100 * acc:.1f} %")
    return ""


def first_model_headline(val_acc: float) -> str:
    """The Train step's line when the first model exists."""
    return f"First model: {100 * val_acc:.1f} % — refining with DTL…"


def describe(kind: str, stats: Any) -> str:
    """The log line of a live event (a listener dataclass), worded as a re-opened run's log words it."""
    return event_line({"event": kind, **asdict(stats)})

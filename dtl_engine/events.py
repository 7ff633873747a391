"""The run-event vocabulary, once: each event's name, its typed form, its log form, its replay and its line.

A run reports through :class:`~dtl_engine.listener.RunListener` hooks. Everything that carries
those reports further speaks this module's :class:`Event` (a kind, the typed payload, a time):

- :func:`encode` makes the JSON-able dict the run folder's event log stores (one line each);
- :func:`decode` reads such a dict back into the typed event, tolerant of older logs
  (a missing field gets an empty value, an unknown one is ignored, null reads as NaN);
- :func:`replay` calls a listener's hooks for a sequence of events (a log read back, a Qt relay);
- :func:`describe` words an event as one human line: the CLI, the app's live log and a re-opened
  run's log all show this line, so they read alike;
- :class:`EventSink` is the listener that turns each hook call into an :class:`Event`.

Adding an event: a payload dataclass (in ``listener`` when the runner builds it), a row in
:data:`KINDS`, a hook on ``RunListener``, and a branch of :func:`describe` if people should see it.
Torch-free (the app reads logs on its GUI thread).
"""
from __future__ import annotations

import math
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from dtl_engine.formatting import format_count, format_duration
from dtl_engine.listener import (BACKOFF_REASONS, BackedOff, BatchStats, EpochStats, FirstModel, MemorySample,
                                 RunListener, RunStarted, SearchProgress)


@dataclass
class CheckpointSaved:
    path: str
    epoch: int                  # 0-based


@dataclass
class RunWarning:
    message: str


@dataclass
class SearchFinished:
    result: dict[str, Any]      # the search's record: lr, augment, trials, summary, seconds


@dataclass
class RunEnded:
    """How a run ended, whoever ran it (this process, torchrun, another program): the one result the app reads."""

    run_dir: str
    status: str                 # "finished", "stopped" or "interrupted"
    epochs_done: int
    best_epoch: int | None = None
    best_val_acc: float | None = None
    epochs: int | None = None   # the epochs it was to train, when known

    @property
    def stopped_early(self) -> bool:
        """It ended before its last epoch and can be resumed."""
        return self.status in ("stopped", "interrupted")


@dataclass
class RunFailed:
    message: str
    details: str = ""


@dataclass(frozen=True)
class Kind:
    """One event kind: its payload class, the listener hook it replays to, how the hook takes it."""

    name: str
    payload: type
    hook: str
    spread: bool = False        # the hook takes the payload's fields as arguments (checkpoint_saved(path, epoch))


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("run_started", RunStarted, "run_started"),
    Kind("batch", BatchStats, "batch_finished"),
    Kind("epoch", EpochStats, "epoch_finished"),
    Kind("memory", MemorySample, "memory_sample"),
    Kind("checkpoint", CheckpointSaved, "checkpoint_saved", spread=True),
    Kind("warning", RunWarning, "warning", spread=True),
    Kind("search_progress", SearchProgress, "search_progress"),
    Kind("search_finished", SearchFinished, "search_finished", spread=True),
    Kind("first_model", FirstModel, "first_model"),
    Kind("backed_off", BackedOff, "backed_off"),
    Kind("finished", RunEnded, "run_finished"),
    Kind("failed", RunFailed, "run_failed", spread=True),
)}


@dataclass
class Event:
    """One run event: ``kind`` (a key of :data:`KINDS`), its typed ``data``, and when it happened."""

    kind: str
    data: Any
    time: float = field(default_factory=time.time)


def ended_of(result: Any) -> RunEnded:
    """The engine's RunResult (or a logged / recorded dict of it) as the one :class:`RunEnded`."""
    if isinstance(result, RunEnded):
        return result
    if hasattr(result, "to_dict"):
        data = result.to_dict()
    elif is_dataclass(result) and not isinstance(result, type):
        data = asdict(result)
    elif isinstance(result, dict):
        data = result
    else:                       # a plain object with the same fields (a test's stand-in)
        data = dict(vars(result)) if hasattr(result, "__dict__") else {}
    data = {**data, "status": data.get("status") or "finished"}
    return _payload(RunEnded, data)


def make(kind: str, *args: Any) -> Event:
    """The event of a hook call: ``make("checkpoint", path, epoch)``, ``make("epoch", stats)``."""
    spec = KINDS[kind]
    if spec.spread:
        return Event(kind, spec.payload(*args))
    if spec.payload is RunEnded:
        return Event(kind, ended_of(args[0]))
    return Event(kind, args[0])


# --- the log's form -----------------------------------------------------------------------------------

def _clean(value: Any) -> Any:
    """JSON-safe: NaN / inf become None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def encode(event: Event) -> dict[str, Any]:
    """The JSON-able dict of ``event`` for the event log: ``{"event": kind, "time": …, **fields}``."""
    return _clean({"event": event.kind, "time": event.time, **asdict(event.data)})


_EMPTY: dict[str, Any] = {"int": 0, "float": 0.0, "str": "", "bool": False}


def _empty(annotation: str) -> Any:
    if annotation.startswith("list"):
        return []
    if annotation.startswith("dict"):
        return {}
    if "None" in annotation:
        return None
    return _EMPTY.get(annotation, None)


def _payload(cls: type, data: dict[str, Any]) -> Any:
    """``cls`` from a logged dict: missing fields empty, null floats NaN, unknown keys ignored."""
    values = {}
    for f in fields(cls):
        annotation = str(f.type)
        if f.name in data:
            value = data[f.name]
            values[f.name] = math.nan if value is None and annotation == "float" else value
        elif f.default is MISSING and f.default_factory is MISSING:    # an older log lacks the field
            values[f.name] = _empty(annotation)
    return cls(**values)


def decode(record: dict[str, Any]) -> Event | None:
    """The typed event of one logged dict; None for a kind this version does not know."""
    spec = KINDS.get(str(record.get("event")))
    if spec is None:
        return None
    try:
        data = _payload(spec.payload, record)
    except (TypeError, ValueError):
        return None
    stamp = record.get("time")
    return Event(spec.name, data, float(stamp) if isinstance(stamp, (int, float)) else 0.0)


def decode_all(records: Iterable[dict[str, Any]]) -> list[Event]:
    """The known events among ``records``, in order."""
    return [e for e in map(decode, records) if e is not None]


# --- replay -------------------------------------------------------------------------------------------

def replay(events: Iterable[Event], listener: RunListener) -> None:
    """Call ``listener``'s hook for each event, in order."""
    for event in events:
        spec = KINDS[event.kind]
        hook = getattr(listener, spec.hook)
        if spec.spread:
            hook(*(getattr(event.data, f.name) for f in fields(spec.payload)))
        else:
            hook(event.data)


class EventSink(RunListener):
    """A listener that hands each hook call on as one :class:`Event` (to the log, to Qt, to a list)."""

    def __init__(self, on_event: Callable[[Event], None]) -> None:
        self.on_event = on_event


def _sink_hook(kind: str) -> Callable[..., None]:
    def hook(self: EventSink, *args: Any) -> None:
        self.on_event(make(kind, *args))
    hook.__name__ = KINDS[kind].hook
    return hook


for _kind in KINDS.values():
    setattr(EventSink, _kind.hook, _sink_hook(_kind.name))


# --- words --------------------------------------------------------------------------------------------

def first_model_headline(val_acc: float) -> str:
    """The line that says the first model exists."""
    return f"First model: {100 * val_acc:.1f} % — refining with DTL…"


def ended_line(ended: RunEnded) -> str:
    """How a run ended, in words (stopped after 3 of 10 epochs, finished with its best accuracy)."""
    done = ended.epochs_done
    of = f" of {ended.epochs}" if ended.epochs else ""
    if ended.status in ("stopped", "interrupted"):
        word = "Stopped" if ended.status == "stopped" else "Interrupted"
        if done == 0:
            return f"{word} before the first epoch ended"
        return f"{word} after {done}{of} epoch{'' if done == 1 and not of else 's'}"
    acc = ended.best_val_acc
    best = "" if acc is None or acc != acc else f", best validation accuracy {100 * acc:.1f} %"
    return f"Finished: {done} epoch(s){best}"


def _started_line(info: RunStarted) -> str:
    line = (f"Run folder {Path(str(info.run_dir)).name} on {info.device_name}, {info.precision}, "
            f"{format_count(info.trainable_params)} trainable parameters")
    if info.start_epoch >= info.epochs > 0:
        return line + f"; all {info.epochs} epochs were already trained, finishing the run"
    return line + (f", continuing at epoch {info.start_epoch + 1}" if info.start_epoch else "")


def _epoch_line(stats: EpochStats) -> str:
    val_loss = "—" if stats.val_loss != stats.val_loss else f"{stats.val_loss:.4f}"
    best = " (best so far)" if stats.is_best else ""
    return (f"Epoch {stats.epoch + 1}/{stats.epochs}: train loss {stats.train_loss:.4f}, val loss {val_loss}, "
            f"val accuracy {100 * (stats.val_acc or 0):.1f} %{best} [{format_duration(stats.seconds or 0)}]")


def _backoff_line(event: BackedOff) -> str:
    why = BACKOFF_REASONS.get(event.reason, event.reason)
    return (f"⚠ Epoch {event.epoch + 1} diverged ({why}): back to the weights of epoch {event.best_epoch + 1}, "
            f"learning rate {event.lr_before:.2g} → {event.lr_after:.2g}")


def _search_line(result: dict[str, Any]) -> str:
    summary = str(result.get("summary") or "the search chose its settings")
    return (f"{summary[:1].upper()}{summary[1:]} ({len(result.get('trials') or [])} probe trials on the training "
            f"images, {format_duration(float(result.get('seconds') or 0))})")


def describe(event: Event) -> str:
    """The one human line of ``event`` ('' for events no log shows: batches, memory samples)."""
    d = event.data
    lines: dict[str, Callable[[], str]] = {
        "run_started": lambda: _started_line(d),
        "epoch": lambda: _epoch_line(d),
        "search_progress": lambda: f"Search, trial {d.trial} of {d.trials}: {d.note}" if d.note else "",
        "search_finished": lambda: _search_line(d.result),
        "first_model": lambda: (f"{first_model_headline(d.val_acc)} (validation loss {d.val_loss:.4f}, "
                                f"after {format_duration(d.seconds)})"),
        "backed_off": lambda: _backoff_line(d),
        "checkpoint": lambda: f"Checkpoint saved after epoch {d.epoch + 1}",
        "warning": lambda: f"⚠ {d.message}",
        "failed": lambda: f"✗ {d.message}",
        "finished": lambda: ended_line(d),
    }
    return lines[event.kind]() if event.kind in lines else ""


def stamped(event: Event) -> str:
    """``describe`` with the event's clock time in front ('' when it has no line)."""
    line = describe(event)
    return f"{time.strftime('%H:%M:%S', time.localtime(event.time))}  {line}" if line else ""

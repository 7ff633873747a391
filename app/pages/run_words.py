"""The Train step's words for a run: what is about to run, where a run stands, what Resume would do."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from app.run_life import RunState, has_model
from app.run_session import RunSession
from dtl_engine.events import RunEnded, ended_line
from dtl_engine.formatting import format_bytes, format_count

SEARCH_PHASE = "Choosing the learning rate and augmentation"
SEARCH_BAR_STEPS = 1000         # the search's bar: its fraction in thousandths
NOT_STARTED = "Not started. Press Start (Ctrl+R) to train."


def what_runs(config: Any) -> str:
    """The run about to start in words: the model as it will be built (weights, size), method, epochs."""
    if config.weights == "random":
        model = f"{config.backbone.split('.')[0]} with random weights"    # a pretrained tag means nothing then
    elif config.weights == "hub":
        model = f"{config.backbone} with pretrained weights"
    else:
        model = f"{config.backbone} with the weights in {Path(config.weights).name}"
    size = f", {config.image_size} px" if config.image_size else ""
    return f"{model}{size}, method {config.method}, {config.epochs} epochs"


def is_weights_error(details: str) -> bool:
    """True when a failure's traceback ends in the engine's WeightsError (pretrained weights not obtained)."""
    lines = details.strip().splitlines()
    return bool(lines) and lines[-1].split(":", 1)[0].rsplit(".", 1)[-1] == "WeightsError"


def state_word(session: RunSession) -> str:
    """The state whose colour the line takes: a shown stopped run reads as stopped, not finished."""
    if session.state is RunState.IDLE and session.shown is not None:
        return RunState.of(session.shown.status).value
    return session.state.value


def best_so_far(best_val: float) -> str:
    """A live run's headline once an epoch has ended (the first model's headline is outdated by then)."""
    return f"Best so far: {100 * best_val:.1f} % — training…"


def state_texts(session: RunSession, phase: str, error: str | None, first_acc: float | None,
                best_val: float | None) -> tuple[str, str]:
    """(the state line, the shorter line of the step bar) of the session.

    ``phase``: what a live run does now when more than "Training…"; ``error``: the last failure's sentence;
    ``first_acc`` / ``best_val``: the first model's and the best accuracy shown.
    """
    state = session.state
    if state is RunState.FAILED and error is not None:
        return error, error
    if state.ended and session.ended is not None:
        return ended_texts(session.ended, "", session.started is not None, first_acc, best_val)
    if state is RunState.IDLE and session.shown is not None:
        text, line = ended_texts(session.shown, f"Run {Path(session.shown.run_dir).name}: ", True, first_acc,
                                 best_val)
        line = line.removeprefix("Finished — ")          # a finished run: "Opened — 2 epoch(s), best 91.3 %"
        return text, f"Opened — {line[:1].lower()}{line[1:]}"
    words = {RunState.PAUSED: "Paused. Press Resume to continue.",
             RunState.STOPPING: "Stopping after the current batch…", RunState.IDLE: NOT_STARTED}
    if state in words:
        return words[state], ""
    if session.following_elsewhere() and not phase.endswith("…"):
        return "Training in another program — followed live", "Training elsewhere, followed live"
    return phase or "Training…", ""


def ended_texts(ended: RunEnded, prefix: str, started: bool, first_acc: float | None,
                best_val: float | None) -> tuple[str, str]:
    """How ``ended`` ended in words, and what Resume would do with it (``started``: it said it began)."""
    line = ended_line(ended)
    if ended.status == "running":
        return f"{prefix}training in another program (open it from the Runs step to follow it)", "Running"
    if ended.status == "finished":
        acc = ended.best_val_acc if ended.best_val_acc is not None else best_val
        best = f", best {100 * acc:.1f} %" if acc is not None and acc == acc else ""
        return f"{prefix}{line.replace(': ', ' — ', 1)}", f"Finished — {ended.epochs_done} epoch(s){best}"
    if ended.status == "failed":
        return f"{prefix}Failed after {ended.epochs_done} epoch(s)", "Failed"
    if ended.epochs_done == 0 and not started:
        return "Stopped before the run started — nothing was trained", "Stopped before it started"
    if ended.epochs_done == 0 and (first_acc is not None or (bool(prefix) and has_model(ended.run_dir))):
        acc = f" ({100 * first_acc:.1f} %)" if first_acc is not None else ""
        return (f"{prefix}{line} — the first model{acc} is kept; press Resume to continue at epoch 1",
                f"{line.split(' before')[0]} — first model kept")
    if ended.epochs_done == 0:
        return f"{prefix}{line} — nothing trained yet; Resume starts again at epoch 1", f"{line}: nothing trained"
    best = f", best {100 * best_val:.1f} %" if best_val else ""
    return f"{prefix}{line}{best} — press Resume to continue at epoch {ended.epochs_done + 1}", f"{line}{best}"


def run_summary(info: Any) -> str:
    """The line under the buttons once a run started (RunStarted): device, precision, what trains, the images."""
    share = 100.0 * info.trainable_params / max(1, info.total_params)
    processes = int((info.config or {}).get("world_size") or 1)
    device = info.device_name + (f" × {processes} processes" if processes > 1 else "")
    return (f"<b>Device:</b> {device} &nbsp; <b>Precision:</b> {info.precision} &nbsp; "
            f"<b>Trainable:</b> {format_count(info.trainable_params)} of {format_count(info.total_params)} "
            f"parameters ({share:.2f} %) &nbsp; <b>Images:</b> {info.num_train} train / {info.num_val} validation, "
            f"{len(info.classes)} classes")


def where_stopped(stats: Any) -> str:
    """' at epoch 1, step 3/9' from the last step shown (BatchStats or None; no speed: the run is over)."""
    return "" if stats is None else f" at epoch {stats.epoch + 1}, step {stats.step + 1}/{stats.steps_per_epoch}"


def memory_line(kind: str, now: int, peak: int) -> str:
    """'Memory (GPU) now 1.2 GB, peak 1.5 GB'; ``kind``: a MemorySample's ("cuda", "mps", "process") or ''."""
    what = {"cuda": "GPU", "mps": "GPU", "process": "process"}.get(kind, kind)
    return f"Memory{f' ({what})' if what else ''} now {format_bytes(now)}, peak {format_bytes(peak)}"


def stop_keeps(epochs_done: int, first_acc: float | None) -> str:
    """What a run stopped now keeps: its last completed epoch, its first model, or nothing yet."""
    if epochs_done:
        return "its last completed epoch"
    return "its first model" if first_acc is not None else "nothing yet: no epoch has completed"


def past_bar(shown: RunEnded) -> tuple[int, int, str]:
    """(value, maximum, text) of a past run's bar: how far a stopped run came, not a full bar."""
    total = max(1, shown.epochs or shown.epochs_done)
    return (total if shown.status == "finished" else shown.epochs_done), total, ended_line(shown)

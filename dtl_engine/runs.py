"""The run folders: one sub-folder of ``runs_dir()`` per training run, listable and re-openable.

A run folder holds ``run.json`` (status, dates, progress), ``config.json``,
``classes.json``, ``split.json``, the checkpoint files, ``metrics.json`` and
``report.json``. The status is ``running``, ``finished``, ``stopped`` or
``failed``; a run still marked ``running`` whose process is gone is listed as
``interrupted`` (its last epoch checkpoint can be resumed).
"""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from .errors import RunError
from .training.checkpoint import BEST_WEIGHTS, LAST_WEIGHTS, atomic_write_json, load_weights, read_json

RUN_FILE = "run.json"
STATUSES = ("running", "finished", "stopped", "failed", "interrupted")


@dataclass
class RunInfo:
    """One line of the run list."""

    run_dir: str
    name: str
    created: str
    status: str
    backbone: str
    method: str
    best_val_acc: float | None
    epochs_done: int
    epochs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_dir(backbone: str, method: str, root: str | Path | None = None) -> Path:
    """Create a fresh, uniquely named run folder: ``<UTC timestamp>_<backbone>_<method>``."""
    from .paths import runs_dir

    root = Path(root) if root is not None else runs_dir()
    short = re.sub(r"[^A-Za-z0-9_.-]+", "-", backbone.split("/")[-1].split(".")[0])[:40]
    stem = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}_{short}_{method.replace('+', 'plus')}"
    for n in range(1000):
        path = root / (stem if n == 0 else f"{stem}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RunError(f"Cannot create a new run folder in {root}.")


# --- run.json ------------------------------------------------------------------

def _process_identity() -> dict[str, Any]:
    """The pid plus its start time: together they tell a live run from a reused pid."""
    proc = psutil.Process()
    return {"pid": proc.pid, "pid_started": proc.create_time()}


def update_run_file(run_dir: str | Path, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into ``run.json`` (atomically); a change of status to running stamps this process."""
    path = Path(run_dir) / RUN_FILE
    data = read_json(path) if path.exists() else {"created": now_iso()}
    data.update(changes)
    if changes.get("status") == "running":
        data.update(_process_identity())
    data["updated"] = now_iso()
    atomic_write_json(path, data)
    return data


def _process_alive(pid: Any, started: Any) -> bool:
    if not isinstance(pid, int) or not psutil.pid_exists(pid):
        return False
    try:
        return started is None or abs(psutil.Process(pid).create_time() - float(started)) < 1.0
    except (psutil.Error, ValueError, TypeError):
        return False


def effective_status(run: dict[str, Any]) -> str:
    """``run.json``'s status, with a dead 'running' run reported as 'interrupted'."""
    status = run.get("status", "interrupted")
    if status == "running" and not _process_alive(run.get("pid"), run.get("pid_started")):
        return "interrupted"
    return status if status in STATUSES else "interrupted"


def read_run_file(run_dir: str | Path, name: str) -> Any:
    """Read one JSON file of a run; a missing or damaged file becomes a :class:`RunError`."""
    path = Path(run_dir) / name
    try:
        return read_json(path)
    except FileNotFoundError:
        raise RunError(f"'{Path(run_dir).name}' is not a complete run folder: {name} is missing.") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise RunError(f"The file {name} of the run '{Path(run_dir).name}' cannot be read ({exc}).") from exc


def run_info(run_dir: str | Path) -> RunInfo:
    run_dir = Path(run_dir)
    run = read_run_file(run_dir, RUN_FILE)
    config = read_run_file(run_dir, "config.json")
    return RunInfo(
        run_dir=str(run_dir), name=run_dir.name, created=run.get("created", ""), status=effective_status(run),
        backbone=config.get("backbone", ""), method=config.get("method", ""),
        best_val_acc=run.get("best_val_acc"), epochs_done=int(run.get("epochs_done", 0)),
        epochs=int(config.get("epochs", 0)),
    )


def list_runs(root: str | Path | None = None) -> list[RunInfo]:
    """All readable runs, newest first; folders that are not runs are skipped."""
    from .paths import runs_dir

    root = Path(root) if root is not None else runs_dir()
    infos = []
    for child in root.iterdir() if root.is_dir() else []:
        if child.is_dir() and (child / RUN_FILE).exists():
            try:
                infos.append(run_info(child))
            except RunError:
                continue
    return sorted(infos, key=lambda r: (r.created, r.name), reverse=True)


# --- models ----------------------------------------------------------------------

def build_run_model(config: Any, num_classes: int, model_kwargs: dict[str, Any] | None = None):
    """Build the model a config describes; the seed makes a 'random' backbone the same every time."""
    import torch

    from .model import build_model
    from .recipes import data_overrides

    torch.manual_seed(config.seed)
    return build_model(
        config.backbone, num_classes, weights=config.weights, rank=config.rank, inject_from=config.inject_from,
        beta=config.beta, variant=config.method, fusion_kernel=config.fusion_kernel, drop_path=config.drop_path,
        image_size=config.image_size, checkpoint_blocks=config.checkpoint_blocks,
        low_precision_taps=config.low_precision_taps, model_kwargs=model_kwargs,
        data_overrides=data_overrides(config.resize, config.normalize),
    )


def rebuild_run_model(run_dir: str | Path):
    """The untrained model of a saved run, from its spec.json (same seed, same 'random' backbone)."""
    import torch

    from .model import ModelSpec, build_model_from_spec

    config = read_run_file(run_dir, "config.json")
    spec = ModelSpec.from_dict(read_run_file(run_dir, "spec.json"))
    torch.manual_seed(int(config.get("seed", 0)))
    return build_model_from_spec(spec)


def load_run_model(run_dir: str | Path, which: str = "best", device: Any = "cpu"):
    """Rebuild a run's model with its ``best`` (default) or ``last`` trainable weights -> (model, classes)."""
    run_dir = Path(run_dir)
    if which not in ("best", "last"):
        raise RunError(f"Choose the 'best' or the 'last' weights of a run, not '{which}'.")
    classes = list(read_run_file(run_dir, "classes.json"))
    weights = run_dir / (BEST_WEIGHTS if which == "best" else LAST_WEIGHTS)
    if which == "best" and not weights.exists():
        weights = run_dir / LAST_WEIGHTS        # a run stopped before its first validation has no best yet
    state = load_weights(weights)
    model = rebuild_run_model(run_dir)
    model.load_trainable_state_dict(state)
    return model.to(device).eval(), classes

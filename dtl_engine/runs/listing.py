"""The run folders: one sub-folder of ``runs_dir()`` per training run, listable and re-openable.

The folder's layout belongs to :mod:`dtl_engine.runs.folder`. A run's status is
``running``, ``finished``, ``stopped`` or ``failed``; a run still marked ``running``
whose process is gone is listed as ``interrupted`` (its last epoch checkpoint can be
resumed), and a folder whose run files cannot be read is listed as ``damaged``.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
import datetime as _dt

import torch

from dtl_engine.errors import RunError, DTLError
from dtl_engine.runs.folder import STATUSES, RunFolder, effective_status, new_run_dir, now_iso
from dtl_engine.runs.checkpoint import load_weights
from dtl_engine.paths import runs_dir
from dtl_engine.model.dtl import ModelSpec, build_model, build_model_from_spec
from dtl_engine.recipes import data_overrides

__all__ = ["RunInfo", "STATUSES", "effective_status", "list_runs", "load_run_model", "new_run_dir", "now_iso",
           "read_run_file", "run_info", "update_run_file"]


@dataclass
class RunInfo:
    """One line of the run list."""

    run_dir: str
    name: str
    created: str
    status: str                     # one of STATUSES, or "damaged"
    backbone: str
    method: str
    best_val_acc: float | None
    epochs_done: int
    epochs: int
    problem: str = ""               # why a damaged run cannot be read
    weights: str = ""               # "hub" (pretrained), "random", or a local weights file
    image_size: int | None = None   # the input side it trains at (None: the backbone's own)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def update_run_file(run_dir: str | Path, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into the run's status file (see :meth:`RunFolder.update_run`)."""
    return RunFolder(run_dir).update_run(**changes)


def read_run_file(run_dir: str | Path) -> dict[str, Any]:
    """The run's status file (status, dates, progress); unreadable -> :class:`RunError`."""
    return RunFolder(run_dir).read_run()


def run_info(run_dir: str | Path) -> RunInfo:
    """The run-list line of one run folder; raises :class:`RunError` when its files cannot be read."""
    folder = RunFolder(run_dir)
    run = folder.read_run()
    config = folder.read_config()
    return RunInfo(
        run_dir=str(folder.path), name=folder.name, created=str(run.get("created", "")),
        status=effective_status(run), backbone=str(config.get("backbone", "")), method=str(config.get("method", "")),
        best_val_acc=run.get("best_val_acc"), epochs_done=int(run.get("epochs_done", 0) or 0),
        epochs=int(config.get("epochs", 0) or 0), weights=str(config.get("weights", "") or ""),
        image_size=config.get("image_size"),
    )


def _damaged_info(folder: RunFolder, problem: str) -> RunInfo:
    try:
        created = _dt.datetime.fromtimestamp(folder.path.stat().st_mtime, _dt.timezone.utc).isoformat(
            timespec="seconds")
    except OSError:
        created = ""
    return RunInfo(run_dir=str(folder.path), name=folder.name, created=created, status="damaged", backbone="",
                   method="", best_val_acc=None, epochs_done=0, epochs=0, problem=problem)


def list_runs(root: str | Path | None = None) -> list[RunInfo]:
    """All runs, newest first; a run whose files are damaged is listed as ``damaged`` with the reason."""
    root = Path(root) if root is not None else runs_dir()
    infos = []
    for child in root.iterdir() if root.is_dir() else []:
        folder = RunFolder(child)
        if not child.is_dir() or not folder.has_run_file():
            continue
        try:
            infos.append(run_info(child))
        except (RunError, ValueError, TypeError) as exc:
            infos.append(_damaged_info(folder, str(exc)))
    return sorted(infos, key=lambda r: (r.created, r.name), reverse=True)


# --- models ----------------------------------------------------------------------

def build_run_model(config: Any, num_classes: int, model_kwargs: dict[str, Any] | None = None):
    """Build the model a config describes; the seed makes a 'random' backbone the same every time."""
    torch.manual_seed(config.seed)
    try:
        return build_model(
            config.backbone, num_classes, weights=config.weights, rank=config.rank, inject_from=config.inject_from,
            beta=config.beta, variant=config.method, fusion_kernel=config.fusion_kernel, drop_path=config.drop_path,
            image_size=config.image_size, checkpoint_blocks=config.checkpoint_blocks,
            low_precision_taps=config.low_precision_taps, model_kwargs=model_kwargs,
            data_overrides=data_overrides(config.resize, config.normalize),
        )
    except DTLError:
        raise
    except (TypeError, ValueError, RuntimeError, AssertionError, IndexError, KeyError) as exc:
        # timm rejects impossible settings (a negative depth, an image size the patches do not fit) deep inside
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"The model '{config.backbone}' cannot be built with these settings ({detail}).") from exc


def rebuild_run_model(run_dir: str | os.PathLike[str]):
    """The untrained model of a saved run, from its saved model spec (same seed, same 'random' backbone)."""
    folder = RunFolder(run_dir)
    return model_from_spec(folder.read_spec(), int(folder.read_config().get("seed", 0)))


def model_from_spec(spec: dict[str, Any], seed: int):
    """The untrained model a saved spec describes, built under ``seed`` (same 'random' backbone every time)."""
    torch.manual_seed(seed)
    return build_model_from_spec(ModelSpec.from_dict(spec))


def load_run_model(run_dir: str | os.PathLike[str], which: str = "best", device: Any = "cpu"):
    """Rebuild a run's model with its ``best`` (default) or ``last`` trainable weights -> (model, classes)."""
    folder = RunFolder(run_dir)
    weights = folder.weights(which)     # a run stopped before its first validation has no best yet
    classes = folder.read_classes()
    state = load_weights(weights)
    model = rebuild_run_model(run_dir)
    model.load_trainable_state_dict(state)
    return model.to(device).eval(), classes

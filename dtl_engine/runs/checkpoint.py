"""Checkpoint files of a run: trainable weights (safetensors) and the resume state.

Where they live in the run folder is :mod:`dtl_engine.runs.folder`'s business; every
file is written atomically (:mod:`dtl_engine.fileio`), so a crash or power cut leaves
either the previous or the new file, never half of one.

- weights: only the trainable weights (side network + head: kilobytes for DTL).
  Loading them runs no code.
- the resume state: one plain dict (epoch, global step, trainable weights, optimizer,
  scheduler, RNG, metrics, best so far). The weights are kept here as well so that the
  resume point is a single file: its rename is the commit of an epoch. Loaded with
  ``weights_only=True``.
"""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any
import json

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from dtl_engine.errors import RunError
from dtl_engine.fileio import (NOT_REGULAR, NotRegularFileError, atomic_write_bytes, atomic_write_json, read_bytes,
                               open_regular)
from dtl_engine.runs.folder import RunFolder

__all__ = ["atomic_write_bytes", "atomic_write_json", "save_weights", "load_weights", "weights_metadata",
           "save_state", "load_state", "rng_state", "set_rng_state"]


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Trainable weights as safetensors (tensors made contiguous and moved to the CPU)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors weights file; a missing or damaged file becomes a :class:`RunError`."""
    path = Path(path)
    try:
        return st_load(read_bytes(path))
    except FileNotFoundError:
        raise RunError(f"The weights file {path.name} is missing from the run folder {path.parent}.") from None
    except NotRegularFileError:
        raise RunError(f"The weights file {path} is {NOT_REGULAR}.") from None
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise RunError(f"The weights file {path} is damaged and cannot be read ({exc}).") from exc


def weights_metadata(path: str | Path) -> dict[str, str]:
    """The metadata :func:`save_weights` stored in a weights file ({} when it has none or cannot be read)."""
    try:
        with open_regular(path) as fh:
            size = int.from_bytes(fh.read(8), "little")
            if not 0 < size <= 100_000_000:
                return {}
            header = json.loads(fh.read(size).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def save_state(run_dir: str | Path, state: dict[str, Any]) -> None:
    """Write the resume dict (tensors, numbers, strings, lists, dicts only)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(RunFolder(run_dir).state_file, buffer.getvalue())


def load_state(run_dir: str | Path) -> dict[str, Any]:
    """Read the resume dict without executing code from the file (``weights_only=True``)."""
    folder = RunFolder(run_dir)
    if not folder.has_state():
        raise RunError(f"The run in {folder.name} has no finished epoch yet, so there is nothing to resume from.")
    try:
        return torch.load(io.BytesIO(read_bytes(folder.state_file)), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RunError(f"The checkpoint of the run in {folder.name} is damaged and cannot be read ({exc}).") from exc


# --- random number generators ---------------------------------------------

def rng_state() -> dict[str, Any]:
    """Torch (CPU, CUDA) and Python RNG states, as plain types ``weights_only`` accepts."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _to_lists(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value

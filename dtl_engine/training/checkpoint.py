"""Checkpoint files of a run, always written atomically.

Every file goes to a temporary name in the run folder, is flushed to disk and
then renamed over the old one (``os.replace``), so a crash or power cut leaves
either the previous or the new file, never half of one.

- ``checkpoint.safetensors`` / ``best.safetensors``: only the trainable weights
  (side network + head: kilobytes for DTL). Loading them runs no code.
- ``state.pt``: one plain dict for resuming (epoch, global step, trainable
  weights, optimizer, scheduler, RNG, metrics, best so far). The weights are
  kept here as well so that the resume point is a single file: the rename of
  ``state.pt`` is the commit of an epoch. Loaded with ``weights_only=True``.
"""
from __future__ import annotations

import io
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import RunError

LAST_WEIGHTS = "checkpoint.safetensors"
BEST_WEIGHTS = "best.safetensors"
STATE = "state.pt"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a torn one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2).encode("utf-8"))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Trainable weights as safetensors (tensors made contiguous and moved to the CPU)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    atomic_write_bytes(path, st_save(tensors, metadata=metadata))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors weights file; a missing or damaged file becomes a :class:`RunError`."""
    path = Path(path)
    try:
        return st_load(path.read_bytes())
    except FileNotFoundError:
        raise RunError(f"The weights file {path.name} is missing from the run folder {path.parent}.") from None
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise RunError(f"The weights file {path} cannot be read ({exc}).") from exc


def save_state(run_dir: str | Path, state: dict[str, Any]) -> None:
    """Write the resume dict (tensors, numbers, strings, lists, dicts only)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(run_dir) / STATE, buffer.getvalue())


def load_state(run_dir: str | Path) -> dict[str, Any]:
    """Read the resume dict without executing code from the file (``weights_only=True``)."""
    path = Path(run_dir) / STATE
    if not path.exists():
        raise RunError(f"The run in {Path(run_dir).name} has no finished epoch yet, so there is nothing to resume from.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RunError(f"The checkpoint of the run in {Path(run_dir).name} cannot be read ({exc}).") from exc


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

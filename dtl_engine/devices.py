"""Where a run computes and in which precision: CUDA, then Apple MPS, then CPU.

Part of the torch-free core: torch is imported inside the functions (the one deferral the
layer contracts allow), so naming a device costs nothing until a device is chosen.
"""
from __future__ import annotations

import ctypes
import gc
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dtl_engine.errors import RunError

if TYPE_CHECKING:
    import torch


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(pref: str = "auto") -> tuple[torch.device, str]:
    """Pick the compute device and a name a person can read.

    ``"auto"`` takes CUDA, then Apple MPS, then the CPU. A forced device that
    this machine lacks raises :class:`RunError` with a sentence saying so.
    """
    import torch

    pref = (pref or "auto").lower()
    if pref not in ("auto", "cuda", "mps", "cpu"):
        raise RunError(f"Unknown device '{pref}': use auto, cuda, mps or cpu.")
    if pref in ("auto", "cuda") and torch.cuda.is_available():
        index = torch.cuda.current_device()
        return torch.device("cuda", index), torch.cuda.get_device_name(index)
    if pref == "cuda":
        raise RunError("No CUDA GPU is available on this computer (or this PyTorch build has no CUDA support); "
                       "choose 'auto' or 'cpu'.")
    if pref in ("auto", "mps") and _mps_available():
        return torch.device("mps"), "Apple GPU (MPS)"
    if pref == "mps":
        raise RunError("Apple's MPS GPU backend is not available on this computer; choose 'auto' or 'cpu'.")
    threads = torch.get_num_threads()
    return torch.device("cpu"), f"CPU ({threads} thread{'s' if threads != 1 else ''}, {os.cpu_count() or '?'} cores)"


@dataclass(frozen=True)
class Precision:
    """The resolved numeric precision of a run."""

    name: str                        # "fp32", "bf16", "fp16"
    autocast_dtype: torch.dtype | None
    use_grad_scaler: bool            # fp16 needs loss scaling to keep small gradients

    @property
    def autocast(self) -> bool:
        return self.autocast_dtype is not None


def resolve_precision(pref: str, device: torch.device) -> Precision:
    """Turn the config's precision into what the loop uses.

    ``"auto"``: bf16 on CUDA GPUs that support it, else fp16 with a grad
    scaler; fp32 on MPS and CPU (mixed precision there only when asked).
    """
    import torch

    pref = (pref or "auto").lower()
    if pref == "auto":
        if device.type == "cuda":
            pref = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            pref = "fp32"
    if pref == "fp32":
        return Precision("fp32", None, False)
    if pref == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise RunError("This GPU does not support bf16; choose fp16 or auto.")
        return Precision("bf16", torch.bfloat16, False)
    if pref == "fp16":
        return Precision("fp16", torch.float16, device.type == "cuda")
    raise RunError(f"Unknown precision '{pref}': use auto, fp32, bf16 or fp16.")


def release_freed_memory() -> None:
    """Give the memory a finished run freed back to the system (call it once the run has returned).

    An idle app should not keep a run's memory. Python's objects are freed when the run returns
    (``gc.collect`` breaks the cycles among them at once); what stays resident after that is
    the allocators' free memory: glibc keeps freed heap pages in its arenas, one per thread
    that allocated (a run allocates on the job thread that ran it, and the next run may take
    another thread and arena), and CUDA's caching allocator keeps freed blocks. ``malloc_trim(0)``
    returns every arena's free pages; other C libraries have no such call and need none here.
    """
    gc.collect()
    torch = sys.modules.get("torch")            # never imported: no CUDA memory to hand back
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    if sys.platform.startswith("linux"):
        try:
            trim = ctypes.CDLL("libc.so.6").malloc_trim      # glibc only (musl has none)
        except (OSError, AttributeError):
            return
        trim(0)

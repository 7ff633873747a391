"""Timing training steps so that repeated benchmark runs agree.

Two things other than the step itself show up in a step's time, and both vary from run to run:
- page faults: glibc hands large freed blocks back to the kernel, so every step maps fresh pages
  for its activations, and what a fault costs depends on the host's memory state;
- Python's cyclic garbage collector, which runs whenever enough objects were allocated.
Benchmarks therefore keep freed memory for reuse and time each step with the collector paused.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
import time
from typing import Callable

import torch

_M_TRIM_THRESHOLD = -1   # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_KEEP = 1 << 30          # blocks up to 1 GiB come from the heap, and the heap is never trimmed below 1 GiB


def keep_freed_memory() -> bool:
    """Have glibc reuse freed memory instead of returning it to the kernel; True if that took effect.

    Process-wide and permanent, so only benchmark entry points call it. Elsewhere than glibc on Linux
    this does nothing and returns False.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP))


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA, MPS); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_step(step: Callable[[], None], sync: Callable[[], None] = lambda: None) -> tuple[float, float]:
    """Run ``step`` once with the garbage collector paused; (wall-clock seconds, process CPU seconds).

    ``sync`` waits for queued device work (CUDA, MPS) before each clock is read.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        sync()
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        sync()
        return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        if enabled:
            gc.enable()

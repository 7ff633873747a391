"""Memory now and peak, in the one unit the listener expects: bytes.

On CUDA this is the allocator's view (what the model really costs); on MPS the
driver's current allocation; on the CPU the whole process' resident memory
(psutil), since PyTorch keeps no separate count there.
"""
from __future__ import annotations

import psutil
import torch

from dtl_engine.listener import MemorySample


class MemoryMeter:
    """Samples memory on one device and remembers the peak since the start of the run."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = {"cuda": "cuda", "mps": "mps"}.get(device.type, "process")
        self._process = psutil.Process()
        self._peak = 0
        if self.kind == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def sample(self) -> MemorySample:
        if self.kind == "cuda":
            now = int(torch.cuda.memory_allocated(self.device))
            self._peak = max(self._peak, int(torch.cuda.max_memory_allocated(self.device)))
        elif self.kind == "mps":
            now = int(torch.mps.current_allocated_memory())
        else:
            now = int(self._process.memory_info().rss)
        self._peak = max(self._peak, now)
        return MemorySample(bytes_now=now, bytes_peak=self._peak, kind=self.kind)

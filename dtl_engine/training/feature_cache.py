"""Cache of the frozen prefix's outputs, so later epochs skip blocks 0..M.

Without random augmentation (and without drop-path) the frozen prefix maps
each image to the same tensors every epoch. The first epoch stores
``model.forward_prefix`` outputs per sample; later epochs re-batch them and
call ``model.forward_from_prefix``. Samples up to the memory budget stay in
RAM; the rest spill into raw files (numpy memmaps of bytes, so any dtype,
bf16 included, round-trips bit-exactly) in a uniquely named folder the cache
creates and marks as its own inside ``spill_parent`` (the run folder).
:meth:`FeatureCache.close` removes that folder and nothing else: a folder of
the user's with any name is never touched.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dtl_engine.runs.folder import new_cache_dir, remove_cache_dir


@dataclass
class _Slot:
    """Storage of one prefix tensor for all samples."""

    shape: tuple[int, ...]           # per sample
    dtype: torch.dtype
    ram: torch.Tensor                # (in_ram, *shape)
    disk: np.memmap | None           # (num_samples - in_ram, bytes per sample) uint8

    @property
    def sample_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * torch.empty((), dtype=self.dtype).element_size()


class FeatureCache:
    """Per-sample store of prefix outputs, indexed 0..num_samples-1."""

    def __init__(self, num_samples: int, budget_bytes: int, spill_parent: str | Path):
        self.num_samples = int(num_samples)
        self.budget_bytes = max(0, int(budget_bytes))
        self.spill_parent = Path(spill_parent)
        self.spill_dir: Path | None = None      # created on the first spill
        self.filled = torch.zeros(self.num_samples, dtype=torch.bool)
        self.in_ram = 0                  # samples [0, in_ram) live in RAM, the rest on disk
        self._slots: dict[str, _Slot] | None = None

    # --- state -------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return bool(self.filled.all())

    @property
    def spilled(self) -> bool:
        return self.in_ram < self.num_samples and self._slots is not None

    def nbytes(self) -> tuple[int, int]:
        """(bytes in RAM, bytes on disk) once allocated."""
        if self._slots is None:
            return 0, 0
        per_sample = sum(s.sample_bytes for s in self._slots.values())
        return per_sample * self.in_ram, per_sample * (self.num_samples - self.in_ram)

    # --- writing -------------------------------------------------------------
    def store(self, indices: torch.Tensor, prefix: dict[str, torch.Tensor]) -> None:
        """Keep the prefix outputs of the samples ``indices`` (batch-first tensors)."""
        indices = indices.to("cpu", torch.long)
        if self._slots is None:
            self._allocate(prefix)
        assert self._slots is not None
        ram_mask = indices < self.in_ram
        for key, slot in self._slots.items():
            values = prefix[key].detach().to("cpu")
            if ram_mask.any():
                slot.ram[indices[ram_mask]] = values[ram_mask]
            if (~ram_mask).any():
                assert slot.disk is not None        # samples beyond the RAM part live on disk
                rows = values[~ram_mask].contiguous().reshape(int((~ram_mask).sum()), -1).view(torch.uint8)
                slot.disk[(indices[~ram_mask] - self.in_ram).numpy()] = rows.numpy()
        self.filled[indices] = True

    def exclude(self, indices: torch.Tensor) -> None:
        """Count samples whose image failed to load as done: they are left out, never fetched."""
        self.filled[indices.to("cpu", torch.long)] = True

    def _allocate(self, prefix: dict[str, torch.Tensor]) -> None:
        shapes = {k: (tuple(v.shape[1:]), v.dtype) for k, v in prefix.items()}
        per_sample = sum(int(np.prod(s, dtype=np.int64)) * torch.empty((), dtype=d).element_size()
                         for s, d in shapes.values())
        self.in_ram = min(self.num_samples, self.budget_bytes // max(1, per_sample))
        on_disk = self.num_samples - self.in_ram
        spill_dir = None
        if on_disk:
            spill_dir = self.spill_dir = new_cache_dir(self.spill_parent)
        self._slots = {}
        for i, (key, (shape, dtype)) in enumerate(shapes.items()):
            slot = _Slot(shape, dtype, torch.empty((self.in_ram, *shape), dtype=dtype), None)
            if spill_dir is not None:
                # A numbered file name: prefix keys may hold characters unfit for file names.
                slot.disk = np.lib.format.open_memmap(spill_dir / f"prefix_{i}.npy", mode="w+",
                                                      dtype=np.uint8, shape=(on_disk, slot.sample_bytes))
            self._slots[key] = slot

    # --- reading -------------------------------------------------------------
    def fetch(self, indices: torch.Tensor, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """The stored prefix outputs of ``indices`` as a batch, on ``device``."""
        if self._slots is None or not bool(self.filled[indices].all()):
            raise KeyError("some requested samples are not in the feature cache")
        indices = indices.to("cpu", torch.long)
        ram_mask = indices < self.in_ram
        out: dict[str, torch.Tensor] = {}
        for key, slot in self._slots.items():
            batch = torch.empty((len(indices), *slot.shape), dtype=slot.dtype)
            if ram_mask.any():
                batch[ram_mask] = slot.ram[indices[ram_mask]]
            if (~ram_mask).any():
                assert slot.disk is not None        # samples beyond the RAM part live on disk
                rows = torch.from_numpy(np.ascontiguousarray(slot.disk[(indices[~ram_mask] - self.in_ram).numpy()]))
                batch[~ram_mask] = rows.view(slot.dtype).reshape(-1, *slot.shape)
            out[key] = batch.to(device, non_blocking=True)
        return out

    def close(self) -> None:
        """Free the memory and delete the spill files."""
        if self._slots is not None:
            for slot in self._slots.values():
                slot.disk = None     # drop the mappings before deleting their files (Windows)
            self._slots = None
        self.filled.zero_()
        if self.spill_dir is not None:
            remove_cache_dir(self.spill_dir)
            self.spill_dir = None

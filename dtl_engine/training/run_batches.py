"""The run's batches: the epoch's order, the images that load (a failed file is left out), the cached prefix."""
from __future__ import annotations

from typing import Any, Iterator

import torch

from dtl_engine.data.loader import BatchLoader, auto_num_workers
from dtl_engine.training.run_state import RunState


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: data order and augmentation depend on (seed, epoch) only."""
    return (seed * 1_000_003 + epoch) % (2**63 - 1)



class RunBatches(RunState):
    """The batches of one run (see :mod:`dtl_engine.training.run_state`)."""

    def _train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, Any]]:
        """(indices, labels, inputs) per batch: images, or the cached prefix once the cache is full."""
        n = len(self.split.train)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(self.config.seed, epoch)))
        batches = [order[i:i + self.config.batch_size].tolist() for i in range(0, n, self.config.batch_size)]
        if self.config.drop_last and len(batches) > 1 and len(batches[-1]) < self.config.batch_size:
            batches.pop()                               # the paper recipe: every batch is a full batch
        self._global_lens = [len(b) for b in batches]
        seed = epoch_seed(self.config.seed, epoch)      # each sample's augmentation = f(seed, index)
        if self.ddp.enabled:    # this rank's slice of each global batch
            return self.ddp.local_batches(batches, lambda mine: self._batches(self.train_set, mine, 0, seed),
                                          self.device)
        return self._batches(self.train_set, batches, offset=0, seed=seed)

    def _batches(self, dataset: Any, batches: list[list[int]], offset: int, seed: int | None = None) -> Iterator[Any]:
        """(indices, labels, inputs) of the samples that load; a failed file is reported and left out."""
        labels_all = torch.tensor([y for _, y in dataset.samples], dtype=torch.long)
        cache, empty = self.cache, torch.zeros(0, dtype=torch.long)
        nothing = (empty, empty.to(self.device), torch.zeros(0, device=self.device))
        # One item per batch, in order: a batch whose every file failed comes back empty, so several
        # processes stay in step. A sample whose file failed is left out of every later batch; batches
        # whose prefixes are all cached (later epochs; images the search already saw) skip the images.
        batches = [[i for i in b if i + offset not in self.excluded] for b in batches]
        cached = [cache is not None and bool(b) and bool(cache.filled[torch.tensor(b, dtype=torch.long) + offset].all())
                  for b in batches]
        to_load = [b for b, c in zip(batches, cached) if b and not c]
        loaded = iter(self._loader(dataset)(to_load, seed)) if to_load else iter(())
        for batch, is_cached in zip(batches, cached):
            if not batch:
                yield nothing
                continue
            if is_cached:
                assert cache is not None
                idx = torch.tensor(batch, dtype=torch.long)
                yield idx, labels_all[idx].to(self.device), cache.fetch(idx + offset, self.device)
                continue
            images, labels, idx, failed = next(loaded)
            for item in failed:
                if item.sample_index + offset not in self.excluded:
                    self.excluded.add(item.sample_index + offset)
                    self.listener.warning(f"Left out an image that could not be loaded: {item.reason}")
            if cache is not None and failed:
                cache.exclude(torch.tensor([f.sample_index for f in failed], dtype=torch.long) + offset)
            if images is None:
                yield nothing
                continue
            inputs: Any = images.to(self.device, non_blocking=True)
            if cache is not None:
                inputs = {"_images": inputs, "_cache_index": idx + offset}   # prefix computed and stored in step
            yield idx, labels.to(self.device, non_blocking=True), inputs

    def _loader(self, dataset: Any) -> Any:
        """The dataset's persistent loader (worker processes started on first use, kept across epochs)."""
        name = "train" if dataset is self.train_set else "val"
        if name not in self.loaders:
            self.loaders[name] = BatchLoader(dataset, auto_num_workers(self.config.num_workers),
                                             pin_memory=self.device.type == "cuda")
        return self.loaders[name]


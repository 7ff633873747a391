"""The run's steps: a forward pass, one optimiser update, the validation pass, and the split of a batch
into micro-batches when the GPU runs out of memory (gradient accumulation, same effective batch)."""
from __future__ import annotations

import gc
import time
from typing import Any

import torch
import torch.nn.functional as F

from dtl_engine.errors import RunError
from dtl_engine.training.run_batches import RunBatches

MEMORY_SAMPLE_SECONDS = 0.5     # memory_sample() at most this often (plus once per epoch)


def _is_oom(exc: BaseException) -> bool:
    # CUDA raises OutOfMemoryError; MPS raises a RuntimeError that says so.
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _split_inputs(inputs: torch.Tensor | dict[str, torch.Tensor], parts: int) -> list[Any]:
    if isinstance(inputs, dict):
        pieces = {k: v.tensor_split(parts) for k, v in inputs.items()}
        return [{k: p[i] for k, p in pieces.items()} for i in range(parts)]
    return list(inputs.tensor_split(parts))



class RunSteps(RunBatches):
    """The steps of one run (see :mod:`dtl_engine.training.run_state`)."""

    def _forward(self, inputs: Any) -> torch.Tensor:
        """Logits for images, for a cached prefix, or for images whose prefix goes into the cache."""
        with torch.autocast(self.device.type, dtype=self.precision.autocast_dtype or torch.float32,
                            enabled=self.precision.autocast):
            if isinstance(inputs, dict) and "_images" in inputs:
                prefix = self.model.forward_prefix(inputs["_images"])
                assert self.cache is not None           # images come with a cache index only when caching
                self.cache.store(inputs["_cache_index"], prefix)
                return self.model.forward_from_prefix(prefix)
            if isinstance(inputs, dict):
                return self.model.forward_from_prefix(inputs)
            return self.model(inputs)

    def _train_step(self, inputs: Any, labels: torch.Tensor, global_n: int) -> tuple[float, int]:
        """One optimizer update over the batch; returns (summed loss, correct predictions).

        ``global_n`` is the batch size over all processes (``len(labels)`` on one process).
        """
        def work(parts: int) -> tuple[float, int]:
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum, correct, n = 0.0, 0, len(labels)
            for chunk, chunk_labels in zip(_split_inputs(inputs, parts), labels.tensor_split(parts)):
                if len(chunk_labels) == 0:
                    continue
                logits = self._forward(chunk)
                loss = F.cross_entropy(logits.float(), chunk_labels, label_smoothing=self.config.label_smoothing)
                # weight each micro-batch by its share: the summed gradient equals the whole batch's
                self.scaler.scale(loss * (len(chunk_labels) / n)).backward()
                loss_sum += float(loss.detach()) * len(chunk_labels)
                correct += int((logits.argmax(1) == chunk_labels).sum())
            self.ddp.sync_gradients(self._trainable, n, global_n)     # several processes: the global mean
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return loss_sum, correct
        return self._oom_safe(work, len(labels))

    @torch.no_grad()
    def _validate(self) -> tuple[float, float]:
        """(mean loss, accuracy) on the validation split."""
        self.model.eval()
        size, mine = self.config.batch_size, self.ddp.shard(len(self.split.val))   # each rank scores its shard
        batches = [list(mine[i:i + size]) for i in range(0, len(mine), size)]
        correct: float              # counts, then their sums over the ranks
        seen: float
        loss_sum, correct, seen = 0.0, 0, 0
        for _idx, labels, inputs in self._batches(self.val_set, batches, offset=len(self.split.train)):
            def work(parts: int) -> tuple[float, int]:
                total, right = 0.0, 0
                for chunk, chunk_labels in zip(_split_inputs(inputs, parts), labels.tensor_split(parts)):
                    if len(chunk_labels):
                        logits = self._forward(chunk).float()
                        total += float(F.cross_entropy(logits, chunk_labels, reduction="sum"))
                        right += int((logits.argmax(1) == chunk_labels).sum())
                return total, right
            batch_loss, batch_correct = self._oom_safe(work, len(labels))
            loss_sum, correct, seen = loss_sum + batch_loss, correct + batch_correct, seen + len(labels)
        loss_sum, correct, seen = self.ddp.sum([loss_sum, correct, seen])   # the whole split, not this rank's
        if seen == 0:
            raise RunError("None of the validation images could be loaded; check that the image folder is still there.")
        return loss_sum / seen, correct / seen

    def _oom_safe(self, work: Any, batch_len: int) -> Any:
        """Run ``work(parts)``; on out-of-memory, free memory and retry with twice as many micro-batches."""
        while True:
            try:
                return work(self.parts)
            except Exception as exc:  # only out-of-memory is handled, the rest re-raised
                if not _is_oom(exc):
                    raise
            # outside the except block, so the failed step's tensors are no longer referenced
            self.optimizer.zero_grad(set_to_none=True)
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if self.parts >= batch_len:
                raise RunError("Out of memory even with one image at a time: choose a smaller image size, "
                               "turn on the memory savers, or use a smaller backbone.")
            self.parts = min(self.parts * 2, batch_len)
            self.listener.warning(
                f"Out of GPU memory: each batch of {self.config.batch_size} is now processed in {self.parts} parts "
                "with gradient accumulation (same effective batch size, a little slower).")

    def _memory(self) -> dict[str, int]:
        sample = self.meter.sample()
        now = time.perf_counter()
        if now - self._last_memory_emit >= MEMORY_SAMPLE_SECONDS:
            self._last_memory_emit = now
            self.listener.memory_sample(sample)
        return {"memory_bytes": sample.bytes_now, "peak_memory_bytes": sample.bytes_peak}

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.precision.autocast_dtype or torch.float32,
                              enabled=self.precision.autocast)


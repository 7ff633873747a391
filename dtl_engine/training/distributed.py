"""One run over several processes (``torchrun``): who writes, which images each process takes, what is synchronised.

A run started by ``torchrun`` (or any launcher that sets ``RANK`` / ``WORLD_SIZE`` /
``MASTER_ADDR`` / ``MASTER_PORT``) joins one process group: NCCL on CUDA, gloo on the CPU.

- The global batch is the user's batch size. Each global batch of the 1-process order
  (same seed, same permutation) is cut into one contiguous slice per process, so the
  images of a step are exactly those of a 1-process run. We do not use torch's
  ``DistributedSampler``: its interleaved shards would make the steps differ from a
  1-process run. Slices may differ by one image; the gradient average is weighted by
  slice size, so any batch size of at least ``world_size`` is exact.
- Only the trainable parameters (side network, head) are all-reduced, as one flat
  buffer per step (:meth:`Distributed.sync_gradients`); the frozen backbone sends nothing.
- Rank 0 alone touches the run folder; small things only rank 0 can read (the split,
  a resume state, the best weights) reach the others through :meth:`Distributed.share`.
- Every collective runs under the process group's timeout; a failed or timed-out
  collective becomes :class:`PeerLostError`, and the run is marked ``interrupted``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from dtl_engine.errors import RunError
from dtl_engine.data.loader import image_dataset
from dtl_engine.inference.evaluate import build_evaluation, predict_probs

T = TypeVar("T")

TIMEOUT_ENV = "DTL_COLLECTIVE_TIMEOUT"     # seconds a process waits for the others before giving up
DEFAULT_TIMEOUT_SECONDS = 600


class PeerLostError(RunError):
    """Another process of the run stopped, or stopped answering within the collective timeout."""


def launched_world_size() -> int:
    """The number of processes a launcher (``torchrun``, Slurm + torchrun) started; 1 otherwise."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def launched_rank() -> int:
    """This process's rank as the launcher set it (0 when not launched by one)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def collective_timeout() -> timedelta:
    """The collective timeout: ``DTL_COLLECTIVE_TIMEOUT`` seconds, default 10 minutes."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_SECONDS
    except ValueError:
        raise RunError(f"{TIMEOUT_ENV} must be a number of seconds, not '{text}'.") from None
    return timedelta(seconds=max(seconds, 1.0))


@dataclass
class Distributed:
    """This process's place in the run; ``world_size == 1`` makes every method a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False
    bytes_reduced: int = 0          # gradient bytes this process all-reduced (the traffic benchmark reads it)
    steps_reduced: int = 0
    broken: bool = False            # a collective failed: the group may be unusable

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- setup -------------------------------------------------------------
    def describe(self, batch_size: int) -> dict[str, Any]:
        """What the run's saved settings record: the number of processes and the largest per-process batch."""
        return {"world_size": self.world_size, "per_rank_batch": -(-batch_size // self.world_size)}

    def check_batch(self, batch_size: int) -> None:
        if batch_size < self.world_size:
            raise RunError(f"The batch size {batch_size} is smaller than the number of processes "
                           f"({self.world_size}): each process needs at least one image per step. "
                           f"Use a batch size of at least {self.world_size}.")

    def close(self) -> None:
        """Leave the process group this object created (a no-op for a group made by the caller).

        After a failed collective the group is left to the process's exit: tearing down a
        group whose peer is gone can block (NCCL), and the process is about to end anyway.
        """
        if self.owns_group and dist.is_initialized() and not self.broken:
            dist.destroy_process_group()
        self.owns_group = False

    # --- who does what -----------------------------------------------------
    def share(self, make: Callable[[], T]) -> T:
        """Rank 0 computes ``make()``; every rank returns its value (or raises rank 0's exception)."""
        if not self.enabled:
            return make()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", make())
            except Exception as exc:  # sent to the other ranks, then re-raised here
                box[0] = ("error", exc)
        self._collective(lambda: dist.broadcast_object_list(box, src=0))
        kind, value = box[0]
        if kind == "error":
            raise value
        return value

    def batch_slice(self, batch: Sequence[int]) -> list[int]:
        """This rank's contiguous slice of a global batch (sizes differ by at most one)."""
        if not self.enabled:
            return list(batch)
        return list(batch[self._bounds(len(batch))])

    def shard(self, n: int) -> range:
        """This rank's contiguous part of ``range(n)`` (evaluation: each image on exactly one rank)."""
        return range(n)[self._bounds(n)]

    def _bounds(self, n: int) -> slice:
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def local_batches(self, batches: list[list[int]], load: Callable[[list[list[int]]], Iterable[Any]],
                      device: torch.device) -> Iterator[Any]:
        """This rank's part of each global batch, in order; an empty slice yields empty tensors."""
        mine = [self.batch_slice(b) for b in batches]
        loaded = iter(load([b for b in mine if b]))
        for batch in mine:
            if batch:
                yield next(loaded)
            else:
                empty = torch.zeros(0, dtype=torch.long)
                yield empty, empty.to(device), torch.zeros(0, device=device)

    # --- collectives -------------------------------------------------------
    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (a stop request reaches all ranks at one step)."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        self._collective(lambda: dist.all_reduce(t, op=dist.ReduceOp.MAX))
        return bool(t.item() > 0)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._comm_device())
        self._collective(lambda: dist.all_reduce(t))
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        self._collective(lambda: dist.all_gather_object(out, obj))
        return out

    def broadcast_parameters(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Rank 0's values of ``params`` on every rank (so all ranks start from the same weights)."""
        if not self.enabled:
            return
        params = list(params)
        flat = self._to_comm(torch.cat([p.detach().reshape(-1) for p in params]))
        self._collective(lambda: dist.broadcast(flat, src=0))
        self._unflatten_into(flat, [p.data for p in params])

    def sync_gradients(self, params: Sequence[torch.nn.Parameter], local_n: int, global_n: int) -> None:
        """Replace each rank's gradients (means over its ``local_n`` images) by the global batch's mean.

        One all-reduce of one flat buffer holding only these parameters; a parameter without a
        gradient counts as zero, so every rank steps every parameter the same way.
        """
        if not self.enabled:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = self._to_comm(torch.cat([g.reshape(-1).float() for g in grads]) * float(local_n))
        self._collective(lambda: dist.all_reduce(flat))
        flat /= float(max(global_n, 1))
        for p, g in zip(params, grads):
            p.grad = g
        self._unflatten_into(flat, grads)
        self.bytes_reduced += flat.numel() * flat.element_size()
        self.steps_reduced += 1

    def _unflatten_into(self, flat: torch.Tensor, targets: list[torch.Tensor]) -> None:
        offset = 0
        for t in targets:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t).to(device=t.device, dtype=t.dtype))
            offset += n

    def _comm_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    def _to_comm(self, t: torch.Tensor) -> torch.Tensor:
        # gloo reduces CPU (and CUDA) tensors; anything else (MPS) goes through the CPU
        return t if t.device == self._comm_device() else t.to(self._comm_device())

    def _collective(self, op: Callable[[], Any]) -> Any:
        try:
            return op()
        except RuntimeError as exc:     # DistBackendError and gloo's connection errors are RuntimeErrors
            self.broken = True
            raise PeerLostError(
                f"Another process of this run stopped, or did not answer within "
                f"{collective_timeout().total_seconds():g} s (seen by process {self.rank} of {self.world_size}: "
                f"{_first_sentence(str(exc))}). The run is interrupted; continue it with "
                "'python -m dtl_engine resume RUN_FOLDER', on any number of processes.") from exc


def _first_sentence(text: str) -> str:
    """The useful part of a backend error: no source-file prefix, the first sentence, at most 160 characters."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", text.strip().splitlines()[0] if text.strip() else "no detail")
    sentence = text.split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= 160 else sentence[:157] + "..."


def setup(device_pref: str = "auto") -> Distributed:
    """Join the launcher's process group (NCCL for CUDA, gloo otherwise), or return a 1-process context.

    A process group the caller already initialised is used as is and left open.
    """
    if dist.is_available() and dist.is_initialized():
        return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size(),
                           local_rank=int(os.environ.get("LOCAL_RANK", "0")), backend=dist.get_backend())
    world = launched_world_size()
    if world <= 1:
        return Distributed()
    if not dist.is_available():
        raise RunError("This PyTorch build has no torch.distributed support, so it cannot train on several processes.")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (device_pref or "auto").lower() in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise RunError(f"Process {local_rank} on this machine has no GPU of its own ({torch.cuda.device_count()} "
                           "GPUs): start at most one process per GPU (--nproc_per_node).")
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend, timeout=collective_timeout())
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                       backend=backend, owns_group=True)


def evaluate_sharded(ctx: Distributed, model: torch.nn.Module, samples: Sequence[tuple[str, int]],
                     classes: Sequence[str], device: torch.device, data_config: dict[str, Any], **kwargs: Any) -> Any:
    """:func:`~dtl_engine.inference.evaluate.evaluate_model` over the whole ``samples``, each rank scoring its shard."""
    best_epoch, split = kwargs.pop("best_epoch", None), kwargs.pop("split", "val")
    shard = ctx.shard(len(samples))
    mine = [samples[i] for i in shard]
    probs, indices, failed = (predict_probs(model, mine, None, device, dataset=image_dataset(mine, data_config),
                                            **kwargs) if mine else (torch.zeros(0, len(classes)), [], []))
    # rows are matched to samples by index: an image that failed to load is left out, never substituted
    parts = ctx.gather((probs.cpu(), [shard[i] for i in indices], failed))
    all_probs = torch.cat([p for p, _, _ in parts if len(p)] or [torch.zeros(0, len(classes))])
    kept = [samples[i] for _, idx, _ in parts for i in idx]
    evaluation = build_evaluation(all_probs, [label for _, label in kept], [path for path, _ in kept], classes,
                                  best_epoch=best_epoch, split=split)
    evaluation.left_out = [item for _, _, lost in parts for item in lost]
    evaluation.total_images = len(samples)
    return evaluation

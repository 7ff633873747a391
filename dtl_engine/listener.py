"""How a run talks to whoever watches it: plain listener objects, no Qt.

A listener implements only the hooks it cares about (all default to no-ops).
The desktop app adapts these calls into Qt signals; the CLI prints them.
:class:`StopToken` is how a watcher asks a run to stop or pause; the run
checks it between batches, so a request is honoured within one batch.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunStarted:
    run_dir: str
    device: str                 # "cpu", "cuda", "mps"
    device_name: str            # human name, e.g. "NVIDIA RTX 4090" or "CPU (8 threads)"
    precision: str              # "fp32", "bf16", "fp16"
    epochs: int
    steps_per_epoch: int
    start_epoch: int            # > 0 when resumed
    classes: list[str]
    num_train: int
    num_val: int
    trainable_params: int
    total_params: int
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchStats:
    epoch: int                  # 0-based
    step: int                   # 0-based step within the epoch
    steps_per_epoch: int
    global_step: int
    total_steps: int
    loss: float
    lr: float
    images_per_sec: float
    memory_bytes: int           # CUDA allocated on GPU, process RSS on CPU
    peak_memory_bytes: int
    eta_seconds: float
    eta_low_seconds: float | None = None    # the range the time left may fall in (None: an older log)
    eta_high_seconds: float | None = None   # see training/eta.py; equal ends once it has settled


@dataclass
class EpochStats:
    epoch: int                  # 0-based
    epochs: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float
    is_best: bool


@dataclass
class SearchProgress:
    """How far the automatic search is (before the first epoch): one per step of its work."""

    phase: str                  # "features" (images through the frozen backbone), "probe", "augment", "side"
    trial: int                  # trials done so far
    trials: int                 # trials in all (probe rates + augmentations + side-network rates)
    images_done: int            # images featurised so far
    images_total: int           # images the search featurises in all
    elapsed_seconds: float
    eta_seconds: float | None   # None until there is a rate to extrapolate from
    fraction: float             # 0..1 of the search's work, for a determinate bar
    note: str = ""              # the figures of the trials just finished, for people ("" while featurising)
    eta_low_seconds: float | None = None    # the range around eta_seconds (None with it, or in an older log)
    eta_high_seconds: float | None = None


@dataclass
class FirstModel:
    """The model at step 0 (frozen backbone + the search's best probe), scored on the validation images."""

    val_loss: float
    val_acc: float
    seconds: float              # since the run began (what a user waited for it)
    path: str                   # its weights: the run's best checkpoint until an epoch beats it


#: BackedOff.reason in words, for every log that shows it (the CLI's and the app's).
BACKOFF_REASONS = {"val_loss": "validation loss rose far above its best", "non_finite": "the loss was no number"}


@dataclass
class BackedOff:
    """Validation loss rose clearly above the best (or the loss was no number): back to the best weights."""

    epoch: int                  # 0-based epoch that diverged
    reason: str                 # "val_loss" or "non_finite"
    val_loss: float
    best_val_loss: float
    best_epoch: int             # the epoch whose weights the run went back to (-1: the first model)
    lr_before: float
    lr_after: float
    backoffs: int               # back-offs so far, this one included


@dataclass
class MemorySample:
    bytes_now: int
    bytes_peak: int
    kind: str                   # "cuda", "mps" or "process"


class RunListener:
    """Base listener: override what you need. Called from the training thread."""

    def run_started(self, info: RunStarted) -> None: ...
    def batch_finished(self, stats: BatchStats) -> None: ...
    def epoch_finished(self, stats: EpochStats) -> None: ...
    def memory_sample(self, sample: MemorySample) -> None: ...
    def checkpoint_saved(self, path: str, epoch: int) -> None: ...
    def warning(self, message: str) -> None: ...
    def search_progress(self, progress: SearchProgress) -> None: ...   # the search before the first epoch
    def search_finished(self, result: dict[str, Any]) -> None: ...   # the automatic lr / augmentation choice
    def first_model(self, stats: FirstModel) -> None: ...            # epoch 0: the step-0 model is scored
    def backed_off(self, event: BackedOff) -> None: ...              # a divergence undone
    def run_finished(self, result: Any) -> None: ...
    def run_failed(self, message: str, details: str) -> None: ...


class ListenerGroup(RunListener):
    """Fans every call out to several listeners, in order."""

    def __init__(self, *listeners: RunListener | None):
        self.listeners = [lst for lst in listeners if lst is not None]

    def _emit(self, hook: str, *args: Any) -> None:
        for lst in self.listeners:
            getattr(lst, hook)(*args)

    def run_started(self, info): self._emit("run_started", info)
    def batch_finished(self, stats): self._emit("batch_finished", stats)
    def epoch_finished(self, stats): self._emit("epoch_finished", stats)
    def memory_sample(self, sample): self._emit("memory_sample", sample)
    def checkpoint_saved(self, path, epoch): self._emit("checkpoint_saved", path, epoch)
    def warning(self, message): self._emit("warning", message)
    def search_progress(self, progress): self._emit("search_progress", progress)
    def search_finished(self, result): self._emit("search_finished", result)
    def first_model(self, stats): self._emit("first_model", stats)
    def backed_off(self, event): self._emit("backed_off", event)
    def run_finished(self, result): self._emit("run_finished", result)
    def run_failed(self, message, details): self._emit("run_failed", message, details)


class StopToken:
    """Thread-safe stop / pause request shared by a run and its watcher."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()     # a paused run must wake up to stop

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_while_paused(self, poll: float = 0.1) -> None:
        """Block while paused; return at once when running or stopping."""
        while not self._running.wait(poll):
            pass

"""What one training run holds while it runs: its settings, folder, processes, model and progress.

The run (:class:`dtl_engine.training.runner._Run`) is built in layers, one module each, every layer
reading and moving this state: the batches (``run_batches``), the steps (``run_steps``), the weights
it keeps (``kept_weights``), its preparation (``run_setup``) and the loop itself (``runner``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from dtl_engine.config import TrainConfig
from dtl_engine.data import Split
from dtl_engine.devices import Precision
from dtl_engine.listener import ListenerGroup, RunListener, StopToken
from dtl_engine.runs import folder as run_folder
from dtl_engine.runs.claim import Claim
from dtl_engine.runs.event_log import EventLogWriter
from dtl_engine.training import distributed
from dtl_engine.training.feature_cache import FeatureCache
from dtl_engine.training.memory import MemoryMeter


class RunState:
    """One run's state; set up here and by :meth:`RunSetup._prepare`, moved by the loop."""

    # set by the preparation (run_setup)
    device: torch.device
    device_name: str
    precision: Precision
    classes: list[str]
    split: Split
    model: Any                      # the DTL model (dtl_engine.model.dtl)
    meter: MemoryMeter
    steps_per_epoch: int
    total_steps: int
    train_set: Any
    val_set: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    _trainable: list[torch.nn.Parameter]
    # moved by the loop
    global_step: int
    metrics: list[dict[str, Any]]
    best_epoch: int | None
    best_acc: float | None
    bad_epochs: int
    _global_lens: list[int]         # the global batch sizes of the epoch being trained

    def __init__(self, config: TrainConfig, run_dir: Path, claim: Claim | None,
                 listener: RunListener | None, token: StopToken | None, ddp: distributed.Distributed | None = None):
        self.config = config
        self.claim = claim              # held by the process that writes (rank 0); None on the others
        self.folder = run_folder.RunFolder(run_dir)
        self.run_dir = self.folder.path
        self.ddp = ddp or distributed.Distributed()
        self.writes = self.ddp.is_main          # rank 0 alone writes the run folder and reports to the listener
        self.started = False            # the first step is about to run: from here on a failure keeps the run
        self.resuming = False
        self.excluded: set[int] = set()  # samples (train, then val indices) whose file failed to load
        self.listener = ListenerGroup(listener, EventLogWriter(self.run_dir)) if self.writes else RunListener()
        self.caller_listener = listener or RunListener()
        self.token = token or StopToken()
        self.parts = 1                  # micro-batches per batch; grows after an out-of-memory error
        self.cache: FeatureCache | None = None
        self.loaders: dict[str, Any] = {}      # persistent loader workers per dataset ("train", "val")
        self.scan = None                        # a fresh scan handed in by the caller (no second scan)
        self._store_pending: Any = None         # (FeatureStore, paths) to fill once the feature cache is full
        self._last_memory_emit = 0.0
        self.t_begin = time.perf_counter()
        self.first_model_due = False            # the search trained a probe: the step-0 model is worth scoring
        self.lr_scale, self.backoffs = 1.0, 0            # see training/backoff.py
        self.lowest_loss: float | None = None           # the lowest validation loss so far

"""The training run: one loop that reads as a story, plus what it needs around it.

Per epoch: reseed (data order and augmentation are a pure function of
(seed, epoch), so a resumed run continues exactly), then per batch: stop /
pause check, set lr, forward, backward, step, log; after the epoch: validate,
checkpoint (atomically), early-stop check. A CUDA out-of-memory error during a
step splits the batch into halves with gradient accumulation (same effective
batch) instead of killing the run.

Failures: the listener's ``run_failed(message, details)`` is called, the run's
status says ``failed``, and the exception is re-raised for the caller (the CLI
exits with an error, the app's worker has already been told through the
listener). A new run refused before its first step (bad input) leaves no run
folder behind.

The run folder is claimed (:mod:`dtl_engine.runs.folder`) for the whole run: a
second writer is refused at once, and an existing folder is never reused
silently.
"""
from __future__ import annotations

import gc
import math
import random
import time
import traceback
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from dtl_engine.config import TrainConfig
from dtl_engine.data import ScanCancelled
from dtl_engine import fileio
from dtl_engine.errors import DTLError, RunError
from dtl_engine.inference.evaluate import Evaluation, evaluate_model, evaluation_split
from dtl_engine.runs.event_log import EventLogWriter
from dtl_engine.listener import (BackedOff, BatchStats, EpochStats, FirstModel, ListenerGroup, RunListener,
                                 RunStarted, StopToken)
from dtl_engine.runs import folder as run_folder
from dtl_engine.model.half_weights import cast_frozen_weights
from dtl_engine.runs import listing as run_files
from dtl_engine.runs import checkpoint as ckpt
from dtl_engine.training import backoff, distributed
from dtl_engine.training.eta import RunEta, later_pace
from dtl_engine.devices import resolve_precision, select_device
from dtl_engine.training.feature_cache import FeatureCache
from dtl_engine.training.memory import MemoryMeter
from dtl_engine.training.optim import build_optimizer, build_scheduler, current_lr, warmup_steps_for

MEMORY_SAMPLE_SECONDS = 0.5     # memory_sample() at most this often (plus once per epoch)
FIRST_MODEL_EPOCH = -1          # the step-0 model's epoch in the run's metrics (shown as "epoch 0")


@dataclass
class RunResult:
    """How a run ended."""

    run_dir: str
    status: str                     # "finished" | "stopped"
    epochs_done: int
    best_epoch: int | None
    best_val_acc: float | None
    report: Evaluation | None = None
    kept_previous: bool = False     # stopped before training: the run it was to replace (--overwrite) is back

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": self.run_dir, "status": self.status, "epochs_done": self.epochs_done,
                "best_epoch": self.best_epoch, "best_val_acc": self.best_val_acc,
                "report": self.report.to_dict() if self.report is not None else None}


def train(config: TrainConfig, listener: RunListener | None = None, token: StopToken | None = None,
          run_dir: str | Path | None = None, *, model_kwargs: dict[str, Any] | None = None,
          overwrite: bool = False, scan: Any = None, break_lock: bool = False) -> RunResult:
    """Train ``config`` in a new run folder (or ``run_dir``) and evaluate the best epoch.

    ``run_dir`` must be empty or new, unless ``overwrite`` allows replacing the run in
    it; it must not be inside, equal to or contain the image folder.
    ``scan``: a :class:`ScanResult` of ``config.data_dir`` just made (the app's Data step);
    it is used instead of scanning again when every file still has its scanned size and
    modification time.
    ``break_lock`` takes over a lock left by a process on another host (known to be down).
    ``model_kwargs`` go to ``timm.create_model`` (tiny test backbones); they are
    stored with the run so resume and re-loading rebuild the same model.
    Started by ``torchrun`` (``WORLD_SIZE`` > 1), the processes train one run together
    (see :mod:`dtl_engine.training.distributed`).
    Returns a :class:`RunResult` (status ``finished`` or ``stopped``); on failure
    calls ``listener.run_failed`` and re-raises.
    """
    try:
        config.validate()
    except RunError as exc:     # nothing was written; the listener still hears why
        (listener or RunListener()).run_failed(str(exc), traceback.format_exc())
        raise
    # Recorded as a real path, so a later command run from elsewhere still knows where the images are.
    config = replace(config, data_dir=str(fileio.real_path(config.data_dir)))
    with fileio.protecting(config.data_dir):     # nothing of this run, no cache, lands in the images
        return _train(config, listener, token, run_dir, model_kwargs, overwrite, scan, break_lock)


def _train(config: TrainConfig, listener: RunListener | None, token: StopToken | None, run_dir: str | Path | None,
           model_kwargs: dict[str, Any] | None, overwrite: bool, scan: Any, break_lock: bool) -> RunResult:
    ddp = distributed.setup(config.device)       # one process unless started by torchrun
    claims: list[run_folder.Claim] = []

    def claim() -> Path:                         # rank 0 claims (and names) the folder; the others follow
        claims.append(run_folder.claim_new(run_dir, config.data_dir, config.backbone, config.method, overwrite,
                                             image_size=config.image_size, break_lock=break_lock))
        return claims[0].folder.path

    try:
        path = ddp.share(claim)
    except DTLError as exc:     # nothing was written (a refused place included); the listener still hears why
        (listener or RunListener()).run_failed(str(exc), traceback.format_exc())
        ddp.close()
        raise
    run = _Run(config, path, claims[0] if claims else None, listener, token, ddp)
    run.scan = scan
    return run.execute(resume=False, model_kwargs=model_kwargs)


def resume(run_dir: str | Path, listener: RunListener | None = None, token: StopToken | None = None,
           break_lock: bool = False) -> RunResult:
    """Continue a stopped, failed or interrupted run from its last epoch checkpoint.

    Refused with a sentence (nothing touched) when the run is running elsewhere, has
    already finished, or lacks what it needs to continue where it was.
    """
    run_dir = Path(run_dir)
    ddp = distributed.setup(_saved_device(run_dir))
    claims: list[run_folder.Claim] = []

    def claim_and_read() -> TrainConfig:         # rank 0 claims and checks the run; the others follow
        claims.append(run_folder.claim_existing(run_dir, break_lock=break_lock))
        folder = claims[0].folder
        try:
            config = TrainConfig.from_dict(folder.read_config())
        except (TypeError, ValueError) as exc:
            raise RunError(f"The settings of the run '{run_dir.name}' are damaged ({exc}).") from exc
        problem = folder.resume_problem()
        if problem:
            raise RunError(problem)
        return config

    try:
        config = ddp.share(claim_and_read)
    except RunError as exc:     # nothing of the run is touched; the listener still hears why
        for held in claims:
            held.release()
        (listener or RunListener()).run_failed(str(exc), traceback.format_exc())
        ddp.close()
        raise
    return _Run(config, run_dir, claims[0] if claims else None, listener, token, ddp).execute(resume=True)


def _saved_device(run_dir: Path) -> str:
    """The device preference of a saved run, to pick the process group's backend before reading more."""
    try:
        return str(run_folder.RunFolder(run_dir).read_config().get("device", "auto"))
    except RunError:
        return "auto"               # the error is reported by resume() itself


def steps_per_epoch(num_train: int, batch_size: int, drop_last: bool = False) -> int:
    """Updates per epoch (at least one: a split smaller than a batch still trains)."""
    if drop_last:
        return max(1, num_train // batch_size)
    return math.ceil(num_train / batch_size)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: data order and augmentation depend on (seed, epoch) only."""
    return (seed * 1_000_003 + epoch) % (2**63 - 1)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _is_oom(exc: BaseException) -> bool:
    # CUDA raises OutOfMemoryError; MPS raises a RuntimeError that says so.
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _split_inputs(inputs: torch.Tensor | dict[str, torch.Tensor], parts: int) -> list[Any]:
    if isinstance(inputs, dict):
        pieces = {k: v.tensor_split(parts) for k, v in inputs.items()}
        return [{k: p[i] for k, p in pieces.items()} for i in range(parts)]
    return list(inputs.tensor_split(parts))


class _Run:
    """One run's state; :meth:`execute` is the whole story."""

    def __init__(self, config: TrainConfig, run_dir: Path, claim: run_folder.Claim | None,
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

    # ------------------------------------------------------------------ story
    def execute(self, resume: bool, model_kwargs: dict[str, Any] | None = None) -> RunResult:
        self.t_begin = time.perf_counter()
        with fileio.protecting(self.config.data_dir):
            return self._execute(resume, model_kwargs)

    def _execute(self, resume: bool, model_kwargs: dict[str, Any] | None) -> RunResult:
        try:
            try:
                state = self._prepare(resume, model_kwargs)
            except ScanCancelled:
                result = self._stopped_before_start()
            else:
                result = self._loop(state)
        except BaseException as exc:
            self._fail(exc)
            raise
        finally:
            for loader in self.loaders.values():
                loader.close()
            if self.cache is not None:
                self.cache.close()
            if self.claim is not None:
                self.claim.release()
            self.ddp.close()
        self.listener.run_finished(result)
        return result

    def _stopped_before_start(self) -> RunResult:
        """Stop pressed while the folder was being scanned: nothing trained, nothing lost.

        A run this one was to replace (--overwrite) is put back as it was, as after a refused input.
        """
        kept = self.writes and self.claim is not None and self.claim.replaced is not None
        if kept:
            assert self.claim is not None
            self.claim.discard()                        # this run's files go, the old run comes back
            self.listener = self.caller_listener        # and its event log is not written to
        elif self.writes:
            self.folder.update_run(status="stopped", finished=_now(), epochs_done=0)
        return RunResult(run_dir=str(self.run_dir), status="stopped", epochs_done=0, best_epoch=None,
                         best_val_acc=None, kept_previous=kept)

    def _loop(self, state: dict[str, Any] | None) -> RunResult:
        cfg, model, listener, token = self.config, self.model, self.listener, self.token
        start_epoch = 0
        self.global_step, self.metrics, self.best_epoch, self.best_acc, self.bad_epochs = 0, [], None, None, 0
        if state is not None:
            start_epoch = self._restore(state)
        self.started = True
        listener.run_started(self._started_info(start_epoch))
        if state is None and self.first_model_due and self.split.val:
            self._first_model()
        status, batch = "finished", max(1, cfg.batch_size)
        eta = RunEta(total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch, start_step=self.global_step,
                     start=time.perf_counter(), val_steps=len(self.split.val) / batch,
                     final_steps=len(evaluation_split(self.split)[1]) / batch,
                     later=later_pace(self.cache is not None, self.cache is not None and self.cache.complete))
        epochs_done = start_epoch

        for epoch in range(start_epoch, cfg.epochs):
            if self.global_step >= self.total_steps:
                break                                         # a resumed run whose step budget is spent
            seed_everything(epoch_seed(cfg.seed, epoch))      # data order + augmentation = f(seed, epoch)
            model.train()
            correct: float          # counts, then their sums over the ranks
            seen: float
            t_epoch, loss_sum, correct, seen, stopped = time.perf_counter(), 0.0, 0, 0, False
            broken = False          # the loss stopped being a number: back to the best weights
            t_prev = t_epoch                                  # images/s includes loading the batch
            for step, (_indices, labels, inputs) in enumerate(self._train_batches(epoch)):
                # stop / pause: honoured between batches, so within one batch of the request
                token.wait_while_paused()
                if self.ddp.any(token.stop_requested):       # every rank stops at the same step
                    stopped = True
                    break
                # set lr: the schedule is a pure function of the update count
                self.scheduler.step_update(self.global_step)
                lr = current_lr(self.optimizer)
                # forward + backward (+ OOM split) and optimizer step
                batch_loss, batch_correct = self._train_step(inputs, labels, self._global_lens[step])
                if self._may_back_off() and self.ddp.any(not math.isfinite(batch_loss)):   # all ranks at once
                    broken = True                               # the rest of the epoch would be lost anyway
                    break
                self.global_step += 1
                loss_sum, correct, seen = loss_sum + batch_loss, correct + batch_correct, seen + len(labels)
                # log
                now = time.perf_counter()
                left = eta.step(now, epoch, self.global_step)
                listener.batch_finished(BatchStats(
                    epoch=epoch, step=step, steps_per_epoch=self.steps_per_epoch, global_step=self.global_step,
                    total_steps=self.total_steps, loss=batch_loss / max(len(labels), 1), lr=lr,
                    images_per_sec=len(labels) / max(now - t_prev, 1e-9), **self._memory(),
                    eta_seconds=left.seconds, eta_low_seconds=left.low, eta_high_seconds=left.high))
                t_prev = now
                if self.global_step >= self.total_steps:
                    break                                       # max_steps reached (or the last step)
            if stopped and self.claim is not None and self.claim.replaced is not None:
                return self._stopped_before_start()     # no epoch complete: the replaced run comes back
            if stopped:
                status = "stopped"
                # the last weights stay usable; the resume point remains the last whole epoch
                if self.writes:
                    ckpt.save_weights(self.folder.last_weights, model.trainable_state_dict(),
                                      {"epoch": str(epoch - 1), "partial": "true"})
                break
            broken = broken or not self._weights_finite()
            if not (broken and self._may_back_off()):
                self._check_not_diverged(epoch)
            # evaluate (training accuracy stands in when there are no validation images)
            loss_sum, correct, seen = self.ddp.sum([loss_sum, correct, seen])     # over all ranks' images
            if seen == 0 and not broken:
                raise RunError("None of the training images could be loaded; check that the image folder "
                               "is still there.")
            train_acc = correct / max(seen, 1)
            val_loss, val_acc = self._validate() if self.split.val else (float("nan"), train_acc)
            # a divergence (training/backoff.py) is undone: back to the best weights at a lower rate
            backs_off = self._may_back_off() and (broken or backoff.diverged(
                val_loss, val_acc, self.lowest_loss, self.best_acc, len(self.classes)))
            if math.isfinite(val_loss) and not broken:
                self.lowest_loss = val_loss if self.lowest_loss is None else min(self.lowest_loss, val_loss)
            # the paper recipe's result is the last epoch: each epoch replaces the previous one
            is_best = not backs_off and (cfg.keep == "last" or self.best_acc is None or val_acc > self.best_acc)
            if is_best:
                self.best_acc, self.best_epoch, self.bad_epochs = val_acc, epoch, 0
            else:
                self.bad_epochs += 1
            seconds = time.perf_counter() - t_epoch
            self.metrics.append({"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "train_acc": train_acc,
                                 "val_loss": None if math.isnan(val_loss) else val_loss, "val_acc": val_acc,
                                 "lr": current_lr(self.optimizer),
                                 "seconds": seconds, **({"backed_off": True} if backs_off else {})})
            listener.epoch_finished(EpochStats(epoch=epoch, epochs=cfg.epochs, train_loss=loss_sum / max(seen, 1),
                                               train_acc=train_acc, val_loss=val_loss, val_acc=val_acc,
                                               seconds=seconds, is_best=is_best))
            listener.memory_sample(self.meter.sample())
            if backs_off:
                self._back_off(epoch, "non_finite" if broken else "val_loss", val_loss)
            # checkpoint
            self._save_epoch(epoch, is_best)
            if self.claim is not None:
                self.claim.keep_replacement()   # this run got somewhere: the run it replaces is gone for good
            self._features_to_store()
            epochs_done = epoch + 1
            # stop checks: step budget, early stopping
            if self.global_step >= self.total_steps:
                break
            if cfg.early_stopping and self.bad_epochs >= cfg.early_stopping:
                assert self.best_epoch is not None      # epochs without improvement follow a best one
                listener.warning(f"Stopped early: validation accuracy did not improve for {self.bad_epochs} "
                                 f"epochs (best {self.best_acc:.1%} at epoch {self.best_epoch + 1}).")
                break

        report = self._final_report() if status == "finished" else None
        if self.writes:
            self.folder.update_run(status=status, finished=_now(), epochs_done=epochs_done,
                                   best_epoch=self.best_epoch, best_val_acc=self.best_acc,
                                   test_acc=report.accuracy if report else None,
                                   report_split=report.split if report else None)
        return RunResult(run_dir=str(self.run_dir), status=status, epochs_done=epochs_done,
                         best_epoch=self.best_epoch, best_val_acc=self.best_acc, report=report)

    # ------------------------------------------------------------------ setup
    def _prepare(self, resume: bool, model_kwargs: dict[str, Any] | None) -> dict[str, Any] | None:
        from dtl_engine.data import Split, make_split
        from dtl_engine.data.image_cache import default_image_cache
        from dtl_engine.data.loader import auto_num_workers, image_dataset, start_worker_server
        from dtl_engine.data.scan_check import scan_or_reuse

        cfg, folder, ddp = self.config, self.folder, self.ddp
        self.resuming = resume
        if auto_num_workers(cfg.num_workers) > 0:
            start_worker_server()               # its imports overlap the scan and the model's build
        ddp.check_batch(cfg.batch_size)
        if resume:
            model_kwargs = ddp.share(lambda: folder.read_run().get("model_kwargs"))
        if self.writes:     # the saved settings also record the number of processes and the per-process batch
            saved = folder.read_config() if resume else cfg.to_dict()
            folder.write_config({**saved, **ddp.describe(cfg.batch_size)})
            folder.update_run(status="running", started=_now(), error=None, model_kwargs=model_kwargs)
        self.device, self.device_name = select_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        state = None
        if resume and ddp.share(folder.has_spec):
            classes, split, state, spec = ddp.share(self._read_saved_run)   # rank 0 reads, all ranks get it
            self.classes, self.split = classes, Split.from_dict(split)
            if self.writes:
                self._warn_changed_images()
            self.model = run_files.model_from_spec(spec, cfg.seed)
        else:                                                  # a new run, or one stopped while scanning
            def scan() -> tuple[list[str], Split, list[str]]:
                found = scan_or_reuse(cfg.data_dir, self.scan, should_stop=lambda: self.token.stop_requested)
                split = make_split(found, cfg.val_fraction, cfg.seed)
                return list(found.classes), split, [*found.warnings, *split.warnings]
            self.classes, self.split, warnings = ddp.share(scan)    # rank 0 scans (or reuses), the others wait
            self.model = run_files.build_run_model(cfg, len(self.classes), model_kwargs)
            if self.writes:
                folder.write_classes(self.classes)
                folder.write_split(self.split.to_dict())
                folder.write_spec(self.model.spec.to_dict())
            for message in warnings:
                self.listener.warning(message)
        self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        ddp.broadcast_parameters(self._trainable)              # every rank starts from rank 0's weights
        if not self.split.train:
            raise RunError("There are no training images in this run's split.")
        if not self.split.val:
            self.listener.warning("There are no validation images: the best epoch is chosen by training accuracy.")

        model = self.model.to(self.device)
        if cfg.half_frozen_weights and self.precision.autocast:  # every forward below runs under autocast
            cast_frozen_weights(model, self.precision.autocast_dtype)
        self.meter = MemoryMeter(self.device)
        self.steps_per_epoch = steps_per_epoch(len(self.split.train), cfg.batch_size, cfg.drop_last)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.cache = self._make_cache()
        self._store_pending = self._features_from_store(model_kwargs)
        if cfg.lr == "auto" or cfg.augment == "auto":
            cfg = self.config = self._search()
        image_cache = default_image_cache()
        self.train_set = image_dataset(self.split.train, model.data_config, cfg.augment, train=True, cache=image_cache)
        self.val_set = image_dataset(self.split.val, model.data_config, "none", train=False, cache=image_cache)
        if image_cache is not None and self.writes:   # room for this run's images, least recently used go first
            image_cache.make_room(_expected_cache_bytes(self.train_set) + _expected_cache_bytes(self.val_set))
        assert not isinstance(cfg.lr, str)         # 'auto' was resolved by the search above
        self.optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
        warmup = warmup_steps_for(cfg.warmup_epochs, self.steps_per_epoch, self.total_steps)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, warmup, prefix=cfg.warmup_prefix)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.use_grad_scaler)
        return state

    def _warn_changed_images(self) -> None:
        """Say which of the run's training and validation images changed or went since the run was made: the
        resumed epochs train and validate on what is there now, which is not what the first epochs saw."""
        from dtl_engine.data.file_stamps import check_split_files

        _, gone = check_split_files([*self.split.train, *self.split.val], self.folder.read_file_stamps())
        if gone:
            first = gone[0]
            more = f" and {len(gone) - 1} more" if len(gone) > 1 else ""
            self.listener.warning(f"{len(gone)} image(s) of this run changed or went since it was made: "
                                  f"'{first['path']}' ({first['reason']}){more}. The resumed epochs use the images "
                                  "as they are now.")

    def _read_saved_run(self) -> tuple[list[str], dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
        """(classes, split, resume state or None, model spec) of the run being resumed."""
        folder = self.folder
        state = ckpt.load_state(self.run_dir) if folder.has_state() else None   # None: start again from 0
        return folder.read_classes(), folder.read_split(), state, folder.read_spec()

    def _search(self) -> TrainConfig:
        """Find the learning rate and / or augmentation left on 'auto'; record it; return the resolved config."""
        from dtl_engine.recipes import lr_candidates
        from dtl_engine.training.autotune import AutoTuner, SearchResult, SearchStopped

        cfg = self.config
        tuner = AutoTuner(self.model, self.split.train, cfg, lr_candidates(cfg.recipe, cfg.method), self.total_steps,
                          self.steps_per_epoch, self.device, self._autocast, self.cache,
                          should_stop=lambda: self.token.stop_requested, on_failure=self._bad_file,
                          on_progress=self.listener.search_progress)
        try:
            record = self.ddp.share(lambda: tuner.run().to_dict())   # rank 0 searches, every rank uses its choice
        except SearchStopped:
            raise ScanCancelled() from None     # stopped before the first epoch: nothing to keep
        result = SearchResult.from_dict(record)
        self._start_head_from_probe(tuner.head_start)
        self.first_model_due = True
        resolved = replace(cfg, lr=result.lr, augment=result.augment)
        if self.writes:                         # resume reuses the choice
            self.folder.write_search(record)
            self.folder.write_config({**resolved.to_dict(), **self.ddp.describe(resolved.batch_size)})
        self.listener.search_finished(record)
        if self.cache is not None and not self._cache_wanted(resolved):
            self.cache.close()                  # augmentation chosen: the prefix changes every epoch
            self.cache = None
        return resolved

    def _start_head_from_probe(self, head: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """Start the run's classifier from the search's best probe (linear probing, then fine-tuning).

        The probe was trained on the very features the model computes at step 0 (the side network
        starts at zero), so it is a classifier the model already agrees with. A head near zero (the
        official std 0.02) passes almost no gradient back to the side network, which then sits at
        chance for the first hundreds of updates; from the probe it learns from the first one.
        """
        if head is not None:                    # rank 0 searched: its probe goes to every rank
            with torch.no_grad():
                self.model.head.weight.copy_(head[0])
                self.model.head.bias.copy_(head[1])
        self.ddp.broadcast_parameters(self.model.head.parameters())

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.precision.autocast_dtype or torch.float32,
                              enabled=self.precision.autocast)

    def _bad_file(self, path: str, reason: str) -> None:
        self.listener.warning(f"Left out an image that could not be loaded: {reason}")

    @staticmethod
    def _cache_wanted(cfg: TrainConfig) -> bool:
        # 'auto' augmentation: cache while searching; dropped again if an augmentation is chosen
        return cfg.cache_features == "on" or (cfg.cache_features == "auto" and cfg.augment in ("none", "auto"))

    def _make_cache(self) -> FeatureCache | None:
        cfg = self.config
        if not self._cache_wanted(cfg):
            return None
        if self.ddp.enabled:    # each process sees other images every epoch, so no process's cache would fill
            if cfg.cache_features == "on":
                self.listener.warning("The feature cache is off when training on several processes.")
            return None
        if cfg.drop_path > 0:
            if cfg.cache_features == "on":
                self.listener.warning("The feature cache is off because drop-path makes the frozen blocks "
                                      "random in training.")
            return None
        if cfg.augment not in ("none", "auto"):
            self.listener.warning("The feature cache is on with augmentation: later epochs reuse the first "
                                  "epoch's augmented images.")
        n = len(self.split.train) + len(self.split.val)     # val samples sit after the training samples
        return FeatureCache(n, cfg.cache_budget_mb * 2**20, self.run_dir)

    def _features_from_store(self, model_kwargs: dict[str, Any] | None) -> Any:
        """Fill the in-run feature cache from the cross-run store; returns what to store later, if anything."""
        from dtl_engine.training.feature_store import FeatureStore, model_identity, store_fits

        if self.cache is None or not store_fits(self.config):
            return None
        store = FeatureStore(model_identity(self.config, model_kwargs, self.model.data_config))
        paths = [p for p, _ in self.split.train] + [p for p, _ in self.split.val]
        features = store.get_all(paths)
        if features is None:
            return store, paths                            # computed in epoch 1, stored after it
        dtype = self.precision.autocast_dtype if self.precision.autocast else torch.float32
        self.cache.store(torch.arange(len(paths)), {"features": features.to(dtype or torch.float32)})
        return None

    def _features_to_store(self) -> None:
        if self._store_pending is not None and self.cache is not None and self.cache.complete:
            store, paths = self._store_pending
            store.put_all(paths, self.cache.fetch(torch.arange(len(paths)))["features"])
            self._store_pending = None

    def _restore(self, state: dict[str, Any]) -> int:
        self.model.load_trainable_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        self.global_step = int(state["global_step"])
        self.metrics = list(state["metrics"])
        self.best_epoch, self.best_acc = state["best_epoch"], state["best_val_acc"]
        self.bad_epochs = int(state["bad_epochs"])
        self.parts = int(state.get("parts", 1))
        self.lr_scale, self.backoffs = float(state.get("lr_scale", 1.0)), int(state.get("backoffs", 0))
        self.lowest_loss = state.get("lowest_val_loss")
        return int(state["epoch"]) + 1

    def _started_info(self, start_epoch: int) -> RunStarted:
        trainable, total = self.model.parameter_counts()
        return RunStarted(
            run_dir=str(self.run_dir), device=self.device.type, device_name=self.device_name,
            precision=self.precision.name, epochs=self.config.epochs, steps_per_epoch=self.steps_per_epoch,
            start_epoch=start_epoch, classes=list(self.classes), num_train=len(self.split.train),
            num_val=len(self.split.val), trainable_params=trainable, total_params=total,
            config={**self.config.to_dict(), **self.ddp.describe(self.config.batch_size)})

    # ------------------------------------------------------------------ data
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
        from dtl_engine.data.loader import BatchLoader, auto_num_workers

        name = "train" if dataset is self.train_set else "val"
        if name not in self.loaders:
            self.loaders[name] = BatchLoader(dataset, auto_num_workers(self.config.num_workers),
                                             pin_memory=self.device.type == "cuda")
        return self.loaders[name]

    # ------------------------------------------------------------------ steps
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

    # ------------------------------------------------------------------ files
    def _save_epoch(self, epoch: int, is_best: bool) -> None:
        """Write the epoch's files; the rename of the resume state commits the epoch as the resume point."""
        if not self.writes:
            return
        weights = self.model.trainable_state_dict()
        meta = {"epoch": str(epoch), "backbone": self.config.backbone, "method": self.config.method}
        ckpt.save_weights(self.folder.last_weights, weights, meta)
        if is_best:
            ckpt.save_weights(self.folder.best_weights, weights, meta)
        self.folder.write_metrics(self.metrics)
        ckpt.save_state(self.run_dir, {
            "epoch": epoch, "global_step": self.global_step, "model": {k: v.cpu() for k, v in weights.items()},
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": ckpt.rng_state(), "metrics": self.metrics,
            "best_epoch": self.best_epoch, "best_val_acc": self.best_acc, "bad_epochs": self.bad_epochs,
            "parts": self.parts, "lr_scale": self.lr_scale, "backoffs": self.backoffs,
            "lowest_val_loss": self.lowest_loss,
        })
        self.folder.update_run(epochs_done=epoch + 1, best_epoch=self.best_epoch, best_val_acc=self.best_acc)
        self.listener.checkpoint_saved(str(self.folder.last_weights), epoch)

    def _final_report(self) -> Evaluation | None:
        """Evaluate the best epoch's weights on the test split (else validation); save it as the run's report."""
        from dtl_engine.data.loader import auto_num_workers

        split_name, samples = evaluation_split(self.split)
        if not samples or self.best_epoch is None:
            return None
        best = self.ddp.share(lambda: ckpt.load_weights(self.folder.best_weights))   # rank 0 reads it
        self.model.load_trainable_state_dict(best)
        evaluate = partial(distributed.evaluate_sharded, self.ddp) if self.ddp.enabled else evaluate_model
        report = evaluate(self.model, samples, self.classes, self.device, self.model.data_config,
                          best_epoch=self.best_epoch, split=split_name,
                          batch_size=max(1, self.config.batch_size // self.parts),  # what fits in memory
                          autocast_dtype=self.precision.autocast_dtype,
                          num_workers=auto_num_workers(self.config.num_workers))
        if self.writes:
            self.folder.write_report(report.to_dict())
        return report

    def _first_model(self) -> None:
        """Epoch 0: the step-0 model (frozen backbone + the search's best probe) scored and kept as the best.

        The side network starts at zero, so this is exactly the model the run starts from: a usable
        classifier (Results and Export can take it at once) that every later epoch must beat.
        """
        val_loss, val_acc = self._validate()
        epoch = FIRST_MODEL_EPOCH
        self.best_acc, self.best_epoch = val_acc, epoch
        if math.isfinite(val_loss):
            self.lowest_loss = val_loss
        seconds = time.perf_counter() - self.t_begin
        self.metrics.append({"epoch": epoch, "first_model": True, "train_loss": None, "train_acc": None,
                             "val_loss": val_loss if math.isfinite(val_loss) else None, "val_acc": val_acc,
                             "lr": None, "seconds": seconds})
        self._save_epoch(epoch, True)
        self.listener.first_model(FirstModel(val_loss=val_loss, val_acc=val_acc, seconds=seconds,
                                             path=str(self.folder.best_weights)))

    def _may_back_off(self) -> bool:
        """Backing off needs best weights to go back to; the paper recipe keeps its last epoch whatever it is."""
        return (self.config.keep != "last" and self.best_epoch is not None and bool(self.split.val)
                and self.backoffs < backoff.MAX_BACKOFFS)

    def _back_off(self, epoch: int, reason: str, val_loss: float) -> None:
        """Back to the best weights, a fresh optimiser at a third of the rate (all in the state: resumes exactly)."""
        cfg = self.config
        assert self.best_epoch is not None and not isinstance(cfg.lr, str)
        best = self.ddp.share(lambda: ckpt.load_weights(self.folder.best_weights))   # rank 0 reads it
        self.model.load_trainable_state_dict(best)
        before = cfg.lr * self.lr_scale
        self.lr_scale /= backoff.RATE_DIVISOR
        self.backoffs += 1
        self.optimizer = build_optimizer(self.model, cfg.lr * self.lr_scale, cfg.weight_decay)
        warmup = warmup_steps_for(cfg.warmup_epochs, self.steps_per_epoch, self.total_steps)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, warmup, prefix=cfg.warmup_prefix)
        self.listener.backed_off(BackedOff(
            epoch=epoch, reason=reason, val_loss=val_loss,
            best_val_loss=self.lowest_loss if self.lowest_loss is not None else float("nan"),
            best_epoch=self.best_epoch, lr_before=before, lr_after=cfg.lr * self.lr_scale, backoffs=self.backoffs))

    def _weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self._trainable)

    def _check_not_diverged(self, epoch: int) -> None:
        """Refuse to keep an epoch whose weights are no longer numbers (they would classify every image alike)."""
        if self._weights_finite():
            return
        raise RunError(f"The training diverged in epoch {epoch + 1}: the model's weights are no longer numbers "
                       "(NaN). Train again with a smaller learning rate ('auto' finds one); the checkpoints of "
                       "the earlier epochs are kept.")

    def _fail(self, exc: BaseException) -> None:
        details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if isinstance(exc, DTLError):
            message = str(exc)
        elif isinstance(exc, KeyboardInterrupt):
            message = "The run was interrupted."
        else:
            message = f"Training failed unexpectedly: {str(exc).strip() or type(exc).__name__}"
        # a lost process leaves the run resumable: "interrupted", like a run whose process died
        status = "interrupted" if isinstance(exc, distributed.PeerLostError) else "failed"
        refused = not self.started and not self.resuming      # refused before the first step
        try:
            if self.writes and not refused and self.run_dir.is_dir():
                self.folder.update_run(status=status, finished=_now(), error=message)
        finally:
            self.listener.run_failed(message, details)
            # leave no run behind (the event log included); a run this one replaces comes back
            if self.writes and self.claim is not None and (refused or self.claim.replaced is not None):
                self.claim.discard()


def _expected_cache_bytes(dataset: Any) -> int:
    """A guess of the cache space ``dataset`` needs (a 4:3 photo per sample at the stored short side)."""
    side = dataset.min_side or 0
    return len(dataset) * 3 * side * (side * 4 // 3)


def _now() -> str:
    return run_folder.now_iso()

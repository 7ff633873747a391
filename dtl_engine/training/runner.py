"""The training run: one loop that reads as a story, plus what it needs around it.

Per epoch: reseed (data order and augmentation are a pure function of
(seed, epoch), so a resumed run continues exactly), then per batch: stop /
pause check, set lr, forward, backward, step, log; after the epoch: validate,
checkpoint (atomically), early-stop check. A CUDA out-of-memory error during a
step splits the batch into halves with gradient accumulation (same effective
batch) instead of killing the run.

Failures: the listener's ``run_failed(message, details)`` is called, run.json
says ``failed``, and the exception is re-raised for the caller (the CLI exits
with an error, the app's worker has already been told through the listener).
"""
from __future__ import annotations

import gc
import math
import random
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..data import ScanCancelled
from ..errors import DTLError, RunError
from ..evaluate import REPORT, Evaluation, evaluate_model, evaluation_split
from ..half_weights import cast_frozen_weights
from ..listener import BatchStats, EpochStats, RunListener, RunStarted, StopToken
from .. import runs as run_files  # module import: runs.py itself imports training.checkpoint
from . import checkpoint as ckpt
from .devices import resolve_precision, select_device
from .feature_cache import FeatureCache
from .memory import MemoryMeter
from .optim import build_optimizer, build_scheduler, current_lr, warmup_steps_for

METRICS = "metrics.json"
SPEC = "spec.json"
MEMORY_SAMPLE_SECONDS = 0.5     # memory_sample() at most this often (plus once per epoch)


@dataclass
class RunResult:
    """How a run ended."""

    run_dir: str
    status: str                     # "finished" | "stopped"
    epochs_done: int
    best_epoch: int | None
    best_val_acc: float | None
    report: Evaluation | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": self.run_dir, "status": self.status, "epochs_done": self.epochs_done,
                "best_epoch": self.best_epoch, "best_val_acc": self.best_val_acc,
                "report": self.report.to_dict() if self.report is not None else None}


def train(config: TrainConfig, listener: RunListener | None = None, token: StopToken | None = None,
          run_dir: str | Path | None = None, *, model_kwargs: dict[str, Any] | None = None) -> RunResult:
    """Train ``config`` in a new run folder (or ``run_dir``) and evaluate the best epoch.

    ``model_kwargs`` go to ``timm.create_model`` (tiny test backbones); they are
    stored with the run so resume and re-loading rebuild the same model.
    Returns a :class:`RunResult` (status ``finished`` or ``stopped``); on failure
    calls ``listener.run_failed`` and re-raises.
    """
    config.validate()
    run_dir = Path(run_dir) if run_dir is not None else run_files.new_run_dir(config.backbone, config.method)
    return _Run(config, run_dir, listener, token).execute(resume=False, model_kwargs=model_kwargs)


def resume(run_dir: str | Path, listener: RunListener | None = None, token: StopToken | None = None) -> RunResult:
    """Continue a stopped, failed or interrupted run from its last epoch checkpoint."""
    run_dir = Path(run_dir)
    try:
        config = TrainConfig.from_dict(run_files.read_run_file(run_dir, "config.json"))
        if run_files.effective_status(run_files.read_run_file(run_dir, run_files.RUN_FILE)) == "running":
            raise RunError(f"The run '{run_dir.name}' is still running in another window or process.")
    except RunError as exc:     # nothing of the run is touched; the listener still hears why
        (listener or RunListener()).run_failed(str(exc), traceback.format_exc())
        raise
    return _Run(config, run_dir, listener, token).execute(resume=True)


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

    def __init__(self, config: TrainConfig, run_dir: Path, listener: RunListener | None, token: StopToken | None):
        self.config = config
        self.run_dir = run_dir
        self.listener = listener or RunListener()
        self.token = token or StopToken()
        self.parts = 1                  # micro-batches per batch; grows after an out-of-memory error
        self.cache: FeatureCache | None = None
        self._last_memory_emit = 0.0

    # ------------------------------------------------------------------ story
    def execute(self, resume: bool, model_kwargs: dict[str, Any] | None = None) -> RunResult:
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
            if self.cache is not None:
                self.cache.close()
        self.listener.run_finished(result)
        return result

    def _stopped_before_start(self) -> RunResult:
        """Stop pressed while the folder was being scanned: nothing trained, nothing lost."""
        run_files.update_run_file(self.run_dir, status="stopped", finished=_now(), epochs_done=0)
        return RunResult(run_dir=str(self.run_dir), status="stopped", epochs_done=0, best_epoch=None,
                         best_val_acc=None)

    def _loop(self, state: dict[str, Any] | None) -> RunResult:
        cfg, model, listener, token = self.config, self.model, self.listener, self.token
        start_epoch = 0
        self.global_step, self.metrics, self.best_epoch, self.best_acc, self.bad_epochs = 0, [], None, None, 0
        if state is not None:
            start_epoch = self._restore(state)
        listener.run_started(self._started_info(start_epoch))
        status, t_session, steps_session = "finished", time.perf_counter(), 0
        epochs_done = start_epoch

        for epoch in range(start_epoch, cfg.epochs):
            if self.global_step >= self.total_steps:
                break                                         # a resumed run whose step budget is spent
            seed_everything(epoch_seed(cfg.seed, epoch))      # data order + augmentation = f(seed, epoch)
            model.train()
            t_epoch, loss_sum, correct, seen, stopped = time.perf_counter(), 0.0, 0, 0, False
            t_prev = t_epoch                                  # images/s includes loading the batch
            for step, (_indices, labels, inputs) in enumerate(self._train_batches(epoch)):
                # stop / pause: honoured between batches, so within one batch of the request
                token.wait_while_paused()
                if token.stop_requested:
                    stopped = True
                    break
                # set lr: the schedule is a pure function of the update count
                self.scheduler.step_update(self.global_step)
                lr = current_lr(self.optimizer)
                # forward + backward (+ OOM split) and optimizer step
                batch_loss, batch_correct = self._train_step(inputs, labels)
                self.global_step += 1
                steps_session += 1
                loss_sum, correct, seen = loss_sum + batch_loss, correct + batch_correct, seen + len(labels)
                # log
                now = time.perf_counter()
                per_step = (now - t_session) / steps_session
                listener.batch_finished(BatchStats(
                    epoch=epoch, step=step, steps_per_epoch=self.steps_per_epoch, global_step=self.global_step,
                    total_steps=self.total_steps, loss=batch_loss / len(labels), lr=lr,
                    images_per_sec=len(labels) / max(now - t_prev, 1e-9), **self._memory(),
                    eta_seconds=per_step * (self.total_steps - self.global_step)))
                t_prev = now
                if self.global_step >= self.total_steps:
                    break                                       # max_steps reached (or the last step)
            if stopped:
                status = "stopped"
                # the last weights stay usable; the resume point remains the last whole epoch
                ckpt.save_weights(self.run_dir / ckpt.LAST_WEIGHTS, model.trainable_state_dict(),
                                  {"epoch": str(epoch - 1), "partial": "true"})
                break
            # evaluate (training accuracy stands in when there are no validation images)
            train_acc = correct / max(seen, 1)
            val_loss, val_acc = self._validate() if self.split.val else (float("nan"), train_acc)
            is_best = self.best_acc is None or val_acc > self.best_acc
            if is_best:
                self.best_acc, self.best_epoch, self.bad_epochs = val_acc, epoch, 0
            else:
                self.bad_epochs += 1
            seconds = time.perf_counter() - t_epoch
            self.metrics.append({"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "train_acc": train_acc,
                                 "val_loss": None if math.isnan(val_loss) else val_loss, "val_acc": val_acc,
                                 "lr": current_lr(self.optimizer),
                                 "seconds": seconds})
            listener.epoch_finished(EpochStats(epoch=epoch, epochs=cfg.epochs, train_loss=loss_sum / max(seen, 1),
                                               train_acc=train_acc, val_loss=val_loss, val_acc=val_acc,
                                               seconds=seconds, is_best=is_best))
            listener.memory_sample(self.meter.sample())
            # checkpoint
            self._save_epoch(epoch, is_best)
            epochs_done = epoch + 1
            # stop checks: step budget, early stopping
            if self.global_step >= self.total_steps:
                break
            if cfg.early_stopping and self.bad_epochs >= cfg.early_stopping:
                listener.warning(f"Stopped early: validation accuracy did not improve for {self.bad_epochs} "
                                 f"epochs (best {self.best_acc:.1%} at epoch {self.best_epoch + 1}).")
                break

        report = self._final_report() if status == "finished" else None
        run_files.update_run_file(self.run_dir, status=status, finished=_now(), epochs_done=epochs_done,
                        best_epoch=self.best_epoch, best_val_acc=self.best_acc,
                        test_acc=report.accuracy if report else None, report_split=report.split if report else None)
        return RunResult(run_dir=str(self.run_dir), status=status, epochs_done=epochs_done,
                         best_epoch=self.best_epoch, best_val_acc=self.best_acc, report=report)

    # ------------------------------------------------------------------ setup
    def _prepare(self, resume: bool, model_kwargs: dict[str, Any] | None) -> dict[str, Any] | None:
        from ..data import ImageDataset, Split, build_transform, make_split, scan_folder

        cfg, run_dir = self.config, self.run_dir
        self._check_run_dir()
        if resume:
            model_kwargs = run_files.read_run_file(run_dir, run_files.RUN_FILE).get("model_kwargs")
        else:
            ckpt.atomic_write_json(run_dir / "config.json", cfg.to_dict())
        run_files.update_run_file(run_dir, status="running", started=_now(), error=None, model_kwargs=model_kwargs)
        self.device, self.device_name = select_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        state = None
        if resume and (run_dir / SPEC).exists():
            self.classes = list(run_files.read_run_file(run_dir, "classes.json"))
            self.split = Split.from_dict(run_files.read_run_file(run_dir, "split.json"))
            if (run_dir / ckpt.STATE).exists():
                state = ckpt.load_state(run_dir)               # else no epoch finished: start again from 0
            self.model = run_files.rebuild_run_model(run_dir)
        else:                                                  # a new run, or one stopped while scanning
            scan = scan_folder(cfg.data_dir, should_stop=lambda: self.token.stop_requested)
            self.classes = list(scan.classes)
            self.split = make_split(scan, cfg.val_fraction, cfg.seed)
            self.model = run_files.build_run_model(cfg, len(self.classes), model_kwargs)
            ckpt.atomic_write_json(run_dir / "classes.json", self.classes)
            ckpt.atomic_write_json(run_dir / "split.json", self.split.to_dict())
            ckpt.atomic_write_json(run_dir / SPEC, self.model.spec.to_dict())
            for message in [*scan.warnings, *self.split.warnings]:
                self.listener.warning(message)
        if not self.split.train:
            raise RunError("There are no training images in this run's split.")
        if not self.split.val:
            self.listener.warning("There are no validation images: the best epoch is chosen by training accuracy.")

        model = self.model.to(self.device)
        if cfg.half_frozen_weights and self.precision.autocast:  # every forward below runs under autocast
            cast_frozen_weights(model, self.precision.autocast_dtype)
        self.meter = MemoryMeter(self.device)
        self.train_set = ImageDataset(self.split.train, build_transform(model.data_config, cfg.augment, train=True),
                                      on_failure=self._bad_file)
        self.val_set = ImageDataset(self.split.val, build_transform(model.data_config, "none", train=False),
                                    on_failure=self._bad_file)
        self.steps_per_epoch = math.ceil(len(self.split.train) / cfg.batch_size)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
        warmup = warmup_steps_for(cfg.warmup_epochs, self.steps_per_epoch, self.total_steps)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, warmup)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.use_grad_scaler)
        self.cache = self._make_cache()
        return state

    def _check_run_dir(self) -> None:
        if self.config.data_dir:
            data, run = Path(self.config.data_dir).resolve(), self.run_dir.resolve()
            if run == data or data in run.parents:
                raise RunError("The run folder must not be inside the image folder: DTL Studio never writes "
                               "into your data.")
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def _make_cache(self) -> FeatureCache | None:
        cfg = self.config
        wanted = cfg.cache_features == "on" or (cfg.cache_features == "auto" and cfg.augment == "none")
        if not wanted:
            return None
        if cfg.drop_path > 0:
            if cfg.cache_features == "on":
                self.listener.warning("The feature cache is off because drop-path makes the frozen blocks "
                                      "random in training.")
            return None
        if cfg.augment != "none":
            self.listener.warning("The feature cache is on with augmentation: later epochs reuse the first "
                                  "epoch's augmented images.")
        n = len(self.split.train) + len(self.split.val)     # val samples sit after the training samples
        return FeatureCache(n, cfg.cache_budget_mb * 2**20, self.run_dir / "cache")

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
        return int(state["epoch"]) + 1

    def _started_info(self, start_epoch: int) -> RunStarted:
        trainable, total = self.model.parameter_counts()
        return RunStarted(
            run_dir=str(self.run_dir), device=self.device.type, device_name=self.device_name,
            precision=self.precision.name, epochs=self.config.epochs, steps_per_epoch=self.steps_per_epoch,
            start_epoch=start_epoch, classes=list(self.classes), num_train=len(self.split.train),
            num_val=len(self.split.val), trainable_params=trainable, total_params=total,
            config=self.config.to_dict())

    # ------------------------------------------------------------------ data
    def _train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, Any]]:
        """(indices, labels, inputs) per batch: images, or the cached prefix once the cache is full."""
        n = len(self.split.train)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(self.config.seed, epoch)))
        batches = [order[i:i + self.config.batch_size].tolist() for i in range(0, n, self.config.batch_size)]
        return self._batches(self.train_set, batches, offset=0)

    def _batches(self, dataset: Any, batches: list[list[int]], offset: int) -> Iterator[Any]:
        labels_all = torch.tensor([y for _, y in dataset.samples], dtype=torch.long)
        if self.cache is not None and self.cache.complete:
            for batch in batches:
                idx = torch.tensor(batch, dtype=torch.long)
                yield idx, labels_all[idx].to(self.device), self.cache.fetch(idx + offset, self.device)
            return
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=self.config.num_workers,
                                             pin_memory=self.device.type == "cuda")
        for images, labels, idx in loader:
            inputs: Any = images.to(self.device, non_blocking=True)
            if self.cache is not None:
                inputs = {"_images": inputs, "_cache_index": idx + offset}   # prefix computed and stored in step
            yield idx, labels.to(self.device, non_blocking=True), inputs

    def _bad_file(self, path: str, reason: str) -> None:
        self.listener.warning(f"Skipped an image that could not be loaded: {reason}")

    # ------------------------------------------------------------------ steps
    def _forward(self, inputs: Any) -> torch.Tensor:
        """Logits for images, for a cached prefix, or for images whose prefix goes into the cache."""
        with torch.autocast(self.device.type, dtype=self.precision.autocast_dtype or torch.float32,
                            enabled=self.precision.autocast):
            if isinstance(inputs, dict) and "_images" in inputs:
                prefix = self.model.forward_prefix(inputs["_images"])
                self.cache.store(inputs["_cache_index"], prefix)
                return self.model.forward_from_prefix(prefix)
            if isinstance(inputs, dict):
                return self.model.forward_from_prefix(inputs)
            return self.model(inputs)

    def _train_step(self, inputs: Any, labels: torch.Tensor) -> tuple[float, int]:
        """One optimizer update over the batch; returns (summed loss, correct predictions)."""
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
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return loss_sum, correct
        return self._oom_safe(work, len(labels))

    @torch.no_grad()
    def _validate(self) -> tuple[float, float]:
        """(mean loss, accuracy) on the validation split."""
        self.model.eval()
        size = self.config.batch_size
        batches = [list(range(i, min(i + size, len(self.split.val)))) for i in range(0, len(self.split.val), size)]
        loss_sum, correct = 0.0, 0
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
            loss_sum, correct = loss_sum + batch_loss, correct + batch_correct
        return loss_sum / len(self.split.val), correct / len(self.split.val)

    def _oom_safe(self, work: Any, batch_len: int) -> Any:
        """Run ``work(parts)``; on out-of-memory, free memory and retry with twice as many micro-batches."""
        while True:
            try:
                return work(self.parts)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
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
        """Write the epoch's files; the rename of state.pt commits the epoch as the resume point."""
        weights = self.model.trainable_state_dict()
        meta = {"epoch": str(epoch), "backbone": self.config.backbone, "method": self.config.method}
        ckpt.save_weights(self.run_dir / ckpt.LAST_WEIGHTS, weights, meta)
        if is_best:
            ckpt.save_weights(self.run_dir / ckpt.BEST_WEIGHTS, weights, meta)
        ckpt.atomic_write_json(self.run_dir / METRICS, self.metrics)
        ckpt.save_state(self.run_dir, {
            "epoch": epoch, "global_step": self.global_step, "model": {k: v.cpu() for k, v in weights.items()},
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": ckpt.rng_state(), "metrics": self.metrics,
            "best_epoch": self.best_epoch, "best_val_acc": self.best_acc, "bad_epochs": self.bad_epochs,
            "parts": self.parts,
        })
        run_files.update_run_file(self.run_dir, epochs_done=epoch + 1, best_epoch=self.best_epoch, best_val_acc=self.best_acc)
        self.listener.checkpoint_saved(str(self.run_dir / ckpt.LAST_WEIGHTS), epoch)

    def _final_report(self) -> Evaluation | None:
        """Evaluate the best epoch's weights on the test split (else validation); write report.json."""
        split_name, samples = evaluation_split(self.split)
        if not samples or self.best_epoch is None:
            return None
        self.model.load_trainable_state_dict(ckpt.load_weights(self.run_dir / ckpt.BEST_WEIGHTS))
        report = evaluate_model(self.model, samples, self.classes, self.device, self.model.data_config,
                                best_epoch=self.best_epoch, split=split_name,
                                batch_size=max(1, self.config.batch_size // self.parts),  # what fits in memory
                                autocast_dtype=self.precision.autocast_dtype, num_workers=self.config.num_workers)
        ckpt.atomic_write_json(self.run_dir / REPORT, report.to_dict())
        return report

    def _fail(self, exc: BaseException) -> None:
        details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if isinstance(exc, DTLError):
            message = str(exc)
        elif isinstance(exc, KeyboardInterrupt):
            message = "The run was interrupted."
        else:
            message = f"Training failed unexpectedly: {str(exc).strip() or type(exc).__name__}"
        try:
            if self.run_dir.is_dir():
                run_files.update_run_file(self.run_dir, status="failed", finished=_now(), error=message)
        finally:
            self.listener.run_failed(message, details)


def _now() -> str:
    return run_files.now_iso()

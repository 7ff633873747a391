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

The run folder is claimed (:mod:`dtl_engine.runs.claim`) for the whole run: a
second writer is refused at once, and an existing folder is never reused
silently.
"""
from __future__ import annotations

import math
import random
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dtl_engine import fileio
from dtl_engine.config import TrainConfig
from dtl_engine.data import ScanCancelled
from dtl_engine.errors import DTLError, RunError
from dtl_engine.inference.evaluate import Evaluation, evaluation_split
from dtl_engine.listener import BatchStats, EpochStats, RunListener, StopToken
from dtl_engine.runs import checkpoint as ckpt
from dtl_engine.runs import claim as run_claim
from dtl_engine.runs import folder as run_folder
from dtl_engine.training import backoff, distributed
from dtl_engine.training.eta import RunEta, later_pace
from dtl_engine.training.optim import current_lr
from dtl_engine.training.run_batches import epoch_seed
from dtl_engine.training.run_setup import RunSetup


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
    claims: list[run_claim.Claim] = []

    def claim() -> Path:                         # rank 0 claims (and names) the folder; the others follow
        claims.append(run_claim.claim_new(run_dir, config.data_dir, config.backbone, config.method, overwrite,
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
    claims: list[run_claim.Claim] = []

    def claim_and_read() -> TrainConfig:         # rank 0 claims and checks the run; the others follow
        claims.append(run_claim.claim_existing(run_dir, break_lock=break_lock))
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

def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@dataclass
class _Tally:
    """One epoch's training so far: summed loss, correct predictions and images seen on this rank."""

    started: float = field(default_factory=time.perf_counter)
    loss_sum: float = 0.0
    correct: float = 0          # counts, then their sums over the ranks
    seen: float = 0
    stopped: bool = False       # a stop request came: the epoch is not complete
    broken: bool = False        # the loss stopped being a number: back to the best weights


class _Run(RunSetup):
    """One run: :meth:`execute` is the whole story; its parts are the layers it inherits (their modules
    are listed in :mod:`dtl_engine.training.run_state`)."""

    eta: RunEta                     # the time left, phase by phase, from this process's measured steps

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
        cfg = self.config
        start_epoch = 0
        self.global_step, self.metrics, self.best_epoch, self.best_acc, self.bad_epochs = 0, [], None, None, 0
        if state is not None:
            start_epoch = self._restore(state)
        self.started = True
        self.listener.run_started(self._started_info(start_epoch))
        if state is None and self.first_model_due and self.split.val:
            self._first_model()
        status, batch = "finished", max(1, self.config.batch_size)
        self.eta = RunEta(total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch,
                          start_step=self.global_step, start=time.perf_counter(), val_steps=len(self.split.val) / batch,
                          final_steps=len(evaluation_split(self.split)[1]) / batch,
                          later=later_pace(self.cache is not None, self.cache is not None and self.cache.complete))
        epochs_done = start_epoch

        for epoch in range(start_epoch, cfg.epochs):
            if self.global_step >= self.total_steps:
                break                                         # a resumed run whose step budget is spent
            seed_everything(epoch_seed(cfg.seed, epoch))      # data order + augmentation = f(seed, epoch)
            tally = self._train_epoch(epoch)
            if tally.stopped and self.claim is not None and self.claim.replaced is not None:
                return self._stopped_before_start()     # no epoch complete: the replaced run comes back
            if tally.stopped:
                status = "stopped"
                # the last weights stay usable; the resume point remains the last whole epoch
                if self.writes:
                    ckpt.save_weights(self.folder.last_weights, self.model.trainable_state_dict(),
                                      {"epoch": str(epoch - 1), "partial": "true"})
                break
            self._end_epoch(epoch, tally)
            epochs_done = epoch + 1
            if self._stops_after_epoch():
                break
        return self._finish(status, epochs_done)

    def _train_epoch(self, epoch: int) -> _Tally:
        """One epoch's updates, until its last batch, a stop request, a broken loss or the step budget."""
        listener, token, tally = self.listener, self.token, _Tally()
        self.model.train()
        t_prev = tally.started                            # images/s includes loading the batch
        for step, (_indices, labels, inputs) in enumerate(self._train_batches(epoch)):
            # stop / pause: honoured between batches, so within one batch of the request
            token.wait_while_paused()
            if self.ddp.any(token.stop_requested):       # every rank stops at the same step
                tally.stopped = True
                break
            # set lr: the schedule is a pure function of the update count
            self.scheduler.step_update(self.global_step)
            lr = current_lr(self.optimizer)
            # forward + backward (+ OOM split) and optimizer step
            batch_loss, batch_correct = self._train_step(inputs, labels, self._global_lens[step])
            if self._may_back_off() and self.ddp.any(not math.isfinite(batch_loss)):   # all ranks at once
                tally.broken = True                         # the rest of the epoch would be lost anyway
                break
            self.global_step += 1
            tally.loss_sum += batch_loss
            tally.correct += batch_correct
            tally.seen += len(labels)
            # log
            now = time.perf_counter()
            left = self.eta.step(now, epoch, self.global_step)
            listener.batch_finished(BatchStats(
                epoch=epoch, step=step, steps_per_epoch=self.steps_per_epoch, global_step=self.global_step,
                total_steps=self.total_steps, loss=batch_loss / max(len(labels), 1), lr=lr,
                images_per_sec=len(labels) / max(now - t_prev, 1e-9), **self._memory(),
                eta_seconds=left.seconds, eta_low_seconds=left.low, eta_high_seconds=left.high))
            t_prev = now
            if self.global_step >= self.total_steps:
                break                                       # max_steps reached (or the last step)
        return tally

    def _end_epoch(self, epoch: int, tally: _Tally) -> None:
        """A complete epoch: validate, keep it or back off, record it and commit it as the resume point."""
        cfg, listener = self.config, self.listener
        finite = self._weights_finite()
        broken = tally.broken or not finite
        if not finite and not self._may_back_off():
            self._diverged(epoch)
        # evaluate (training accuracy stands in when there are no validation images)
        loss_sum, correct, seen = self.ddp.sum([tally.loss_sum, tally.correct, tally.seen])   # over all ranks
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
        seconds = time.perf_counter() - tally.started
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

    def _stops_after_epoch(self) -> bool:
        """The step budget is spent, or early stopping ends the run."""
        cfg = self.config
        if self.global_step >= self.total_steps:
            return True
        if cfg.early_stopping and self.bad_epochs >= cfg.early_stopping:
            assert self.best_epoch is not None      # epochs without improvement follow a best one
            self.listener.warning(f"Stopped early: validation accuracy did not improve for {self.bad_epochs} "
                                  f"epochs (best {self.best_acc:.1%} at epoch {self.best_epoch + 1}).")
            return True
        return False

    def _finish(self, status: str, epochs_done: int) -> RunResult:
        report = self._final_report() if status == "finished" else None
        if self.writes:
            self.folder.update_run(status=status, finished=_now(), epochs_done=epochs_done,
                                   best_epoch=self.best_epoch, best_val_acc=self.best_acc,
                                   test_acc=report.accuracy if report else None,
                                   report_split=report.split if report else None)
        return RunResult(run_dir=str(self.run_dir), status=status, epochs_done=epochs_done,
                         best_epoch=self.best_epoch, best_val_acc=self.best_acc, report=report)

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


def _now() -> str:
    return run_folder.now_iso()

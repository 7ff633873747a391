"""The weights a run keeps: each epoch's files, the first model (epoch 0), the back-off to the best
weights after a divergence (see :mod:`dtl_engine.training.backoff`), the refusal to keep weights that
are no longer numbers, and the final report of the best epoch."""
from __future__ import annotations

import math
import time
from functools import partial
from typing import NoReturn

import torch

from dtl_engine.data.loader import auto_num_workers
from dtl_engine.errors import RunError
from dtl_engine.inference.evaluate import Evaluation, evaluate_model, evaluation_split
from dtl_engine.listener import BackedOff, FirstModel
from dtl_engine.runs import checkpoint as ckpt
from dtl_engine.training import backoff, distributed
from dtl_engine.training.optim import build_optimizer, build_scheduler, warmup_steps_for
from dtl_engine.training.run_steps import RunSteps

FIRST_MODEL_EPOCH = -1          # the step-0 model's epoch in the run's metrics (shown as "epoch 0")


class KeptWeights(RunSteps):
    """What one run keeps (see :mod:`dtl_engine.training.run_state`)."""

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
        self._fresh_optimizer(cfg.lr * self.lr_scale)
        self.listener.backed_off(BackedOff(
            epoch=epoch, reason=reason, val_loss=val_loss,
            best_val_loss=self.lowest_loss if self.lowest_loss is not None else float("nan"),
            best_epoch=self.best_epoch, lr_before=before, lr_after=cfg.lr * self.lr_scale, backoffs=self.backoffs))

    def _fresh_optimizer(self, lr: float) -> None:
        """The run's optimiser and its schedule at ``lr`` (a run's start, and each back-off)."""
        cfg = self.config
        self.optimizer = build_optimizer(self.model, lr, cfg.weight_decay)
        warmup = warmup_steps_for(cfg.warmup_epochs, self.steps_per_epoch, self.total_steps)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, warmup, prefix=cfg.warmup_prefix)

    def _weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self._trainable)

    def _diverged(self, epoch: int) -> NoReturn:
        """Refuse to keep an epoch whose weights are no longer numbers (they would classify every image alike)."""
        raise RunError(f"The training diverged in epoch {epoch + 1}: the model's weights are no longer numbers "
                       "(NaN). Train again with a smaller learning rate ('auto' finds one); the checkpoints of "
                       "the earlier epochs are kept.")


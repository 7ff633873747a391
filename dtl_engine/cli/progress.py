"""The terminal's view of a run: a tqdm bar per epoch and for the search, one line per epoch and per event."""
from __future__ import annotations

import sys
from typing import Any

from dtl_engine.formatting import format_eta
from dtl_engine.listener import BACKOFF_REASONS, RunListener

class ProgressPrinter(RunListener):
    """Prints a run to the terminal: a tqdm bar per epoch (with ETA) and one summary line per epoch."""

    def __init__(self, out=None) -> None:  # out: a text stream
        self.out = out or sys.stdout
        self.bar: Any = None        # the epoch's tqdm bar
        self.epoch = -1
        self.last_checkpoint: str | None = None
        self.search_bar: Any = None  # the search's tqdm bar (before the first epoch)

    def _write(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.out)

    def run_started(self, info) -> None:
        self._write(f"Run folder: {info.run_dir}")
        self._write(f"Device: {info.device_name} ({info.device}), precision {info.precision}")
        self._write(f"{len(info.classes)} classes, {info.num_train} training and {info.num_val} validation images; "
                    f"trainable parameters {info.trainable_params:,} of {info.total_params:,}")
        if info.start_epoch >= info.epochs:
            self._write(f"All {info.epochs} epochs were already trained; finishing the run.")
        elif info.start_epoch:
            self._write(f"Resuming at epoch {info.start_epoch + 1} of {info.epochs}")

    def batch_finished(self, stats) -> None:
        from tqdm import tqdm

        if stats.epoch != self.epoch or self.bar is None:
            self._close_bar()
            self.epoch = stats.epoch
            self.bar = tqdm(total=stats.steps_per_epoch, desc=f"epoch {stats.epoch + 1}", unit="step",
                            leave=False, dynamic_ncols=True, file=sys.stderr, disable=None)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{stats.loss:.4f}", img_s=f"{stats.images_per_sec:.1f}",
                             refresh=False,
                             total_eta=format_eta(stats.eta_seconds, stats.eta_low_seconds, stats.eta_high_seconds))

    def epoch_finished(self, stats) -> None:
        self._close_bar()
        self._write(f"epoch {stats.epoch + 1}/{stats.epochs}  train loss {stats.train_loss:.4f} "
                    f"acc {stats.train_acc:.1%}  val loss {stats.val_loss:.4f} acc {stats.val_acc:.1%}  "
                    f"{stats.seconds:.1f} s{'  (best)' if stats.is_best else ''}")

    def checkpoint_saved(self, path: str, epoch: int) -> None:
        self.last_checkpoint = path

    def warning(self, message: str) -> None:
        self._write(f"warning: {message}")

    def search_progress(self, progress) -> None:
        from tqdm import tqdm

        if self.search_bar is None:
            self.search_bar = tqdm(total=1000, desc="choosing the learning rate and augmentation", unit="‰",
                                   leave=False, dynamic_ncols=True, file=sys.stderr, disable=None)
        self.search_bar.n = int(1000 * progress.fraction)
        eta = "" if progress.eta_seconds is None else format_eta(progress.eta_seconds, progress.eta_low_seconds,
                                                                 progress.eta_high_seconds)
        self.search_bar.set_postfix(trial=f"{progress.trial}/{progress.trials}",
                                    images=f"{progress.images_done}/{progress.images_total}", eta=eta, refresh=False)
        self.search_bar.refresh()
        if progress.note:
            self._write(f"search, trial {progress.trial} of {progress.trials}: {progress.note}")

    def first_model(self, stats) -> None:
        self._close_bar()
        self._write(f"epoch 0  first model (the classifier on the frozen features): val loss {stats.val_loss:.4f} "
                    f"acc {stats.val_acc:.1%}  after {stats.seconds:.1f} s; refining with DTL")

    def backed_off(self, event) -> None:
        self._close_bar()
        self._write(f"epoch {event.epoch + 1}: the run diverged ({BACKOFF_REASONS.get(event.reason, event.reason)}); "
                    f"back to the weights of epoch {event.best_epoch + 1}, learning rate {event.lr_before:.2g} → "
                    f"{event.lr_after:.2g} (back-off {event.backoffs})")

    def search_finished(self, result) -> None:
        self._close_bar()
        self._write(f"{result['summary'][0].upper()}{result['summary'][1:]} "
                    f"({len(result['trials'])} probe trials on the training images, {result['seconds']:.0f} s)")

    def run_finished(self, result) -> None:
        self._close_bar()

    def run_failed(self, message: str, details: str) -> None:
        self._close_bar()

    def _close_bar(self) -> None:
        if self.search_bar is not None:
            self.search_bar.close()
            self.search_bar = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None


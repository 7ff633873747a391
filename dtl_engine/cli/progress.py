"""The terminal's view of a run: a tqdm bar per epoch and for the search, and each event's one line.

The lines are :func:`dtl_engine.events.describe`'s, the same the app's log shows.
"""
from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from dtl_engine.events import Event, EventSink, describe
from dtl_engine.formatting import format_eta


class ProgressPrinter(EventSink):
    """Prints a run to the terminal: a tqdm bar per epoch (with ETA) and one line per event that has one."""

    def __init__(self, out=None) -> None:  # out: a text stream
        super().__init__(self.show)
        self.out = out or sys.stdout
        self.bar: Any = None        # the epoch's tqdm bar
        self.epoch = -1
        self.last_checkpoint: str | None = None
        self.search_bar: Any = None  # the search's tqdm bar (before the first epoch)

    def _write(self, text: str) -> None:
        tqdm.write(text, file=self.out)

    def show(self, event: Event) -> None:
        """Draw ``event``: a bar step for batches and the search, else its line."""
        if event.kind == "batch":
            self._batch(event.data)
            return
        if event.kind == "search_progress":
            self._search(event.data)
        elif event.kind != "memory":
            self._close_bar()
        if event.kind == "checkpoint":
            self.last_checkpoint = event.data.path
        elif event.kind == "run_started":
            info = event.data
            self._write(f"Run folder: {info.run_dir}")
            self._write(f"{len(info.classes)} classes, {info.num_train} training and {info.num_val} validation "
                        f"images; trainable parameters {info.trainable_params:,} of {info.total_params:,}")
        if event.kind in ("checkpoint", "finished", "failed"):
            return                  # the command's own last lines say how it ended and where the weights are
        line = describe(event)
        if line:
            self._write(line)

    def _batch(self, stats) -> None:
        if stats.epoch != self.epoch or self.bar is None:
            self._close_bar()
            self.epoch = stats.epoch
            self.bar = tqdm(total=stats.steps_per_epoch, desc=f"epoch {stats.epoch + 1}", unit="step",
                            leave=False, dynamic_ncols=True, file=sys.stderr, disable=None)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{stats.loss:.4f}", img_s=f"{stats.images_per_sec:.1f}",
                             refresh=False,
                             total_eta=format_eta(stats.eta_seconds, stats.eta_low_seconds, stats.eta_high_seconds))

    def _search(self, progress) -> None:
        if self.search_bar is None:
            self.search_bar = tqdm(total=1000, desc="choosing the learning rate and augmentation", unit="‰",
                                   leave=False, dynamic_ncols=True, file=sys.stderr, disable=None)
        self.search_bar.n = int(1000 * progress.fraction)
        eta = "" if progress.eta_seconds is None else format_eta(progress.eta_seconds, progress.eta_low_seconds,
                                                                 progress.eta_high_seconds)
        self.search_bar.set_postfix(trial=f"{progress.trial}/{progress.trials}",
                                    images=f"{progress.images_done}/{progress.images_total}", eta=eta, refresh=False)
        self.search_bar.refresh()

    def _close_bar(self) -> None:
        if self.search_bar is not None:
            self.search_bar.close()
            self.search_bar = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None


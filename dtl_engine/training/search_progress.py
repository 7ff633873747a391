"""The search's progress as the user sees it: trial k of n, images featurised, an ETA.

The search's work has three kinds of units: images passed through the frozen backbone (most of its
time on a large backbone), probe trials (cheap: a classifier on fixed features) and trials of the
whole model (each a short stretch of training through the blocks after M). Their costs are
measured as they happen, so the fraction and the ETA follow the machine in use; until one of a
kind has run, a probe trial is assumed to cost :data:`TRIAL_IMAGES_GUESS` images and a trial of
the whole model what the caller says (its updates' images and the images it scores).
"""
from __future__ import annotations

import time
from typing import Callable

from dtl_engine.listener import SearchProgress
from dtl_engine.training.eta import work_range

EMIT_SECONDS = 0.5            # featurising reports at most this often (phase changes always report)
TRIAL_IMAGES_GUESS = 50       # a trial's cost in images until one was measured


class SearchMeter:
    """Counts the search's work and reports it through ``emit`` (the run's listener)."""

    def __init__(self, emit: Callable[[SearchProgress], None], images_total: int, trials: int) -> None:
        self.emit = emit
        self.images_total, self.trials = max(0, images_total), max(0, trials)
        self.images_done, self.trial = 0, 0
        self.side_trials, self.side_done, self.side_seconds = 0, 0, 0.0   # trials of the whole model, apart
        self.side_guess = float(TRIAL_IMAGES_GUESS)     # one's cost in images until one was measured
        self.start = time.perf_counter()
        self.image_seconds = 0.0        # time spent featurising, and in trials: the measured unit costs
        self.image_batches = 0
        self.warm_up = (0, 0.0)         # the first batch (images, seconds): it also warmed the model and loader up
        self.trial_seconds = 0.0
        self._last = 0.0
        self._fraction = 0.0            # never shown going backwards when a cost estimate changes

    def add_trials(self, count: int) -> None:
        """More (or, negative, fewer) trials than planned."""
        self.trials += count

    def plan_side(self, count: int, images_each: float) -> None:
        """``count`` of the planned trials are of the whole model, each costing about ``images_each`` images."""
        self.side_trials = max(0, count)
        self.side_guess = max(1.0, images_each)

    def add_images(self, count: int) -> None:
        self.images_total += count

    def images(self, count: int, seconds: float, phase: str = "features") -> None:
        self.images_done = min(self.images_total, self.images_done + count)
        self.image_seconds += seconds
        self.image_batches += 1
        if self.image_batches == 1:
            self.warm_up = (count, seconds)
        now = time.perf_counter()
        if now - self._last >= EMIT_SECONDS or self.images_done >= self.images_total:
            self._report(phase)

    def trials_done(self, count: int, seconds: float, phase: str, note: str = "") -> None:
        self.trial = min(self.trials, self.trial + count)
        if phase == "side":
            self.side_done += count
            self.side_seconds += seconds
        else:
            self.trial_seconds += seconds
        self._report(phase, note)

    def progress(self, phase: str, note: str = "") -> SearchProgress:
        probes_done = self.trial - self.side_done
        per_image = self._per_image()
        per_trial = self.trial_seconds / probes_done if probes_done else None
        per_side = self.side_seconds / self.side_done if self.side_done else None
        if per_trial is None and per_image is not None:
            per_trial = per_image * TRIAL_IMAGES_GUESS
        if per_image is None and per_trial is not None:
            per_image = per_trial / TRIAL_IMAGES_GUESS
        if per_side is None and per_image is not None:
            per_side = per_image * self.side_guess
        left_images = self.images_total - self.images_done
        left_side = max(0, self.side_trials - self.side_done)
        left_trials = max(0, self.trials - self.trial - left_side)
        elapsed = time.perf_counter() - self.start
        eta_range: tuple[float | None, float | None] = (None, None)
        if per_image is None or per_trial is None or per_side is None:
            eta = None
            done = self.images_done + probes_done * TRIAL_IMAGES_GUESS + self.side_done * self.side_guess
            total = (self.images_total + (self.trials - self.side_trials) * TRIAL_IMAGES_GUESS
                     + self.side_trials * self.side_guess)
            fraction = done / total if total else 1.0
        else:
            parts = [(left_images * per_image, self.images_done), (left_trials * per_trial, probes_done),
                     (left_side * per_side, self.side_done)]       # a count of 0: that cost is still a guess
            eta = sum(seconds for seconds, _ in parts)
            eta_range = work_range(parts)
            spent = self.images_done * per_image + probes_done * per_trial + self.side_done * per_side
            fraction = spent / (spent + eta) if spent + eta > 0 else 1.0
        if self.trial >= self.trials and self.images_done >= self.images_total:
            fraction = 1.0
        self._fraction = max(self._fraction, min(1.0, max(0.0, fraction)))
        return SearchProgress(phase=phase, trial=self.trial, trials=self.trials, images_done=self.images_done,
                              images_total=self.images_total, elapsed_seconds=elapsed, eta_seconds=eta,
                              fraction=self._fraction, note=note, eta_low_seconds=eta_range[0],
                              eta_high_seconds=eta_range[1])

    def _per_image(self) -> float | None:
        """Seconds an image, from the batches after the first when there are more to come (at 224 px the
        first batch cost six times a later one: "5–47 min" for a search that took 70 s); None until then."""
        if self.image_batches > 1:
            images, seconds = self.images_done - self.warm_up[0], self.image_seconds - self.warm_up[1]
            return seconds / images if images > 0 else None
        if self.images_done and self.images_done >= self.images_total:
            return self.image_seconds / self.images_done     # all in one batch: that is the measure there is
        return None

    def _report(self, phase: str, note: str = "") -> None:
        self._last = time.perf_counter()
        self.emit(self.progress(phase, note))

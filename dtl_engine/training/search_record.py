"""The search's record (kept in the run folder beside its settings): what it chose, every trial, its time.

Kept apart from the search itself (:mod:`dtl_engine.training.autotune`) so that the readers of a
run folder (the app's search view, the accuracy benchmark, the tests) see the record's shape in
one place.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dtl_engine.runs.folder import RunFolder

MAX_CURVE_POINTS = 40


@dataclass
class Trial:
    """One probe trial (a classifier on the frozen features): its settings, score and loss curve."""

    lr: float
    augment: str
    val_acc: float
    val_loss: float
    steps: int
    seconds: float
    curve: list[float] = field(default_factory=list)   # training loss, averaged into at most 40 points
    kind: str = "probe"     # "probe": a classifier on the frozen features; "side": the whole model, briefly


@dataclass
class SearchResult:
    """What the search chose and how."""

    lr: float
    augment: str
    lr_searched: bool
    augment_searched: bool
    trials: list[Trial]
    seconds: float
    steps_per_trial: int
    search_train: int
    search_val: int           # of the first fold (with several, every search image was scored once)
    view_images: int
    cpu_seconds: float = 0.0          # process CPU time (steadier than wall time on a busy machine)
    # of it, the frozen prefixes computed into the run's cache: work the run's first epoch would do anyway
    prefix_cpu_seconds: float = 0.0
    scored_on: str = "search-validation"    # or "search-train": too few images to hold any out
    side_steps: int = 0                     # updates per side-network trial (0: none ran)
    folds: int = 1                          # the probe trials' splits of the search images (several: small set)
    # how the trials of the whole model were fitted into the search's share of the run's time, and why
    # (side_trials.SideBudget as a dict; empty when none were planned)
    side_budget: dict[str, Any] = field(default_factory=dict)
    # why an augmentation was taken or left (the paired evidence on the search-validation images)
    augment_evidence: list[str] = field(default_factory=list)

    @property
    def own_cpu_seconds(self) -> float:
        """The CPU time the search added to the run: all of it but the prefixes the run reuses."""
        return max(0.0, self.cpu_seconds - self.prefix_cpu_seconds)

    def summary(self) -> str:
        """One line for people, e.g. 'learning rate chosen automatically: 3e-3, no flips'."""
        return describe_choice(self.lr, self.augment, self.lr_searched, self.augment_searched)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = self.summary()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchResult":
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known = Trial.__dataclass_fields__
        values["trials"] = [Trial(**{k: v for k, v in t.items() if k in known}) for t in data.get("trials", [])]
        return cls(**values)


AUGMENT_WORDS = {"none": "no augmentation", "light-noflip": "light crops, no flips",
                 "light": "light crops with flips", "standard": "standard augmentation"}


def describe_choice(lr: float, augment: str, lr_searched: bool, augment_searched: bool) -> str:
    """'learning rate chosen automatically: 3e-3, no flips' and its variants."""
    rate = f"{lr:.0e}".replace("e-0", "e-")
    words = AUGMENT_WORDS.get(augment, augment)
    if lr_searched and augment_searched:
        return f"learning rate chosen automatically: {rate}, {words}"
    if lr_searched:
        return f"learning rate chosen automatically: {rate}"
    return f"augmentation chosen automatically: {words}"


def read_search(run_dir: str | Path) -> SearchResult | None:
    """The search record of a run folder, or None when the run did not search."""
    record = RunFolder(run_dir).read_search()
    if record is None:
        return None
    try:
        return SearchResult.from_dict(record)
    except (ValueError, TypeError, KeyError):
        return None


def trial_note(trial: Trial) -> str:
    """'probe at 1e-2: validation loss 0.412, accuracy 88 %' (the figures a user sees as they come)."""
    what = {"side": "whole model", "probe": "probe"}.get(trial.kind, trial.kind)
    if trial.augment != "none":
        what += f" with {AUGMENT_WORDS.get(trial.augment, trial.augment)}"
    if not math.isfinite(trial.val_loss):
        return f"{what} at {trial.lr:.0e}: diverged"
    return f"{what} at {trial.lr:.0e}: validation loss {trial.val_loss:.3f}, accuracy {trial.val_acc:.0%}"


def thin(values: list[float]) -> list[float]:
    """A loss curve averaged into at most :data:`MAX_CURVE_POINTS` points (rounded for the record)."""
    if len(values) <= MAX_CURVE_POINTS:
        return [round(v, 5) for v in values]
    chunks = np.array_split(np.asarray(values, dtype=np.float64), MAX_CURVE_POINTS)
    return [round(float(c.mean()), 5) for c in chunks]

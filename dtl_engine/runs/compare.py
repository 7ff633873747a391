"""Compare runs: each run's settings, curves and final figures, read through :class:`RunFolder`.

:func:`compare_runs` reads two or more run folders and says which settings differ, so a
viewer can lay them side by side: the settings table with the differences marked, the
validation curves overlaid, the final metrics and the per-class F1 of each run.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from dtl_engine.errors import RunError
from dtl_engine.runs.folder import RunFolder, effective_status

# Recorded with the settings, but facts of the machine or of the launch, not choices to compare.
NOT_SETTINGS = ("world_size", "per_rank_batch")


@dataclass
class RunSummary:
    """What one run is made of and how it went."""

    run_dir: str
    name: str
    status: str
    settings: dict[str, Any]                    # the run's configuration, as it trained
    epochs: list[dict[str, Any]]                # one record per finished epoch (epoch, val_acc, val_loss, …)
    epochs_done: int = 0
    best_val_acc: float | None = None
    best_epoch: int | None = None               # 0-based
    final_accuracy: float | None = None         # of the final evaluation
    final_split: str = ""                       # "test" or "val"
    per_class_f1: dict[str, float] = field(default_factory=dict)

    def curve(self, key: str) -> tuple[list[float], list[float]]:
        """(epochs counted from 1, values) of one per-epoch figure ("val_acc", "val_loss", "train_loss")."""
        points = [(float(r.get("epoch", i)) + 1, float(r[key])) for i, r in enumerate(self.epochs)
                  if isinstance(r.get(key), (int, float))]
        return [x for x, _ in points], [y for _, y in points]


@dataclass
class RunComparison:
    """Two or more runs and the names of the settings that differ between them."""

    runs: list[RunSummary]
    differing: list[str]                        # setting names, in the settings' own order
    settings: list[str]                         # every setting name any run has, in order

    def classes(self) -> list[str]:
        """Every class any run reported an F1 for, in first-seen order."""
        seen: dict[str, None] = {}
        for run in self.runs:
            seen.update(dict.fromkeys(run.per_class_f1))
        return list(seen)


def read_summary(run_dir: str | os.PathLike[str]) -> RunSummary:
    """One run's settings, epochs and final figures; :class:`RunError` when its files cannot be read."""
    folder = RunFolder(run_dir)
    run = folder.read_run()
    settings = {k: v for k, v in folder.read_config().items() if k not in NOT_SETTINGS}
    report = folder.read_report() or {}
    f1 = {str(c.get("name")): float(c["f1"]) for c in report.get("per_class") or []
          if isinstance(c, dict) and isinstance(c.get("f1"), (int, float))}
    accuracy = report.get("accuracy")
    return RunSummary(
        run_dir=str(folder.path), name=folder.name, status=effective_status(run), settings=settings,
        epochs=folder.read_metrics(), epochs_done=int(run.get("epochs_done", 0) or 0),
        best_val_acc=run.get("best_val_acc"), best_epoch=run.get("best_epoch"),
        final_accuracy=float(accuracy) if isinstance(accuracy, (int, float)) else None,
        final_split=str(report.get("split") or ""), per_class_f1=f1)


def compare_runs(run_dirs: list[str | os.PathLike[str]]) -> RunComparison:
    """Read every run and find the settings whose values differ (a setting one run lacks differs too).

    Raises:
        RunError: fewer than two runs, or a run whose files cannot be read (the sentence names it).
    """
    if len(run_dirs) < 2:
        raise RunError("Choose at least two runs to compare.")
    runs = [read_summary(d) for d in run_dirs]
    names: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(run.settings))
    missing = object()
    differing = [n for n in names
                 if len({repr(run.settings.get(n, missing)) for run in runs}) > 1]
    return RunComparison(runs, differing, list(names))

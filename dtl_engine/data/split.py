"""Train / validation / test split: stratified and seeded for a flat folder, as given for train/val folders."""
from __future__ import annotations

import os
import random
import stat
from dataclasses import dataclass, field
from typing import Any, Sequence

from dtl_engine.errors import DataError
from dtl_engine.fileio import NOT_REGULAR
from dtl_engine.data.scan import ScanResult

Sample = tuple[str, int]


@dataclass
class Split:
    """The samples of each part, plus how they were made (so a run can record and repeat it)."""

    train: list[Sample]
    val: list[Sample]
    test: list[Sample] = field(default_factory=list)
    seed: int = 0
    val_fraction: float | None = None  # None when the folders gave the split
    layout: str = "flat"
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "train": [[p, y] for p, y in self.train], "val": [[p, y] for p, y in self.val],
            "test": [[p, y] for p, y in self.test], "seed": self.seed,
            "val_fraction": self.val_fraction, "layout": self.layout, "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Split:
        def samples(key: str) -> list[Sample]:
            return [(str(p), int(y)) for p, y in d.get(key, [])]

        vf = d.get("val_fraction")
        return cls(train=samples("train"), val=samples("val"), test=samples("test"), seed=int(d.get("seed", 0)),
                   val_fraction=None if vf is None else float(vf), layout=d.get("layout", "flat"),
                   warnings=list(d.get("warnings", [])))


def stratified_split(samples: list[Sample], val_fraction: float, seed: int,
                     class_names: list[str]) -> tuple[list[Sample], list[Sample], list[str]]:
    """Hold out ``val_fraction`` of every class (at least one image when a class has two or more).

    Each class is shuffled by its own generator seeded from (seed, class name), so
    adding a class or an image to one class does not reshuffle the others.
    """
    by_class: dict[int, list[str]] = {}
    for path, label in samples:
        by_class.setdefault(label, []).append(path)
    train: list[Sample] = []
    val: list[Sample] = []
    warnings: list[str] = []
    for label in sorted(by_class):
        paths = sorted(by_class[label])
        name = class_names[label] if label < len(class_names) else str(label)
        random.Random(f"{seed}:{name}").shuffle(paths)
        n = len(paths)
        n_val = min(max(round(n * val_fraction), 1), n - 1) if n >= 2 else 0
        if n_val == 0:
            warnings.append(f"The class '{name}' has a single image; it is used for training only "
                            "and its accuracy cannot be measured.")
        val.extend((p, label) for p in paths[:n_val])
        train.extend((p, label) for p in paths[n_val:])
    return train, val, warnings


def make_split(scan: ScanResult, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """Split a scan into train / val (/ test).

    Flat layout: a stratified, seeded share ``val_fraction`` of each class goes
    to validation (same seed, same split). Split layout: the train/val/test
    folders are used as given; only when there is no usable val folder is a
    share of train held out the same way.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"The validation share must be between 0 and 1, not {val_fraction}.")
    if scan.layout == "flat":
        train, val, warnings = stratified_split(scan.items.get("all", []), val_fraction, seed, scan.classes)
        return Split(train=train, val=val, test=[], seed=seed, val_fraction=val_fraction,
                     layout="flat", warnings=warnings)
    train = list(scan.items.get("train", []))
    val = list(scan.items.get("val", []))
    test = list(scan.items.get("test", []))
    if not train:
        raise DataError("The train folder has no usable images; the model has nothing to learn from.")
    if not val:
        train, val, warnings = stratified_split(train, val_fraction, seed, scan.classes)
        warnings.insert(0, f"There are no validation images, so {val_fraction:.0%} of each training class "
                           "was held out for validation.")
        return Split(train=train, val=val, test=test, seed=seed, val_fraction=val_fraction,
                     layout="split", warnings=warnings)
    return Split(train=train, val=val, test=test, seed=seed, val_fraction=None, layout="split")


def check_split_files(samples: Sequence[tuple[str, int]], stamps: dict[str, tuple[int, int]]
                      ) -> tuple[list[tuple[str, int]], list[dict[str, Any]]]:
    """Split ``samples`` into those still on disk as they were and ``{path, reason}`` of the others.

    ``stamps`` holds each file's (size, modification time) when the run was made; a file
    without a stamp (runs made by older versions) is only checked for being there.
    """
    kept: list[tuple[str, int]] = []
    gone: list[dict[str, Any]] = []
    for path, label in samples:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            gone.append({"path": path, "reason": "the file no longer exists"})
            continue
        except OSError as exc:
            gone.append({"path": path, "reason": f"the file cannot be read ({exc.strerror or exc})"})
            continue
        if not stat.S_ISREG(st.st_mode):
            gone.append({"path": path, "reason": NOT_REGULAR})
            continue
        stamp = stamps.get(path)
        if stamp is not None and (st.st_size, st.st_mtime_ns) != tuple(stamp):
            gone.append({"path": path, "reason": "the file changed since the run was trained"})
            continue
        kept.append((path, label))
    return kept, gone

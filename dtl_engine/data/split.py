"""Train / validation / test split: stratified and seeded for a flat folder, as given for train/val folders."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from dtl_engine.errors import DataError
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
        # seeded by the name's bytes: a folder name that is not UTF-8 (kept as surrogates) seeds as well,
        # and a UTF-8 name gives the same shuffle as seeding with the text
        random.Random(f"{seed}:{name}".encode("utf-8", "surrogateescape")).shuffle(paths)
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

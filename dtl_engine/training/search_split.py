"""Which of the training split's images the search trains its probes on and scores them on.

Only the training split is used: it is divided (per class, by the seed) into a search-train and a
search-validation part; the run's validation and test images are never looked at. A small set is
divided several ways (:func:`search_folds`), so that every search image is scored once.
"""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Sequence

MAX_SEARCH_IMAGES = 2000   # images of the training split the search uses at most
SEARCH_VAL_SHARE = 0.25    # of the search images, held out to score the trials
CV_MIN_SCORED = 200        # fewer search-validation images than this: the probe trials are cross-validated
CV_FOLDS = round(1 / SEARCH_VAL_SHARE)


def split_for_search(labels: Sequence[int], seed: int) -> tuple[list[int], list[int]]:
    """Indices into the training split: (search-train, search-validation), stratified per class.

    At most :data:`MAX_SEARCH_IMAGES` images; every class with two or more images keeps at
    least one on each side.
    """
    rng = random.Random(seed * 7919 + 17)
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_class[int(y)].append(i)
    keep = min(1.0, MAX_SEARCH_IMAGES / max(1, len(labels)))
    train, val = [], []
    for y in sorted(by_class):
        idx = by_class[y][:]
        rng.shuffle(idx)
        idx = idx[:max(2, round(len(idx) * keep))] if len(idx) > 2 else idx
        n_val = min(len(idx) - 1, max(1, round(len(idx) * SEARCH_VAL_SHARE))) if len(idx) > 1 else 0
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)


def search_folds(labels: Sequence[int], train: list[int], val: list[int], seed: int
                 ) -> list[tuple[list[int], list[int]]]:
    """(trained on, scored on) per fold of the search's images; the first is ``(train, val)``.

    With fewer than :data:`CV_MIN_SCORED` search-validation images one split's score is noise (on 40
    images one image is 0.025 of accuracy, and the probe's best rate changed with the seed), so the
    search-train images are dealt per class into :data:`CV_FOLDS` - 1 more parts of about the same
    size, each scored by probes trained on all the others: every search image is scored once, by a
    classifier that did not see it. A larger set keeps its one split (the probes cost as much again per fold).
    """
    if not val or len(val) >= CV_MIN_SCORED:
        return [(train, val or train)]
    rng = random.Random(seed * 7907 + 29)
    parts: list[list[int]] = [[] for _ in range(CV_FOLDS - 1)]
    by_class: dict[int, list[int]] = defaultdict(list)
    for i in train:
        by_class[int(labels[i])].append(i)
    dealt = 0
    for y in sorted(by_class):
        idx = by_class[y][:]
        rng.shuffle(idx)
        for i in idx:                   # round robin over the classes, so that every part gets every class
            parts[dealt % len(parts)].append(i)
            dealt += 1
    everything = sorted(train + val)
    folds = [(train, val)]
    for part in parts:
        held = set(part)
        if part and len(held) < len(everything):
            folds.append(([i for i in everything if i not in held], sorted(part)))
    return folds

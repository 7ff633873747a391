"""Data doctor: what may be wrong with a run's images, found without touching them.

For every image of a run (train, validation and test) it looks for

* exact duplicates (same bytes) and near duplicates (nearly the same 64-bit difference
  hash and nearly the same frozen features), and flags groups that span splits: the same picture in train and val/test
  is leakage and inflates the measured accuracy;
* likely mislabeled images: a linear classifier on the frozen backbone's features is
  cross-validated (each image is judged by a fold model that never saw it), and an
  image is flagged when its own label is unlikely and another class is confidently
  likely (the "confident learning" rule, per-class thresholds = the average
  self-confidence of each class);
* class imbalance;
* images far from their class in the frozen feature space (robust z-score).

:func:`diagnose_run` returns a :class:`DoctorReport` (for the app's Results panel and the
``doctor`` command). It only reads the image folder; CSVs go where the user says or into
the run folder, never into the image folder.
"""
from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dtl_engine.data.scan import IMBALANCE_RATIO
from dtl_engine.errors import DataError, RunError
from dtl_engine.fileio import NAME_BYTES, check_target, new_file, open_temp, read_bytes
from dtl_engine.runs.folder import DOCTOR_CSV as DOCTOR_CSV, RunFolder
from dtl_engine.data import build_transform, load_image
from dtl_engine.data.split import Split
from dtl_engine.devices import select_device
from dtl_engine.runs.listing import load_run_model

CSV_COLUMNS = ("kind", "path", "split", "label", "suggested_label", "score", "group", "detail")
MOVES_COLUMNS = ("path", "from_class", "to_class", "confidence")
NEAR_HAMMING = 4                    # difference hashes this close (of 64 bits) ...
NEAR_COSINE = 0.95                  # ... and frozen features this similar (centred) make a near duplicate
FOLDS = 5
OUTLIER_Z = 3.5                     # robust z-score of the distance to the class centre

ProgressFn = Callable[[int, int], None]


@dataclass
class Finding:
    """One line of the doctor's report."""

    kind: str                       # exact_duplicate | near_duplicate | mislabeled | outlier | imbalance | unreadable
    path: str
    split: str = ""
    label: str = ""
    suggested_label: str = ""
    score: float = 0.0              # how sure / how strong (kind-specific, higher = stronger)
    group: int | None = None        # duplicate group number
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DoctorReport:
    """All findings of :func:`diagnose_run`, plus the class counts it saw."""

    classes: list[str]
    class_counts: dict[str, int]
    num_images: int
    findings: list[Finding] = field(default_factory=list)

    def of(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def leaks(self) -> list[Finding]:
        """Duplicate findings whose group spans more than one split."""
        return [f for f in self.findings if f.kind.endswith("duplicate") and "leakage" in f.detail]

    def summary(self) -> str:
        """A few lines for a person."""
        exact, near = self.of("exact_duplicate"), self.of("near_duplicate")
        groups = {f.group for f in exact + near}
        leak_groups = {f.group for f in self.leaks}
        lines = [f"Checked {self.num_images} images in {len(self.classes)} classes."]
        lines.append(f"Duplicates: {len(exact)} images in exact and {len(near)} in near-duplicate groups "
                     f"({len(groups)} groups); {len(leak_groups)} groups span train/val/test (leakage).")
        lines.append(f"Likely mislabeled: {len(self.of('mislabeled'))} images.")
        counts = sorted(self.class_counts.items(), key=lambda kv: -kv[1])
        # "3: 183 · 1: 182", not "3 183, 1 182": a class named by a number must not read as part of its count.
        lines.append("Class sizes: " + " · ".join(f"{name}: {n}" for name, n in counts) +
                     (f" (imbalanced: {len(self.of('imbalance'))} small classes)" if self.of("imbalance") else ""))
        lines.append(f"Far from their class: {len(self.of('outlier'))} images.")
        if self.of("unreadable"):
            lines.append(f"Unreadable: {len(self.of('unreadable'))} files.")
        return "\n".join(lines)

    def write_csv(self, path: str | os.PathLike[str], overwrite: bool = False,
                  data_dir: str | os.PathLike[str] | None = None, own: str | os.PathLike[str] | None = None) -> Path:
        """All findings as CSV (one row each); refuses an existing file and the image folder.

        ``own``: the run's own findings file, the one file of a run folder this may replace.
        """
        return _write_rows(path, CSV_COLUMNS, [[getattr(f, c) if getattr(f, c) is not None else "" for c in CSV_COLUMNS]
                                               for f in self.findings], overwrite, data_dir, own)

    def write_moves_csv(self, path: str | os.PathLike[str], overwrite: bool = False,
                        data_dir: str | os.PathLike[str] | None = None) -> Path:
        """The suggested relabelings as a CSV of moves (path, from_class, to_class); nothing is moved."""
        rows = [[f.path, f.label, f.suggested_label, f"{f.score:.4f}"] for f in self.of("mislabeled")]
        return _write_rows(path, MOVES_COLUMNS, rows, overwrite, data_dir)


def check_csv_destination(path: str | os.PathLike[str], overwrite: bool = False,
                          data_dir: str | os.PathLike[str] | None = None,
                          own: str | os.PathLike[str] | None = None) -> Path:
    """The real path of a CSV destination; refuses the image folder, a run's files (``own`` excepted),
    anything not a regular file, or an existing file (unless ``overwrite``)."""
    return check_target(path, overwrite=overwrite, own=[own] if own else [], data_dirs=[data_dir], error=DataError)


def _write_rows(path: str | os.PathLike[str], columns: Sequence[str], rows: list[list[Any]], overwrite: bool,
                data_dir: str | os.PathLike[str] | None, own: str | os.PathLike[str] | None = None) -> Path:
    out = check_csv_destination(path, overwrite, data_dir, own)
    try:
        with new_file(out, overwrite) as part, open_temp(part, "w", newline="", encoding="utf-8",
                                                         errors=NAME_BYTES) as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            writer.writerows(rows)
    except FileExistsError:     # without overwrite, a file made there meanwhile is never replaced
        raise DataError(f"'{out}' already exists; choose another name or allow overwriting it.") from None
    return out


# --- image pass: hashes and frozen features ---------------------------------------------

def difference_hash(image: Any) -> np.ndarray:
    """64-bit difference hash (as 64 booleans) of a PIL image: brighter-than-right-neighbour on a 9×8 grey grid."""
    grey = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    return (grey[:, 1:] > grey[:, :-1]).flatten()


@torch.no_grad()
def frozen_features(model: Any, images: torch.Tensor) -> torch.Tensor:
    """The frozen backbone's pooled features (no side network, no trained weights) for normalised images."""
    adapter = model._adapter
    x, _grid = adapter.embed(images)
    for i, block in enumerate(model._blocks):
        x = block(adapter.enter_block(i, x))
    return adapter.pool(x).float()


def _image_pass(model: Any, samples: list[tuple[str, int, str]], device: torch.device, batch_size: int,
                progress: ProgressFn | None, should_stop: Callable[[], bool] | None
                ) -> tuple[list[int], list[str], np.ndarray, np.ndarray, list[Finding]]:
    """Read every image once: file hash, difference hash, frozen features. Returns the readable ones."""
    transform = build_transform(model.data_config, "none", train=False)
    kept: list[int] = []
    sha: list[str] = []
    dhash: list[np.ndarray] = []
    feats: list[torch.Tensor] = []
    unreadable: list[Finding] = []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if batch:
            feats.append(frozen_features(model, torch.stack(batch).to(device)).cpu())
            batch.clear()

    for n, (path, _label, split) in enumerate(samples, start=1):
        if should_stop is not None and should_stop():
            raise RunError("The data check was cancelled.")
        try:
            digest = hashlib.sha256(read_bytes(path)).hexdigest()    # a FIFO is refused, never waited for
            image = load_image(path)
        except (OSError, DataError) as exc:
            unreadable.append(Finding("unreadable", path, split, detail=str(exc)))
            continue
        kept.append(n - 1)
        sha.append(digest)
        dhash.append(difference_hash(image))
        batch.append(transform(image))
        if len(batch) >= batch_size:
            flush()
        if progress is not None:
            progress(n, len(samples))
    flush()
    features = torch.cat(feats).numpy() if feats else np.zeros((0, 1), np.float32)
    return kept, sha, np.array(dhash, dtype=bool).reshape(-1, 64), features, unreadable


# --- duplicates ------------------------------------------------------------------------------

def _union_find(n: int, pairs: list[tuple[int, int]]) -> list[int]:
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [root(i) for i in range(n)]


def near_duplicate_pairs(hashes: np.ndarray, features: np.ndarray, max_distance: int = NEAR_HAMMING,
                         min_cosine: float = NEAR_COSINE, chunk: int = 1024) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose difference hashes differ in at most ``max_distance`` bits and whose
    centred frozen features have a cosine similarity of at least ``min_cosine``.

    The hash alone confuses small, simple pictures (two different 8×8 digits can share a hash);
    the features alone miss nothing but are costlier to trust; both together are strict.
    """
    bits = hashes.astype(np.float32)
    unit = features - features.mean(0, keepdims=True)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-8)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(bits), chunk):
        block = bits[start:start + chunk]
        # Hamming distance = ones(a) + ones(b) - 2 * shared ones
        dist = block.sum(1)[:, None] + bits.sum(1)[None, :] - 2.0 * block @ bits.T
        close = (dist <= max_distance + 0.5) & (unit[start:start + chunk] @ unit.T >= min_cosine)
        rows, cols = np.nonzero(close)
        pairs.extend((start + int(r), int(c)) for r, c in zip(rows, cols) if start + r < c)
    return pairs


def _duplicate_findings(samples: list[tuple[str, int, str]], classes: list[str], sha: list[str],
                        hashes: np.ndarray, features: np.ndarray) -> list[Finding]:
    n = len(samples)
    by_sha: dict[str, list[int]] = {}
    for i, digest in enumerate(sha):
        by_sha.setdefault(digest, []).append(i)
    exact_pairs = [(g[0], j) for g in by_sha.values() for j in g[1:]]
    near_pairs = near_duplicate_pairs(hashes, features)
    roots = _union_find(n, exact_pairs + near_pairs)
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(roots):
        groups.setdefault(r, []).append(i)
    findings: list[Finding] = []
    number = 0
    folder = os.path.commonpath([p for p, _, _ in samples]) if samples else os.sep   # the image folder
    for members in groups.values():
        if len(members) < 2:
            continue
        number += 1
        splits = sorted({samples[i][2] for i in members})
        labels = sorted({classes[samples[i][1]] for i in members})
        leak = len(splits) > 1
        for i in members:
            path, label, split = samples[i]
            exact = len(by_sha[sha[i]]) > 1
            others = [samples[j][0] for j in members if j != i]
            detail = f"same as {os.path.relpath(others[0], folder)}"
            if len(others) > 1:
                detail += f" and {len(others) - 1} more"
            if leak:
                detail += f"; across {'/'.join(splits)} (leakage)"
            if len(labels) > 1:
                detail += f"; labelled {' and '.join(labels)}"
            findings.append(Finding("exact_duplicate" if exact else "near_duplicate", path, split, classes[label],
                                    score=float(len(members)), group=number, detail=detail))
    return findings


# --- mislabeled: cross-validated linear classifier on frozen features ----------------------

def _standardise(features: np.ndarray) -> np.ndarray:
    x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-8)
    return (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)


def _fit_softmax(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = 1e-2) -> torch.nn.Linear:
    """Multinomial logistic regression by L-BFGS (full batch, deterministic)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    opt = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=200, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(layer(x), y) + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return layer


def out_of_sample_probabilities(features: np.ndarray, labels: np.ndarray, num_classes: int, folds: int = FOLDS,
                                seed: int = 0) -> np.ndarray:
    """Class probabilities of each sample from a linear model fitted on the other folds (stratified)."""
    x = torch.from_numpy(_standardise(features.astype(np.float32)))
    y = torch.from_numpy(labels.astype(np.int64))
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(labels), dtype=int)
    for c in range(num_classes):                     # stratified: each class dealt round-robin over the folds
        members = np.flatnonzero(labels == c)
        rng.shuffle(members)
        fold_of[members] = np.arange(len(members)) % folds
    probs = np.zeros((len(labels), num_classes), dtype=np.float32)
    for k in range(folds):
        test = fold_of == k
        if not test.any() or test.all():
            continue
        layer = _fit_softmax(x[~test], y[~test], num_classes)
        with torch.no_grad():
            probs[test] = layer(x[test]).softmax(dim=1).numpy()
    return probs


def likely_mislabeled(probs: np.ndarray, labels: np.ndarray) -> list[tuple[int, int, float]]:
    """(index, suggested class, its probability) for images whose label looks wrong.

    Confident learning: class j's threshold t_j is the mean probability of j over images labelled j.
    An image is flagged when its own label is below its class threshold, another class k reaches
    t_k, and that k is also the top prediction.
    """
    num_classes = probs.shape[1]
    thresholds = np.array([probs[labels == j, j].mean() if (labels == j).any() else 1.0 for j in range(num_classes)])
    out = []
    for i, (p, y) in enumerate(zip(probs, labels)):
        top = int(p.argmax())
        if top != y and p[y] < thresholds[y] and p[top] >= thresholds[top]:
            out.append((i, top, float(p[top])))
    return out


def _mislabel_findings(samples: list[tuple[str, int, str]], classes: list[str], probs: np.ndarray
                       ) -> list[Finding]:
    labels = np.array([label for _, label, _ in samples])
    findings = []
    for i, suggested, p in likely_mislabeled(probs, labels):
        path, label, split = samples[i]
        findings.append(Finding("mislabeled", path, split, classes[label], classes[suggested], p,
                                detail=f"a model that never saw it says {classes[suggested]} ({p:.0%}), "
                                       f"{classes[label]} only {probs[i, label]:.0%}"))
    return sorted(findings, key=lambda f: -f.score)


# --- class balance and outliers -----------------------------------------------------------

def _imbalance_findings(classes: list[str], counts: dict[str, int]) -> list[Finding]:
    largest = max(counts.values()) if counts else 0
    findings = []
    for name in classes:
        n = counts.get(name, 0)
        if largest and n * IMBALANCE_RATIO <= largest:
            findings.append(Finding("imbalance", "", label=name, score=largest / max(n, 1),
                                    detail=f"{n} images, {largest / max(n, 1):.1f}× fewer than the largest class"))
    return findings


def _outlier_findings(samples: list[tuple[str, int, str]], classes: list[str], features: np.ndarray
                      ) -> list[Finding]:
    x = _standardise(features.astype(np.float32))
    labels = np.array([label for _, label, _ in samples])
    findings = []
    for c in range(len(classes)):
        members = np.flatnonzero(labels == c)
        if len(members) < 5:
            continue
        centre = np.median(x[members], axis=0)
        dist = np.linalg.norm(x[members] - centre, axis=1)
        med = np.median(dist)
        mad = np.median(np.abs(dist - med)) * 1.4826
        if mad <= 0:
            continue
        for i, z in zip(members, (dist - med) / mad):
            if z > OUTLIER_Z:
                path, label, split = samples[i]
                findings.append(Finding("outlier", path, split, classes[label], score=float(z),
                                        detail=f"{z:.1f} robust standard deviations from the centre of its class"))
    return sorted(findings, key=lambda f: -f.score)


# --- the run --------------------------------------------------------------------------------

def run_samples(run_dir: str | os.PathLike[str]) -> list[tuple[str, int, str]]:
    """Every image of a run as (path, label, split name), from its saved split."""
    split = Split.from_dict(RunFolder(run_dir).read_split())
    return [(p, y, name) for name, part in (("train", split.train), ("val", split.val), ("test", split.test))
            for p, y in part]


def diagnose_samples(model: Any, classes: list[str], samples: list[tuple[str, int, str]], *,
                     device: str = "cpu", batch_size: int = 64, progress: ProgressFn | None = None,
                     should_stop: Callable[[], bool] | None = None) -> DoctorReport:
    """The doctor on explicit (path, label, split) samples, using ``model``'s frozen backbone."""
    dev, _ = select_device(device)
    model = model.to(dev).eval()
    kept, sha, hashes, features, unreadable = _image_pass(model, samples, dev, batch_size, progress, should_stop)
    readable = [samples[i] for i in kept]
    counts: dict[str, int] = {name: 0 for name in classes}
    for _, label, _ in readable:
        counts[classes[label]] += 1
    findings = _duplicate_findings(readable, classes, sha, hashes, features)
    labels = np.array([label for _, label, _ in readable])
    present = np.unique(labels)
    if len(present) >= 2 and all((labels == c).sum() >= 2 for c in present):
        findings += _mislabel_findings(readable, classes, out_of_sample_probabilities(features, labels, len(classes)))
    findings += _imbalance_findings(classes, counts)
    findings += _outlier_findings(readable, classes, features)
    return DoctorReport(list(classes), counts, len(readable), findings + unreadable)


def diagnose_run(run_dir: str | os.PathLike[str], *, device: str = "cpu", batch_size: int = 64,
                 progress: ProgressFn | None = None, should_stop: Callable[[], bool] | None = None) -> DoctorReport:
    """Check every image of a saved run (see the module docs); reads the images, writes nothing.

    ``progress(done, total)`` follows the image pass; ``should_stop()`` returning True cancels
    it (a :class:`RunError`).
    """
    model, classes = load_run_model(run_dir, which="best", device="cpu")
    return diagnose_samples(model, classes, run_samples(run_dir), device=device, batch_size=batch_size,
                            progress=progress, should_stop=should_stop)

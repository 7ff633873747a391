"""How good is a trained run: accuracy, per-class precision / recall / F1, confusion matrix, mistakes.

The maths (:func:`build_evaluation`) is a pure function of predictions, so it
is tested against hand-computed numbers. :func:`evaluate_model` runs a model
over images; :func:`evaluate_run` does that for a saved run, on its test
split when there is one, else on its validation split, and saves it as the
run's report.

Honest about the data: predictions are matched to their images by index; an
image that is missing, changed since the run was made, or unreadable is left
out and listed in ``left_out``, and the figure says it covers N of M images.
Nothing ever stands in for a missing image.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from dtl_engine.data.file_stamps import check_split_files
from dtl_engine.errors import RunError
from dtl_engine.data import ImageDataset
from dtl_engine.data.loader import BatchLoader, auto_num_workers, image_dataset
from dtl_engine.data.split import Split
from dtl_engine.runs.folder import RunFolder
from dtl_engine.runs.listing import load_run_model
from dtl_engine.devices import select_device
from dtl_engine.runs.checkpoint import weights_metadata

MAX_MISTAKES = 200          # a report lists at most this many misclassified images (most confident first)

ProgressFn = Callable[[int, int], None]     # (images done, images in all)
StopFn = Callable[[], bool]                 # True: stop now (a RunError)


@dataclass
class Evaluation:
    """The final evaluation of a run."""

    accuracy: float
    classes: list[str]
    confusion: list[list[int]]                          # rows = true class, columns = predicted class
    per_class: list[dict[str, Any]]                     # {name, precision, recall, f1, support}
    mistakes: list[dict[str, Any]]                      # {path, true, predicted, confidence}
    best_epoch: int | None = None                       # 0-based epoch whose weights were evaluated
    split: str = "val"                                  # "test" or "val": which images were used
    num_images: int = 0                                 # images evaluated (N)
    total_images: int = 0                               # images of the split (M); N < M when some were left out
    left_out: list[dict[str, Any]] = field(default_factory=list)   # {path, reason} of the images not evaluated
    # Every evaluated image {path, true, predicted, confidence}, in split order: what a confusion
    # matrix cell holds. Empty in reports saved by older versions (see current_evaluation).
    predictions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every image of the split was evaluated."""
        return not self.left_out and self.num_images >= self.total_images

    def coverage(self) -> str:
        """'24 val images' or '16 of 24 val images' for a sentence."""
        total = max(self.total_images, self.num_images)
        return (f"{self.num_images} {self.split} images" if self.num_images == total
                else f"{self.num_images} of {total} {self.split} images")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def cell(self, true_class: str, predicted_class: str) -> list[dict[str, Any]]:
        """The images of one confusion-matrix cell (true ``true_class``, predicted ``predicted_class``)."""
        return [p for p in self.predictions if p["true"] == true_class and p["predicted"] == predicted_class]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Evaluation":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def confusion_matrix(true: Sequence[int], predicted: Sequence[int], num_classes: int) -> list[list[int]]:
    """Counts of (true, predicted) pairs; rows are the true class."""
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for t, p in zip(true, predicted):
        matrix[int(t)][int(p)] += 1
    return matrix


def per_class_scores(confusion: list[list[int]], classes: Sequence[str]) -> list[dict[str, Any]]:
    """Precision, recall and F1 per class from a confusion matrix (0 where undefined)."""
    scores = []
    for k, name in enumerate(classes):
        tp = confusion[k][k]
        support = sum(confusion[k])                       # row: truly class k
        predicted = sum(row[k] for row in confusion)      # column: predicted as k
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append({"name": name, "precision": precision, "recall": recall, "f1": f1, "support": support})
    return scores


def build_evaluation(probs: torch.Tensor, labels: Sequence[int], paths: Sequence[str], classes: Sequence[str],
                     best_epoch: int | None = None, split: str = "val") -> Evaluation:
    """Evaluation from class probabilities ``probs`` (N, C), true ``labels`` and image ``paths``."""
    probs = torch.as_tensor(probs, dtype=torch.float32)
    labels_t = torch.as_tensor(list(labels), dtype=torch.long)
    confidence, predicted = probs.max(dim=1) if len(labels_t) else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
    confusion = confusion_matrix(labels_t.tolist(), predicted.tolist(), len(classes))
    correct = int((predicted == labels_t).sum())
    wrong = (predicted != labels_t).nonzero().flatten().tolist()
    wrong.sort(key=lambda i: -float(confidence[i]))       # confident mistakes are the interesting ones
    predictions = [{"path": str(paths[i]), "true": classes[int(labels_t[i])], "predicted": classes[int(predicted[i])],
                    "confidence": float(confidence[i])} for i in range(len(labels_t))]
    mistakes = [predictions[i] for i in wrong[:MAX_MISTAKES]]
    return Evaluation(
        accuracy=correct / len(labels_t) if len(labels_t) else 0.0,
        classes=list(classes), confusion=confusion, per_class=per_class_scores(confusion, classes),
        mistakes=mistakes, best_epoch=best_epoch, split=split, num_images=len(labels_t),
        total_images=len(labels_t), predictions=predictions,
    )


@torch.no_grad()
def predict_probs(model: torch.nn.Module, samples: Sequence[tuple[str, int]], transform: Any,
                  device: torch.device, batch_size: int = 64, autocast_dtype: torch.dtype | None = None,
                  num_workers: int = 0, *, dataset: Any = None, progress: ProgressFn | None = None,
                  should_stop: StopFn | None = None
                  ) -> tuple[torch.Tensor, list[int], list[dict[str, Any]]]:
    """Softmax probabilities of ``model`` on the images ``samples`` (path, label).

    Returns ``(probs, indices, failed)``: row ``k`` of ``probs`` belongs to ``samples[indices[k]]``;
    ``failed`` lists ``{path, reason}`` of the images that could not be loaded (left out).
    ``dataset``: an ImageDataset over ``samples`` to read from instead of one built with ``transform``.
    ``progress(done, total)`` is called after each batch; ``should_stop()`` returning True
    ends the pass with a :class:`RunError` (a cancelled evaluation has no partial result).
    """
    dataset = dataset if dataset is not None else ImageDataset(list(samples), transform)
    loader = BatchLoader(dataset, num_workers)
    n = len(dataset)
    model.eval()
    out: list[torch.Tensor] = []
    indices: list[int] = []
    failed: list[dict[str, Any]] = []
    done = 0
    if progress is not None:
        progress(0, n)
    try:
        for batch in loader([list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]):
            if should_stop is not None and should_stop():
                raise RunError("The evaluation was cancelled.")
            failed.extend({"path": f.path, "reason": f.reason} for f in batch.failed)
            done += len(batch.failed)
            if batch.images is not None:
                out.append(_softmax(model, batch.images, device, autocast_dtype))
                indices.extend(int(i) for i in batch.indices)
                done += len(batch.indices)
            if progress is not None:
                progress(min(done, n), n)
    finally:
        loader.close()
    return (torch.cat(out) if out else torch.zeros(0, 0)), indices, failed


def _softmax(model: torch.nn.Module, images: torch.Tensor, device: torch.device,
             autocast_dtype: torch.dtype | None) -> torch.Tensor:
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        logits = model(images.to(device))
    return logits.float().softmax(dim=1).cpu()


def evaluate_model(model: torch.nn.Module, samples: Sequence[tuple[str, int]], classes: Sequence[str],
                   device: torch.device, augment_config: dict[str, Any], best_epoch: int | None = None,
                   split: str = "val", batch_size: int = 64, autocast_dtype: torch.dtype | None = None,
                   num_workers: int = 0, left_out: Sequence[dict[str, Any]] = (),
                   progress: ProgressFn | None = None, should_stop: StopFn | None = None) -> Evaluation:
    """Run ``model`` over ``samples`` with the evaluation transform and score it.

    ``left_out`` are images of the split already known to be unusable (``{path, reason}``);
    they count in ``total_images`` but are not evaluated, like the images that fail to load.
    Photos are draft-decoded and kept in the decoded-image cache (see ``data.loader.image_dataset``).
    """
    samples = list(samples)
    dataset = image_dataset(samples, augment_config, "none", train=False)
    probs, indices, failed = predict_probs(model, samples, None, device, batch_size, autocast_dtype, num_workers,
                                           dataset=dataset, progress=progress, should_stop=should_stop)
    evaluation = build_evaluation(probs, [samples[i][1] for i in indices], [samples[i][0] for i in indices], classes,
                                  best_epoch=best_epoch, split=split)
    evaluation.left_out = [*left_out, *failed]
    evaluation.total_images = len(samples) + len(left_out)
    return evaluation


def evaluation_split(split: Any) -> tuple[str, list[tuple[str, int]]]:
    """The images a final evaluation uses: the test split when present, else validation."""
    if split.test:
        return "test", list(split.test)
    return "val", list(split.val)


def evaluate_run(run_dir: str | Path, device: str = "auto", *, progress: ProgressFn | None = None,
                 should_stop: StopFn | None = None) -> Evaluation:
    """Evaluate a saved run's best weights on the images of its split that are still as they were.

    The result is saved as the run's report only when it covers every image; a partial
    evaluation (files missing or changed) is returned, never stored over the run's own.
    """
    folder = RunFolder(run_dir)
    dev, _ = select_device(device)
    model, classes = load_run_model(folder.path, which="best", device=dev)
    split_name, samples = evaluation_split(Split.from_dict(folder.read_split()))
    samples, gone = check_split_files(samples, folder.read_file_stamps())
    best = _weights_epoch(folder)

    evaluation = evaluate_model(model, samples, classes, dev, model.data_config, best_epoch=best, split=split_name,
                                num_workers=auto_num_workers(), left_out=gone, progress=progress,
                                should_stop=should_stop)
    if evaluation.num_images == 0 and evaluation.left_out:     # "0 % of 0 images" would be no measurement
        first = evaluation.left_out[0]
        raise RunError(f"None of the run's {evaluation.total_images} {split_name} images can be evaluated "
                       f"({first['reason']}: {first['path']}); was the image folder moved or changed?")
    if evaluation.complete:
        folder.write_report(evaluation.to_dict())
    return evaluation


def _weights_epoch(folder: Any) -> int | None:
    """The epoch of the run's best weights: what their file says, else what the run recorded.

    Under the 'last epoch' rule (the paper recipe) that is not the epoch of the highest
    validation accuracy, so the metrics are only the last fallback (runs without either record).
    """
    stamped = weights_metadata(folder.weights("best")).get("epoch", "")
    if stamped.isdigit():
        return int(stamped)
    try:
        recorded = folder.read_run().get("best_epoch") if folder.has_run_file() else None
    except RunError:
        recorded = None
    if isinstance(recorded, int):
        return recorded
    metrics = folder.read_metrics()
    return max(metrics, key=lambda m: m["val_acc"])["epoch"] if metrics else None


def current_evaluation(run_dir: str | Path, device: str = "auto", *, progress: ProgressFn | None = None,
                       should_stop: StopFn | None = None) -> Evaluation:
    """The run's saved report while its weights and images are unchanged, else a fresh, honest evaluation.

    What the Results view shows: a saved report whose images were since deleted or changed
    would list files that are no longer there, so the images are checked first. A report saved
    before per-image predictions were kept is evaluated again (its matrix cells could not be opened).
    ``progress`` and ``should_stop`` follow a fresh evaluation (see :func:`predict_probs`).
    """
    folder = RunFolder(run_dir)
    saved = folder.read_report()
    # A report of other weights is stale too: a stopped run evaluated, then resumed, has new best weights;
    # older reports list no per-image predictions.
    if saved is not None and saved.get("best_epoch") == _weights_epoch(folder) and "predictions" in saved:
        _, samples = evaluation_split(Split.from_dict(folder.read_split()))
        _, gone = check_split_files(samples, folder.read_file_stamps())
        if not gone:
            return Evaluation.from_dict(saved)
    return evaluate_run(folder.path, device=device, progress=progress, should_stop=should_stop)

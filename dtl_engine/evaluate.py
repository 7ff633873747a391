"""How good is a trained run: accuracy, per-class precision / recall / F1, confusion matrix, mistakes.

The maths (:func:`build_evaluation`) is a pure function of predictions, so it
is tested against hand-computed numbers. :func:`evaluate_model` runs a model
over images; :func:`evaluate_run` does that for a saved run, on its test
split when there is one, else on its validation split, and writes
``report.json`` into the run folder.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

REPORT = "report.json"
MAX_MISTAKES = 200          # a report lists at most this many misclassified images (most confident first)


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
    num_images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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
    mistakes = [{"path": str(paths[i]), "true": classes[int(labels_t[i])], "predicted": classes[int(predicted[i])],
                 "confidence": float(confidence[i])} for i in wrong[:MAX_MISTAKES]]
    return Evaluation(
        accuracy=correct / len(labels_t) if len(labels_t) else 0.0,
        classes=list(classes), confusion=confusion, per_class=per_class_scores(confusion, classes),
        mistakes=mistakes, best_epoch=best_epoch, split=split, num_images=len(labels_t),
    )


@torch.no_grad()
def predict_probs(model: torch.nn.Module, samples: Sequence[tuple[str, int]], transform: Any,
                  device: torch.device, batch_size: int = 64, autocast_dtype: torch.dtype | None = None,
                  num_workers: int = 0, *, dataset: Any = None) -> torch.Tensor:
    """Softmax probabilities (N, C) of ``model`` on the images ``samples`` (path, label), in order.

    ``dataset``: an ImageDataset over ``samples`` to read from instead of one built with ``transform``.
    """
    from .data import ImageDataset
    from .data.loader import BatchLoader

    dataset = dataset if dataset is not None else ImageDataset(list(samples), transform)
    loader = BatchLoader(dataset, num_workers)
    n = len(dataset)
    model.eval()
    out = []
    try:
        batches = loader([list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)])
        out = [_softmax(model, images, device, autocast_dtype) for images, _labels, _index in batches]
    finally:
        loader.close()
    return torch.cat(out) if out else torch.zeros(0, 0)


def _softmax(model: torch.nn.Module, images: torch.Tensor, device: torch.device,
             autocast_dtype: torch.dtype | None) -> torch.Tensor:
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        logits = model(images.to(device))
    return logits.float().softmax(dim=1).cpu()


def evaluate_model(model: torch.nn.Module, samples: Sequence[tuple[str, int]], classes: Sequence[str],
                   device: torch.device, augment_config: dict[str, Any], best_epoch: int | None = None,
                   split: str = "val", batch_size: int = 64, autocast_dtype: torch.dtype | None = None,
                   num_workers: int = 0) -> Evaluation:
    """Run ``model`` over ``samples`` with the evaluation transform and score it.

    Photos are draft-decoded and kept in the decoded-image cache (see ``data.loader.image_dataset``).
    """
    from .data.loader import image_dataset

    dataset = image_dataset(list(samples), augment_config, "none", train=False)
    probs = predict_probs(model, samples, None, device, batch_size, autocast_dtype, num_workers, dataset=dataset)
    return build_evaluation(probs, [label for _, label in samples], [path for path, _ in samples], classes,
                            best_epoch=best_epoch, split=split)


def evaluation_split(split: Any) -> tuple[str, list[tuple[str, int]]]:
    """The images a final evaluation uses: the test split when present, else validation."""
    if split.test:
        return "test", list(split.test)
    return "val", list(split.val)


def evaluate_run(run_dir: str | Path, device: str = "auto") -> Evaluation:
    """Evaluate a saved run's best weights and (re)write its ``report.json``."""
    from .data.split import Split
    from .runs import load_run_model, read_run_file
    from .training.checkpoint import atomic_write_json
    from .training.devices import select_device

    run_dir = Path(run_dir)
    dev, _ = select_device(device)
    model, classes = load_run_model(run_dir, which="best", device=dev)
    split_name, samples = evaluation_split(Split.from_dict(read_run_file(run_dir, "split.json")))
    metrics = read_run_file(run_dir, "metrics.json") if (run_dir / "metrics.json").exists() else []
    best = max(metrics, key=lambda m: m["val_acc"])["epoch"] if metrics else None
    from .data.loader import auto_num_workers

    evaluation = evaluate_model(model, samples, classes, dev, model.data_config, best_epoch=best, split=split_name,
                                num_workers=auto_num_workers())
    atomic_write_json(run_dir / REPORT, evaluation.to_dict())
    return evaluation

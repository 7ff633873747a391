"""Pieces every export format shares: the result record, metadata, safe writing, check images."""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from dtl_engine.data.model_input import load_pixels
from dtl_engine.errors import DataError, ExportError
from dtl_engine import __version__
from dtl_engine.fileio import check_target, make_folder, reserve_beside
from dtl_engine.export.verify import LATENCY_BATCH

MAX_CHECK_IMAGES = 32
TOLERANCE = 1e-4        # largest allowed |p_export - p_engine| on any class probability (float32)


@dataclass
class ExportResult:
    """What an export wrote and how its self-check went."""

    path: str
    format: str                 # "torchscript" | "onnx"
    verified: bool              # True when a fresh process reproduced the engine's probabilities
    max_abs_diff: float | None  # largest probability difference seen (None when not verified)
    images_checked: int
    message: str                # one sentence for a person
    # Measured on the written file in the fresh process (None when not measured):
    size_bytes: int = 0
    latency_device: str | None = None
    latency_single_ms: float | None = None      # median of single-image calls
    latency_batch_ms: float | None = None       # median of calls with a batch of LATENCY_BATCH images
    latency_repeats: int = 0
    latency_error: str | None = None            # why latency could not be measured on that device
    eval_accuracy: float | None = None          # the exported file's top-1 accuracy on the validation images
    eval_images: int = 0
    reference_accuracy: float | None = None     # the run's own validation accuracy, for comparison

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def details(self) -> list[str]:
        """Printable lines: file size, latency, and the exported file's validation accuracy."""
        lines = [f"file size: {self.size_bytes / 1e6:.1f} MB ({self.size_bytes:,} bytes)"]
        if self.latency_single_ms is not None and self.latency_batch_ms is not None:
            lines.append(f"latency on {self.latency_device}, fresh process: {self.latency_single_ms:.1f} ms per image "
                         f"(median of {self.latency_repeats} single-image calls); {self.latency_batch_ms:.1f} ms per "
                         f"batch of {LATENCY_BATCH} ({self.latency_batch_ms / LATENCY_BATCH:.2f} ms per image)")
        elif self.latency_error:
            lines.append(f"latency on {self.latency_device}: not measured ({self.latency_error})")
        if self.eval_accuracy is not None:
            line = f"validation accuracy of the exported file: {self.eval_accuracy:.2%} on {self.eval_images} images"
            if self.reference_accuracy is not None:
                same = abs(self.eval_accuracy - self.reference_accuracy) < 0.5 / max(self.eval_images, 1)
                line += f" (run: {self.reference_accuracy:.2%}, {'the same' if same else 'DIFFERENT'})"
            lines.append(line)
        return lines


def printable_name(name: str) -> str:
    """A class name as TorchScript can hold it (valid UTF-8): a byte of a folder name that is not UTF-8 is
    written as ``\\xNN``. The exact names travel in the export's metadata (JSON, escaped), which loading prefers."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def build_metadata(model: Any, classes: list[str], extra: dict[str, Any] | None, fmt: str,
                   settings: dict[str, Any]) -> dict[str, Any]:
    """Metadata embedded in every export: classes, run facts and the preprocessing used."""
    spec = model.spec.to_dict() if hasattr(model, "spec") else {}
    meta: dict[str, Any] = {
        "classes": list(classes),
        "backbone": spec.get("backbone"),
        "method": spec.get("variant"),
        "rank": spec.get("rank"),
        "val_acc": None,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input_size": list(settings["size"]),
        "engine_version": __version__,
        "format": fmt,
        "preprocess": settings,
        "input": "RGB pixels 0..255, uint8 tensor (N, 3, H, W), any H and W",
        "output": "class probabilities (N, num_classes), softmax",
    }
    for key, value in (extra or {}).items():
        if value is not None:
            meta[key] = value
    return meta


def check_destination(out_path: str | os.PathLike[str], overwrite: bool,
                      data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Refuse unsafe destinations with a sentence (the one write guard); return the real path."""
    out = check_target(out_path, overwrite=overwrite, data_dirs=[data_dir], error=ExportError)
    try:
        make_folder(out.parent)
    except OSError as exc:
        raise ExportError(f"Cannot create the folder '{out.parent}': {exc.strerror or exc}.") from exc
    return out


def temp_path_beside(out: Path) -> Path:
    """A fresh temporary file next to ``out`` so the final os.replace is atomic."""
    try:
        return reserve_beside(out)
    except OSError as exc:
        raise ExportError(f"Cannot write into '{out.parent}': {exc.strerror or exc}.") from exc


def load_labelled_images(samples: list[tuple[str, int]], side: int | None
                         ) -> tuple[list[torch.Tensor], list[int]]:
    """Readable images of ``samples`` as uint8 (1, 3, H, W) tensors with their labels; unreadable ones skipped.

    ``side``: :func:`~dtl_engine.data.model_input.input_side`, so they are the pixels the run's own
    evaluation saw.
    """
    images: list[torch.Tensor] = []
    labels: list[int] = []
    for path, label in samples:
        try:
            images.append(load_pixels(path, side).unsqueeze(0))
        except DataError:
            continue
        labels.append(int(label))
    return images, labels


def load_check_images(paths: list[str], side: int | None, limit: int = MAX_CHECK_IMAGES) -> list[torch.Tensor]:
    """Up to ``limit`` readable images as uint8 (1, 3, H, W) tensors; unreadable files are skipped."""
    out: list[torch.Tensor] = []
    for path in paths:
        if len(out) >= limit:
            break
        try:
            out.append(load_pixels(path, side).unsqueeze(0))
        except DataError:
            continue
    return out


def synthetic_batch(size: list[int], seed: int = 0) -> torch.Tensor:
    """A smooth random uint8 batch of 3 images whose size differs from the model's (odd, non-square)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = int(size[0] * 1.3) + 1, int(size[1] * 0.9) + 3
    coarse = torch.rand(3, 3, max(h // 8, 2), max(w // 8, 2), generator=gen) * 255
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return smooth.round().clamp(0, 255).to(torch.uint8)

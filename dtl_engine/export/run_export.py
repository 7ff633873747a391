"""Export from a run folder: the best weights, the run's classes and facts, its validation images."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ExportError
from .common import ExportResult, load_check_images, load_labelled_images
from .core import export_model


def export_run(run_dir: str | os.PathLike[str], out_path: str | os.PathLike[str], format: str = "torchscript",
               overwrite: bool = False, verify: bool = True, measure_device: str | None = "auto",
               latency_repeats: int = 20) -> ExportResult:
    """Export the best model of a finished (or stopped) run and verify it on the run's validation images.

    When verified, the same fresh process measures the file on ``measure_device`` ("auto", "cpu",
    "cuda", "mps"; None = skip): latency, and its accuracy on the whole validation split, kept
    beside the run's own validation accuracy (``ExportResult.details()`` prints them).
    """
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise ExportError(f"There is no run folder at '{run}'.")
    from ..runs import load_run_model

    model, classes = load_run_model(run, which="best")
    config = _read_json(run / "config.json")
    metadata: dict[str, Any] = {"run": run.resolve().name, "val_acc": _val_acc(run)}
    if config.get("method"):
        metadata["method"] = config["method"]
    images = load_check_images(_val_paths(run, config.get("data_dir"))) if verify else []
    measure: dict[str, Any] = {}
    if verify and measure_device is not None:
        from ..training.devices import select_device

        device, _ = select_device(measure_device)
        eval_images, eval_labels = load_labelled_images(_val_samples(run, config.get("data_dir")))
        best = _read_json(run / "run.json").get("best_val_acc")
        measure = {"measure_device": device.type, "latency_repeats": latency_repeats, "eval_images": eval_images,
                   "eval_labels": eval_labels,
                   "reference_accuracy": float(best) if isinstance(best, (int, float)) else None}
    return export_model(model, classes, out_path, format=format, metadata=metadata, overwrite=overwrite,
                        verify=verify, check_images=images, data_dir=config.get("data_dir") or None, **measure)


def export_torchscript(run_dir: str | os.PathLike[str], out_path: str | os.PathLike[str], overwrite: bool = False,
                       verify: bool = True, measure_device: str | None = "auto") -> ExportResult:
    """TorchScript export of a run: one file that needs only torch (see :func:`export_run`)."""
    return export_run(run_dir, out_path, "torchscript", overwrite, verify, measure_device)


def export_onnx(run_dir: str | os.PathLike[str], out_path: str | os.PathLike[str], overwrite: bool = False,
                verify: bool = True, measure_device: str | None = "auto") -> ExportResult:
    """ONNX export of a run, verified with onnxruntime (needs the 'onnx' and 'onnxruntime' packages)."""
    return export_run(run_dir, out_path, "onnx", overwrite, verify, measure_device)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _val_acc(run: Path) -> float | None:
    # Prefer the final evaluation; fall back to what the run recorded per epoch.
    report = _read_json(run / "report.json")
    for source, key in ((report, "accuracy"), (_read_json(run / "run.json"), "best_val_acc")):
        if isinstance(source.get(key), (int, float)):
            return float(source[key])
    return None


def _val_samples(run: Path, data_dir: str | None) -> list[tuple[str, int]]:
    """The run's validation images with their labels (the split the run's validation accuracy is on)."""
    out: list[tuple[str, int]] = []
    for item in _read_json(run / "split.json").get("val") or []:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            path = str(item[0])
            if not os.path.isabs(path) and data_dir:
                path = os.path.join(data_dir, path)
            out.append((path, int(item[1])))
    return out


def _val_paths(run: Path, data_dir: str | None) -> list[str]:
    split = _read_json(run / "split.json")
    items = split.get("val") or split.get("test") or []
    paths: list[str] = []
    for item in items:
        path = item.get("path") if isinstance(item, dict) else item[0] if isinstance(item, (list, tuple)) else None
        if not path:
            continue
        if not os.path.isabs(path) and data_dir:
            path = os.path.join(data_dir, path)
        paths.append(str(path))
    return paths

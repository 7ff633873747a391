"""Export from a run folder: the best weights, the run's classes and facts, its validation images."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dtl_engine.data.model_input import input_side
from dtl_engine.data.preprocess import preprocess_settings
from dtl_engine.data.file_stamps import check_split_files
from dtl_engine.data.split import Split
from dtl_engine.errors import ExportError, RunError
from dtl_engine.export.common import ExportResult, check_destination, load_check_images, load_labelled_images
from dtl_engine.export.core import export_model
from dtl_engine.runs.folder import BEST_WEIGHTS, LAST_WEIGHTS, RunFolder
from dtl_engine.runs.listing import load_run_model
from dtl_engine.devices import select_device


def export_run(run_dir: str | os.PathLike[str], out_path: str | os.PathLike[str], format: str = "torchscript",
               overwrite: bool = False, verify: bool = True, measure_device: str | None = "auto",
               latency_repeats: int = 20, weights: str = "best") -> ExportResult:
    """Export the best model of a finished (or stopped) run and verify it on the run's validation images.

    The recorded ``val_acc`` is the run's own: the best validation accuracy it measured
    while training, never a later re-evaluation on a folder that may have changed.
    When verified, the same fresh process measures the file on ``measure_device`` ("auto", "cpu",
    "cuda", "mps"; None = skip): latency, and its accuracy on the whole validation split, kept
    beside the run's own validation accuracy (``ExportResult.details()`` prints them).
    ``weights``: "best" (the run's result), or "last" (its last checkpoint), which is only ever exported when
    asked for: a run without its best weights is refused with a sentence saying what "last" would export.
    """
    if measure_device is not None and latency_repeats < 1:
        raise ExportError("The latency is the median of at least 1 single-image call: give --latency-runs 1 or more.")
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise ExportError(f"There is no run folder at '{run}'.")

    folder = RunFolder(run)
    data_dir = folder.data_folder()
    check_destination(out_path, overwrite, data_dir)        # refused before the model is even loaded
    _check_weights(folder, weights)
    model, classes = load_run_model(run, which=weights)
    config = folder.read_config()
    metadata: dict[str, Any] = {"run": run.resolve().name, "val_acc": _val_acc(folder), "weights": weights}
    if config.get("method"):
        metadata["method"] = config["method"]
    side = input_side(preprocess_settings(model.data_config))      # images load as the run's evaluation loaded them
    images = load_check_images([path for path, _ in _val_samples(folder)], side) if verify else []
    measure: dict[str, Any] = {}
    if verify and measure_device is not None:
        device, _ = select_device(measure_device)
        eval_images, eval_labels = load_labelled_images(_val_samples(folder, with_test=False), side)
        measure = {"measure_device": device.type, "latency_repeats": latency_repeats, "eval_images": eval_images,
                   "eval_labels": eval_labels, "reference_accuracy": _val_acc(folder)}
    return export_model(model, classes, out_path, format=format, metadata=metadata, overwrite=overwrite,
                        verify=verify, check_images=images, data_dir=data_dir, **measure)


def _check_weights(folder: Any, weights: str) -> None:
    """Refuse with a sentence when the weights asked for are not there (never export others silently)."""
    if weights not in ("best", "last"):
        raise ExportError(f"Choose the 'best' or the 'last' weights of a run, not '{weights}'.")
    if not folder.last_weights.exists() and not folder.best_weights.exists():
        raise ExportError(f"The run '{folder.name}' has no trained weights yet (neither {BEST_WEIGHTS} nor "
                          f"{LAST_WEIGHTS}); train or resume it first.")
    if weights == "best" and not folder.best_weights.exists():
        epochs = folder.read_run().get("epochs_done") if folder.has_run_file() else None
        after = f", saved after epoch {epochs}" if epochs else ""
        raise ExportError(f"The run '{folder.name}' has no best weights ({BEST_WEIGHTS} is missing). Its last "
                          f"checkpoint ({LAST_WEIGHTS}{after}) would be exported instead: give --weights last to "
                          "export it.")
    if weights == "last" and not folder.last_weights.exists():
        raise ExportError(f"The run '{folder.name}' has no last checkpoint ({LAST_WEIGHTS} is missing); export its "
                          "best weights instead.")


def export_torchscript(run_dir: str | os.PathLike[str], out_path: str | os.PathLike[str], overwrite: bool = False,
                       verify: bool = True, measure_device: str | None = "auto") -> ExportResult:
    """TorchScript export of a run: one file that needs only torch (see :func:`export_run`)."""
    return export_run(run_dir, out_path, "torchscript", overwrite, verify, measure_device)


def export_onnx(run_dir: str | os.PathLike[str], out_path: str | os.PathLike[str], overwrite: bool = False,
                verify: bool = True, measure_device: str | None = "auto") -> ExportResult:
    """ONNX export of a run, verified with onnxruntime (needs the 'onnx' and 'onnxruntime' packages)."""
    return export_run(run_dir, out_path, "onnx", overwrite, verify, measure_device)


def _val_acc(folder: Any) -> float | None:
    """The best validation accuracy the run recorded while training (None when it has none)."""
    try:
        value = folder.read_run().get("best_val_acc")
    except RunError:
        return None
    return float(value) if isinstance(value, (int, float)) else None


def _val_samples(folder: Any, with_test: bool = True) -> list[tuple[str, int]]:
    """The run's validation images (else, ``with_test``, its test images) still there and unchanged."""
    try:
        split = Split.from_dict(folder.read_split())
        stamps = folder.read_file_stamps()
    except (RunError, TypeError, ValueError):
        return []
    kept, _gone = check_split_files(split.val or (split.test if with_test else []), stamps)
    return kept

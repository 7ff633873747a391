"""Export a model in memory: write to a temp file, verify it in a fresh process, then move it in place."""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, cast

import torch

from dtl_engine.errors import ExportError
from dtl_engine.fileio import discard, publish
from dtl_engine.data.preprocess import preprocess_settings
from dtl_engine.model.probabilities import engine_probabilities
from dtl_engine.export.common import (TOLERANCE, ExportResult, build_metadata, check_destination, printable_name,
                                      synthetic_batch, temp_path_beside)
from dtl_engine.export.verify import check_in_fresh_process, compare, measure_options
from dtl_engine.export.onnx_format import require_onnx, write_onnx
from dtl_engine.export.torchscript import write_torchscript

FORMATS = ("torchscript", "onnx")


def export_model(model: torch.nn.Module, classes: list[str], out_path: str | os.PathLike[str], *,
                 format: str = "torchscript", metadata: dict[str, Any] | None = None, overwrite: bool = False,
                 verify: bool = True, check_images: list[torch.Tensor] | None = None,
                 data_dir: str | os.PathLike[str] | None = None, measure_device: str | None = None,
                 latency_repeats: int = 20, eval_images: list[torch.Tensor] | None = None,
                 eval_labels: list[int] | None = None, reference_accuracy: float | None = None) -> ExportResult:
    """Export ``model`` (a DTLModel, or any module with ``data_config``) with its class names.

    ``metadata`` adds run facts (val_acc, run name...) to what the model's spec provides.
    ``check_images`` are uint8 (N, 3, H, W) batches used for the self-check; a synthetic batch of
    an unusual size is always added. ``data_dir`` is the user's image folder, never written into.

    With ``verify`` and a ``measure_device`` ("cpu", "cuda", "mps"), the same fresh process also
    measures the file's latency there (median of ``latency_repeats`` single-image calls, and batches
    of 32) and, given ``eval_images`` ((1, 3, H, W) uint8 each) with ``eval_labels``, its accuracy;
    ``reference_accuracy`` (the run's) is kept beside it for comparison.

    Raises:
        ExportError: the destination is unsafe or exists, the conversion failed, or the exported
            file does not reproduce the engine's probabilities within 1e-4.
    """
    if format not in FORMATS:
        raise ExportError(f"The export format must be one of {', '.join(FORMATS)}, not '{format}'.")
    if len(classes) != getattr(getattr(model, "head", None), "out_features", len(classes)):
        raise ExportError("The number of class names does not match the model's classifier.")
    out = check_destination(out_path, overwrite, data_dir)
    writer = _writer(format)

    model = _cpu_float_eval(model)
    settings = preprocess_settings(cast("dict[str, Any]", model.data_config))
    meta = build_metadata(model, classes, metadata, format, settings)

    tmp = temp_path_beside(out)     # recorded; a killed export's is removed by the next (fileio.clean_leftovers)
    try:
        try:
            writer(model, settings, classes, meta, tmp)
        except OSError as exc:      # a full disk, a vanished folder: one sentence, and the partial file goes
            raise ExportError(f"The export could not be written to '{out.parent}': "
                              f"{exc.strerror or exc}.") from exc
        checked, worst = 0, None
        report: dict[str, Any] = {}
        if verify:
            checked, worst, report = _verify(model, tmp, format, classes, settings, check_images, measure_device,
                                             latency_repeats, eval_images)
        _publish(tmp, out, overwrite)
    finally:
        discard(tmp)                # gone already once published

    size = out.stat().st_size / 1e6
    label = {"torchscript": "TorchScript", "onnx": "ONNX"}[format]
    if verify:
        message = (f"Exported {label} to {out} ({size:.1f} MB); a fresh process reproduced the engine's "
                   f"probabilities on {checked} images (max difference {worst:.1e}).")
    else:
        message = f"Exported {label} to {out} ({size:.1f} MB); not verified."
    result = ExportResult(str(out), format, verify, worst, checked, message, size_bytes=out.stat().st_size)
    if "device" in report:
        _add_measurements(result, report, latency_repeats, eval_labels, reference_accuracy)
    return result


def _verify(model: torch.nn.Module, tmp: Path, format: str, classes: list[str], settings: dict[str, Any],
            check_images: list[torch.Tensor] | None, measure_device: str | None, latency_repeats: int,
            eval_images: list[torch.Tensor] | None) -> tuple[int, float, dict[str, Any]]:
    """Load the file ``tmp`` in a fresh process and compare its probabilities with the engine's (and measure
    it there, given ``measure_device``); returns (images checked, largest difference, the process's report)."""
    images = list(check_images or []) + [synthetic_batch(settings["size"])]
    reference = [engine_probabilities(model, x, settings) for x in images]
    if measure_device is not None:
        options = measure_options(measure_device, settings["size"], latency_repeats, eval_images)
        produced, report = check_in_fresh_process(tmp, format, images, measure=options)
    else:
        produced, report = check_in_fresh_process(tmp, format, images)
    worst = compare(reference, produced)
    checked = sum(int(x.shape[0]) for x in images)
    names = [printable_name(c) for c in classes] if format == "torchscript" else list(classes)
    if report["classes"] != names:
        raise ExportError("The exported file does not carry the right class names.")
    if report["foreign"]:
        raise ExportError(f"The exported file needs more than torch to load ({', '.join(report['foreign'])}).")
    if worst > TOLERANCE:
        raise ExportError(f"The exported file disagrees with the engine by up to {worst:.2e} in probability "
                          f"(allowed {TOLERANCE:.0e}); it was not saved.")
    return checked, worst, report


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """The verified file takes its name: replacing a file there only with ``overwrite``."""
    try:
        publish(tmp, out, overwrite)        # without overwrite, a file made there during the export stays
    except FileExistsError:
        raise ExportError(f"'{out}' already exists (it appeared during the export); choose another "
                          "name or allow overwriting it.") from None


def _add_measurements(result: ExportResult, report: dict[str, Any], repeats: int, labels: list[int] | None,
                      reference_accuracy: float | None) -> None:
    result.latency_device = report["device"]
    result.latency_repeats = repeats
    result.latency_error = report.get("latency_error")
    if "single_s" in report:
        result.latency_single_ms = 1000.0 * report["single_s"]
        result.latency_batch_ms = 1000.0 * report["batch_s"]
    predictions = report.get("eval_predictions") or []
    if labels and len(predictions) == len(labels):
        result.eval_accuracy = sum(int(p == y) for p, y in zip(predictions, labels)) / len(labels)
        result.eval_images = len(labels)
        result.reference_accuracy = reference_accuracy


def _writer(format: str):
    if format == "torchscript":
        return write_torchscript
    require_onnx()
    return write_onnx


def _cpu_float_eval(model: torch.nn.Module) -> torch.nn.Module:
    # Exports are float32 on CPU; copy rather than move a model someone else may still be using.
    param = next(model.parameters(), None)
    if param is not None and (param.device.type != "cpu" or param.dtype != torch.float32):
        model = copy.deepcopy(model).to("cpu", torch.float32)
    return model.eval()

"""Export from a run folder: the best weights, the run's classes and facts, its validation images."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ExportError
from .common import ExportResult, load_check_images
from .core import export_model


def export_run(run_dir: str | os.PathLike[str], out_path: str | os.PathLike[str], format: str = "torchscript",
               overwrite: bool = False, verify: bool = True) -> ExportResult:
    """Export the best model of a finished (or stopped) run and verify it on the run's validation images.

    The recorded ``val_acc`` is the run's own: the best validation accuracy it measured
    while training, never a later re-evaluation on a folder that may have changed.
    """
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise ExportError(f"There is no run folder at '{run}'.")
    from ..run_folder import RunFolder
    from ..runs import load_run_model

    folder = RunFolder(run)
    model, classes = load_run_model(run, which="best")
    config = folder.read_config()
    metadata: dict[str, Any] = {"run": run.resolve().name, "val_acc": _val_acc(folder)}
    if config.get("method"):
        metadata["method"] = config["method"]
    images = load_check_images(_val_paths(folder)) if verify else []
    return export_model(model, classes, out_path, format=format, metadata=metadata, overwrite=overwrite,
                        verify=verify, check_images=images, data_dir=config.get("data_dir") or None)


def export_torchscript(run_dir: str | os.PathLike[str], out_path: str | os.PathLike[str], overwrite: bool = False,
                       verify: bool = True) -> ExportResult:
    """TorchScript export of a run: one file that needs only torch (see :func:`export_run`)."""
    return export_run(run_dir, out_path, "torchscript", overwrite, verify)


def export_onnx(run_dir: str | os.PathLike[str], out_path: str | os.PathLike[str], overwrite: bool = False,
                verify: bool = True) -> ExportResult:
    """ONNX export of a run, verified with onnxruntime (needs the 'onnx' and 'onnxruntime' packages)."""
    return export_run(run_dir, out_path, "onnx", overwrite, verify)


def _val_acc(folder: Any) -> float | None:
    """The best validation accuracy the run recorded while training (None when it has none)."""
    from ..errors import RunError

    try:
        value = folder.read_run().get("best_val_acc")
    except RunError:
        return None
    return float(value) if isinstance(value, (int, float)) else None


def _val_paths(folder: Any) -> list[str]:
    """The run's validation (else test) images that are still there and unchanged, for the self-check."""
    from ..data.split import Split
    from ..errors import RunError
    from ..evaluate import check_split_files

    try:
        split = Split.from_dict(folder.read_split())
        stamps = folder.read_file_stamps()
    except (RunError, TypeError, ValueError):
        return []
    kept, _gone = check_split_files(split.val or split.test, stamps)
    return [path for path, _ in kept]

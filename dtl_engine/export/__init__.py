"""Exports of a trained classifier: TorchScript (torch only) and ONNX, each verified in a fresh process.

``export_torchscript(run_dir, out_path)`` / ``export_onnx(...)`` work from a run folder;
``export_model(model, classes, out_path, ...)`` from a model in memory.
"""
from __future__ import annotations

from dtl_engine.export.common import ExportResult
from dtl_engine.export.core import FORMATS, export_model
from dtl_engine.export.run_export import export_onnx, export_run, export_torchscript


__all__ = ["ExportResult", "FORMATS", "export_model", "export_run", "export_torchscript", "export_onnx"]

"""Prediction with an exported file (TorchScript or ONNX), and the engine's own reference prediction.

Both paths run the same :func:`dtl_engine.data.preprocess.preprocess`, so an export and the
engine agree on every image.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from dtl_engine.errors import DataError, ExportError
from dtl_engine.fileio import NOT_REGULAR, NotRegularFileError, open_regular
from dtl_engine.export.payload import check_payload, torchscript_metadata
from dtl_engine.data.model_input import input_side, load_pixels


@dataclass
class ExportedModel:
    """A loaded export: call it with uint8 images (N, 3, H, W) to get probabilities (N, C)."""

    path: str
    format: str
    classes: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)
    _run: Callable[[torch.Tensor], torch.Tensor] | None = None
    notice: str | None = None       # why the file's contents could not be checked (an older export)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities; raises :class:`NotFiniteError` rather than return numbers that are not numbers."""
        assert self._run is not None        # set by the loaders below
        probs = self._run(images)
        if not bool(torch.isfinite(probs).all()):
            raise NotFiniteError(f"The model '{Path(self.path).name}' gave no usable probabilities (NaN or "
                                 "infinite values): the file is damaged or the model it was exported from diverged.")
        return probs


class NotFiniteError(ExportError):
    """An export answered with values that are not finite numbers: no class may be read from them."""


def load_exported(path: str | os.PathLike[str]) -> ExportedModel:
    """Load a TorchScript (.pt/.ts) or ONNX (.onnx) export with its class names and metadata.

    Raises:
        ExportError: the file is missing or is not an export written by this engine.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ExportError(f"There is no exported model at '{p}'.")
    kind = _file_kind(p)
    if kind == "onnx":
        return _load_onnx(p)
    if kind != "torchscript":
        raise ExportError(f"'{p.name}' is not a model exported by DTL Studio.")
    # the contents are checked before torch reads the file: a damaged archive must not reach its loader
    notice = check_payload(p, "torchscript", torchscript_metadata(p))
    extra = {"metadata.json": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is marked deprecated, still the format
            module = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
        module.eval()
        classes = list(module.class_names())
    except Exception as exc:  # a wrong file fails in many ways inside torch
        raise ExportError(f"'{p.name}' is not a model exported by DTL Studio.") from exc
    metadata = json.loads(extra["metadata.json"] or module.metadata_json())
    exact = metadata.get("classes")
    if isinstance(exact, list) and len(exact) == len(classes):
        classes = [str(c) for c in exact]       # the folder names exactly, also those that are not UTF-8

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(images)

    return ExportedModel(str(p), "torchscript", classes, metadata, run, notice)


def _file_kind(p: Path) -> str:
    try:
        with open_regular(p) as fh:
            head = fh.read(2)
    except NotRegularFileError as exc:
        raise ExportError(f"Cannot read '{p}': {NOT_REGULAR} ({exc.kind}).") from None
    except OSError as exc:
        raise ExportError(f"Cannot read '{p}': {exc.strerror or exc}.") from exc
    if head == b"PK":               # TorchScript files are zip archives
        return "torchscript"
    if p.suffix.lower() == ".onnx" or head[:1] == b"\x08":   # an ONNX protobuf starts with ir_version (field 1)
        return "onnx"
    return "unknown"


def _load_onnx(p: Path) -> ExportedModel:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ExportError("Running an ONNX export needs the 'onnxruntime' package (pip install onnxruntime).") from exc
    try:
        session = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        metadata = json.loads(meta["metadata.json"])
        classes = json.loads(meta["classes"])
    except Exception as exc:
        raise ExportError(f"'{p.name}' is not a model exported by DTL Studio.") from exc
    name = session.get_inputs()[0].name
    notice = check_payload(p, "onnx", metadata)

    def run(images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            images = images.unsqueeze(0)
        return torch.from_numpy(session.run(None, {name: images.to(torch.uint8).numpy()})[0])

    return ExportedModel(str(p), "onnx", classes, metadata, run, notice)


def loading_side(exported: ExportedModel) -> int | None:
    """The short side images are loaded at for ``exported``: the one its run's evaluation used.

    Photos are then draft-decoded (JPEG DCT scaling) and shrunk exactly as in training and
    evaluation (see :mod:`dtl_engine.data.model_input`); None (an export without
    preprocessing metadata) loads them whole.
    """
    settings = exported.metadata.get("preprocess") or {}
    return input_side(settings) if settings.get("scale_size") else None


@dataclass
class Prediction:
    """The result for one image: its ranked classes, or why it could not be read."""

    path: str
    top: list[tuple[str, float]] = field(default_factory=list)   # (class name, probability), best first
    error: str | None = None


def predict_each(export_path: str | os.PathLike[str], image_paths: list[str | os.PathLike[str]],
                 top_k: int = 3, on_notice: Callable[[str], None] | None = None) -> list[Prediction]:
    """Top-k classes for each image; an unreadable image gets its reason and the others still their results.

    An image the model answers with values that are not numbers gets that as its error, never a ranking.
    ``on_notice`` hears why the file's contents could not be checked (an export older than its checksum).

    Raises:
        ExportError: the export cannot be loaded.
    """
    if top_k < 1:
        raise ExportError("top_k must be at least 1.")
    exported = load_exported(export_path)
    if exported.notice and on_notice is not None:
        on_notice(exported.notice)
    k = min(top_k, len(exported.classes))
    side = loading_side(exported)
    results: list[Prediction] = []
    for path in image_paths:
        # One image at a time: images differ in size, and the export handles any size.
        try:
            pixels = load_pixels(path, side).unsqueeze(0)
        except DataError as exc:
            results.append(Prediction(str(path), error=str(exc)))
            continue
        try:
            probs = exported(pixels)[0]
        except NotFiniteError as exc:
            results.append(Prediction(str(path), error=str(exc)))
            continue
        values, indices = torch.topk(probs, k)
        results.append(Prediction(str(path), [(exported.classes[int(i)], float(v)) for v, i in zip(values, indices)]))
    return results


def predict(export_path: str | os.PathLike[str], image_paths: list[str | os.PathLike[str]],
            top_k: int = 3) -> list[list[tuple[str, float]]]:
    """Top-k (class name, probability) for each image, best first, using an exported file.

    Raises:
        ExportError: the export cannot be loaded.
        DataError: an image cannot be read (the sentence names the file and the reason).
    """
    results = predict_each(export_path, image_paths, top_k)
    for result in results:
        if result.error is not None:
            raise DataError(result.error)
    return [result.top for result in results]

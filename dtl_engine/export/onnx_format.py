"""ONNX export (optional: needs the 'onnx' package to write and 'onnxruntime' to verify and run).

The same scripted wrapper as the TorchScript export is converted with torch's TorchScript-based
ONNX exporter (opset 18), so the file also takes uint8 images of any size and returns
probabilities. The antialiased resize kernels have no built-in conversion; they map to ONNX
``Resize`` with ``antialias=1`` and the cubic coefficient PyTorch and PIL use (-0.5).
"""
from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.onnx import register_custom_op_symbolic

from dtl_engine.errors import ExportError
from dtl_engine.export.payload import PAYLOAD_KEY, onnx_digest
from dtl_engine.export.torchscript import build_scripted

OPSET = 18      # the first opset whose Resize can antialias
_registered = False


def onnx_available() -> bool:
    """True when both 'onnx' and 'onnxruntime' can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def require_onnx() -> None:
    """Raise a sentence naming what to install when ONNX export cannot run here."""
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"ONNX export needs the {' and '.join(repr(m) for m in missing)} package"
                          f"{'s' if len(missing) > 1 else ''} (pip install {' '.join(missing)}); "
                          f"the TorchScript format needs nothing extra.")


def _resize_symbolic(mode: str):
    def symbolic(g, input, output_size, align_corners, scale_h, scale_w):
        empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        batch_channels = g.op("Slice", g.op("Shape", input), g.op("Constant", value_t=torch.tensor([0])),
                              g.op("Constant", value_t=torch.tensor([2])))
        sizes = g.op("Concat", batch_channels, g.op("Cast", output_size, to_i=7), axis_i=0)  # 7 = int64
        out = g.op("Resize", input, empty, empty, sizes, mode_s=mode, antialias_i=1, cubic_coeff_a_f=-0.5,
                   coordinate_transformation_mode_s="half_pixel", exclude_outside_i=int(mode == "cubic"))
        out.setType(input.type())
        return out
    return symbolic


def _register_symbolics() -> None:
    global _registered
    if not _registered:
        register_custom_op_symbolic("aten::_upsample_bicubic2d_aa", _resize_symbolic("cubic"), OPSET)
        register_custom_op_symbolic("aten::_upsample_bilinear2d_aa", _resize_symbolic("linear"), OPSET)
        _registered = True


def write_onnx(model: torch.nn.Module, settings: dict[str, Any], classes: list[str],
               metadata: dict[str, Any], path: Path) -> None:
    """Write the ONNX file; class names and metadata go into its metadata_props."""
    import onnx


    _register_symbolics()
    scripted = build_scripted(model, settings, classes, metadata)
    height, width = settings["size"]
    example = torch.zeros(1, 3, height + 7, width + 5, dtype=torch.uint8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated but is the one that fits
            torch.onnx.export(scripted, (example,), str(path), dynamo=False, opset_version=OPSET,
                              input_names=["images"], output_names=["probabilities"],
                              dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                                            "probabilities": {0: "batch"}})
        proto = onnx.load(str(path))
        sealed = {**metadata, PAYLOAD_KEY: onnx_digest(proto)}
        for key, value in (("metadata.json", json.dumps(sealed)), ("classes", json.dumps(list(classes)))):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(path))
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"This model could not be converted to ONNX ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else 'no details'}).") from exc

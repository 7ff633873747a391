"""Self-check of an export: load it in a fresh Python process that imports only torch (or onnxruntime)
and compare its probabilities with the engine's on the same uint8 images."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ExportError

# Runs in the fresh process. It must not import timm or dtl_engine: the point is to prove
# the file stands on its own. It reports which of those ended up imported anyway.
_TORCHSCRIPT_CHECK = r"""
import json, sys
import torch
path, inputs, outputs = sys.argv[1:4]
extra = {"metadata.json": ""}
module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
module.eval()
images = torch.load(inputs, weights_only=True)
with torch.no_grad():
    probs = [module(x) for x in images]
torch.save(probs, outputs)
print(json.dumps({
    "classes": list(module.class_names()),
    "metadata": json.loads(extra["metadata.json"]),
    "metadata_method": json.loads(module.metadata_json()),
    "foreign": sorted(m for m in sys.modules if m.split(".")[0] in ("timm", "dtl_engine")),
}))
"""

_ONNX_CHECK = r"""
import json, sys
import numpy as np
import onnxruntime as ort
import torch
path, inputs, outputs = sys.argv[1:4]
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
name = session.get_inputs()[0].name
images = torch.load(inputs, weights_only=True)
probs = [torch.from_numpy(session.run(None, {name: x.numpy()})[0]) for x in images]
torch.save(probs, outputs)
print(json.dumps({
    "classes": json.loads(meta["classes"]),
    "metadata": json.loads(meta["metadata.json"]),
    "foreign": sorted(m for m in sys.modules if m.split(".")[0] in ("timm", "dtl_engine")),
}))
"""


def check_in_fresh_process(path: str | Path, fmt: str, images: list[torch.Tensor],
                           timeout: float = 600.0) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Run the export on ``images`` (uint8 batches) in a new interpreter; return its outputs and report."""
    code = _TORCHSCRIPT_CHECK if fmt == "torchscript" else _ONNX_CHECK
    with tempfile.TemporaryDirectory(prefix="dtl-export-check-") as tmp:
        inputs, outputs = Path(tmp) / "inputs.pt", Path(tmp) / "outputs.pt"
        torch.save([x.contiguous() for x in images], inputs)
        # cwd is the empty temp folder so nothing from the current project is importable by accident.
        done = subprocess.run([sys.executable, "-c", code, str(Path(path).resolve()), str(inputs), str(outputs)],
                              cwd=tmp, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ExportError(f"The exported file could not be run in a fresh Python process ({last}).")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        probs = torch.load(outputs, weights_only=True)
    return probs, report


def compare(reference: list[torch.Tensor], produced: list[torch.Tensor]) -> float:
    """Largest absolute difference between matching probability tensors."""
    if len(reference) != len(produced):
        raise ExportError("The exported file returned a different number of results than it was given.")
    worst = 0.0
    for ref, got in zip(reference, produced):
        if tuple(ref.shape) != tuple(got.shape):
            raise ExportError(f"The exported file returned shape {tuple(got.shape)} instead of {tuple(ref.shape)}.")
        worst = max(worst, float((ref.float() - got.float()).abs().max()))
    return worst

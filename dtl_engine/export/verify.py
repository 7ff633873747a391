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
path, inputs, outputs, report = sys.argv[1:5]
extra = {"metadata.json": ""}
module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
module.eval()
images = torch.load(inputs, weights_only=True)
with torch.no_grad():
    probs = [module(x) for x in images]
torch.save(probs, outputs)
with open(report, "w", encoding="utf-8") as fh:
    json.dump({
        "classes": list(module.class_names()),
        "metadata": json.loads(extra["metadata.json"]),
        "metadata_method": json.loads(module.metadata_json()),
        "foreign": sorted(m for m in sys.modules if m.split(".")[0] in ("timm", "dtl_engine")),
    }, fh)
"""

_ONNX_CHECK = r"""
import json, sys
import numpy as np
import onnxruntime as ort
import torch
path, inputs, outputs, report = sys.argv[1:5]
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
name = session.get_inputs()[0].name
images = torch.load(inputs, weights_only=True)
probs = [torch.from_numpy(session.run(None, {name: x.numpy()})[0]) for x in images]
torch.save(probs, outputs)
with open(report, "w", encoding="utf-8") as fh:
    json.dump({
        "classes": json.loads(meta["classes"]),
        "metadata": json.loads(meta["metadata.json"]),
        "foreign": sorted(m for m in sys.modules if m.split(".")[0] in ("timm", "dtl_engine")),
    }, fh)
"""


def check_in_fresh_process(path: str | Path, fmt: str, images: list[torch.Tensor],
                           timeout: float = 900.0) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Run the export on ``images`` (uint8 batches) in a new interpreter; return its outputs and report."""
    code = _TORCHSCRIPT_CHECK if fmt == "torchscript" else _ONNX_CHECK
    with tempfile.TemporaryDirectory(prefix="dtl-export-check-") as tmp:
        files = [str(Path(path).resolve())] + [str(Path(tmp) / name) for name in ("in.pt", "out.pt", "check.json")]
        torch.save([x.contiguous() for x in images], files[1])
        if _is_frozen():
            problem = _run_frozen(code, files, timeout)
        else:
            problem = _run_interpreter(code, files, tmp, timeout)
        if problem:
            raise ExportError(f"The exported file could not be run in a fresh Python process ({problem}).")
        report = json.loads(Path(files[3]).read_text(encoding="utf-8"))
        probs = torch.load(files[2], weights_only=True)
    if _is_frozen():
        # In a bundled app the child is started through this package, so only timm counts as foreign.
        report["foreign"] = [m for m in report["foreign"] if m.split(".")[0] == "timm"]
    return probs, report


def _is_frozen() -> bool:
    """True inside a bundled (PyInstaller) app."""
    return bool(getattr(sys, "frozen", False))


def _run_interpreter(code: str, files: list[str], cwd: str, timeout: float) -> str | None:
    # cwd is the empty temp folder so nothing from the current project is importable by accident.
    try:
        done = subprocess.run([sys.executable, "-c", code, *files], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"no answer after {timeout:.0f} s"
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    return None


def _run_frozen(code: str, files: list[str], timeout: float) -> str | None:
    # A bundled app has no Python interpreter to call: sys.executable is the app itself. A spawned
    # multiprocessing child (the app must call multiprocessing.freeze_support()) runs the same code.
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=_exec_check, args=(code, files), daemon=True)
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.kill()
        return f"no answer after {timeout:.0f} s"
    return None if child.exitcode == 0 else f"exit status {child.exitcode}"


def _exec_check(code: str, files: list[str]) -> None:
    sys.argv = ["check", *files]
    exec(compile(code, "<export-check>", "exec"), {"__name__": "__main__"})


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

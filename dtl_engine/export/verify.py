"""Self-check of an export: load it in a fresh Python process that imports only torch (or onnxruntime)
and compare its probabilities with the engine's on the same uint8 images."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
import multiprocessing

import torch

from dtl_engine.errors import ExportError

# Runs in the fresh process. It must not import timm or dtl_engine: the point is to prove
# the file stands on its own. It reports which of those ended up imported anyway.
# Each format defines run(x) (CPU, uint8 batch -> probabilities), on_device(name) -> (run, sync)
# and the report dict ``info``; the shared part below does the rest.
_TORCHSCRIPT_LOAD = r"""
import json, sys
import torch
path, inputs, outputs, report = sys.argv[1:5]
extra = {"metadata.json": ""}
module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
module.eval()
info = {
    "classes": list(module.class_names()),
    "metadata": json.loads(extra["metadata.json"]),
    "metadata_method": json.loads(module.metadata_json()),
}

def run(x):
    with torch.no_grad():
        return module(x)

def on_device(device):
    if device == "cpu":
        return run, lambda: None
    moved = torch.jit.load(path, map_location=device)
    moved.eval()
    sync = torch.cuda.synchronize if device == "cuda" else torch.mps.synchronize

    def run_there(x):
        with torch.no_grad():
            return moved(x.to(device))
    return run_there, sync
"""

_ONNX_LOAD = r"""
import json, sys
import numpy as np
import onnxruntime as ort
import torch
path, inputs, outputs, report = sys.argv[1:5]
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
name = session.get_inputs()[0].name
info = {"classes": json.loads(meta["classes"]), "metadata": json.loads(meta["metadata.json"])}

def run(x):
    return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

def on_device(device):
    if device == "cpu":
        return run, lambda: None
    wanted = {"cuda": "CUDAExecutionProvider", "mps": "CoreMLExecutionProvider"}[device]
    if wanted not in ort.get_available_providers():
        raise RuntimeError(f"onnxruntime here has no {wanted}")
    there = ort.InferenceSession(path, providers=[wanted])
    return (lambda x: there.run(None, {name: x.numpy()})[0]), (lambda: None)
"""

# Shared by both formats: the probabilities for the check, then the optional measurements
# asked for by a 5th argument (a JSON file of options).
_RUN_AND_MEASURE = r"""
def measure(options):
    import statistics, time
    out = {"device": options["device"], "eval_predictions": []}
    if options.get("eval"):
        out["eval_predictions"] = [int(run(x).argmax(dim=-1)[0])
                                   for x in torch.load(options["eval"], weights_only=True)]
    try:
        run_there, sync = on_device(options["device"])
        h, w = options["size"]
        gen = torch.Generator().manual_seed(0)
        single = torch.randint(0, 256, (1, 3, h, w), generator=gen, dtype=torch.uint8)
        batch = torch.randint(0, 256, (options["batch"], 3, h, w), generator=gen, dtype=torch.uint8)

        def timed(x):
            sync()
            start = time.perf_counter()
            run_there(x)
            sync()
            return time.perf_counter() - start

        for _ in range(3):
            timed(single)                       # warm-up: the first calls optimise and allocate
        out["single_s"] = statistics.median([timed(single) for _ in range(options["repeats"])])
        timed(batch)
        out["batch_s"] = statistics.median([timed(batch) for _ in range(max(3, options["repeats"] // 4))])
    except Exception as exc:                    # a device problem must not hide the other results
        out["latency_error"] = (f"{type(exc).__name__}: {exc}".splitlines() or ["unknown error"])[0]
    return out

images = torch.load(inputs, weights_only=True)
torch.save([run(x) for x in images], outputs)
if len(sys.argv) > 5:
    with open(sys.argv[5], encoding="utf-8") as fh:
        info.update(measure(json.load(fh)))
info["foreign"] = sorted(m for m in sys.modules if m.split(".")[0] in ("timm", "dtl_engine"))
with open(report, "w", encoding="utf-8") as fh:
    json.dump(info, fh)
"""

_TORCHSCRIPT_CHECK = _TORCHSCRIPT_LOAD + _RUN_AND_MEASURE
_ONNX_CHECK = _ONNX_LOAD + _RUN_AND_MEASURE

LATENCY_BATCH = 32


def measure_options(device: str, size: list[int], repeats: int, eval_images: list[torch.Tensor] | None
                    ) -> dict[str, Any]:
    """What the fresh process should measure: latency on ``device`` at the model's input ``size``
    (``repeats`` single-image calls, batches of 32), and top-1 on ``eval_images`` ((1, 3, H, W) uint8 each)."""
    return {"device": device, "size": [int(v) for v in size], "repeats": int(repeats), "batch": LATENCY_BATCH,
            "eval_images": list(eval_images or [])}


def check_in_fresh_process(path: str | Path, fmt: str, images: list[torch.Tensor],
                           timeout: float = 900.0, measure: dict[str, Any] | None = None
                           ) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Run the export on ``images`` (uint8 batches) in a new interpreter; return its outputs and report.

    With ``measure`` (see :func:`measure_options`) the report also holds ``eval_predictions``
    (top-1 index per evaluation image), ``single_s`` and ``batch_s`` (median seconds per call)
    or ``latency_error``, and ``device``.
    """
    code = _TORCHSCRIPT_CHECK if fmt == "torchscript" else _ONNX_CHECK
    with tempfile.TemporaryDirectory(prefix="dtl-export-check-") as tmp:
        files = [str(Path(path).resolve())] + [str(Path(tmp) / name) for name in ("in.pt", "out.pt", "check.json")]
        torch.save([x.contiguous() for x in images], files[1])
        if measure is not None:
            options = {k: v for k, v in measure.items() if k != "eval_images"}
            if measure.get("eval_images"):
                options["eval"] = str(Path(tmp) / "eval.pt")
                torch.save([x.contiguous() for x in measure["eval_images"]], options["eval"])
            files.append(str(Path(tmp) / "options.json"))
            Path(files[4]).write_text(json.dumps(options), encoding="utf-8")
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
    # The target is the built-in exec, so the child unpickles nothing of the engine: importing any of
    # it (dtl_engine.export's package loads the model code, hence timm) would spoil the proof.
    source = f"import sys\nsys.argv = ['check', *{files!r}]\n{code}"
    child = multiprocessing.get_context("spawn").Process(target=exec, args=(source, {"__name__": "__main__"}),
                                                         daemon=True)
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.kill()
        return f"no answer after {timeout:.0f} s"
    return None if child.exitcode == 0 else f"exit status {child.exitcode}"


def compare(reference: list[torch.Tensor], produced: list[torch.Tensor]) -> float:
    """Largest absolute difference between matching probability tensors."""
    if len(reference) != len(produced):
        raise ExportError("The exported file returned a different number of results than it was given.")
    worst = 0.0
    for ref, got in zip(reference, produced):
        if tuple(ref.shape) != tuple(got.shape):
            raise ExportError(f"The exported file returned shape {tuple(got.shape)} instead of {tuple(ref.shape)}.")
        if not (bool(torch.isfinite(ref).all()) and bool(torch.isfinite(got).all())):
            # NaN differs from nothing by a number: without this the check would pass a broken model
            raise ExportError("The model's probabilities are not numbers (NaN): its weights are damaged, e.g. "
                              "by a training that diverged; it was not saved.")
        worst = max(worst, float((ref.float() - got.float()).abs().max()))
    return worst

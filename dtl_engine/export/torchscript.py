"""TorchScript export: one file that needs only torch to load.

The model core is traced at its fixed input size (the DTL side network and the
backbone adapter use Python control flow that scripting cannot follow); a small
scripted wrapper around it takes uint8 images of any size, runs the shared
:func:`dtl_engine.data.preprocess.preprocess` and returns softmax probabilities.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, List

import torch
from torch import nn

from dtl_engine import fileio
from dtl_engine.errors import ExportError
from dtl_engine.data.preprocess import preprocess
from dtl_engine.export.common import printable_name
from dtl_engine.export.payload import PAYLOAD_KEY, torchscript_digest


class ExportedClassifier(nn.Module):
    """uint8 images (N, 3, H, W), any H and W -> class probabilities (N, C).

    Attribute types are inferred by TorchScript from the values set in ``__init__``
    (class-level annotations would be strings under postponed evaluation).
    """

    def __init__(self, core: nn.Module, settings: dict[str, Any], classes: list[str], metadata: dict[str, Any]):
        super().__init__()
        self.core = core
        self.size = [int(v) for v in settings["size"]]
        self.scale_size = [int(v) for v in settings["scale_size"]]
        self.squash = bool(settings["squash"])
        self.mean = [float(v) for v in settings["mean"]]
        self.std = [float(v) for v in settings["std"]]
        self.interpolation = str(settings["interpolation"])
        self.classes = [printable_name(str(c)) for c in classes]
        self.metadata_text = json.dumps(metadata)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = preprocess(images, self.size, self.scale_size, self.squash, self.mean, self.std, self.interpolation)
        return torch.softmax(self.core(x), dim=-1)

    @torch.jit.export
    def class_names(self) -> List[str]:
        """The class names, index = output column."""
        return self.classes

    @torch.jit.export
    def metadata_json(self) -> str:
        """Run metadata (backbone, method, rank, val_acc, date, input_size, engine_version...) as JSON."""
        return self.metadata_text


def build_scripted(model: nn.Module, settings: dict[str, Any], classes: list[str],
                   metadata: dict[str, Any]) -> torch.jit.ScriptModule:
    """Trace ``model`` (CPU, float32, eval) at its input size and script the wrapper around it."""
    height, width = settings["size"]
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, 3, height, width, generator=gen)
    other_batch = torch.randn(3, 3, height, width, generator=gen)
    with warnings.catch_warnings():
        # Tracer and deprecation warnings are expected here; correctness is checked by check_trace
        # and afterwards in a fresh process.
        warnings.simplefilter("ignore")
        try:
            with torch.no_grad():
                core = torch.jit.trace(model, example, check_trace=True, check_inputs=[(other_batch,)])
            return torch.jit.script(ExportedClassifier(core, settings, classes, metadata))
        except Exception as exc:  # tracing failures come in many types; the user gets one sentence
            raise ExportError(f"This model could not be converted to TorchScript ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no details'}).") from exc


SPACE_MARGIN = 16 * 2**20      # free bytes left over after the export, for everything else on the disk


def write_torchscript(model: nn.Module, settings: dict[str, Any], classes: list[str],
                      metadata: dict[str, Any], path: Path) -> None:
    """Write the TorchScript file with ``metadata.json`` embedded as an extra file.

    The archive is built in memory and written through a Python file object after a
    free-space check: torch's own file writer aborts the whole process on a full disk.
    """
    scripted = build_scripted(model, settings, classes, metadata)
    # saved twice: the digest of the first archive's payload goes into the second one's metadata
    digest = torchscript_digest(_archive(scripted, metadata))
    data = _archive(scripted, {**metadata, PAYLOAD_KEY: digest})
    if torchscript_digest(data) != digest:
        raise ExportError("The TorchScript archive came out different when written twice; it was not saved.")
    check_free_space(path.parent, len(data))
    with fileio.open_temp(path) as fh:          # the temporary the export reserved
        fileio.write_all(fh, data)
        fh.flush()
        os.fsync(fh.fileno())


def _archive(scripted: torch.jit.ScriptModule, metadata: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch marks TorchScript deprecated; it still is the torch-only format
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(scripted, buffer, _extra_files={"metadata.json": json.dumps(metadata, indent=2)})
    return buffer.getvalue()


def check_free_space(folder: Path, needed: int) -> None:
    """Refuse with a sentence when ``folder``'s disk cannot take ``needed`` bytes plus a margin."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return                       # unknown: the write itself will tell
    if free < needed + SPACE_MARGIN:
        raise ExportError(f"Not enough free disk space in '{folder}' for the export: it needs "
                          f"{(needed + SPACE_MARGIN) / 1e6:.0f} MB and {free / 1e6:.0f} MB are free.")

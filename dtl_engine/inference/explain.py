"""Why did the model decide this? A Grad-CAM heatmap over the image, written as a PNG overlay.

Grad-CAM is taken on the tokens of a tapped block, with gradients that run through the
trained side network and the classifier, so the map is class-specific and sees what DTL
trained. Attention rollout was the other candidate and is not used: it follows only the
frozen backbone's attention (blind to everything DTL trained, the same for every class),
and Swin's shifted windows have no global attention to roll out.

Which block is the more faithful differs per family (measured on a task where a small
coloured square at a random place decides the class; heatmap mass inside the square, as
a multiple of its area share, tiny random backbones):

* ViT: the last block, the tokens the classifier pools: 5.5× (block M: 2.9×);
* Swin: block M, the last block of the third stage (Swin-B at 224 px: 14×14 tokens):
  5.8× (the last block, on the coarse last stage: 2.8×).

:func:`explain_image` returns the heatmap for the app; :func:`explain_run`
writes the overlay PNG for the ``explain`` command.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from dtl_engine.errors import DataError, RunError
from dtl_engine.data.preprocess import _crop_start, _resized_size, preprocess, preprocess_settings
from dtl_engine.data.images import load_image
from dtl_engine.data.model_input import image_to_uint8
from dtl_engine.fileio import check_target, new_file
from dtl_engine.runs.folder import RunFolder
from dtl_engine.runs.listing import load_run_model
from dtl_engine.devices import select_device

OVERLAY_ALPHA = 0.5      # heatmap opacity over the photo
LAYERS = ("last", "inject")          # the last block, or block M (where side information is first added)
FAMILY_LAYER = {"vit": "last", "swin": "inject"}   # the more faithful one per family (see above)


@dataclass
class Explanation:
    """A heatmap for one image and the class it explains."""

    heatmap: np.ndarray            # float32 (H, W) in 0..1, same size as the original image
    class_index: int
    class_name: str
    probability: float             # the model's probability for that class
    predicted: str                 # the model's top-1 class

    def mass_inside(self, box: tuple[int, int, int, int]) -> float:
        """Share of the heatmap's total mass inside ``box`` = (top, left, bottom, right) in pixels."""
        top, left, bottom, right = box
        total = float(self.heatmap.sum())
        return float(self.heatmap[top:bottom, left:right].sum()) / total if total > 0 else 0.0


@contextlib.contextmanager
def _capture_pooled_tokens(model: Any) -> Iterator[list[torch.Tensor]]:
    """Record the tokens the model pools (the last block's output) during a forward pass."""
    adapter = model._adapter
    captured: list[torch.Tensor] = []
    original = adapter.pool

    def pool(x: torch.Tensor) -> torch.Tensor:
        captured.append(x)
        return original(x)

    adapter.pool = pool            # instance attribute shadows the method for this pass only
    try:
        yield captured
    finally:
        del adapter.pool


def grad_cam(model: Any, image: torch.Tensor, class_index: int | None = None,
             layer: str | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """Grad-CAM on a tapped block's tokens for one normalised image (1, 3, H, W).

    ``layer`` is "last" or "inject" (block M); None takes the family's more faithful one.

    Returns the patch-grid map (rows, cols) in 0..1 and the class probabilities (C,).
    Channel weights are the token-averaged gradients of the class logit; the map is
    ReLU(sum_c weight_c * token_c) per patch token.
    """
    model.eval()
    layer = layer or FAMILY_LAYER.get(model.spec.family, "last")
    if layer not in LAYERS:
        raise RunError(f"The heatmap layer must be one of {', '.join(LAYERS)}, not '{layer}'.")
    if layer == "inject" and model.side_network is not None:
        # block M's raw output, from which autograd runs through the side network and the rest
        prefix = model.forward_prefix(image)
        tokens = prefix["block_out"].detach().float().requires_grad_(True)
        with torch.enable_grad():
            logits = model.forward_from_prefix(dict(prefix, block_out=tokens.to(prefix["block_out"].dtype)))
            probs = logits.detach().float().softmax(dim=-1)[0]
            class_index = int(probs.argmax()) if class_index is None else class_index
            (grad,) = torch.autograd.grad(logits[0, class_index], tokens)
        rows, cols = prefix["grid"][0]
        grid: tuple[int, int] | None = (int(rows), int(cols))
    else:
        with torch.no_grad(), _capture_pooled_tokens(model) as captured:
            logits = model(image)
        probs = logits.float().softmax(dim=-1)[0]
        if class_index is None:
            class_index = int(probs.argmax())
        tokens = captured[-1].detach().float().requires_grad_(True)
        with torch.enable_grad():
            logit = model.head(model._adapter.pool(tokens).to(model.head.weight.dtype))[0, class_index]
            (grad,) = torch.autograd.grad(logit, tokens)
        grid = None
    patches, grads = _patch_tokens(model, tokens.detach(), grad, grid)    # (rows, cols, C) each
    weights = grads.mean(dim=(0, 1))
    cam = torch.relu((patches * weights).sum(dim=-1))
    peak = float(cam.max())
    cam = cam / peak if peak > 0 else cam
    return cam.cpu().numpy().astype(np.float32), probs.cpu()


def _patch_tokens(model: Any, tokens: torch.Tensor, grad: torch.Tensor, grid: tuple[int, int] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay the patch tokens (and their gradients) out on the grid: (rows, cols, C)."""
    if tokens.ndim == 4:                       # Swin: already (1, H, W, C)
        return tokens[0], grad[0]
    prefix = int(getattr(model._adapter, "num_prefix_tokens", 0))
    n = tokens.shape[1] - prefix
    rows, cols = grid or model._adapter.patch_grid(tuple(model.spec.image_size))
    if rows * cols != n:
        raise RunError(f"The model's {n} patch tokens do not form its {rows}×{cols} grid.")
    return tokens[0, prefix:].reshape(rows, cols, -1), grad[0, prefix:].reshape(rows, cols, -1)


def _crop_box(height: int, width: int, settings: dict[str, Any]) -> tuple[float, float, float, float]:
    """Which part of the original image the model saw: (top, left, bottom, right) in original pixels."""
    rh, rw = _resized_size(height, width, settings["scale_size"], settings["squash"])
    size_h, size_w = settings["size"]
    top = _crop_start(rh - size_h) if rh >= size_h else -((size_h - rh) // 2)
    left = _crop_start(rw - size_w) if rw >= size_w else -((size_w - rw) // 2)
    sy, sx = height / rh, width / rw
    return top * sy, left * sx, (top + size_h) * sy, (left + size_w) * sx


def _to_image_space(cam: np.ndarray, height: int, width: int, settings: dict[str, Any]) -> np.ndarray:
    """Stretch the patch-grid map over the region of the original image the model saw (zero elsewhere)."""
    top, left, bottom, right = _crop_box(height, width, settings)
    grid = torch.from_numpy(cam)[None, None]
    box_h, box_w = max(round(bottom - top), 1), max(round(right - left), 1)
    region = torch.nn.functional.interpolate(grid, size=(box_h, box_w), mode="bilinear", align_corners=False)[0, 0]
    out = torch.zeros(height, width)
    y0, x0 = round(top), round(left)
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + box_h, height), min(x0 + box_w, width)
    out[ys:ye, xs:xe] = region[ys - y0:ye - y0, xs - x0:xe - x0]
    return out.clamp(min=0).numpy().astype(np.float32)


def explain_image(model: Any, classes: list[str], image_path: str | os.PathLike[str],
                  class_name: str | None = None, layer: str | None = None) -> Explanation:
    """Grad-CAM heatmap of ``model`` (a DTLModel) for one image file, at the image's own size.

    ``class_name`` picks the class to explain (default: the predicted one); ``layer`` overrides
    the family's block ("last" or "inject").

    Raises:
        DataError: the image cannot be read or the class is unknown.
    """
    pixels = image_to_uint8(load_image(image_path))
    settings = preprocess_settings(model.data_config)
    param = next(model.parameters())
    x = preprocess(pixels.unsqueeze(0).to(param.device), **settings).to(param.dtype)
    index = None
    if class_name is not None:
        if class_name not in classes:
            raise DataError(f"'{class_name}' is not one of the model's classes ({', '.join(classes)}).")
        index = classes.index(class_name)
    cam, probs = grad_cam(model, x, index, layer)
    index = int(probs.argmax()) if index is None else index
    heat = _to_image_space(cam, int(pixels.shape[1]), int(pixels.shape[2]), settings)
    return Explanation(heat, index, classes[index], float(probs[index]), classes[int(probs.argmax())])


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """0..1 heatmap -> RGB uint8 with a blue-green-yellow-red ramp (no plotting library needed)."""
    stops = np.array([[0, 0, 128], [0, 90, 255], [0, 220, 160], [255, 230, 0], [255, 40, 0]], dtype=np.float32)
    pos = np.clip(heatmap, 0, 1) * (len(stops) - 1)
    low = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = (pos - low)[..., None]
    return (stops[low] * (1 - frac) + stops[low + 1] * frac).round().astype(np.uint8)


def overlay(image_path: str | os.PathLike[str], heatmap: np.ndarray, alpha: float = OVERLAY_ALPHA):
    """The photo with the coloured heatmap blended over it (a PIL image; stronger where the map is hot)."""
    photo = np.asarray(load_image(image_path).convert("RGB"), dtype=np.float32)
    weight = (alpha * np.clip(heatmap, 0, 1) ** 0.5)[..., None]
    blended = photo * (1 - weight) + colorize(heatmap).astype(np.float32) * weight
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8), "RGB")


def explain_run(run_dir: str | os.PathLike[str], image_path: str | os.PathLike[str],
                out_path: str | os.PathLike[str], *, class_name: str | None = None, overwrite: bool = False,
                device: str = "cpu") -> Explanation:
    """Write ``out_path`` (PNG): ``image_path`` with the heatmap of the run's best model laid over it.

    Raises:
        RunError: ``out_path`` exists (and ``overwrite`` is off), is a folder, or lies in the run's image folder.
        DataError: the image cannot be read.
    """
    # the one write guard: not into the images, not into a run folder, never onto a device or a folder
    out = check_target(out_path, overwrite=overwrite, data_dirs=[RunFolder(run_dir).data_folder()], error=RunError)
    dev, _ = select_device(device)
    model, classes = load_run_model(run_dir, which="best", device=dev)
    result = explain_image(model, classes, image_path, class_name)
    picture = overlay(image_path, result.heatmap)
    try:
        with new_file(out, overwrite) as tmp:
            picture.save(tmp, format="PNG")
    except FileExistsError:     # without overwrite, a file made there meanwhile is never replaced
        raise RunError(f"'{out}' already exists; choose another name or pass --overwrite.") from None
    return result

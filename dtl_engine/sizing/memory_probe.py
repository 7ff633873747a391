"""Training-memory probe: how many bytes one training step needs, measured rather than guessed.

The activation part is what autograd keeps for the backward pass, counted with
``torch.autograd.graph.saved_tensors_hooks`` (one count per storage, parameters excluded: a frozen
weight saved for backward is no extra memory). The forward runs on *fake* CPU tensors
(``FakeTensorMode``): shapes, dtypes, the CPU attention kernel choice and autocast rules are the
real ones, but nothing is computed, so ViT-B/16 at batch 32 takes well under a second — fast
enough for a slider. Parameters, gradients (trainable only) and AdamW state (2 × trainable) are
added from the parameter list. Every estimate also covers full fine-tuning of the same backbone.
"""
from __future__ import annotations

import json
import threading
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any, Iterable, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch._subclasses.fake_tensor import FakeTensorMode
import timm

from dtl_engine.errors import DTLError, RunError
from dtl_engine.formatting import format_bytes  # re-exported: the CLI and benchmark import it from here
from dtl_engine.model.half_weights import cast_frozen_weights
from dtl_engine.registry import FROZEN_BACKBONE_METHODS, METHOD_NAMES, PEER_METHODS
from dtl_engine.model.adapters import resolve_family
from dtl_engine.model.dtl import build_model, check_image_size

METHODS = METHOD_NAMES + PEER_METHODS   # the product's methods and the peers it is compared with
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
LORA_RANK = 8
LORA_TARGETS = ["qkv"]  # timm ViT / Swin fuse q, k, v into one Linear called 'qkv'


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes one training step holds, by kind. ``total_bytes`` is their sum.

    ``cuda_peak_bytes`` is ``torch.cuda.max_memory_allocated`` of a real step when it was asked for
    and a CUDA device exists, else ``None``.
    """

    activation_bytes: int
    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    total_bytes: int
    trainable_params: int = 0
    total_params: int = 0
    cuda_peak_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MemoryEstimate:
    """The chosen method's breakdown next to full fine-tuning's, for the same backbone and batch."""

    method: MemoryBreakdown
    full: MemoryBreakdown
    method_name: str = "dtl"
    backbone: str = ""
    batch_size: int = 0
    image_size: tuple[int, int] = (0, 0)
    precision: str = "fp32"
    half_frozen_weights: bool = False

    @property
    def total_ratio(self) -> float:
        """Method total / full fine-tuning total (the figure to show next to the slider)."""
        return self.method.total_bytes / max(self.full.total_bytes, 1)

    @property
    def activation_ratio(self) -> float:
        """Method activation bytes / full fine-tuning activation bytes."""
        return self.method.activation_bytes / max(self.full.activation_bytes, 1)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method.to_dict(), "full": self.full.to_dict(), "method_name": self.method_name,
                "backbone": self.backbone, "batch_size": self.batch_size, "image_size": list(self.image_size),
                "precision": self.precision, "half_frozen_weights": self.half_frozen_weights}


# --- counting what autograd saves ------------------------------------------------------

def _storage_key(t: torch.Tensor) -> int:
    # the StorageImpl address: unique per live storage, works for real, meta and fake tensors alike
    return t.untyped_storage()._cdata


class SavedTensorCounter:
    """Context manager adding up the bytes autograd saves for backward, once per storage.

    Storages of ``exclude`` (the model's parameters and buffers) are not counted.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._excluded = {_storage_key(t) for t in exclude}
        self._seen: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in self._excluded and key not in self._seen:
            self._seen[key] = t.untyped_storage().nbytes()
        return t

    @property
    def bytes(self) -> int:
        """Bytes counted so far."""
        return sum(self._seen.values())

    @property
    def count(self) -> int:
        """Distinct storages counted so far."""
        return len(self._seen)

    def __enter__(self) -> "SavedTensorCounter":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


def model_state_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Parameters and buffers: tensors a step holds anyway, never counted as activations."""
    return [*model.parameters(), *model.buffers()]


def autocast_context(device: torch.device | str, precision: str):
    """``torch.autocast`` for 'bf16' / 'fp16', a no-op context for 'fp32'."""
    dtype = PRECISIONS[precision]
    dev = torch.device(device)
    return torch.autocast(dev.type, dtype=dtype) if dtype is not None else nullcontext()


# --- the models compared ---------------------------------------------------------------

def _timm_kwargs(backbone: str, num_classes: int, image_size: int | tuple[int, int] | None,
                 model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    kw = dict(model_kwargs or {})
    kw["num_classes"] = num_classes
    if image_size is not None:
        kw["img_size"] = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)

    if resolve_family(backbone) == "vit":
        # the same head as DTL: mean of the patch tokens, then the final norm, then the classifier
        kw.setdefault("global_pool", "avg")
    return kw


def build_full_model(backbone: str, num_classes: int, image_size: int | tuple[int, int] | None = None,
                     model_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """The full fine-tuning peer: the whole timm model (random weights) trainable, DTL's pooling and head."""
    model = timm.create_model(backbone, pretrained=False, **_timm_kwargs(backbone, num_classes, image_size,
                                                                         model_kwargs))
    check_image_size(backbone, model)          # the same sentence as for a DTL model, not timm's assertion
    model.requires_grad_(True)
    return model


def build_lora_model(backbone: str, num_classes: int, image_size: int | tuple[int, int] | None = None,
                     model_kwargs: dict[str, Any] | None = None, rank: int = LORA_RANK) -> nn.Module:
    """The LoRA peer, built by peft: rank-``rank`` LoRA on the attention ``qkv`` projections + a new head."""
    try:
        import peft
    except ImportError as exc:
        raise RunError("The LoRA comparison needs the 'peft' package; install it with: pip install peft") from exc
    model = build_full_model(backbone, num_classes, image_size, model_kwargs)
    config = peft.LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=list(LORA_TARGETS),
                             modules_to_save=["head"])
    return peft.get_peft_model(model, config)


def build_method_model(method: str, backbone: str, num_classes: int = 10,
                       image_size: int | tuple[int, int] | None = None, rank: int | None = None,
                       checkpoint_blocks: bool = False, low_precision_taps: bool = False,
                       model_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """A random-weight model for ``method`` ('dtl', 'dtl+', 'linear', 'full' or 'lora')."""
    _check_method(method)
    if method == "full":
        return build_full_model(backbone, num_classes, image_size, model_kwargs)
    if method == "lora":
        return build_lora_model(backbone, num_classes, image_size, model_kwargs,
                                rank=LORA_RANK if rank is None else rank)

    return build_model(backbone, num_classes, weights="random", rank=rank, variant=method, image_size=image_size,
                       checkpoint_blocks=checkpoint_blocks, low_precision_taps=low_precision_taps,
                       model_kwargs=model_kwargs)


def input_hw(model: nn.Module) -> tuple[int, int]:
    """The input (H, W) the model expects (its data config, which reflects ``image_size``)."""
    config = getattr(model, "data_config", None)
    if config is not None:
        _, h, w = config["input_size"]
        return int(h), int(w)
    base = cast(Any, model).get_base_model() if hasattr(model, "get_base_model") else model    # a peft model
    size = getattr(getattr(base, "patch_embed", None), "img_size", None)
    if size is not None:  # the size the model was built for (img_size=...), not its pretrained default
        h, w = (size, size) if isinstance(size, int) else size
        return int(h), int(w)

    _, h, w = timm.data.resolve_model_data_config(base)["input_size"]
    return int(h), int(w)


# --- fake models (no storage, no compute) --------------------------------------------------

_FAKE_MODE: Any = None
_LOCK = threading.Lock()


def _fake_mode():
    global _FAKE_MODE
    if _FAKE_MODE is None:
        _FAKE_MODE = FakeTensorMode()
    return _FAKE_MODE


def _to_fake(model: nn.Module) -> nn.Module:
    """Swap every parameter and buffer for a storage-less CPU tensor of the same shape and dtype."""
    with _fake_mode():
        for module in model.modules():
            for name, p in list(module._parameters.items()):
                if p is not None:
                    module._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype),
                                                            requires_grad=p.requires_grad)
            for name, b in list(module._buffers.items()):
                if b is not None:
                    module._buffers[name] = torch.zeros(b.shape, dtype=b.dtype)
    return model


@lru_cache(maxsize=12)
def _cached_model(method: str, backbone: str, num_classes: int, image_size: Any, rank: int | None,
                  checkpoint_blocks: bool, low_precision_taps: bool, kwargs_json: str,
                  frozen_half: str | None = None) -> nn.Module:
    model_kwargs = json.loads(kwargs_json)
    try:
        # built on the meta device: no memory, no initialisation cost
        with torch.device("meta"):
            model = build_method_model(method, backbone, num_classes, image_size, rank, checkpoint_blocks,
                                       low_precision_taps, model_kwargs)
    except DTLError:
        raise
    except Exception:  # a builder that needs real values: pay for a real build once
        model = build_method_model(method, backbone, num_classes, image_size, rank, checkpoint_blocks,
                                   low_precision_taps, model_kwargs)
    cast_frozen_weights(model, frozen_half)
    model.train()
    return _to_fake(model)


def _param_bytes(model: nn.Module) -> tuple[int, int, int, int]:
    params = list(model.parameters())
    total = sum(p.numel() * p.element_size() for p in params)
    trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    return total, trainable, sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def breakdown(model: nn.Module, activation_bytes: int, cuda_peak_bytes: int | None = None) -> MemoryBreakdown:
    """Add parameter, gradient and AdamW bytes (2 states per trainable value) to measured activations."""
    param_b, trainable_b, n_trainable, n_total = _param_bytes(model)
    total = activation_bytes + param_b + trainable_b + 2 * trainable_b
    return MemoryBreakdown(activation_bytes=int(activation_bytes), param_bytes=param_b, grad_bytes=trainable_b,
                           optimizer_bytes=2 * trainable_b, total_bytes=total, trainable_params=n_trainable,
                           total_params=n_total, cuda_peak_bytes=cuda_peak_bytes)


def measure_activation_bytes(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                             precision: str = "fp32") -> int:
    """Bytes autograd saves in one training forward (model + cross-entropy) on these tensors."""
    with SavedTensorCounter(model_state_tensors(model)) as counter, autocast_context(images.device, precision):
        loss = F.cross_entropy(model(images), labels)
    del loss
    return counter.bytes


def _cpu_norm_stats_mode():
    """Correct the one known shape-only mismatch: the CPU LayerNorm kernel keeps the per-token
    mean / rstd it saves for backward in fp32 for bf16 / fp16 inputs; the fake kernel says half."""
    layer_norm = torch.ops.aten.native_layer_norm.default

    class _CpuNormStats(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is layer_norm and out[1].dtype in (torch.bfloat16, torch.float16):
                return out[0], out[1].float(), out[2].float()
            return out

    return _CpuNormStats()


def _fake_activation_bytes(model: nn.Module, batch_size: int, hw: tuple[int, int], precision: str) -> int:
    with _fake_mode(), _cpu_norm_stats_mode():
        images = torch.empty(batch_size, 3, *hw)
        labels = torch.zeros(batch_size, dtype=torch.long)
        return measure_activation_bytes(model, images, labels, precision)


@lru_cache(maxsize=256)
def _cached_breakdown(key: tuple[Any, ...], batch_size: int, precision: str) -> MemoryBreakdown:
    # a slider going back and forth over the same values costs nothing after the first pass
    model = _cached_model(*key)
    return breakdown(model, _fake_activation_bytes(model, batch_size, input_hw(model), precision))


# --- public entry point -----------------------------------------------------------------

def _check_method(method: str) -> None:
    if method not in METHODS:
        raise RunError(f"The method must be one of {', '.join(METHODS)}, not '{method}'.")


def _resolve_precision(precision: str) -> str:
    if precision == "auto":  # what training picks: bf16 on CUDA, fp32 on the CPU
        return "bf16" if torch.cuda.is_available() else "fp32"
    if precision not in PRECISIONS:
        raise RunError(f"The precision must be one of auto, {', '.join(PRECISIONS)}, not '{precision}'.")
    return precision


def estimate_memory(backbone: str, batch_size: int, image_size: int | tuple[int, int] | None = None,
                    method: str = "dtl", rank: int | None = None, checkpoint_blocks: bool = False,
                    low_precision_taps: bool = False, precision: str = "fp32", num_classes: int = 10,
                    model_kwargs: dict[str, Any] | None = None, measure_cuda: bool = False,
                    half_frozen_weights: bool = True) -> MemoryEstimate:
    """Measure the training-step memory of ``method`` and of full fine-tuning on ``backbone``.

    Activations are what autograd saves for backward in a forward pass on fake tensors (exact for the
    CPU kernels and autocast rules; CUDA attention kernels may save slightly different extras).
    ``precision`` 'bf16' / 'fp16' runs that forward under autocast. Models are cached per setting, so
    repeated calls (a batch-size slider) cost one fake forward each.
    With ``measure_cuda`` and a CUDA device, each breakdown also gets ``cuda_peak_bytes`` from a real step.
    ``half_frozen_weights`` (the default, as in training) stores a frozen backbone's Linear / Conv weights
    in the autocast dtype under 'bf16' / 'fp16'; it has no effect in fp32 and on full fine-tuning.

    Raises:
        BackboneError: unknown or unsupported backbone.
        RunError: a bad batch size, method or precision.
    """
    _check_method(method)
    if int(batch_size) < 1:
        raise RunError("The batch size must be at least 1.")
    precision = _resolve_precision(precision)
    if isinstance(image_size, list):
        image_size = tuple(image_size)
    sides = (image_size,) if isinstance(image_size, int) else (image_size or ())
    if image_size is not None and (len(sides) not in (1, 2) or not all(isinstance(v, int) and v > 0 for v in sides)):
        raise RunError(f"The image size must be a positive number of pixels (or a height, width pair), "
                       f"not {image_size!r}.")
    kwargs_json = json.dumps(model_kwargs or {}, sort_keys=True)
    results: dict[str, MemoryBreakdown] = {}
    half = bool(half_frozen_weights) and precision in ("bf16", "fp16")
    with _LOCK:  # one fake forward at a time (GUI threads)
        for name in dict.fromkeys([method, "full"]):
            savers = name in ("dtl", "dtl+")
            frozen_half = precision if half and name in FROZEN_BACKBONE_METHODS else None
            key = (name, backbone, int(num_classes), image_size, None if name == "full" else rank,
                   bool(checkpoint_blocks and savers), bool(low_precision_taps and savers), kwargs_json, frozen_half)
            result = _cached_breakdown(key, int(batch_size), precision)
            if measure_cuda and torch.cuda.is_available():
                peak = cuda_step_peak_bytes(name, backbone, int(batch_size), image_size, rank,
                                            checkpoint_blocks and savers, low_precision_taps and savers,
                                            precision, int(num_classes), model_kwargs, frozen_half is not None)
                result = replace(result, cuda_peak_bytes=peak)
            results[name] = result
        # the same arguments as the "full" key above: a cache hit, never a second build outside the lock
        hw = input_hw(_cached_model("full", backbone, int(num_classes), image_size, None, False, False, kwargs_json,
                                    None))
    return MemoryEstimate(method=results[method], full=results["full"], method_name=method, backbone=backbone,
                          batch_size=int(batch_size), image_size=hw, precision=precision,
                          half_frozen_weights=half and method in FROZEN_BACKBONE_METHODS)


def cuda_step_peak_bytes(method: str, backbone: str, batch_size: int, image_size: Any = None,
                         rank: int | None = None, checkpoint_blocks: bool = False, low_precision_taps: bool = False,
                         precision: str = "fp32", num_classes: int = 10,
                         model_kwargs: dict[str, Any] | None = None, half_frozen_weights: bool = False) -> int:
    """``torch.cuda.max_memory_allocated`` over one real AdamW training step on random data."""
    device = torch.device("cuda")
    torch.cuda.empty_cache()
    model = build_method_model(method, backbone, num_classes, image_size, rank, checkpoint_blocks,
                               low_precision_taps, model_kwargs).to(device).train()
    if half_frozen_weights:
        cast_frozen_weights(model, precision)
    images = torch.randn(batch_size, 3, *input_hw(model), device=device)
    labels = torch.randint(0, num_classes, (batch_size,), device=device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    with autocast_context(device, precision):
        loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    peak = int(torch.cuda.max_memory_allocated(device))
    del model, optimizer, images, labels, loss
    torch.cuda.empty_cache()
    return peak


__all__ = ["MemoryBreakdown", "MemoryEstimate", "SavedTensorCounter", "estimate_memory", "breakdown",
           "build_method_model", "build_full_model", "build_lora_model", "measure_activation_bytes",
           "cuda_step_peak_bytes", "format_bytes", "input_hw", "autocast_context", "model_state_tensors"]

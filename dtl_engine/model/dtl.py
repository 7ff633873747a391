"""DTL model: a frozen timm backbone, the Compact Side Network, and a new linear classifier.

The forward pass is split in two so a trainer can cache the frozen part:

* :meth:`DTLModel.forward_prefix` runs the embedding and blocks 0…M under ``torch.no_grad`` and returns
  the tap inputs x_tap_from … x_M and the raw block output f_M(x_M) (batch-first tensors);
* :meth:`DTLModel.forward_from_prefix` adds the side network and runs blocks M+1…N-1 with autograd.

``model(images) == model.forward_from_prefix(model.forward_prefix(images))``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
import timm

from dtl_engine.model.adapters import FAMILY_DEFAULTS, BackboneAdapter, check_adaptable, make_adapter, resolve_family
from dtl_engine.errors import BackboneError, DataError, RunError
from dtl_engine.model.side_network import CompactSideNetwork
from dtl_engine.model.weights import create_backbone
from dtl_engine.registry import METHOD_NAMES

VARIANTS = METHOD_NAMES                # the model builds every method of the registry


@dataclass
class ModelSpec:
    """Every resolved setting needed to rebuild the same model (stored with runs and exports)."""

    backbone: str
    num_classes: int
    variant: str = "dtl"
    family: str = "vit"
    rank: int | None = None
    tap_from: int | None = None
    inject_from: int | None = None
    beta: float = 100.0
    fusion_kernel: int | None = None
    image_size: tuple[int, int] = (224, 224)
    drop_path: float = 0.0
    depth: int = 0
    weights: str = "hub"
    checkpoint_blocks: bool = False
    low_precision_taps: bool = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data_overrides: dict[str, Any] = field(default_factory=dict)   # resize / normalisation of a recipe

    @property
    def exact(self) -> bool:
        """False when a memory saver changes the numbers (bf16 tap inputs)."""
        return not self.low_precision_taps

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_size"] = list(self.image_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "image_size" in values:
            values["image_size"] = tuple(int(v) for v in values["image_size"])
        if "model_kwargs" in values:  # JSON turns tuples (depths, num_heads...) into lists
            values["model_kwargs"] = {k: tuple(v) if isinstance(v, list) else v
                                      for k, v in (values["model_kwargs"] or {}).items()}
        return cls(**values)


class DTLModel(nn.Module):
    """Frozen backbone + :class:`CompactSideNetwork` (``None`` for the linear probe) + ``head``."""

    def __init__(self, backbone: nn.Module, adapter: BackboneAdapter, side_network: CompactSideNetwork | None,
                 head: nn.Linear, spec: ModelSpec, data_config: dict[str, Any]) -> None:
        super().__init__()
        self.backbone = backbone
        self.side_network = side_network
        self.head = head
        self.spec = spec
        self.data_config = data_config
        self._adapter = adapter
        self._blocks = adapter.blocks
        self._stages = adapter.block_stages
        self.backbone.requires_grad_(False)
        self.train(True)  # like any nn.Module; the backbone stays in eval mode (see train())

    # --- modes -------------------------------------------------------------
    def train(self, mode: bool = True) -> "DTLModel":
        """Side network and head follow ``mode``; the frozen backbone stays in eval mode unless
        drop-path is on (stochastic depth needs train mode in the frozen blocks)."""
        super().train(mode)
        self.backbone.train(mode and self.spec.drop_path > 0)
        return self

    # --- forward -------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) for normalised images (N, 3, H, W)."""
        prefix, grid = self._prefix(images)
        return self._from_prefix(prefix, grid)

    def forward_prefix(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The frozen part (embedding + blocks 0…M) without autograd; every tensor is batch-first.

        Keys: ``tap.<i>`` (input of tap block i, i = tap_from…M), ``block_out`` (f_M(x_M)) and
        ``grid`` (patch grid rows, cols, per sample); for the linear probe only ``features``.
        """
        prefix, grid = self._prefix(images)
        if self.side_network is not None:
            n = images.shape[0]
            prefix["grid"] = torch.tensor(grid, dtype=torch.long, device=images.device).repeat(n, 1)
        return prefix

    def forward_from_prefix(self, prefix: dict[str, torch.Tensor]) -> torch.Tensor:
        """Continue from :meth:`forward_prefix` output (possibly cached and re-batched) to logits."""
        grid = (0, 0)
        if "grid" in prefix:
            g = prefix["grid"][0]
            grid = (int(g[0]), int(g[1]))
        return self._from_prefix(prefix, grid)

    def _prefix(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], tuple[int, int]]:
        adapter, spec = self._adapter, self.spec
        if not torch.jit.is_tracing():
            self._check_images(images)
        with torch.no_grad():
            x, grid = adapter.embed(images)
            if self.side_network is None:
                for i, blk in enumerate(self._blocks):
                    x = blk(adapter.enter_block(i, x))
                return {"features": adapter.pool(x)}, grid
            assert spec.inject_from is not None and spec.tap_from is not None   # set with a side network
            out: dict[str, torch.Tensor] = {}
            for i in range(spec.inject_from + 1):
                x = adapter.enter_block(i, x)
                if i >= spec.tap_from:
                    out[f"tap.{i}"] = x.to(torch.bfloat16) if spec.low_precision_taps else x
                x = self._blocks[i](x)
            out["block_out"] = x
        return out, grid

    def _check_images(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"The model takes a batch of RGB images (N, 3, H, W), not a tensor of shape "
                            f"{tuple(images.shape)}.")
        size = (int(images.shape[-2]), int(images.shape[-1]))
        if not getattr(self.backbone, "dynamic_img_size", False) and size != tuple(self.spec.image_size):
            h, w = self.spec.image_size
            raise DataError(f"This model was built for {h}×{w} px images, not {size[0]}×{size[1]}; "
                            "resize the images or rebuild the model with that image size.")

    def _from_prefix(self, prefix: dict[str, torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        side, adapter, spec = self.side_network, self._adapter, self.spec
        prefix = self._match_dtype(prefix)
        if side is None:
            return self.head(prefix["features"])
        assert spec.inject_from is not None and spec.tap_from is not None   # set with a side network
        m = spec.inject_from
        # the side state restarts at each stage start (Swin: the width changes there), so only the taps
        # from the last restart up to block M reach the first injection
        start = max(i for i in range(spec.tap_from, m + 1) if i == spec.tap_from or adapter.starts_stage(i))
        codes = [(i, side.code(i, prefix[f"tap.{i}"])) for i in range(start, m + 1)]
        g = side.gate(codes)                                                        # g = β·h
        x = side.inject(prefix["block_out"], g, self._stages[m], adapter.on_grid, grid)
        for i in range(m + 1, len(self._blocks)):
            x = adapter.enter_block(i, x)
            codes = [*([] if adapter.starts_stage(i) else codes), (i, side.code(i, x))]
            g = side.gate(codes)
            x = self._run_block(i, x)
            x = side.inject(x, g, self._stages[i], adapter.on_grid, grid)
        return self.head(adapter.pool(x))

    def _match_dtype(self, prefix: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A prefix made under autocast (or with bf16 taps) continues in full precision when autocast is off."""
        ref = self.head.weight
        if torch.is_autocast_enabled(ref.device.type):
            return prefix
        return {k: v.to(ref.dtype) if v.is_floating_point() and v.dtype != ref.dtype else v
                for k, v in prefix.items()}

    def _run_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        blk = self._blocks[index]
        if self.spec.checkpoint_blocks and torch.is_grad_enabled() and x.requires_grad:
            # recompute the frozen block in backward instead of storing its activations (exact)
            return checkpoint(blk, x, use_reentrant=False)
        return blk(x)

    # --- trainable state -----------------------------------------------------
    def _is_trainable_key(self, key: str) -> bool:
        return key.startswith("side_network.") or key.startswith("head.")

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the side network (taps, DTL+ convs) and the classifier, detached."""
        return {k: v.detach() for k, v in self.state_dict().items() if self._is_trainable_key(k)}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`trainable_state_dict` produced; raises :class:`RunError` when it does not fit."""
        own = self.trainable_state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong = sorted(k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape))
        if missing or unexpected or wrong:
            detail = (missing and f"missing {missing[0]}") or (unexpected and f"unexpected {unexpected[0]}") \
                or f"shape of {wrong[0]}"
            raise RunError(f"The saved weights do not fit this model ({detail}); were they saved for other settings?")
        self.load_state_dict(state, strict=False)

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        params = list(self.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def summary(self) -> str:
        """One printable line: method, backbone and the (trainable, total) parameter counts."""
        trainable, total = self.parameter_counts()
        spec = self.spec
        side = "" if spec.variant == "linear" else \
            f", rank {spec.rank}, taps {spec.tap_from}…{spec.depth - 1}, side information from block {spec.inject_from}"
        return (f"{spec.variant.upper()} on {spec.backbone}{side}: {trainable:,} trainable of {total:,} parameters "
                f"({100.0 * trainable / max(total, 1):.2f} %)")


def _built_size(net: nn.Module) -> tuple[int, int]:
    """The input size a timm ViT or Swin was built for (its patch embedding's ``img_size``)."""
    patch_embed: Any = net.patch_embed
    return _as_hw(tuple(patch_embed.img_size))


def _as_hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def build_model(backbone: str, num_classes: int, *, weights: str = "hub", rank: int | None = None,
                inject_from: int | None = None, tap_from: int | None = None, beta: float = 100.0,
                variant: str = "dtl", fusion_kernel: int | None = None, drop_path: float = 0.0,
                image_size: int | tuple[int, int] | None = None, checkpoint_blocks: bool = False,
                low_precision_taps: bool = False, model_kwargs: dict[str, Any] | None = None,
                data_overrides: dict[str, Any] | None = None) -> DTLModel:
    """Build a DTL / DTL+ model or a linear probe on a frozen timm backbone.

    ``None`` settings take the family defaults (see :data:`dtl_engine.model.adapters.FAMILY_DEFAULTS`).
    ``model_kwargs`` go to ``timm.create_model`` (tiny test configurations); ``data_overrides``
    replace entries of the backbone's data config (a recipe's squash resize or 0.5 normalisation).

    Raises:
        BackboneError: unknown or unsupported backbone, or settings that do not fit it.
        WeightsError: the requested weights cannot be obtained.
    """
    if variant not in VARIANTS:
        raise BackboneError(f"The method must be one of {', '.join(VARIANTS)}, not '{variant}'.")
    if num_classes < 1:
        raise BackboneError("The classifier needs at least one class.")
    family = resolve_family(backbone)
    kwargs: dict[str, Any] = dict(model_kwargs or {})
    kwargs["num_classes"] = 0  # our own head replaces timm's
    if drop_path:
        kwargs["drop_path_rate"] = float(drop_path)
    if image_size is not None:
        kwargs["img_size"] = _as_hw(image_size)  # timm resamples position embeddings for this size
    if weights != "random":
        check_adaptable(family, backbone, kwargs)  # refuse before downloading or reading weights
    net = create_backbone(backbone, weights, **kwargs)
    check_image_size(backbone, net)
    adapter = make_adapter(family, net, backbone)
    net.requires_grad_(False)

    depth = len(adapter.blocks)
    defaults = FAMILY_DEFAULTS[family]
    hw = _built_size(net)
    side: CompactSideNetwork | None = None
    if variant == "linear":
        rank = tap_from = inject_from = fusion_kernel = None
    else:
        rank = defaults.rank if rank is None else int(rank)
        d_tap, d_inject = adapter.default_taps()
        tap_from = d_tap if tap_from is None else int(tap_from)
        inject_from = d_inject if inject_from is None else int(inject_from)
        fusion_kernel = (defaults.fusion_kernel if fusion_kernel is None else int(fusion_kernel)) \
            if variant == "dtl+" else None
        _check_settings(backbone, depth, rank, tap_from, inject_from, fusion_kernel, beta)
        widths = adapter.block_widths
        stages = adapter.block_stages
        fusion_stages = {stages[i]: widths[i] for i in range(inject_from, depth)} if variant == "dtl+" else {}
        side = CompactSideNetwork({i: widths[i] for i in range(tap_from, depth)}, rank, beta,
                                  fusion_stages, fusion_kernel or 3, low_precision_taps)

    spec = ModelSpec(backbone=backbone, num_classes=int(num_classes), variant=variant, family=family, rank=rank,
                     tap_from=tap_from, inject_from=inject_from, beta=float(beta), fusion_kernel=fusion_kernel,
                     image_size=hw, drop_path=float(drop_path), depth=depth, weights=str(weights),
                     checkpoint_blocks=bool(checkpoint_blocks), low_precision_taps=bool(low_precision_taps),
                     model_kwargs=dict(model_kwargs or {}), data_overrides=dict(data_overrides or {}))
    head = nn.Linear(adapter.num_features, num_classes)
    # as the official DTL code initialises its new classifier: truncated normal (std 0.02), zero bias
    nn.init.trunc_normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    return DTLModel(net, adapter, side, head, spec, _data_config(net, hw, spec.data_overrides))


def backbone_defaults(backbone: str, model_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The family defaults DTL would use on ``backbone`` (no weights loaded; built on the meta device).

    Returns ``family``, ``depth``, ``rank``, ``tap_from``, ``inject_from``, ``fusion_kernel`` and ``image_size``.
    """
    family = resolve_family(backbone)
    kwargs = dict(model_kwargs or {}, num_classes=0)
    with torch.device("meta"):
        skeleton = timm.create_model(backbone, pretrained=False, **kwargs)
    adapter = make_adapter(family, skeleton, backbone)
    tap_from, inject_from = adapter.default_taps()
    defaults = FAMILY_DEFAULTS[family]
    return dict(family=family, depth=len(adapter.blocks), rank=defaults.rank, tap_from=tap_from,
                inject_from=inject_from, fusion_kernel=defaults.fusion_kernel,
                image_size=_built_size(skeleton))


def build_model_from_spec(spec: ModelSpec, weights: str | None = None) -> DTLModel:
    """Rebuild the model a :class:`ModelSpec` describes (``weights`` overrides ``spec.weights``)."""
    return build_model(spec.backbone, spec.num_classes, weights=spec.weights if weights is None else weights,
                       rank=spec.rank, inject_from=spec.inject_from, tap_from=spec.tap_from, beta=spec.beta,
                       variant=spec.variant, fusion_kernel=spec.fusion_kernel, drop_path=spec.drop_path,
                       image_size=spec.image_size, checkpoint_blocks=spec.checkpoint_blocks,
                       low_precision_taps=spec.low_precision_taps, model_kwargs=spec.model_kwargs,
                       data_overrides=spec.data_overrides)


def check_image_size(name: str, net: nn.Module) -> None:
    """Refuse an input size the patch embedding cannot cut into whole patches (timm asserts in the forward)."""
    patch = _as_hw(tuple(getattr(net.patch_embed, "patch_size", (1, 1))))
    size = _built_size(net)
    if size[0] % patch[0] or size[1] % patch[1] or min(size) < min(patch):
        step = max(patch)
        fits = max(step, round(min(size) / step) * step)
        raise BackboneError(f"The image size {size[0]}×{size[1]} does not fit '{name}': each side must be a "
                            f"multiple of its {step}-pixel patches (for example {fits}).")


def _check_settings(name: str, depth: int, rank: int, tap_from: int, inject_from: int,
                    fusion_kernel: int | None, beta: float) -> None:
    checks = [
        (rank >= 1, "The rank must be at least 1."),
        (0 <= tap_from < depth, f"'{name}' has blocks 0…{depth - 1}; the first tap block {tap_from} is outside."),
        (tap_from <= inject_from < depth,
         f"The first injection block must lie between the first tap block {tap_from} and the last block "
         f"{depth - 1} of '{name}', not {inject_from}."),
        (fusion_kernel is None or fusion_kernel >= 1, "The DTL+ kernel size must be at least 1."),
        (beta > 0, "The swish steepness β must be positive."),
    ]
    for ok, message in checks:
        if not ok:
            raise BackboneError(message)


def _data_config(net: nn.Module, hw: tuple[int, int], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    config = dict(timm.data.resolve_model_data_config(net))
    config.update({k: tuple(v) if isinstance(v, list) else v for k, v in (overrides or {}).items()})
    config["input_size"] = (3, hw[0], hw[1])
    return config

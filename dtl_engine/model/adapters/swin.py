"""timm Swin Transformers (swin_*): NHWC stages, patch merging between stages."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, cast

import torch
from torch import nn
from timm.models.swin_transformer import SwinTransformer

from dtl_engine.errors import BackboneError
from dtl_engine.registry import FAMILIES
from dtl_engine.model.adapters.base import BackboneAdapter, FamilyDefaults

if TYPE_CHECKING:
    from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock, SwinTransformerStage

_SPEC = FAMILIES["swin"]
SWIN_DEFAULTS = FamilyDefaults(family=_SPEC.name, rank=_SPEC.rank, fusion_kernel=_SPEC.fusion_kernel,
                               description=_SPEC.injection_rule)


class SwinAdapter(BackboneAdapter):
    """A timm ``SwinTransformer``; blocks are numbered globally across stages."""

    backbone: SwinTransformer       # checked in __init__

    family = "swin"
    defaults = SWIN_DEFAULTS

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)

        if not isinstance(backbone, SwinTransformer):
            raise BackboneError(
                f"is built on timm's {type(backbone).__name__} class, a Swin variant DTL Studio cannot adapt; "
                "choose a swin_* (Swin V1) model"
            )
        self._blocks: list[nn.Module] = []
        self._stages: list[int] = []
        self._widths: list[int] = []
        stages = cast("list[SwinTransformerStage]", list(backbone.layers))
        for s, stage in enumerate(stages):
            for blk in cast("list[SwinTransformerBlock]", list(stage.blocks)):
                self._blocks.append(blk)
                self._stages.append(s)
                self._widths.append(int(cast(nn.LayerNorm, blk.norm1).normalized_shape[0]))
        self.depths = tuple(len(stage.blocks) for stage in stages)

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self._blocks)

    @property
    def block_stages(self) -> list[int]:
        return list(self._stages)

    @property
    def block_widths(self) -> list[int]:
        return list(self._widths)

    @property
    def num_features(self) -> int:
        return int(self.backbone.num_features)

    def default_taps(self) -> tuple[int, int]:
        return _SPEC.default_taps(list(self.depths))

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.backbone.patch_embed(images)  # NHWC
        return x, (int(x.shape[1]), int(x.shape[2]))

    def enter_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if index > 0 and self.starts_stage(index):
            x = cast("SwinTransformerStage", self.backbone.layers[self._stages[index]]).downsample(x)
        return x

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        # Swin's usual order: final norm on the tokens, then average pooling
        return self.backbone.forward_head(self.backbone.norm(x), pre_logits=True)

    def on_grid(self, fn: Callable[[torch.Tensor], torch.Tensor], s: torch.Tensor,
                grid: tuple[int, int]) -> torch.Tensor:
        if s.ndim != 4:
            raise BackboneError("Swin side information must be laid out as (N, H, W, C).")
        return fn(s.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

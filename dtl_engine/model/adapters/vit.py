"""Plain timm Vision Transformers (vit_*, deit_*, deit3_*, DINO/DINOv2, augreg, register tokens)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import nn
from timm.models.vision_transformer import VisionTransformer

from dtl_engine.errors import BackboneError
from dtl_engine.registry import FAMILIES
from dtl_engine.model.adapters.base import BackboneAdapter, FamilyDefaults

if TYPE_CHECKING:
    from timm.models.vision_transformer import VisionTransformer

_SPEC = FAMILIES["vit"]
VIT_DEFAULTS = FamilyDefaults(family=_SPEC.name, rank=_SPEC.rank, fusion_kernel=_SPEC.fusion_kernel,
                              description=_SPEC.injection_rule)


class VitAdapter(BackboneAdapter):
    """A timm ``VisionTransformer``: one token sequence, prefix tokens first, then the patch grid."""

    family = "vit"
    defaults = VIT_DEFAULTS
    backbone: VisionTransformer     # checked in __init__

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)

        if not isinstance(backbone, VisionTransformer):
            raise BackboneError(
                f"is built on timm's {type(backbone).__name__} class, a ViT variant DTL Studio cannot adapt; "
                "choose a plain ViT / DeiT / DINO model or a Swin model"
            )
        self.num_prefix_tokens = int(getattr(backbone, "num_prefix_tokens", 0))
        # The backbone's own final norm: fc_norm when the model pools before normalising.
        self.final_norm = backbone.fc_norm if not isinstance(backbone.fc_norm, nn.Identity) else backbone.norm

    @property
    def blocks(self) -> list[nn.Module]:
        return list(self.backbone.blocks)

    @property
    def block_widths(self) -> list[int]:
        return [self.backbone.embed_dim] * len(self.backbone.blocks)

    @property
    def num_features(self) -> int:
        return self.backbone.embed_dim

    def default_taps(self) -> tuple[int, int]:
        return _SPEC.default_taps([len(self.backbone.blocks)])

    def patch_grid(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """Patch grid (rows, cols) of an input of ``image_hw`` pixels."""
        pe = self.backbone.patch_embed
        if hasattr(pe, "dynamic_feat_size"):
            rows, cols = pe.dynamic_feat_size(tuple(image_hw))
        else:
            rows, cols = pe.grid_size
        return int(rows), int(cols)

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        bb = self.backbone
        x = bb.patch_embed(images)
        # dynamic-size models return NHWC here, which tells the grid directly
        if x.ndim == 4:
            grid = (int(x.shape[1]), int(x.shape[2]))
        else:
            grid = self.patch_grid((images.shape[-2], images.shape[-1]))
        x = bb._pos_embed(x)
        x = bb.patch_drop(x)
        x = bb.norm_pre(x)
        if grid[0] * grid[1] != x.shape[1] - self.num_prefix_tokens:
            raise BackboneError(
                f"The patch grid {grid[0]}×{grid[1]} does not match the {x.shape[1]} tokens of this ViT."
            )
        return x, grid

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        # mean of the patch tokens (class/register tokens excluded), then the final norm
        return self.final_norm(x[:, self.num_prefix_tokens:].mean(dim=1))

    def on_grid(self, fn: Callable[[torch.Tensor], torch.Tensor], s: torch.Tensor,
                grid: tuple[int, int]) -> torch.Tensor:
        p = self.num_prefix_tokens
        prefix, patches = s[:, :p], s[:, p:]
        n, _, c = patches.shape
        maps = patches.transpose(1, 2).reshape(n, c, grid[0], grid[1])
        patches = fn(maps).reshape(n, c, -1).transpose(1, 2)
        return torch.cat([prefix, patches], dim=1) if p else patches

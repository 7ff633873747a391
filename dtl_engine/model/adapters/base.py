"""What the model needs to know about one backbone family, in one small interface.

An adapter is bound to one built timm model. It exposes the blocks as a flat list
(global block index), which stage each block belongs to, how to embed the images
into the first block's input, how to move between stages, where the 2-D patch grid
is, and how to pool + normalise the last block's output. The model and the trainer
never look at family-specific attributes themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class FamilyDefaults:
    """Paper defaults of one family; ``None`` tap/inject values are derived from the depth."""

    family: str
    rank: int
    fusion_kernel: int
    description: str


class BackboneAdapter:
    """Base class: one subclass per backbone family (see ``vit.py``, ``swin.py``)."""

    family: str = ""
    defaults: FamilyDefaults

    def __init__(self, backbone: nn.Module) -> None:
        self.backbone = backbone

    # --- structure -------------------------------------------------------
    @property
    def blocks(self) -> list[nn.Module]:
        """All transformer blocks in execution order (global block index)."""
        raise NotImplementedError

    @property
    def block_stages(self) -> list[int]:
        """Stage index of each block (all 0 for a plain ViT)."""
        return [0] * len(self.blocks)

    @property
    def block_widths(self) -> list[int]:
        """Channel width of each block's input (and output)."""
        raise NotImplementedError

    @property
    def num_features(self) -> int:
        """Width of the pooled feature vector fed to the classifier."""
        raise NotImplementedError

    def default_taps(self) -> tuple[int, int]:
        """(tap_from, inject_from) defaults for this backbone."""
        raise NotImplementedError

    def starts_stage(self, index: int) -> bool:
        """True when block ``index`` is the first block of its stage."""
        stages = self.block_stages
        return index == 0 or stages[index] != stages[index - 1]

    # --- computation -----------------------------------------------------
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Images -> input of block 0, plus the patch grid (rows, cols) of this input."""
        raise NotImplementedError

    def enter_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Anything between blocks ``index-1`` and ``index`` (e.g. Swin patch merging)."""
        return x

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Last block output -> pooled, normalised features (N, num_features)."""
        raise NotImplementedError

    def on_grid(self, fn: Callable[[torch.Tensor], torch.Tensor], s: torch.Tensor,
                grid: tuple[int, int]) -> torch.Tensor:
        """Apply ``fn`` (N,C,H,W -> N,C,H,W) to the patch tokens of ``s`` laid out on their grid.

        Tokens that are not patches (class / register tokens) pass through unchanged.
        """
        raise NotImplementedError

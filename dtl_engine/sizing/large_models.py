"""The large backbones (ViT-L/H/g, DINOv2 L/g) and what they need to train, as plain data.

Torch-free at import, so a catalog can read it without loading anything. The byte figures are the
memory probe's (:func:`dtl_engine.sizing.memory_probe.estimate_memory`) at batch 32 and 224×224 px under bf16:
DTL with every saver (frozen weights in bf16, checkpointed blocks), DTL with the defaults (frozen
weights in bf16), and full fine-tuning of the same backbone. Re-measure and print the table with

    python -m dtl_engine.sizing.large_models
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

PROBE_BATCH = 32
PROBE_IMAGE_SIZE = 224
PROBE_PRECISION = "bf16"


@dataclass(frozen=True)
class LargeBackbone:
    """One large backbone: timm name, label, size and the probe's estimates in bytes."""

    name: str
    label: str
    params: int                 # backbone parameters without a classifier head
    depth: int
    native_size: int            # the pretrained input side; the estimates use PROBE_IMAGE_SIZE
    dtl_savers_bytes: int       # DTL, bf16, every saver
    dtl_default_bytes: int      # DTL, bf16, the defaults (frozen weights in bf16)
    full_bytes: int             # full fine-tuning, bf16


LARGE_BACKBONES: tuple[LargeBackbone, ...] = (
    LargeBackbone("vit_large_patch16_224.augreg_in21k", "ViT-L/16 · ImageNet-21k", 303_301_632, 24, 224,
                  1_364_531_876, 2_790_244_516, 11_057_874_852),
    LargeBackbone("vit_huge_patch14_224.orig_in21k", "ViT-H/14 · ImageNet-21k", 630_764_800, 32, 224,
                  2_922_769_828, 6_090_654_628, 23_509_980_068),
    LargeBackbone("vit_giant_patch14_clip_224.laion2b", "ViT-g/14 · CLIP LAION-2B", 1_011_203_840, 40, 224,
                  4_320_896_164, 8_893_571_748, 35_630_320_292),
    LargeBackbone("vit_large_patch14_dinov2.lvd142m", "DINOv2 ViT-L/14 · self-supervised", 304_367_616, 24, 518,
                  1_594_375_844, 3_454_315_684, 13_567_158_180),
    LargeBackbone("vit_giant_patch14_dinov2.lvd142m", "DINOv2 ViT-g/14 · self-supervised", 1_136_479_232, 40, 518,
                  4_775_396_516, 11_513_155_236, 43_376_238_500),
)


def measure(name: str) -> LargeBackbone:
    """Count the parameters (meta device) and run the probe for ``name``; the label is left empty."""
    import timm
    import torch

    from dtl_engine.sizing.memory_probe import estimate_memory
    from dtl_engine.model.dtl import backbone_defaults

    with torch.device("meta"):
        net = timm.create_model(name, pretrained=False, num_classes=0)
    params = sum(p.numel() for p in net.parameters())
    defaults = backbone_defaults(name)
    common: dict[str, Any] = dict(image_size=PROBE_IMAGE_SIZE, method="dtl", precision=PROBE_PRECISION)
    savers = estimate_memory(name, PROBE_BATCH, checkpoint_blocks=True, **common)
    default = estimate_memory(name, PROBE_BATCH, **common)
    return LargeBackbone(name, "", params, defaults["depth"], defaults["image_size"][0], savers.method.total_bytes,
                         default.method.total_bytes, savers.full.total_bytes)


def format_table(entries: tuple[LargeBackbone, ...] | list[LargeBackbone] = LARGE_BACKBONES) -> str:
    """The README table (Markdown)."""
    gb = 1024 ** 3
    lines = ["| backbone | parameters | DTL, every saver | DTL, defaults | full fine-tuning | full / DTL with savers |",
             "|---|---|---|---|---|---|"]
    for e in entries:
        lines.append(f"| {e.label or e.name} (`{e.name}`) | {e.params / 1e6:,.0f} M | "
                     f"{e.dtl_savers_bytes / gb:.2f} GB | "
                     f"{e.dtl_default_bytes / gb:.2f} GB | {e.full_bytes / gb:.2f} GB | "
                     f"{e.full_bytes / e.dtl_savers_bytes:.1f}× |")
    return "\n".join(lines)


def main() -> int:
    """Re-measure every entry and print the table."""
    measured = [measure(e.name) for e in LARGE_BACKBONES]
    print(format_table([LargeBackbone(**{**m.__dict__, "label": e.label}) for m, e in zip(measured, LARGE_BACKBONES)]))
    return 0


__all__ = ["LARGE_BACKBONES", "LargeBackbone", "PROBE_BATCH", "PROBE_IMAGE_SIZE", "PROBE_PRECISION", "format_table",
           "measure"]

if __name__ == "__main__":
    sys.exit(main())

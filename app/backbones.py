"""The curated backbone list of the Model page, with facts known in advance (no torch import needed).

Plain data over :mod:`dtl_engine.registry`, which says what each family supports
and its defaults; an entry's ``family`` must be the registry's family of its name.
Parameter counts are of the backbone without its classifier head (timm, num_classes=0).
"""
from __future__ import annotations

from dataclasses import dataclass

from dtl_engine.registry import family_of


@dataclass(frozen=True)
class BackboneInfo:
    name: str           # timm name with its pretrained tag
    label: str          # what a person reads
    params: int | None  # backbone parameters (None = not known yet)
    input_size: int | None
    depth: int | None   # number of transformer blocks (for the 'Auto' injection start)
    family: str         # "vit" | "swin"
    note: str = ""


CURATED: tuple[BackboneInfo, ...] = (
    BackboneInfo("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "ViT-Ti/16 · ImageNet-21k → 1k (AugReg)", 5_524_416,
                 224, 12, "vit", "Smallest ViT and the quickest to train; on a CPU still only a few images per "
                 "second at 224 px (a smaller image size or a GPU is much faster)."),
    BackboneInfo("vit_small_patch16_224.augreg_in21k_ft_in1k", "ViT-S/16 · ImageNet-21k → 1k (AugReg)", 21_665_664,
                 224, 12, "vit", "A good balance of speed and accuracy."),
    BackboneInfo("vit_base_patch16_224.orig_in21k", "ViT-B/16 · ImageNet-21k, original (the paper's)", 85_798_656,
                 224, 12, "vit", "The original ImageNet-21k ViT-B/16 of the DTL paper's VTAB-1K results."),
    BackboneInfo("vit_base_patch16_224.augreg2_in21k_ft_in1k", "ViT-B/16 · ImageNet-21k → 1k (AugReg2)", 85_798_656,
                 224, 12, "vit", "ViT-B/16 fine-tuned on ImageNet-1k after 21k pre-training."),
    BackboneInfo("deit_small_patch16_224.fb_in1k", "DeiT-S/16 · ImageNet-1k", 21_665_664, 224, 12, "vit",
                 "Data-efficient ViT trained on ImageNet-1k only."),
    BackboneInfo("deit_base_patch16_224.fb_in1k", "DeiT-B/16 · ImageNet-1k", 85_798_656, 224, 12, "vit",
                 "Data-efficient ViT-B trained on ImageNet-1k only."),
    BackboneInfo("vit_small_patch14_dinov2.lvd142m", "DINOv2 ViT-S/14 · self-supervised (LVD-142M)", 22_056_192,
                 518, 12, "vit",
                 "Self-supervised features; native input 518 px (set a smaller image size to save memory)."),
    BackboneInfo("swin_tiny_patch4_window7_224.ms_in1k", "Swin-T · ImageNet-1k", 27_519_354, 224, 12, "swin",
                 "Hierarchical windowed transformer, 4 stages."),
    BackboneInfo("swin_small_patch4_window7_224.ms_in1k", "Swin-S · ImageNet-1k", 48_837_258, 224, 24, "swin",
                 "Deeper Swin: more accurate, slower."),
    BackboneInfo("swin_base_patch4_window7_224.ms_in22k", "Swin-B · ImageNet-22k (the paper's)", 86_743_224, 224, 24,
                 "swin", "The Swin backbone of the DTL paper."),
)


# Large backbones for 8–12 GB cards; figures from dtl_engine.sizing.large_models
# (the memory probe, batch 32, 224 px, bf16).
CURATED += (
    BackboneInfo("vit_large_patch16_224.augreg_in21k", "ViT-L/16 · ImageNet-21k", 303_301_632, 224, 24, "vit",
                 "DTL needs ~1.3 GB at batch 32 with every saver (full fine-tuning ~10.3 GB)."),
    BackboneInfo("vit_huge_patch14_224.orig_in21k", "ViT-H/14 · ImageNet-21k", 630_764_800, 224, 32, "vit",
                 "DTL needs ~2.7 GB at batch 32 with every saver (full fine-tuning ~21.9 GB)."),
    BackboneInfo("vit_giant_patch14_clip_224.laion2b", "ViT-g/14 · CLIP LAION-2B", 1_011_203_840, 224, 40, "vit",
                 "1 B parameters; DTL needs ~4.0 GB at batch 32 with every saver (full fine-tuning ~33 GB)."),
    BackboneInfo("vit_large_patch14_dinov2.lvd142m", "DINOv2 ViT-L/14 · self-supervised", 304_367_616, 518, 24, "vit",
                 "Native 518 px; at 224 px DTL needs ~1.5 GB at batch 32 with every saver (full ~12.6 GB)."),
    BackboneInfo("vit_giant_patch14_dinov2.lvd142m", "DINOv2 ViT-g/14 · self-supervised", 1_136_479_232, 518, 40,
                 "vit", "Native 518 px; at 224 px DTL needs ~4.4 GB at batch 32 with every saver (full ~40 GB)."),
)


def by_name(name: str) -> BackboneInfo | None:
    """The curated entry of ``name`` (exact timm name), or None."""
    return next((b for b in CURATED if b.name == name), None)


def supported_timm_names() -> list[str]:
    """Every timm model name (with pretrained tags) of a supported family; imports timm (call off the GUI thread)."""
    import timm

    names = timm.list_models(pretrained=True) + timm.list_models()
    seen: dict[str, None] = {}
    for n in names:
        if family_of(n) is not None:
            seen.setdefault(n, None)
    return sorted(seen)


def describe_backbone(name: str) -> BackboneInfo:
    """Parameter count, input size and depth of any timm name, built on the meta device (off the GUI thread)."""
    import timm
    import torch

    family = family_of(name) or "vit"
    with torch.device("meta"):     # no memory, no weights: shapes only
        model = timm.create_model(name, pretrained=False, num_classes=0)
    params = sum(p.numel() for p in model.parameters())
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, None, None))[-1]
    if hasattr(model, "blocks"):
        depth = len(model.blocks)
    else:
        depth = sum(len(getattr(layer, "blocks", [])) for layer in getattr(model, "layers", []))
    return BackboneInfo(name, name, params, size, depth or None, family)

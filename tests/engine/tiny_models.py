"""Tiny timm backbones for fast tests (random weights, milliseconds per forward on one CPU thread).

Each constant is ``(timm name, model_kwargs)``; pass them to ``build_model(name, ..., model_kwargs=kw)``.
Keep these stable: tests across the engine import them.
"""
from __future__ import annotations

from typing import Any

# 6 blocks, width 64, class token, patch 4 on 32×32 images -> 8×8 grid (dynamic image size in timm's test_vit)
TINY_VIT: tuple[str, dict[str, Any]] = ("test_vit", dict(patch_size=4, img_size=32))
TINY_VIT_IMAGE_SIZE = 32

# same, plus two register tokens (num_prefix_tokens = 3) and position embeddings kept off the prefix tokens
TINY_VIT_REG: tuple[str, dict[str, Any]] = ("test_vit", dict(patch_size=4, img_size=32, reg_tokens=2,
                                                             no_embed_class=True))

# no class token, timm's own 'avg' pooling with fc_norm (norm applied after pooling, like DTL's head)
TINY_VIT_GAP: tuple[str, dict[str, Any]] = ("test_vit", dict(patch_size=4, img_size=32, class_token=False,
                                                             global_pool="avg", fc_norm=True))

# 4 stages of depths (1, 1, 2, 1), widths 16/32/64/128, 2×2 patches and 2×2 windows on 32×32 images
TINY_SWIN: tuple[str, dict[str, Any]] = ("swin_tiny_patch4_window7_224", dict(
    embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 2, 2), patch_size=2, window_size=2, img_size=32))
TINY_SWIN_IMAGE_SIZE = 32


def tiny_vit(num_classes: int = 3, **build_kwargs: Any):
    """A DTL model on the tiny ViT (``build_kwargs`` go to ``build_model``, e.g. variant='dtl+')."""
    return _build(TINY_VIT, num_classes, build_kwargs)


def tiny_swin(num_classes: int = 3, **build_kwargs: Any):
    """A DTL model on the tiny Swin."""
    return _build(TINY_SWIN, num_classes, build_kwargs)


def _build(entry: tuple[str, dict[str, Any]], num_classes: int, build_kwargs: dict[str, Any]):
    from dtl_engine.model.dtl import build_model

    name, kw = entry
    kw = dict(kw)
    kw.update(build_kwargs.pop("model_kwargs", {}) or {})
    if "image_size" in build_kwargs:
        kw.pop("img_size", None)  # build_model passes image_size to timm itself
    build_kwargs.setdefault("weights", "random")
    return build_model(name, num_classes, model_kwargs=kw, **build_kwargs)

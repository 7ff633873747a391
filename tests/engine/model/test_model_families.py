"""Which backbones are accepted: plain ViTs (any prefix tokens) and Swin V1; everything else refused by name."""
from __future__ import annotations

import pytest
import torch

from dtl_engine.model.adapters import FAMILY_DEFAULTS, resolve_family
from dtl_engine.errors import BackboneError
from dtl_engine.model.dtl import backbone_defaults, build_model
from test_model_equations import reference_vit_logits

torch.set_num_threads(1)


@pytest.mark.parametrize("name,family", [
    ("vit_base_patch16_224", "vit"),
    ("vit_base_patch16_224.augreg2_in21k_ft_in1k", "vit"),
    ("vit_small_patch14_reg4_dinov2.lvd142m", "vit"),
    ("deit3_small_patch16_224", "vit"),
    ("deit_small_distilled_patch16_224", "vit"),
    ("swin_base_patch4_window7_224", "swin"),
])
def test_supported_names_resolve_to_their_family(name, family):
    assert resolve_family(name) == family


@pytest.mark.parametrize("name,words", [
    ("resnet50", "convolutional"),
    ("convnext_tiny", "convolutional"),
    ("efficientnet_b0", "convolutional"),
    ("swinv2_tiny_window8_256", "Swin V2"),
    ("mixer_b16_224", "no adapter"),
])
def test_other_families_are_refused_with_the_reason(name, words):
    with pytest.raises(BackboneError, match=words) as info:
        build_model(name, 3, weights="random")
    assert name in str(info.value)


def test_unknown_name_suggests_close_names():
    with pytest.raises(BackboneError, match="not a model timm knows") as info:
        build_model("vit_bass_patch16_224", 3, weights="random")
    assert "'vit_bass_patch16_224'" in str(info.value) and "vit_base_patch16_224" in str(info.value)


def test_unsupported_vit_class_is_refused_before_any_download(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # a download attempt would raise WeightsError
    with pytest.raises(BackboneError, match="VisionTransformerRelPos"):
        build_model("vit_relpos_small_patch16_224", 3, weights="hub")


@pytest.mark.parametrize("name,prefix_tokens", [
    ("deit_tiny_distilled_patch16_224", 2),       # class + distillation token
    ("vit_small_patch14_reg4_dinov2", 5),          # class + 4 registers
    ("vit_medium_patch16_gap_256", 0),             # no prefix tokens at all
])
def test_prefix_token_layouts_follow_the_equations(name, prefix_tokens):
    torch.manual_seed(0)
    model = build_model(name, 3, weights="random", variant="dtl+", image_size=(32, 48),
                        model_kwargs=dict(patch_size=8, depth=2, embed_dim=32, num_heads=2))
    assert model._adapter.num_prefix_tokens == prefix_tokens
    with torch.no_grad():
        for p in model.side_network.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    images = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        assert torch.allclose(model(images), reference_vit_logits(model, images), atol=1e-4)


def test_family_defaults_table():
    assert (FAMILY_DEFAULTS["vit"].rank, FAMILY_DEFAULTS["vit"].fusion_kernel) == (2, 3)
    assert (FAMILY_DEFAULTS["swin"].rank, FAMILY_DEFAULTS["swin"].fusion_kernel) == (4, 5)
    model = build_model("vit_base_patch16_224", 3, weights="random", variant="dtl+",
                        model_kwargs=dict(embed_dim=16, num_heads=1))
    assert (model.spec.rank, model.spec.tap_from, model.spec.inject_from, model.spec.fusion_kernel) == (2, 0, 6, 3)


@pytest.mark.parametrize("name,expected", [
    ("vit_base_patch16_224", dict(family="vit", depth=12, rank=2, tap_from=0, inject_from=6, fusion_kernel=3,
                                  image_size=(224, 224))),
    ("vit_large_patch16_224", dict(family="vit", depth=24, rank=2, tap_from=0, inject_from=12, fusion_kernel=3,
                                   image_size=(224, 224))),
    ("swin_base_patch4_window7_224", dict(family="swin", depth=24, rank=4, tap_from=4, inject_from=14,
                                          fusion_kernel=5, image_size=(224, 224))),
    ("swin_tiny_patch4_window7_224", dict(family="swin", depth=12, rank=4, tap_from=4, inject_from=8,
                                          fusion_kernel=5, image_size=(224, 224))),
])
def test_backbone_defaults_without_building_weights(name, expected):
    assert backbone_defaults(name) == expected

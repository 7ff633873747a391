"""The model computes exactly DESIGN §1: checked against timm's own forward path (side maps at zero)
and against an independent re-statement of the DTL / DTL+ equations written here with plain tensor algebra."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dtl_engine.model.dtl import build_model
from tiny_models import TINY_SWIN, TINY_VIT, TINY_VIT_GAP, TINY_VIT_REG

torch.set_num_threads(1)


def _build(entry, variant="dtl", **kw):
    name, model_kwargs = entry
    model_kwargs = dict(model_kwargs)
    if "image_size" in kw:
        model_kwargs.pop("img_size", None)
    model_kwargs.update(kw.pop("model_kwargs", {}))
    torch.manual_seed(0)
    return build_model(name, 3, weights="random", variant=variant, model_kwargs=model_kwargs, **kw)


def _randomise_side(model, std=0.3, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.side_network.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


# --- independent re-statement of the equations -----------------------------------------------

def _phi(s, conv_weight, to_nchw, from_nchw):
    """DTL+: depthwise k×k conv, no bias, 'same' padding, on the patch grid.

    'Same' as the official code gets it from PyTorch: (k-1)//2 zeros before, the rest after, so an
    even kernel pads one more on the right and bottom.
    """
    if conv_weight is None:
        return s
    k = conv_weight.shape[-1]
    before, after = (k - 1) // 2, k - 1 - (k - 1) // 2
    maps = F.pad(to_nchw(s), (before, after, before, after))
    return from_nchw(F.conv2d(maps, conv_weight, groups=conv_weight.shape[0]))


def _swish(h, beta):
    return h * torch.sigmoid(beta * h)


def reference_vit_logits(model, images):
    bb, side, spec = model.backbone, model.side_network, model.spec
    p = bb.num_prefix_tokens
    ph, pw = bb.patch_embed.patch_size
    gh, gw = images.shape[-2] // ph, images.shape[-1] // pw
    x = bb.norm_pre(bb._pos_embed(bb.patch_embed(images)))
    conv = side.fusion["stage0"].weight if spec.variant == "dtl+" else None
    n, c = x.shape[0], x.shape[-1]

    def to_nchw(s):
        return s[:, p:].reshape(n, gh, gw, c).permute(0, 3, 1, 2)

    h = torch.zeros_like(x)
    for i, blk in enumerate(bb.blocks):
        if i >= spec.tap_from:
            a, b = side.taps[str(i)].down.weight, side.taps[str(i)].up.weight  # A_i (r×d), B_i (d×r)
            h = h + x @ a.T @ b.T
        x = blk(x)
        if i >= spec.inject_from:
            s = _swish(h, spec.beta)

            def from_nchw(maps, prefix=s[:, :p]):  # prefix tokens bypass the conv
                return torch.cat([prefix, maps.permute(0, 2, 3, 1).reshape(n, gh * gw, c)], dim=1)

            x = x + _phi(s, conv, to_nchw, from_nchw)
    final_norm = bb.norm if isinstance(bb.fc_norm, torch.nn.Identity) else bb.fc_norm
    feats = final_norm(x[:, p:].mean(dim=1))
    return feats @ model.head.weight.T + model.head.bias


def reference_swin_logits(model, images):
    bb, side, spec = model.backbone, model.side_network, model.spec
    x = bb.patch_embed(images)  # NHWC
    g = 0
    for s_idx, stage in enumerate(bb.layers):
        x = stage.downsample(x)
        h = torch.zeros_like(x)  # the width changes: h restarts at every stage
        key = f"stage{s_idx}"
        conv = side.fusion[key].weight if spec.variant == "dtl+" and key in side.fusion else None
        for blk in stage.blocks:
            if g >= spec.tap_from:
                a, b = side.taps[str(g)].down.weight, side.taps[str(g)].up.weight
                h = h + x @ a.T @ b.T
            x = blk(x)
            if g >= spec.inject_from:
                x = x + _phi(_swish(h, spec.beta), conv, lambda t: t.permute(0, 3, 1, 2),
                             lambda t: t.permute(0, 2, 3, 1))
            g += 1
    feats = bb.norm(x).mean(dim=(1, 2))
    return feats @ model.head.weight.T + model.head.bias


# --- zero side maps == the frozen backbone through timm's own forward path ----------------------

@pytest.mark.parametrize("variant", ["dtl", "dtl+", "linear"])
def test_zero_up_projection_equals_timm_forward_vit_avg_pool(variant):
    model = _build(TINY_VIT_GAP, variant)  # timm pools the same way here: patch mean, then fc_norm
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        bb = model.backbone
        expected = model.head(bb.forward_head(bb.forward_features(images), pre_logits=True))
        assert torch.allclose(model(images), expected, atol=1e-5)


@pytest.mark.parametrize("entry", [TINY_VIT, TINY_VIT_REG], ids=["cls", "cls+registers"])
def test_zero_up_projection_equals_timm_intermediates_vit(entry):
    model = _build(entry, "dtl+")
    images = torch.randn(2, 3, 32, 32)
    bb = model.backbone
    with torch.no_grad():
        last = bb.forward_intermediates(images, indices=[len(bb.blocks) - 1], norm=False, output_fmt="NLC",
                                        intermediates_only=True)[0]  # patch tokens only
        expected = model.head(bb.norm(last.mean(dim=1)))
        assert torch.allclose(model(images), expected, atol=1e-5)


@pytest.mark.parametrize("variant", ["dtl", "dtl+", "linear"])
def test_zero_up_projection_equals_timm_forward_swin(variant):
    model = _build(TINY_SWIN, variant)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        bb = model.backbone
        expected = model.head(bb.forward_head(bb.forward_features(images), pre_logits=True))
        assert torch.allclose(model(images), expected, atol=1e-5)


# --- random side weights == the equations re-stated -----------------------------------------------

VIT_CASES = [
    pytest.param(TINY_VIT, {}, (32, 32), id="vit-32"),
    pytest.param(TINY_VIT_REG, {}, (32, 32), id="vit-registers"),
    pytest.param(TINY_VIT_GAP, {}, (32, 32), id="vit-no-class-token"),
    pytest.param(TINY_VIT, {"tap_from": 1, "inject_from": 4}, (32, 32), id="vit-custom-taps"),
    pytest.param(TINY_VIT, {"image_size": (32, 48), "model_kwargs": {"dynamic_img_size": False}}, (32, 48),
                 id="vit-non-square-fixed-size"),
    pytest.param(("test_vit", {}), {"image_size": 224}, (224, 224), id="vit-p16-224"),
    pytest.param(("test_vit", {}), {"image_size": 384}, (384, 384), id="vit-p16-384"),
    pytest.param(("test_vit", {}), {"image_size": (224, 320)}, (224, 320), id="vit-p16-224x320"),
    pytest.param(TINY_VIT, {"fusion_kernel": 4}, (32, 32), id="vit-even-kernel-4"),
    pytest.param(TINY_VIT, {"fusion_kernel": 2, "image_size": (32, 48), "model_kwargs": {"dynamic_img_size": False}},
                 (32, 48), id="vit-even-kernel-2-non-square"),
]


@pytest.mark.parametrize("variant", ["dtl", "dtl+"])
@pytest.mark.parametrize("entry,kw,hw", VIT_CASES)
def test_vit_matches_the_equations(entry, kw, hw, variant):
    model = _build(entry, variant, **kw)
    _randomise_side(model)
    images = torch.randn(2, 3, *hw)
    with torch.no_grad():
        got = model(images)
        expected = reference_vit_logits(model, images)
        plain = model.head(model.backbone.forward_head(model.backbone.forward_features(images), pre_logits=True))
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()
    assert not torch.allclose(got, plain, atol=1e-3)  # the side network really changes the output
    if variant == "dtl+":
        k = model.spec.fusion_kernel
        assert model.side_network.fusion["stage0"].weight.shape == (64, 1, k, k) and k == kw.get("fusion_kernel", 3)


SWIN_CASES = [
    pytest.param({}, (32, 32), id="swin-32"),
    pytest.param({"image_size": 64}, (64, 64), id="swin-64"),
    pytest.param({"image_size": (32, 48)}, (32, 48), id="swin-non-square"),
    pytest.param({"tap_from": 1, "inject_from": 2}, (32, 32), id="swin-custom-taps"),
]


@pytest.mark.parametrize("variant", ["dtl", "dtl+"])
@pytest.mark.parametrize("kw,hw", SWIN_CASES)
def test_swin_matches_the_equations(kw, hw, variant):
    model = _build(TINY_SWIN, variant, **kw)
    _randomise_side(model)
    images = torch.randn(2, 3, *hw)
    with torch.no_grad():
        got = model(images)
        expected = reference_swin_logits(model, images)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()
    if variant == "dtl+":
        assert model.spec.fusion_kernel == 5
        stages = {model._adapter.block_stages[i] for i in range(model.spec.inject_from, model.spec.depth)}
        assert set(model.side_network.fusion) == {f"stage{s}" for s in stages}


def test_swin_defaults_follow_the_paper_layout():
    # Swin-B depths (2, 2, 18, 2): taps on 4…23, injections after 14…23, r = 4
    model = build_model("swin_tiny_patch4_window7_224", 3, weights="random",
                        model_kwargs=dict(embed_dim=8, depths=(2, 2, 18, 2), num_heads=(1, 1, 1, 1)))
    spec = model.spec
    assert (spec.rank, spec.tap_from, spec.inject_from, spec.depth) == (4, 4, 14, 24)
    assert list(model.side_network.taps) == [str(i) for i in range(4, 24)]

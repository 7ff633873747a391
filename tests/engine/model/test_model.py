"""DTL model basics: shapes, prefix split, trainable parts, spec round-trip, parameter counts."""
from __future__ import annotations

import pytest
import torch

from dtl_engine.errors import BackboneError, DataError, RunError
from dtl_engine.model.dtl import ModelSpec, build_model, build_model_from_spec
from tiny_models import tiny_swin, tiny_vit

torch.set_num_threads(1)

BUILDERS = {"vit": tiny_vit, "swin": tiny_swin}


def _randomise_side(model, std: float = 0.2, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.side_network.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


@pytest.mark.parametrize("family", ["vit", "swin"])
@pytest.mark.parametrize("variant", ["dtl", "dtl+", "linear"])
def test_forward_equals_prefix_then_rest(family, variant):
    torch.manual_seed(0)
    model = BUILDERS[family](num_classes=4, variant=variant)
    if model.side_network is not None:
        _randomise_side(model)
    images = torch.randn(3, 3, 32, 32)
    logits = model(images)
    assert logits.shape == (3, 4)
    prefix = model.forward_prefix(images)
    assert all(t.shape[0] == 3 and not t.requires_grad for t in prefix.values())
    # re-batch like a cache would: split per sample and stack again
    rebatched = {k: torch.stack([v[i] for i in range(3)]) for k, v in prefix.items()}
    assert torch.allclose(model.forward_from_prefix(rebatched), logits, atol=1e-6)


def test_prefix_holds_tap_inputs_and_block_output():
    model = tiny_vit(variant="dtl")
    prefix = model.forward_prefix(torch.randn(2, 3, 32, 32))
    m = model.spec.inject_from
    assert sorted(prefix) == sorted([f"tap.{i}" for i in range(0, m + 1)] + ["block_out", "grid"])
    assert prefix["grid"].tolist() == [[8, 8], [8, 8]]
    # block_out is f_M(x_M): running block M on the stored tap input reproduces it
    with torch.no_grad():
        again = model.backbone.blocks[m](prefix[f"tap.{m}"])
    assert torch.equal(again, prefix["block_out"])


def test_only_side_network_and_head_are_trainable():
    model = tiny_swin(variant="dtl+")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names == (
        [f"side_network.taps.{i}.{part}.weight" for i in (2, 3, 4) for part in ("down", "up")]
        + ["side_network.fusion.stage2.weight", "side_network.fusion.stage3.weight", "head.weight", "head.bias"]
    )
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert set(model.trainable_state_dict()) == set(names)


def test_up_projections_start_at_zero_and_down_is_random():
    model = tiny_vit()
    for tap in model.side_network.taps.values():
        assert torch.count_nonzero(tap.up.weight) == 0
        assert tap.down.weight.abs().sum() > 0
        assert tap.down.weight.shape == (2, 64)


def test_trainable_state_round_trip_and_mismatch():
    a, b = tiny_vit(num_classes=3), tiny_vit(num_classes=3)
    _randomise_side(a, seed=1)
    b.backbone.load_state_dict(a.backbone.state_dict())  # same frozen backbone, different side + head
    images = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(a(images), b(images))
    b.load_trainable_state_dict(a.trainable_state_dict())
    assert torch.equal(a(images), b(images))
    with pytest.raises(RunError):
        tiny_vit(num_classes=5).load_trainable_state_dict(a.trainable_state_dict())


def test_spec_survives_json():
    import json

    model = tiny_swin(variant="dtl+")
    spec = ModelSpec.from_dict(json.loads(json.dumps(model.spec.to_dict())))
    assert spec == model.spec
    assert build_model_from_spec(spec).parameter_counts() == model.parameter_counts()


def test_spec_round_trip_rebuilds_same_structure():
    model = tiny_vit(variant="dtl+", rank=3, image_size=(32, 48))
    spec = ModelSpec.from_dict(model.spec.to_dict())
    assert spec == model.spec
    assert spec.image_size == (32, 48) and spec.fusion_kernel == 3 and spec.rank == 3
    again = build_model_from_spec(spec)
    assert again.parameter_counts() == model.parameter_counts()
    assert again.data_config["input_size"] == (3, 32, 48)


@pytest.mark.slow
def test_vit_base_side_network_has_36864_parameters():
    model = build_model("vit_base_patch16_224", 10, weights="random", rank=2)
    side = sum(p.numel() for p in model.side_network.parameters())
    assert side == 36_864
    assert model.spec.inject_from == 6 and model.spec.tap_from == 0
    trainable, total = model.parameter_counts()
    assert trainable == side + 768 * 10 + 10
    assert total == trainable + sum(p.numel() for p in model.backbone.parameters())
    assert f"{trainable:,} trainable of {total:,}" in model.summary()


def test_bad_settings_are_refused_with_a_sentence():
    with pytest.raises(BackboneError, match="first injection block"):
        tiny_vit(inject_from=6)
    with pytest.raises(BackboneError, match="method"):
        tiny_vit(variant="lora")
    with pytest.raises(BackboneError, match="kernel size"):
        tiny_vit(variant="dtl+", fusion_kernel=0)


def test_images_of_the_wrong_shape_get_a_sentence():
    fixed = build_model("test_vit", 3, weights="random", image_size=32,
                        model_kwargs=dict(patch_size=4, dynamic_img_size=False))
    with pytest.raises(DataError, match="built for 32×32 px images, not 48×32"):
        fixed(torch.randn(1, 3, 48, 32))
    with pytest.raises(DataError, match="RGB"):
        fixed(torch.randn(1, 1, 32, 32))
    # a dynamic-size backbone accepts other sizes (its grid follows the input)
    assert tiny_vit()(torch.randn(1, 3, 48, 32)).shape == (1, 3)

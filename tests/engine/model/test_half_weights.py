"""Frozen backbone weights in half precision: same logits as autocast, fewer bytes, on by default."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dtl_engine.model.half_weights import cast_frozen_weights, frozen_half_layers
from dtl_engine.sizing.memory_probe import estimate_memory
from tiny_models import TINY_VIT, TINY_VIT_IMAGE_SIZE, tiny_vit

# bf16 keeps 8 mantissa bits: logits of a random model may move by a few hundredths of their scale
BF16_LOGIT_TOLERANCE = 0.03


def _trained_looking_model() -> nn.Module:
    torch.manual_seed(0)
    model = tiny_vit(num_classes=5)
    with torch.no_grad():  # non-zero up maps, so the side network takes part in the logits
        for tap in model.side_network.taps.values():
            tap.up.weight.normal_(0.0, 0.05)
    return model


def _images() -> torch.Tensor:
    return torch.randn(4, 3, TINY_VIT_IMAGE_SIZE, TINY_VIT_IMAGE_SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_logits_match_fp32_within_tolerance_and_autocast_exactly(precision, dtype):
    model, x = _trained_looking_model(), _images()
    fp32 = model(x)
    with torch.autocast("cpu", dtype=dtype):
        autocast_fp32_weights = model(x)
    saved = cast_frozen_weights(model, precision)
    with torch.autocast("cpu", dtype=dtype):
        half = model(x)
    assert saved > 0
    # autocast casts each frozen weight to the same half values on the fly: storing them so changes nothing
    assert torch.equal(half, autocast_fp32_weights)
    assert (half.float() - fp32).abs().max() <= BF16_LOGIT_TOLERANCE * fp32.abs().max()


def test_only_frozen_linear_and_conv_weights_change_dtype():
    model = _trained_looking_model()
    before = sum(p.numel() * p.element_size() for p in model.parameters())
    saved = cast_frozen_weights(model, "bf16")
    after = sum(p.numel() * p.element_size() for p in model.parameters())
    assert before - after == saved
    for name, p in model.named_parameters():
        frozen_layer_param = not p.requires_grad and (".qkv." in name or ".proj." in name or ".fc" in name)
        assert (p.dtype == torch.bfloat16) == frozen_layer_param, name
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(p.dtype == torch.float32 for m in norms for p in m.parameters())
    assert all(not p.requires_grad for layer in frozen_half_layers(model) for p in layer.parameters())


def test_fp32_is_left_alone():
    model = _trained_looking_model()
    assert cast_frozen_weights(model, "fp32") == 0 and cast_frozen_weights(model, None) == 0
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_training_step_gradients_equal_autocast_with_fp32_weights():
    grads = []
    for cast in (False, True):
        model, x = _trained_looking_model(), _images()
        if cast:
            cast_frozen_weights(model, "bf16")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3]))
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert all(g is not None and torch.isfinite(g).all() for g in grads[1].values())
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], rtol=1e-3, atol=1e-6), name


@pytest.mark.slow
def test_probe_counts_half_weights_by_default_under_bf16_only():
    name, kw = TINY_VIT
    on = estimate_memory(name, 8, precision="bf16", model_kwargs=kw)
    off = estimate_memory(name, 8, precision="bf16", model_kwargs=kw, half_frozen_weights=False)
    fp32 = estimate_memory(name, 8, precision="fp32", model_kwargs=kw)
    model = tiny_vit(num_classes=10)
    half_bytes = sum(p.numel() * 2 for layer in frozen_half_layers(model) for p in layer.parameters())
    assert on.half_frozen_weights and not off.half_frozen_weights and not fp32.half_frozen_weights
    assert off.method.param_bytes - on.method.param_bytes == half_bytes
    assert on.method.total_bytes < off.method.total_bytes
    assert fp32.method.param_bytes == off.method.param_bytes
    assert on.full.param_bytes == off.full.param_bytes  # full fine-tuning trains every weight: no saver


@pytest.mark.slow
def test_runs_store_frozen_weights_in_half_by_default_only_under_autocast(tmp_path, monkeypatch):
    from dtl_engine.training import run_setup, train
    from run_builders import MODEL_KWARGS, image_folder, tiny_config

    calls = []
    real = run_setup.cast_frozen_weights
    monkeypatch.setattr(run_setup, "cast_frozen_weights", lambda m, d: calls.append(d) or real(m, d))
    data = image_folder(tmp_path, per_class=4)
    for precision, flag in (("bf16", True), ("bf16", False), ("fp32", True)):
        result = train(tiny_config(data, epochs=1, max_steps=1, precision=precision, half_frozen_weights=flag),
                       model_kwargs=MODEL_KWARGS)
        assert result.status == "finished"
    assert calls == [torch.bfloat16]

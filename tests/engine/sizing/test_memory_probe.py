"""The memory probe measures what autograd saves; these checks compare it with real CPU steps."""
from __future__ import annotations

import time

import pytest
import torch

from dtl_engine.errors import BackboneError, RunError
from dtl_engine.model.half_weights import cast_frozen_weights
from dtl_engine.sizing.memory_probe import (
    SavedTensorCounter,
    build_method_model,
    estimate_memory,
    format_bytes,
    input_hw,
    measure_activation_bytes,
)
from tests.engine.tiny_models import TINY_SWIN, TINY_VIT

torch.set_num_threads(1)

NAME, KW = TINY_VIT
BATCH = 3


def _real_bytes(method: str, entry=TINY_VIT, precision: str = "fp32", half_frozen_weights: bool = True,
                **savers) -> int:
    """Saved-for-backward bytes of a real forward on real CPU tensors (the ground truth), with the frozen
    weights in half precision under bf16 / fp16 as training stores them by default."""
    name, kw = entry
    torch.manual_seed(0)
    model = build_method_model(method, name, 10, model_kwargs=kw, **savers).train()
    if half_frozen_weights and method in ("dtl", "dtl+", "linear"):
        cast_frozen_weights(model, precision)
    images = torch.randn(BATCH, 3, *input_hw(model))
    labels = torch.randint(0, 10, (BATCH,))
    return measure_activation_bytes(model, images, labels, precision)


@pytest.mark.parametrize("method,savers", [
    ("dtl", {}),
    ("dtl+", {}),
    ("linear", {}),
    ("dtl", {"checkpoint_blocks": True, "low_precision_taps": True}),
])
def test_probe_equals_real_cpu_count(method, savers):
    est = estimate_memory(NAME, BATCH, method=method, model_kwargs=KW, **savers)
    assert est.method.activation_bytes == _real_bytes(method, **savers)
    assert est.full.activation_bytes == _real_bytes("full")


@pytest.mark.slow
def test_probe_equals_real_count_on_swin_in_fp32_and_under_bf16_autocast():
    name, kw = TINY_SWIN
    est = estimate_memory(name, BATCH, method="dtl", model_kwargs=kw)
    assert est.method.activation_bytes == _real_bytes("dtl", TINY_SWIN)
    assert est.full.activation_bytes == _real_bytes("full", TINY_SWIN)
    bf16 = estimate_memory(name, BATCH, method="dtl", precision="bf16", model_kwargs=kw)
    assert bf16.method.activation_bytes == _real_bytes("dtl", TINY_SWIN, "bf16")
    fp32_weights = estimate_memory(name, BATCH, method="dtl", precision="bf16", model_kwargs=kw,
                                   half_frozen_weights=False)
    assert fp32_weights.method.activation_bytes == _real_bytes("dtl", TINY_SWIN, "bf16", half_frozen_weights=False)
    # fp32 frozen weights are cast to bf16 at each use after block M, and autograd keeps those copies
    assert bf16.method.activation_bytes < fp32_weights.method.activation_bytes
    assert bf16.full.activation_bytes == _real_bytes("full", TINY_SWIN, "bf16")
    assert bf16.full.activation_bytes < est.full.activation_bytes


def test_counter_ignores_parameters_and_counts_shared_storage_once():
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8, requires_grad=True)
    with SavedTensorCounter(list(lin.parameters())) as counter:
        y = lin(x)
        z = y * y  # saves y twice (both operands): one storage
    assert counter.bytes == x.numel() * 4 + y.numel() * 4
    assert counter.count == 2
    del z


def test_dtl_saves_less_than_full_and_savers_reduce_it():
    plain = estimate_memory(NAME, 8, method="dtl", model_kwargs=KW)
    ckpt = estimate_memory(NAME, 8, method="dtl", checkpoint_blocks=True, model_kwargs=KW)
    taps = estimate_memory(NAME, 8, method="dtl", low_precision_taps=True, model_kwargs=KW)
    assert 0 < plain.method.activation_bytes < plain.full.activation_bytes
    assert ckpt.method.activation_bytes < plain.method.activation_bytes
    assert taps.method.activation_bytes < plain.method.activation_bytes
    # the savers never touch the full fine-tuning figure
    assert ckpt.full == plain.full == taps.full


def test_parameter_gradient_and_adamw_bytes_follow_the_trainable_set():
    est = estimate_memory(NAME, 4, method="dtl", model_kwargs=KW)
    m, full = est.method, est.full
    assert 0 < m.trainable_params < m.total_params
    assert m.grad_bytes == 4 * m.trainable_params  # fp32 gradients of the trainable part only
    assert m.optimizer_bytes == 2 * m.grad_bytes  # AdamW: exp_avg and exp_avg_sq
    assert m.param_bytes == 4 * m.total_params
    assert m.total_bytes == m.activation_bytes + m.param_bytes + m.grad_bytes + m.optimizer_bytes
    assert full.trainable_params == full.total_params
    assert est.total_ratio < 1.0 and est.activation_ratio < 1.0


def test_activations_grow_linearly_with_batch_and_shrink_under_bf16():
    one = estimate_memory(NAME, 4, method="dtl", model_kwargs=KW)
    two = estimate_memory(NAME, 8, method="dtl", model_kwargs=KW)
    bf16 = estimate_memory(NAME, 8, method="dtl", precision="bf16", model_kwargs=KW)
    # the loss keeps a few scalars whatever the batch; everything else doubles
    assert abs(two.full.activation_bytes - 2 * one.full.activation_bytes) < 64
    assert bf16.full.activation_bytes < 0.75 * two.full.activation_bytes


def test_image_size_changes_the_estimate():
    small = estimate_memory(NAME, 2, image_size=32, method="dtl", model_kwargs=dict(KW, img_size=32))
    large = estimate_memory(NAME, 2, image_size=48, method="dtl", model_kwargs=dict(KW, img_size=32))
    assert large.image_size == (48, 48)
    assert large.method.activation_bytes > 2 * small.method.activation_bytes  # 144 vs 64 patches


def test_bad_input_gets_a_sentence():
    with pytest.raises(RunError, match="batch size"):
        estimate_memory(NAME, 0, model_kwargs=KW)
    with pytest.raises(RunError, match="method"):
        estimate_memory(NAME, 2, method="adapter", model_kwargs=KW)
    with pytest.raises(RunError, match="precision"):
        estimate_memory(NAME, 2, precision="fp8", model_kwargs=KW)
    with pytest.raises(RunError, match="image size"):
        estimate_memory(NAME, 2, image_size=-5, model_kwargs=KW)
    with pytest.raises(BackboneError, match="not a model timm knows"):
        estimate_memory("vit_base_patch99_999", 2)


@pytest.mark.slow
def test_vit_base_batch_32_probe_speed_and_result():
    """Slider speed check on the real size: printed (noisy shared CPU), the result is asserted."""
    start, cpu = time.perf_counter(), time.process_time()
    est = estimate_memory("vit_base_patch16_224", 32, method="dtl")
    cold, cold_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    again = estimate_memory("vit_base_patch16_224", 24, method="dtl")
    warm, warm_cpu = time.perf_counter() - start, time.process_time() - cpu
    # CPU seconds are the fairer figure on a shared machine
    print(f"\nprobe ViT-B/16 batch 32: first call {cold:.2f} s ({cold_cpu:.2f} s CPU), "
          f"next slider move {warm:.2f} s ({warm_cpu:.2f} s CPU); "
          f"DTL {format_bytes(est.method.activation_bytes)} vs full {format_bytes(est.full.activation_bytes)}")
    # DTL keeps one third of full fine-tuning's activations or less (design §1), trainable ≈ 0.04 M
    assert 0.2 < est.activation_ratio < 0.4
    assert 30_000 < est.method.trainable_params < 60_000
    assert est.full.trainable_params > 80_000_000
    assert again.method.activation_bytes < est.method.activation_bytes

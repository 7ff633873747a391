"""Training behaviour: only the side network and head learn, the frozen prefix builds no autograd graph,
train/eval modes, memory savers (same numbers, less saved memory) and bf16 autocast."""
from __future__ import annotations

from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F

from tiny_models import tiny_swin, tiny_vit

torch.set_num_threads(1)
BUILDERS = {"vit": tiny_vit, "swin": tiny_swin}


def _batch(n=4, hw=(32, 32), classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, *hw, generator=g), torch.randint(0, classes, (n,), generator=g)


def _twin_models(family, variant="dtl+", shared=None, **kw):
    """Two models with identical backbone, side network and head, differing only in ``kw``."""
    shared = shared or {}
    torch.manual_seed(0)
    base = BUILDERS[family](variant=variant, **shared)
    torch.manual_seed(0)
    other = BUILDERS[family](variant=variant, **shared, **kw)
    other.load_state_dict(base.state_dict())
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p, q in zip(base.side_network.parameters(), other.side_network.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            q.copy_(p)
    return base, other


def _loss_and_grads(model, images, labels):
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _train(model, steps=15, lr=3e-2):
    images, labels = _batch(8)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("family", ["vit", "swin"])
def test_training_changes_only_side_network_and_head(family):
    torch.manual_seed(0)
    model = BUILDERS[family](variant="dtl+")
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainable = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    losses = _train(model, steps=4)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, frozen[key]), f"backbone {key} changed"
    assert all(p.grad is None for p in model.backbone.parameters())
    for key, value in model.trainable_state_dict().items():
        assert not torch.equal(value, trainable[key]), f"{key} did not train"
    assert losses[-1] < losses[0]


def _saved_tensors_per_block(model, images):
    """Count tensors autograd saves for backward while each backbone block runs."""
    active: list[int | None] = [None]
    counts: dict[int, int] = defaultdict(int)
    handles = []
    for i, blk in enumerate(model._adapter.blocks):
        handles.append(blk.register_forward_pre_hook(lambda m, a, i=i: active.__setitem__(0, i)))
        handles.append(blk.register_forward_hook(lambda m, a, o: active.__setitem__(0, None)))

    def pack(t):
        if active[0] is not None:
            counts[active[0]] += 1
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(images).sum().backward()
    finally:
        for h in handles:
            h.remove()
    return counts


@pytest.mark.parametrize("family", ["vit", "swin"])
def test_frozen_prefix_builds_no_autograd_graph(family):
    model = BUILDERS[family](variant="dtl+")
    model.train()
    images, _ = _batch(2)
    counts = _saved_tensors_per_block(model, images)
    m, depth = model.spec.inject_from, model.spec.depth
    assert all(counts[i] == 0 for i in range(m + 1)), dict(counts)
    # the counter works: every block after M must be back-propagated through and saves activations
    assert all(counts[i] > 0 for i in range(m + 1, depth)), dict(counts)


def _saved_bytes(model, images):
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(images).sum().backward()
    return sum(seen.values())


def test_modes_keep_the_backbone_in_eval_unless_drop_path():
    model = tiny_vit()
    model.train()
    assert model.training and model.side_network.training and model.head.training
    assert not model.backbone.training and not any(m.training for m in model.backbone.modules())
    stochastic = tiny_vit(drop_path=0.2)
    stochastic.train()
    assert all(b.training for b in stochastic.backbone.blocks)
    images, _ = _batch(2)
    torch.manual_seed(0)
    a = stochastic.forward_prefix(images)["block_out"]
    b = stochastic.forward_prefix(images)["block_out"]
    assert not torch.equal(a, b)  # stochastic depth is active in the frozen blocks
    stochastic.eval()
    assert not any(m.training for m in stochastic.modules())
    assert torch.equal(stochastic.forward_prefix(images)["block_out"], stochastic.forward_prefix(images)["block_out"])


@pytest.mark.parametrize("family", ["vit", "swin"])
def test_checkpoint_blocks_is_exact_and_saves_memory(family):
    base, saver = _twin_models(family, checkpoint_blocks=True)
    assert saver.spec.checkpoint_blocks and saver.spec.exact
    images, labels = _batch()
    base.train(), saver.train()
    loss_a, grads_a = _loss_and_grads(base, images, labels)
    loss_b, grads_b = _loss_and_grads(saver, images, labels)
    assert torch.allclose(loss_a, loss_b, rtol=0, atol=1e-6)
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-7), name
    assert _saved_bytes(saver, images) < 0.7 * _saved_bytes(base, images)


def test_checkpoint_blocks_is_exact_with_stochastic_depth():
    base, saver = _twin_models("vit", shared={"drop_path": 0.3}, checkpoint_blocks=True)
    base.train(), saver.train()
    assert base.backbone.blocks[-1].drop_path1.training
    images, labels = _batch()
    torch.manual_seed(7)
    loss_a, grads_a = _loss_and_grads(base, images, labels)
    torch.manual_seed(7)
    loss_b, grads_b = _loss_and_grads(saver, images, labels)
    assert torch.allclose(loss_a, loss_b, rtol=0, atol=1e-6)  # recomputation replays the same random drops
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-7), name


@pytest.mark.parametrize("family", ["vit", "swin"])
def test_low_precision_taps_are_close_and_save_memory(family):
    base, saver = _twin_models(family, low_precision_taps=True)
    assert not saver.spec.exact
    images, labels = _batch()
    prefix = saver.forward_prefix(images)
    assert all(v.dtype == torch.bfloat16 for k, v in prefix.items() if k.startswith("tap."))
    loss_a, grads_a = _loss_and_grads(base, images, labels)
    loss_b, grads_b = _loss_and_grads(saver, images, labels)
    assert torch.allclose(loss_a, loss_b, rtol=2e-2, atol=1e-3)
    for name in grads_a:
        scale = grads_a[name].abs().max().clamp_min(1e-6)
        assert ((grads_a[name] - grads_b[name]).abs().max() / scale) < 5e-2, name
    assert _saved_bytes(saver, images) < _saved_bytes(base, images)


@pytest.mark.parametrize("saver", [{"checkpoint_blocks": True}, {"low_precision_taps": True},
                                   {"checkpoint_blocks": True, "low_precision_taps": True}])
def test_savers_still_train(saver):
    torch.manual_seed(0)
    losses = _train(tiny_vit(variant="dtl+", **saver), steps=12)
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("family", ["vit", "swin"])
@pytest.mark.parametrize("low_precision", [False, True])
def test_bf16_autocast_trains(family, low_precision):
    torch.manual_seed(0)
    model = BUILDERS[family](variant="dtl+", low_precision_taps=low_precision)
    images, labels = _batch()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images)
        loss = F.cross_entropy(logits.float(), labels)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    # a prefix cached under autocast can be continued without it (e.g. fp32 evaluation)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prefix = model.forward_prefix(images)
    with torch.no_grad():
        assert torch.isfinite(model.forward_from_prefix(prefix)).all()


def test_linear_probe_trains_only_the_head():
    torch.manual_seed(0)
    model = tiny_vit(variant="linear")
    assert model.side_network is None
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names == ["head.weight", "head.bias"]
    images, _ = _batch(2)
    prefix = model.forward_prefix(images)
    assert list(prefix) == ["features"] and prefix["features"].shape == (2, 64)
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    losses = _train(model, steps=6)
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, frozen[k]) for k, v in model.backbone.state_dict().items())

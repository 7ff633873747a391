"""The fused side-network path (g = β·h, silu, one matmul of the codes, DTL's β-scaled gradient of g) equals
the written equations."""
from __future__ import annotations

import pytest
import torch

from benchmarks.official_dtl import FrozenBlocksOnly, OfficialDTL, compare, saved_bytes
from dtl_engine.model.side_network import CompactSideNetwork, swish
from tiny_models import TINY_SWIN, TINY_VIT, TINY_VIT_IMAGE_SIZE, tiny_vit

WIDTH, RANK, BETA = 16, 2, 100.0


def _net(fusion: bool) -> CompactSideNetwork:
    torch.manual_seed(0)
    net = CompactSideNetwork({i: WIDTH for i in range(4)}, RANK, BETA, {0: WIDTH} if fusion else None, 3)
    with torch.no_grad():
        for tap in net.taps.values():
            tap.up.weight.normal_(0.0, 0.1)
        for conv in net.fusion.values():
            conv.weight.normal_(0.0, 0.3)
    return net


def _on_grid(fn, s, grid):
    n, t, c = s.shape
    return fn(s.transpose(1, 2).reshape(n, c, *grid)).reshape(n, c, t).transpose(1, 2)


@pytest.mark.parametrize("fusion", [False, True])
def test_fused_path_equals_the_equations_in_value_and_gradient(fusion):
    net = _net(fusion)
    xs = [torch.randn(2, 9, WIDTH, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    base = torch.randn(2, 9, WIDTH, dtype=torch.float64, requires_grad=True)
    net = net.double()

    def phi(s):
        return _on_grid(net.fusion["stage0"], s, (3, 3)) if fusion else s

    def reference():
        h = net.tap(0, xs[0]) + net.tap(1, xs[1]) + net.tap(2, xs[2])
        mid = base + phi(swish(h, BETA))
        h = h + net.tap(3, xs[3])
        return base + phi(swish(h, BETA)) + 0.5 * mid

    def fused():
        codes = [(i, net.code(i, xs[i])) for i in range(3)]
        mid = net.inject(base, net.gate(codes), 0, _on_grid, (3, 3))     # an injection on the way, as in a model
        g = net.gate([*codes, (3, net.code(3, xs[3]))])
        return net.inject(base, g, 0, _on_grid, (3, 3)) + 0.5 * mid

    out_ref, out = reference(), fused()
    assert torch.allclose(out, out_ref, rtol=1e-9, atol=1e-12)
    weights = [*xs, base, *net.parameters()]
    g_ref = torch.autograd.grad(out_ref.square().sum(), weights)
    g_fused = torch.autograd.grad(out.square().sum(), weights)
    for a, b in zip(g_ref, g_fused):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-12)


def test_gate_of_one_code_is_beta_times_its_tap():
    net = _net(False)
    x = torch.randn(2, 9, WIDTH)
    assert torch.allclose(net.gate([(1, net.code(1, x))]), BETA * net.tap(1, x), rtol=1e-5, atol=1e-6)


def test_same_logits_as_the_official_forward_with_fewer_saved_bytes():
    torch.manual_seed(0)
    ours = tiny_vit(num_classes=4)
    with torch.no_grad():
        for tap in ours.side_network.taps.values():
            tap.up.weight.normal_(0.0, 0.05)
    official = OfficialDTL(ours)
    images = torch.randn(3, 3, TINY_VIT_IMAGE_SIZE, TINY_VIT_IMAGE_SIZE)
    labels = torch.tensor([0, 1, 2])
    assert torch.allclose(ours(images), official(images), rtol=1e-4, atol=1e-6)
    assert saved_bytes(ours, images, labels) <= saved_bytes(official, images, labels)


@pytest.mark.parametrize("entry, variant", [(TINY_VIT, "dtl"), (TINY_VIT, "dtl+"), (TINY_SWIN, "dtl")],
                         ids=["vit-dtl", "vit-dtl+", "swin-dtl"])
def test_model_gradients_equal_the_equations(entry, variant):
    """The trained parameters' gradients through the whole model (β-scaled g for DTL, restarts at Swin stages)
    equal those of the equations re-stated with plain tensor algebra, in float64."""
    from test_model_equations import _build, _randomise_side, reference_swin_logits, reference_vit_logits

    model = _build(entry, variant)
    _randomise_side(model, std=0.05)
    model = model.double().train(True)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    reference = reference_swin_logits if entry is TINY_SWIN else reference_vit_logits
    params = [p for p in model.parameters() if p.requires_grad]
    ours = torch.autograd.grad(model(images).square().sum(), params)
    expected = torch.autograd.grad(reference(model, images).square().sum(), params)
    for (name, _), a, b in zip([(n, p) for n, p in model.named_parameters() if p.requires_grad], ours, expected):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-10), name


def test_the_floor_backpropagates_through_the_later_blocks_but_has_no_side_path():
    torch.manual_seed(0)
    ours = tiny_vit(num_classes=4)
    floor = FrozenBlocksOnly(ours)
    images = torch.randn(3, 3, TINY_VIT_IMAGE_SIZE, TINY_VIT_IMAGE_SIZE)
    labels = torch.tensor([0, 1, 2])
    assert [p.shape for p in floor.parameters()] == [floor.head.weight.shape, floor.head.bias.shape]
    head_only = saved_bytes(ours.head, torch.randn(3, ours.head.in_features), labels)
    # the floor keeps the later blocks' activations for backward (as DTL must), and less than DTL itself
    assert head_only < saved_bytes(floor, images, labels) < saved_bytes(ours, images, labels)


def test_the_comparison_reports_ours_the_official_and_the_floor():
    r = compare("test_vit", batch=2, repeats=3)
    assert r["same_logits"] and r["clock"] == "process CPU"
    assert set(r["seconds"]) == {"ours", "official", "floor"} and min(r["seconds"].values()) > 0
    assert r["saved_ratio"] <= 1.0 and r["floor_vs_official"] > 0

"""The fused side-network path (g = β·h, silu, one matmul for the prefix taps) equals the written equations."""
from __future__ import annotations

import pytest
import torch

from benchmarks.official_dtl import OfficialDTL, saved_bytes
from dtl_engine.side_network import CompactSideNetwork, swish
from tiny_models import TINY_VIT_IMAGE_SIZE, tiny_vit

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

    def reference():
        h = net.tap(0, xs[0]) + net.tap(1, xs[1]) + net.tap(2, xs[2])
        h = h + net.tap(3, xs[3])
        s = swish(h, BETA)
        return base + (_on_grid(net.fusion["stage0"], s, (3, 3)) if fusion else s)

    def fused():
        g = net.gate_sum([(0, xs[0]), (1, xs[1]), (2, xs[2])])
        g = net.gate_add(3, xs[3], g)
        return net.inject(base, g, 0, _on_grid, (3, 3))

    out_ref, out = reference(), fused()
    assert torch.allclose(out, out_ref, rtol=1e-9, atol=1e-12)
    weights = [*xs, base, *net.parameters()]
    g_ref = torch.autograd.grad(out_ref.square().sum(), weights)
    g_fused = torch.autograd.grad(out.square().sum(), weights)
    for a, b in zip(g_ref, g_fused):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-12)


def test_gate_add_without_a_sum_starts_one():
    net = _net(False)
    x = torch.randn(2, 9, WIDTH)
    assert torch.allclose(net.gate_add(1, x, None), BETA * net.tap(1, x), rtol=1e-5, atol=1e-6)


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

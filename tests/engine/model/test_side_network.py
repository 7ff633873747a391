"""Compact Side Network parts: initialisation, swish gate, DTL+ conv as the official code,
low-precision tap gradients."""
from __future__ import annotations

import torch

from dtl_engine.model.side_network import CompactSideNetwork, LowRankTap, swish

torch.set_num_threads(1)


def test_swish_is_h_times_sigmoid_beta_h():
    h = torch.linspace(-0.2, 0.2, 41)
    assert torch.allclose(swish(h, 100.0), h / (1 + torch.exp(-100.0 * h)))
    assert torch.allclose(swish(h, 1.0), torch.nn.functional.silu(h))


def test_taps_are_bias_free_low_rank_and_start_at_zero():
    net = CompactSideNetwork({3: 16, 4: 16, 5: 32}, rank=2, fusion_stages={1: 32}, fusion_kernel=5)
    assert list(net.taps) == ["3", "4", "5"]
    tap = net.taps["5"]
    assert tap.down.bias is None and tap.up.bias is None
    assert tap.down.weight.shape == (2, 32) and tap.up.weight.shape == (32, 2)
    x = torch.randn(4, 7, 32)
    assert torch.count_nonzero(net.tap(5, x)) == 0  # B = 0: no change to the backbone at step 0
    bound = 1 / 32 ** 0.5  # Kaiming-uniform (a=√5) bound for fan-in 32
    assert tap.down.weight.abs().max() <= bound and tap.down.weight.std() > bound / 4
    assert sum(p.numel() for p in net.parameters()) == 2 * (2 * 16 * 2) + 2 * 32 * 2 + 32 * 25


def test_dtl_plus_conv_is_initialised_and_padded_as_the_official_code():
    torch.manual_seed(0)
    net = CompactSideNetwork({0: 8}, rank=2, fusion_stages={0: 8}, fusion_kernel=3)
    conv = net.fusion["stage0"]
    assert conv.groups == 8 and conv.bias is None and conv.padding == "same"
    bound = 1 / 9 ** 0.5  # PyTorch's default conv init: Kaiming-uniform (a=√5), fan-in 1·3·3
    assert conv.weight.abs().max() <= bound and conv.weight.std() > bound / 4
    maps = torch.randn(2, 8, 5, 7)
    assert not torch.allclose(conv(maps), maps)  # not an identity start
    # an even kernel keeps the grid and pads one more zero on the right / bottom, as PyTorch's 'same'
    even = CompactSideNetwork({0: 8}, rank=2, fusion_stages={0: 8}, fusion_kernel=4).fusion["stage0"]
    out = even(maps)
    assert out.shape == maps.shape
    manual = torch.nn.functional.conv2d(torch.nn.functional.pad(maps, (1, 2, 1, 2)), even.weight, groups=8)
    assert torch.allclose(out, manual, atol=1e-6)


def test_low_precision_tap_gradients_match_full_precision():
    torch.manual_seed(0)
    exact, low = LowRankTap(32, 4), LowRankTap(32, 4, low_precision=True)
    with torch.no_grad():
        exact.up.weight.normal_()
    low.load_state_dict(exact.state_dict())
    x = torch.randn(3, 10, 32, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    exact(x).pow(2).sum().backward()
    low(x2).pow(2).sum().backward()
    for a, b in [(exact.down.weight.grad, low.down.weight.grad), (exact.up.weight.grad, low.up.weight.grad),
                 (x.grad, x2.grad)]:
        assert b.dtype == a.dtype
        assert torch.allclose(a, b, rtol=3e-2, atol=3e-2 * a.abs().max().item())
    # not bit-identical: only a bf16 copy of x was kept
    assert not torch.equal(exact.down.weight.grad, low.down.weight.grad)


def test_swish_gradient_is_exact_and_keeps_one_tensor():
    h = (torch.randn(3, 5, 4, dtype=torch.float64) * 0.05).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: swish(t, 100.0), (h,))
    plain = torch.autograd.grad((h * torch.sigmoid(100.0 * h)).sum(), h)[0]
    assert torch.allclose(torch.autograd.grad(swish(h, 100.0).sum(), h)[0], plain)

    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        swish(h, 100.0)
    assert len(saved) == 1      # only h: the sigmoid is recomputed in backward

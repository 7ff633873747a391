"""The Compact Side Network of DTL: low-rank taps, the swish gate and the DTL+ depthwise fusion.

For every tap block i:  h_i = h_{i-1} + x_i · A_iᵀ · B_iᵀ   (A_i: ``taps.i.down``, B_i: ``taps.i.up``)
and for every injection block i ≥ M the model adds φ(swish_β(h_i)) to the block output, where φ is the
identity (DTL) or a depthwise k×k convolution on the patch grid shared by a stage (DTL+: ``fusion.stageS``).
"""
from __future__ import annotations

import math
from typing import Callable, cast

import torch
import torch.nn.functional as F
from torch import nn


class _LowPrecisionDown(torch.autograd.Function):
    """x·Aᵀ that keeps only a bf16 copy of x for the backward pass (the 'low precision taps' saver)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x.to(torch.bfloat16), weight)
        ctx.x_dtype = x.dtype
        compute = torch.result_type(x, weight) if not torch.is_autocast_enabled(x.device.type) else None
        if compute is not None:
            return F.linear(x.to(compute), weight.to(compute))
        return F.linear(x, weight)  # autocast picks the compute dtype

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x16, weight = ctx.saved_tensors
        g = grad_out.float().reshape(-1, grad_out.shape[-1])
        grad_w = (g.t() @ x16.float().reshape(-1, x16.shape[-1])).to(weight.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad_out.float() @ weight.float()).to(ctx.x_dtype)
        return grad_x, grad_w


class LowRankTap(nn.Module):
    """W_i = B_i·A_i without bias; A_i (``down``) Kaiming-uniform, B_i (``up``) zero, so W_i starts at 0."""

    def __init__(self, width: int, rank: int, low_precision: bool = False) -> None:
        super().__init__()
        self.down = nn.Linear(width, rank, bias=False)
        self.up = nn.Linear(rank, width, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        self.low_precision = low_precision

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The rank-r code x·Aᵀ."""
        if self.low_precision and torch.is_grad_enabled():
            return _LowPrecisionDown.apply(x, self.down.weight)
        return self.down(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.code(x))


def swish(h: torch.Tensor, beta: float) -> torch.Tensor:
    """swish_β(h) = h · sigmoid(β·h)."""
    if torch.is_grad_enabled() and h.requires_grad:
        return _Swish.apply(h, beta)
    # Plain ops when no gradient is needed: inference, tracing and export see ordinary tensors.
    return h * torch.sigmoid(beta * h)


class _Swish(torch.autograd.Function):
    """Exact swish that keeps only h for backward and recomputes the sigmoid there.

    Autograd's own version keeps both h and sigmoid(β·h) at every injection block.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, beta: float) -> torch.Tensor:
        ctx.save_for_backward(h)
        ctx.beta = beta
        return h * torch.sigmoid(beta * h)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (h,) = ctx.saved_tensors
        s = torch.sigmoid(ctx.beta * h)
        return grad * (s * (1 + ctx.beta * h * (1 - s))), None


class CompactSideNetwork(nn.Module):
    """All trainable side parts: ``taps`` (one per tap block, in block order) and DTL+ ``fusion`` convs.

    Args:
        tap_widths: {block index: channel width} for every tap block, in block order.
        rank: r of every low-rank map.
        beta: steepness of the swish gate.
        fusion_stages: {stage index: channel width} of the stages that get a DTL+ conv; empty for DTL.
        fusion_kernel: k of the depthwise k×k convs.
        low_precision_taps: keep the saved tap inputs in bf16.
    """

    def __init__(self, tap_widths: dict[int, int], rank: int, beta: float = 100.0,
                 fusion_stages: dict[int, int] | None = None, fusion_kernel: int = 3,
                 low_precision_taps: bool = False) -> None:
        super().__init__()
        self.rank = rank
        self.beta = float(beta)
        self.taps = nn.ModuleDict({str(i): LowRankTap(w, rank, low_precision_taps) for i, w in tap_widths.items()})
        self.fusion = nn.ModuleDict()
        for stage, width in (fusion_stages or {}).items():
            # As the official code: padding 'same' (an even kernel pads one more on the right and bottom)
            # and PyTorch's default initialisation of the depthwise conv.
            self.fusion[f"stage{stage}"] = nn.Conv2d(width, width, fusion_kernel, padding="same", groups=width,
                                                     bias=False)

    def has_tap(self, index: int) -> bool:
        """True when block ``index`` has a tap."""
        return str(index) in self.taps

    def tap(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """x_i · A_iᵀ · B_iᵀ for tap block ``index``."""
        return self._tap(index)(x)

    def _tap(self, index: int) -> LowRankTap:
        return cast(LowRankTap, self.taps[str(index)])    # the ModuleDict holds only taps

    # --- the fused path the model trains with -------------------------------------------
    # The model carries g = β·h instead of h: then swish_β(h) = silu(g) / β, where silu and its backward
    # are single fused kernels (swish as h·sigmoid(β·h) takes about eight elementwise passes forward and
    # backward), β rides along in the small up maps for free, and 1/β in the final add.
    # Every g is one matmul of the rank-r codes since the last restart side by side with their up maps
    # (a k·r-wide product costs no more than a rank-r one), so no full-width running sum is copied
    # forward or accumulated backward.
    # DTL (no fusion convs) trains with the gradient of g carried as β·∂L/∂g: the 1/β of the injection then
    # moves from a full-width multiply in every injection's backward onto the rank-r codes' gradients.

    def _scaled_grads(self) -> bool:
        return not self.fusion and torch.is_grad_enabled()

    def code(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """The rank-r code x·Aᵢᵀ of tap block ``index``, ready for :meth:`gate`."""
        z = self._tap(index).code(x)
        return _ScaleGrad.apply(z, 1.0 / self.beta) if self._scaled_grads() else z

    def gate(self, codes: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
        """g = β·Σᵢ zᵢ·Bᵢᵀ over ``codes`` [(block index i, :meth:`code` of its input)], as one matmul."""
        z = codes[0][1] if len(codes) == 1 else torch.cat([c for _, c in codes], dim=-1)
        ups = [self._tap(i).up.weight for i, _ in codes]
        up = ups[0] if len(ups) == 1 else torch.cat(ups, dim=1)
        return F.linear(z, _ScaleForward.apply(up, self.beta) if self._scaled_grads() else up * self.beta)

    def gate_sum(self, taps: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
        """g = β·Σᵢ xᵢ·Aᵢᵀ·Bᵢᵀ over ``taps`` [(block index i, xᵢ)]."""
        return self.gate([(i, self.code(i, x)) for i, x in taps])

    def inject(self, x: torch.Tensor, g: torch.Tensor, stage: int,
               on_grid: Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor, tuple[int, int]], torch.Tensor],
               grid: tuple[int, int]) -> torch.Tensor:
        """x + φ(swish_β(h)) for g = β·h, computed as x + φ(silu(g)) / β (φ is linear)."""
        if self._scaled_grads():
            return _Inject.apply(x, g, 1.0 / self.beta)
        s = F.silu(g)
        key = f"stage{stage}"
        if key in self.fusion:
            s = on_grid(self.fusion[key], s, grid)
        return torch.add(x, s, alpha=1.0 / self.beta)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient times ``scale`` (on rank-r codes: a few thousand numbers per image)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


class _ScaleForward(torch.autograd.Function):
    """w·``scale`` forward, the gradient passed on unscaled: for the β-scaled gradient of g (see above)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, scale: float) -> torch.Tensor:
        return w * scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class _Inject(torch.autograd.Function):
    """x + silu(g)·``inv_beta``; backward hands on β·∂L/∂g (the full-width 1/β is left to the codes)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, g: torch.Tensor, inv_beta: float) -> torch.Tensor:
        ctx.save_for_backward(g)
        return torch.add(x, F.silu(g), alpha=inv_beta)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (g,) = ctx.saved_tensors
        grad_g = torch.ops.aten.silu_backward(grad, g) if ctx.needs_input_grad[1] else None
        return grad, grad_g, None

"""AdamW for many independent probe trials held in one tensor (the search's probe trials)."""
from __future__ import annotations

import math

import torch


class BatchedAdamW:
    """torch's AdamW (default betas and eps), for tensors whose first axis holds independent trials.

    ``step(grads, lr)`` takes one rate per trial (``lr``: shape (k,)); a rate of 0 leaves a trial as it is.
    """

    def __init__(self, params: list[torch.Tensor], decays: list[float], betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params, self.decays, self.betas, self.eps = params, decays, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[torch.Tensor], lr: torch.Tensor) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1 ** self.t, math.sqrt(1.0 - b2 ** self.t)
        for p, g, m, v, decay in zip(self.params, grads, self.m, self.v, self.decays):
            rate = lr.view(-1, *([1] * (p.dim() - 1)))
            if decay:
                p.mul_(1.0 - rate * decay)
            m.lerp_(g, 1.0 - b1)
            v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            p.sub_(rate / c1 * m / (v.sqrt() / c2 + self.eps))

"""The paper's optimisation recipe: AdamW without decay on biases / 1-D parameters, cosine with warm-up.

Both come from timm. The scheduler is stepped per update (not per epoch), so
short runs still get a smooth warm-up; its learning rate depends only on the
update count, which makes resuming exact.
"""
from __future__ import annotations

import math

import torch
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler

# Floor and warm-up start of the learning rate, as in the DTL authors' recipe.
LR_MIN = 1e-8
WARMUP_LR_INIT = 1e-7


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters only; biases and 1-D parameters get no weight decay."""
    groups = param_groups_weight_decay(model, weight_decay=weight_decay)  # skips frozen parameters
    return torch.optim.AdamW(groups, lr=lr)


def warmup_steps_for(warmup_epochs: float, steps_per_epoch: int, total_steps: int) -> int:
    """Warm-up length in updates; never the whole run, so the cosine part always exists."""
    steps = int(math.ceil(warmup_epochs * steps_per_epoch))
    return max(0, min(steps, total_steps - 1))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                    prefix: bool = True) -> CosineLRScheduler:
    """Linear warm-up for ``warmup_steps`` updates and cosine decay to ``LR_MIN`` at ``total_steps``.

    ``prefix`` True: the cosine starts after the warm-up. False (the official DTL code): the cosine
    spans the whole run and the warm-up replaces its first updates.
    """
    # At least 2: a one-update cosine makes timm log "will have no effect" to stderr. Every update that
    # happens (t < t_initial) gets the same learning rate either way: the cosine starts at its peak.
    return CosineLRScheduler(
        optimizer,
        t_initial=max(2, total_steps - warmup_steps) if prefix else max(2, total_steps),
        lr_min=LR_MIN,
        warmup_t=warmup_steps,
        warmup_lr_init=WARMUP_LR_INIT,
        warmup_prefix=prefix,
        t_in_epochs=False,
    )


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])

"""Short trials of the whole model (side network + classifier) from the probe's start, on cached prefixes.

The probe trials choose the classifier's rate on fixed features; the side network trains through the
frozen blocks after M and needs its own, smaller step, which a fixed factor of the probe's rate got
wrong in both directions: too small on the 64 px digits (1e-2 where 3e-2 is best), too large at
224 px (the run went backwards from its first epoch). So two or three rates around that factor are
each tried for a short stretch of the run's own kind of update, starting from exactly the model
the run starts from (the winning probe, the side network at zero), on the prefixes the search has
just cached; the lowest loss on the search-validation images wins.

A short trial cannot show how a long run ends, but from the probe's start it shows what matters
here: whether a rate improves the model at all or already breaks it. Each trial is
:data:`SIDE_TRIAL_SHARE` of the run's updates (bounded); a run too short to spare
:data:`MIN_SIDE_TRIAL_STEPS` per trial within :data:`SIDE_TRIALS_MAX_SHARE` of its updates gets no
trials (the search falls back to the fixed factor), so the trials stay a small share of any run.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn.functional as F

from dtl_engine.training.optim import build_optimizer

if TYPE_CHECKING:
    from dtl_engine.model.dtl import DTLModel
    from dtl_engine.training.feature_cache import FeatureCache

SIDE_TRIAL_SHARE = 0.04     # of the run's updates, per trial
MIN_SIDE_TRIAL_STEPS = 12   # below this a trial says nothing (still in its warm-up)
MAX_SIDE_TRIAL_STEPS = 150
SIDE_TRIALS_MAX_SHARE = 0.15    # of the run's updates, all trials together
# A trial's rate rises linearly over all its updates, as the run's own warm-up rises over its first epochs:
# measured on the 64 px digits (test_vit, 27-update trials), a ramp over the first quarter or half put 3e-2
# last (a jump the run never makes), a ramp over the whole trial put it first, as 15-epoch runs do
# (3e-2: 0.944, 1e-2: 0.914 from the probe).
WARMUP_SHARE = 1.0
TRIALS = 3
SIDE_LADDER = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)   # rates the side network may get
# A larger rate must lower the loss by this share to be chosen over a smaller one: a short trial
# favours fast rates, and a long run at a rate that is only as good is the one more likely to diverge.
LARGER_RATE_MARGIN = 0.02


@dataclass
class SideTrial:
    lr: float
    val_loss: float
    val_acc: float
    steps: int
    seconds: float
    curve: list[float]


def side_trial_steps(total_steps: int) -> int:
    """Updates per side-network trial: a small share of the run, bounded; 0 when the run is too short for any."""
    steps = int(min(MAX_SIDE_TRIAL_STEPS, max(MIN_SIDE_TRIAL_STEPS, round(SIDE_TRIAL_SHARE * total_steps))))
    return steps if TRIALS * steps <= SIDE_TRIALS_MAX_SHARE * total_steps else 0


def candidate_rates(center: float, ladder: Sequence[float] = SIDE_LADDER) -> list[float]:
    """The ladder's rate nearest ``center`` and its neighbours (two or three rates)."""
    rates = sorted(float(r) for r in ladder)
    i = min(range(len(rates)), key=lambda j: (abs(math.log(rates[j]) - math.log(center)), rates[j]))
    return rates[max(0, i - 1):i + 2]


def pick(trials: Sequence[SideTrial]) -> SideTrial:
    """The lowest validation loss; a larger rate only when it is lower by :data:`LARGER_RATE_MARGIN`."""
    alive = sorted((t for t in trials if math.isfinite(t.val_loss)), key=lambda t: t.lr)
    if not alive:
        return min(trials, key=lambda t: t.lr)
    best = alive[0]
    for t in alive[1:]:
        if t.val_loss < best.val_loss * (1.0 - LARGER_RATE_MARGIN):
            best = t
    return best


def run_side_trials(model: DTLModel, cache: FeatureCache, labels: torch.Tensor, train_idx: Sequence[int],
                    val_idx: Sequence[int], head: tuple[torch.Tensor, torch.Tensor], rates: Sequence[float],
                    steps: int, config: Any, device: torch.device, autocast: Callable[[], Any], seed: int,
                    should_stop: Callable[[], bool], on_trial: Callable[[SideTrial], None]) -> list[SideTrial]:
    """Train the whole model from ``head`` at each rate for ``steps`` updates; the model is left as it was.

    ``train_idx`` / ``val_idx``: sample indices whose prefixes are in ``cache`` (the search's split).
    Raises ``InterruptedError`` when ``should_stop`` says so (the caller turns it into its own stop).
    """
    saved = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    was_training = model.training
    train_t = torch.tensor(list(train_idx), dtype=torch.long)
    size = int(config.batch_size)
    warmup = max(1, round(steps * WARMUP_SHARE))    # a ramp, as the run's warm-up does at its start
    trials: list[SideTrial] = []
    try:
        for lr in rates:
            t0 = time.perf_counter()
            model.load_trainable_state_dict(saved)
            with torch.no_grad():
                model.head.weight.copy_(head[0])
                model.head.bias.copy_(head[1])
            optimizer = build_optimizer(model, lr, config.weight_decay)
            gen = torch.Generator().manual_seed(seed)        # the same batches at every rate
            order = torch.empty(0, dtype=torch.long)
            curve: list[float] = []
            model.train()
            for step in range(steps):
                if should_stop():
                    raise InterruptedError()
                if len(order) < size:
                    order = torch.cat([order, train_t[torch.randperm(len(train_t), generator=gen)]])
                batch, order = order[:size], order[size:]
                for group in optimizer.param_groups:
                    group["lr"] = lr * min(1.0, (step + 1) / warmup)
                with autocast():
                    logits = model.forward_from_prefix(cache.fetch(batch, device))
                loss = F.cross_entropy(logits.float(), labels[batch].to(device),
                                       label_smoothing=float(config.label_smoothing))
                if not bool(torch.isfinite(loss)):
                    curve.append(float("inf"))
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                curve.append(float(loss.detach()))
            val_loss, val_acc = _score(model, cache, labels, val_idx, size, device, autocast) \
                if math.isfinite(curve[-1] if curve else 0.0) else (float("inf"), 0.0)
            trial = SideTrial(lr=float(lr), val_loss=val_loss, val_acc=val_acc, steps=len(curve),
                              seconds=time.perf_counter() - t0, curve=curve)
            trials.append(trial)
            on_trial(trial)
    finally:
        model.load_trainable_state_dict(saved)
        model.train(was_training)
    return trials


@torch.no_grad()
def _score(model: DTLModel, cache: FeatureCache, labels: torch.Tensor, val_idx: Sequence[int], size: int,
           device: torch.device, autocast: Callable[[], Any]) -> tuple[float, float]:
    model.eval()
    loss_sum, correct = 0.0, 0
    idx = torch.tensor(list(val_idx), dtype=torch.long)
    for start in range(0, len(idx), max(size, 64)):
        batch = idx[start:start + max(size, 64)]
        with autocast():
            logits = model.forward_from_prefix(cache.fetch(batch, device)).float()
        y = labels[batch].to(device)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    n = max(1, len(idx))
    loss = loss_sum / n
    return (loss if math.isfinite(loss) else float("inf")), correct / n

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
:data:`SIDE_TRIAL_SHARE` of the run's updates (bounded), and the trials must fit the search's share
of the run's *time*, not of its updates: at 224 px one update of the whole model costs seconds and
the search (probe trials, augmented copies, these trials) took more than the run could spare, while
on a small set at 64 px a run of 75 updates takes seconds and three trials cost nothing a user
notices. So the first updates are timed (:func:`measure_step_seconds`), the run's time is estimated
from them, and :func:`fit_budget` gives the trials what keeps the search within
:data:`SEARCH_TIME_SHARE` of the run: all the planned updates, or fewer per trial (down to
:data:`MIN_SIDE_TRIAL_STEPS`), or one rate fewer (the largest, the riskiest), or none (the search
falls back to the fixed factor). The record says which and why (``side_budget`` in the search record).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from dtl_engine.training.optim import build_optimizer

if TYPE_CHECKING:
    from dtl_engine.model.dtl import DTLModel
    from dtl_engine.training.feature_cache import FeatureCache

SIDE_TRIAL_SHARE = 0.04     # of the run's updates, per trial
MIN_SIDE_TRIAL_STEPS = 12   # below this a trial says nothing (still in its warm-up)
MAX_SIDE_TRIAL_STEPS = 150
# Of the run's time, the search at most (probe trials, augmented copies and these trials, not the frozen
# prefixes the run reuses). A quarter, the whole of what the search and the back-offs may take together
# at the defaults: a back-off happens only after a divergence (none in the runs at the defaults), and at a
# fifth the 64 px digits' trials were cut from 27 updates to 24, which turned the ranking of 3e-2 from
# first (1.534) to last (1.844) and the choice from 3e-2 to 3e-3 (README, "Measured").
SEARCH_TIME_SHARE = 0.25
CALIBRATION_STEPS = 2       # updates timed before the trials are fitted (the first one warms the allocator)
SCORE_STEP_SHARE = 1 / 3    # an image scored (forward only) costs about a third of one trained (forward and back)
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
    """Updates per side-network trial wanted for a run of ``total_steps``: a small share of it, bounded.

    Whether they fit the run's time is :func:`fit_budget`'s question.
    """
    return int(min(MAX_SIDE_TRIAL_STEPS, max(MIN_SIDE_TRIAL_STEPS, round(SIDE_TRIAL_SHARE * total_steps))))


@dataclass
class SideBudget:
    """How the trials of the whole model were fitted into the search's share of the run's time (seconds
    of the search's clock: process CPU time, steadier than wall time on a busy machine)."""

    share: float                # the search's share of the run's time at most
    step_seconds: float         # one update of the whole model from cached prefixes, measured
    score_seconds: float        # scoring one trial on the search-validation images, estimated from it
    run_seconds: float          # the run's estimate: its updates at that speed + the prefixes it reuses
    spent_seconds: float        # the search's own time before the trials
    allowed_seconds: float      # what the trials may take
    wanted_rates: list[float]
    wanted_steps: int
    rates: list[float] = field(default_factory=list)   # the rates that fit (none: the fixed factor)
    steps: int = 0
    reason: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def fit_budget(rates: Sequence[float], wanted_steps: int, step_seconds: float, score_images: int,
               batch_size: int, total_steps: int, spent_seconds: float, reused_seconds: float,
               run_scored_images: int = 0, share: float = SEARCH_TIME_SHARE) -> SideBudget:
    """The rates and updates per trial that keep the search within ``share`` of the run's time.

    The run is estimated as its ``total_steps`` updates at ``step_seconds`` each (its epochs train from
    the same cached prefixes), its ``run_scored_images`` validation images (all epochs) at the cost of
    scoring, and ``reused_seconds`` (the prefixes the search computed for it); its start-up and the
    decoding of images the search did not see are left out, so the bound errs on the short side. With
    S the trials' time and O the search's own time so far, O + S <= share * (O + S + run) gives
    S <= (share * (O + run) - O) / (1 - share). Updates per trial are cut first (down to
    :data:`MIN_SIDE_TRIAL_STEPS`), then the largest rate, as long as two rates are left to compare.
    """
    step = max(step_seconds, 1e-9)
    per_image = step * SCORE_STEP_SHARE / max(1, batch_size)
    score = score_images * per_image
    run = total_steps * step + run_scored_images * per_image + reused_seconds
    allowed = (share * (spent_seconds + run) - spent_seconds) / (1.0 - share)
    budget = SideBudget(share=share, step_seconds=step, score_seconds=score, run_seconds=run,
                        spent_seconds=spent_seconds, allowed_seconds=allowed, wanted_rates=[float(r) for r in rates],
                        wanted_steps=wanted_steps)
    for n in range(len(rates), 1, -1):
        steps = min(wanted_steps, int((allowed - n * score) // (n * step)) if allowed > n * score else 0)
        if steps >= MIN_SIDE_TRIAL_STEPS:
            budget.rates, budget.steps = budget.wanted_rates[:n], steps
            break
    budget.reason = _budget_reason(budget)
    return budget


def _budget_reason(b: SideBudget) -> str:
    cost = f"one update {b.step_seconds:.3g} s, the run about {b.run_seconds:.0f} s, the search so far " \
           f"{b.spent_seconds:.0f} s; {b.share:.0%} of the run leaves {max(0.0, b.allowed_seconds):.0f} s"
    if not b.rates:
        return f"no trials of the whole model fit ({cost}): the rate comes from the fixed factor"
    if b.rates == b.wanted_rates and b.steps == b.wanted_steps:
        return f"all planned trials fit ({cost})"
    dropped = len(b.wanted_rates) - len(b.rates)
    fewer = f"{b.steps} updates per trial instead of {b.wanted_steps}"
    return f"trimmed to fit ({cost}): {fewer}" + (f", the largest {dropped} rate(s) left out" if dropped else "")


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
    trainer = _Trainer(model, cache, labels, train_idx, head, config, device, autocast, seed, should_stop)
    trials: list[SideTrial] = []
    with _left_as_it_was(model) as saved:
        for lr in rates:
            t0 = time.perf_counter()
            curve = trainer.train(saved, lr, steps)
            val_loss, val_acc = _score(model, cache, labels, val_idx, trainer.size, device, autocast) \
                if math.isfinite(curve[-1] if curve else 0.0) else (float("inf"), 0.0)
            trial = SideTrial(lr=float(lr), val_loss=val_loss, val_acc=val_acc, steps=len(curve),
                              seconds=time.perf_counter() - t0, curve=curve)
            trials.append(trial)
            on_trial(trial)
    return trials


def measure_step_seconds(model: DTLModel, cache: FeatureCache, labels: torch.Tensor, train_idx: Sequence[int],
                         head: tuple[torch.Tensor, torch.Tensor], rate: float, config: Any, device: torch.device,
                         autocast: Callable[[], Any], seed: int, should_stop: Callable[[], bool],
                         clock: Callable[[], float] = time.process_time) -> float:
    """The ``clock`` time of one update of the whole model from cached prefixes (the last of
    :data:`CALIBRATION_STEPS` from the probe's start); the model is left as it was."""
    trainer = _Trainer(model, cache, labels, train_idx, head, config, device, autocast, seed, should_stop)
    ticks: list[float] = []
    with _left_as_it_was(model) as saved:
        trainer.train(saved, rate, CALIBRATION_STEPS, on_step=lambda: ticks.append(clock()), ramp=CALIBRATION_STEPS)
    return ticks[-1] - ticks[-2] if len(ticks) >= 2 else float("inf")


@contextmanager
def _left_as_it_was(model: DTLModel) -> Iterator[dict[str, torch.Tensor]]:
    """The model's trainable weights (a copy, the trials' start) and mode, put back however the block ends."""
    saved = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    was_training = model.training
    try:
        yield saved
    finally:
        model.load_trainable_state_dict(saved)
        model.train(was_training)


class _Trainer:
    """Short stretches of the run's own kind of update from the probe's start, on cached prefixes."""

    def __init__(self, model: DTLModel, cache: FeatureCache, labels: torch.Tensor, train_idx: Sequence[int],
                 head: tuple[torch.Tensor, torch.Tensor], config: Any, device: torch.device,
                 autocast: Callable[[], Any], seed: int, should_stop: Callable[[], bool]) -> None:
        self.model, self.cache, self.labels, self.head, self.cfg = model, cache, labels, head, config
        self.device, self.autocast, self.seed, self.should_stop = device, autocast, seed, should_stop
        self.train_t = torch.tensor(list(train_idx), dtype=torch.long)
        self.size = int(config.batch_size)

    def train(self, saved: dict[str, torch.Tensor], lr: float, steps: int,
              on_step: Callable[[], None] = lambda: None, ramp: int | None = None) -> list[float]:
        """``steps`` updates at ``lr`` (rising linearly over ``ramp`` updates, the whole trial by default)
        from ``saved`` and the probe's head; the training loss of each (inf: it broke and stopped)."""
        model = self.model
        model.load_trainable_state_dict(saved)
        with torch.no_grad():
            model.head.weight.copy_(self.head[0])
            model.head.bias.copy_(self.head[1])
        optimizer = build_optimizer(model, lr, self.cfg.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)        # the same batches at every rate
        warmup = ramp or max(1, round(steps * WARMUP_SHARE))    # a ramp, as the run's warm-up does at its start
        order = torch.empty(0, dtype=torch.long)
        curve: list[float] = []
        model.train()
        on_step()
        for step in range(steps):
            if self.should_stop():
                raise InterruptedError()
            if len(order) < self.size:
                order = torch.cat([order, self.train_t[torch.randperm(len(self.train_t), generator=gen)]])
            batch, order = order[:self.size], order[self.size:]
            for group in optimizer.param_groups:
                group["lr"] = lr * min(1.0, (step + 1) / warmup)
            with self.autocast():
                logits = model.forward_from_prefix(self.cache.fetch(batch, self.device))
            loss = F.cross_entropy(logits.float(), self.labels[batch].to(self.device),
                                   label_smoothing=float(self.cfg.label_smoothing))
            if not bool(torch.isfinite(loss)):
                curve.append(float("inf"))
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            curve.append(float(loss.detach()))
            on_step()
        return curve


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

"""The automatic learning rate and augmentation: probe trials on part of the training images.

Only the training split is used: it is divided (per class, by the seed) into a search-train and a
search-validation part; the run's validation and test images are never looked at.

What is tried: a classifier on the frozen backbone's features (exactly the model at step 0: the
side network starts at zero), trained for the run's own number of updates with the run's own
schedule, at several rates (all at once); then, at the best rate, once with light crops without
flips and once with flips. The lowest loss on the search-validation images wins (the loss, not the
accuracy: it still ranks trials that all sit near chance); an augmentation must lower it by a
margin without costing accuracy, since it also makes the run slower (no prefix cache), and by more
than the noise of the images it is scored on (:func:`augment_evidence`). The linear
probe takes the best rate; a model with a side network tries :data:`SIDE_LR_FACTOR` of it and its
neighbours in short runs of the whole model from the probe's start on the cached prefixes
(:mod:`dtl_engine.training.side_trials`), as many as fit the search's share of the run's time, and
takes the best of those. The run's classifier then starts from the winning
probe (linear probing before fine-tuning) instead of near zero: it already agrees with the model's
step-0 features and passes the side network a useful gradient from the first update.

Why probe trials and not short runs of the whole model: a short run says little about a long one
(on a randomly initialised backbone every rate stays at chance for the first hundred-odd updates;
tried and dropped), while a probe trained for the full length is cheap enough to run at every rate:
the expensive part, the frozen features, is computed once per image and reused by every trial:

* the frozen prefix (blocks 0…M) of each search image goes into the run's own prefix cache, so the
  main run does not compute those images again;
* the rest of the forward pass runs once per image (no gradients) to give its features;
* an augmentation is tried with one fixed augmented copy of up to 128 images, each used in place
  of its original (as an augmented run sees every image augmented).

Too few images to hold any out (a class of one or two images): the trials are scored on the images
they trained on (the only evidence there is), and the record says so (``scored_on``).

Progress (trial k of n, images featurised, an ETA) goes to ``on_progress`` as the work happens.

Deterministic for a seed. The result (chosen values, every trial with its loss curve, the time
spent) is written to the run folder as :data:`SEARCH_FILE`; a resumed run reads the choices back
from the run's saved settings and does not search again.
"""
from __future__ import annotations

import math
import random
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dtl_engine.errors import RunError
from dtl_engine.listener import SearchProgress
from dtl_engine.training import side_trials as st
from dtl_engine.training.batched_adamw import BatchedAdamW
from dtl_engine.training.feature_cache import FeatureCache
from dtl_engine.training.optim import build_scheduler, warmup_steps_for
from dtl_engine.training.search_progress import SearchMeter
from dtl_engine.training.search_split import search_folds, split_for_search
from dtl_engine.training.search_record import (AUGMENT_WORDS, SearchResult, Trial, describe_choice, read_search, thin,
                                               trial_note)

from dtl_engine.runs.folder import SEARCH as SEARCH_FILE
from dtl_engine.data.loader import BatchLoader, auto_num_workers, image_dataset

# re-exported: readers of the search record (and its file name) import them from here
__all__ = ["AutoTuner", "SearchResult", "SearchStopped", "Trial", "describe_choice", "read_search", "SEARCH_FILE",
           "split_for_search"]

if TYPE_CHECKING:
    from dtl_engine.model.dtl import DTLModel

MAX_TRIAL_STEPS = 3000     # probe updates per trial at most (the run's own count below that)
MAX_VIEW_IMAGES = 128      # images that get an augmented copy (decoding them was most of the search)
AUGMENT_MARGIN = 0.02      # share of the validation loss an augmentation must remove to be chosen
# ... and by this many standard errors of the per-image loss differences (paired, on the same images): on
# 40 search-validation images (the LFW faces) light crops "won" by noise the fixed-rate runs did not bear out
AUGMENT_EVIDENCE_Z = 2.0
AUGMENT_LADDER = ("none", "light-noflip", "light")
PROBE_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)   # the probe's own rates when the model has a side network
# The side network trains through the frozen blocks after M and needs a smaller step than a classifier on
# fixed features: its rate is this share of the probe's best, at the nearest candidate. Measured on the
# built-in digits (random test_vit, 15 epochs): the probe's best rate was 0.1 (160 px) and 0.3 (32 px),
# DTL's best 1e-2 in both; at 3e-2 DTL became unstable (README, "Measured").
SIDE_LR_FACTOR = 0.1


def trial_steps(total_steps: int) -> int:
    """Updates per probe trial: the run's own count, at most :data:`MAX_TRIAL_STEPS`."""
    return int(min(MAX_TRIAL_STEPS, max(1, total_steps)))


class AutoTuner:
    """Runs the search for one prepared run (model on its device at step 0, training samples, settings).

    Args:
        model: the run's model, untrained (it is only read: nothing of it is changed).
        samples: the training split as (path, label).
        config: the run's TrainConfig (lr / augment 'auto' or fixed, seed, batch size, ...).
        candidates: the learning rates to compare.
        total_steps: the main run's update count (the probe trials' length).
        steps_per_epoch: the main run's updates per epoch (for the warm-up length).
        device, autocast: where and in which precision the model runs.
        cache: the run's prefix cache over the training samples (indices 0…n-1), or None (then the
            features come from whole forward passes and nothing is kept).
        should_stop: polled while working; True aborts with :class:`SearchStopped`.
        val_images: the run's validation images (for the estimate of the run's time the search is bounded by).
        on_failure: called for images that cannot be read.
    """

    views: dict[str, dict[int, torch.Tensor]]      # classifier inputs of augmented copies, per augmentation

    def __init__(self, model: DTLModel, samples: Sequence[tuple[str, int]], config: Any,
                 candidates: Sequence[float], total_steps: int, steps_per_epoch: int, device: torch.device,
                 autocast: Callable[[], Any], cache: FeatureCache | None,
                 should_stop: Callable[[], bool] = lambda: False,
                 on_failure: Callable[[str, str], None] | None = None,
                 on_progress: Callable[[SearchProgress], None] | None = None, val_images: int = 0) -> None:
        self.model, self.samples, self.cfg = model, list(samples), config
        self.candidates = [float(c) for c in candidates]
        self.total_steps, self.steps_per_epoch = total_steps, max(1, steps_per_epoch)
        self.device, self.autocast = device, autocast
        self.should_stop, self.on_failure = should_stop, on_failure
        self.labels = torch.tensor([y for _, y in self.samples], dtype=torch.long)
        self.base = cache
        self.lost: set[int] = set()         # samples whose file failed to load: left out of every trial
        self.num_classes = int(model.head.out_features)
        self.head_start: tuple[torch.Tensor, torch.Tensor] | None = None   # the winning probe (weight, bias)
        self._probe_heads: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}
        self.prefix_cpu = 0.0               # CPU time spent filling the run's prefix cache
        self.meter = SearchMeter(on_progress or (lambda _p: None), 0, 0)
        self.side_steps = 0
        self.val_images = val_images        # the run's validation images (each epoch scores them: part of its time)
        self.side_budget: dict[str, Any] = {}
        self.augment_evidence: list[str] = []
        self._image_losses: dict[tuple[float, str], torch.Tensor] = {}   # per score image, by (rate, augment)
        self.c0 = 0.0                       # the process time when run() starts

    # ------------------------------------------------------------------ story
    def run(self) -> SearchResult:
        cfg, t0 = self.cfg, time.perf_counter()
        self.c0 = time.process_time()
        lr_auto, aug_auto = cfg.lr == "auto", cfg.augment == "auto"
        side = getattr(self.model, "side_network", None) is not None
        self.train_idx, self.val_idx = split_for_search(self.labels.tolist(), cfg.seed)
        self.score_idx = self.val_idx or self.train_idx     # no class could spare an image: score on train
        self.folds = search_folds(self.labels.tolist(), self.train_idx, self.val_idx, cfg.seed)
        # the linear probe is the probe itself: its rates are the method's; DTL's probe has its own
        probe_lrs = PROBE_LRS if side else (self.candidates if lr_auto else [float(cfg.lr)])
        self.steps = trial_steps(self.total_steps)
        runs_side = side and lr_auto and self.base is not None
        self._plan_progress(len(probe_lrs), aug_auto, runs_side)
        was_training = self.model.training
        try:
            self._featurise()
            self.views = {}
            trials = self._trials(probe_lrs, "none" if aug_auto else cfg.augment, keep_heads=True)
            probe = min(trials, key=_score)
            self.head_start = self._probe_heads.get(probe.lr)
            chosen = self._choose_augment(probe, trials) if aug_auto else cfg.augment
            lr = probe.lr if lr_auto else float(cfg.lr)
            if side and lr_auto:
                tried = self._side_trials(probe.lr * SIDE_LR_FACTOR, trials) \
                    if runs_side and self.head_start is not None else None
                lr = tried if tried is not None else side_rate(probe.lr, self.candidates)
        finally:
            self.model.train(was_training)
        return SearchResult(lr=lr, augment=chosen, lr_searched=lr_auto, augment_searched=aug_auto,
                            trials=trials, seconds=time.perf_counter() - t0, steps_per_trial=self.steps,
                            cpu_seconds=time.process_time() - self.c0, prefix_cpu_seconds=self.prefix_cpu,
                            search_train=len(self.train_idx), search_val=len(self.val_idx),
                            view_images=len(self._view_indices()) if self.views else 0,
                            scored_on="search-validation" if self.val_idx else "search-train",
                            side_steps=self.side_steps, side_budget=self.side_budget, folds=len(self.folds),
                            augment_evidence=self.augment_evidence)

    def _plan_progress(self, probes: int, aug_auto: bool, runs_side: bool) -> None:
        """Tell the progress meter the work ahead (trials of the whole model as planned: the budget may cut them)."""
        augments = len(AUGMENT_LADDER) - 1 if aug_auto else 0
        self.meter.add_images(len(self.train_idx) + len(self.val_idx) + augments * len(self._view_indices()))
        side_trials = st.TRIALS if runs_side else 0
        self.meter.add_trials(probes + augments + side_trials)
        if runs_side:       # a trial of the whole model: its updates' images (suffix, both ways) and its scoring
            steps = st.side_trial_steps(self.total_steps)
            self.meter.plan_side(side_trials, 2 * steps * self.cfg.batch_size + len(self.score_idx))

    def _featurise(self) -> None:
        """The classifier's inputs of the search's images (their prefixes into the run's cache)."""
        self.features = self._features(self.train_idx + self.val_idx)
        self.train_idx = [i for i in self.train_idx if i in self.features]   # unreadable files left out
        self.score_idx = [i for i in self.score_idx if i in self.features] or self.train_idx
        if not self.train_idx:
            raise RunError("None of the training images could be loaded; check that the image folder "
                           "is still there.")
        kept = [([i for i in tr if i in self.features], [i for i in sc if i in self.features]) for tr, sc in self.folds]
        self.folds = [(self.train_idx, self.score_idx)] + [(tr, sc) for tr, sc in kept[1:] if tr and sc]

    def _choose_augment(self, probe: Trial, trials: list[Trial]) -> str:
        """Each augmentation of the ladder at the probe's rate; the one clearly better than the best so far."""
        chosen_trial, chosen = probe, "none"
        for augment in AUGMENT_LADDER[1:]:
            t = self._trials([probe.lr], augment)[0]
            trials.append(t)
            better, why = augment_evidence(self._image_losses[(t.lr, augment)],
                                           self._image_losses[(chosen_trial.lr, chosen_trial.augment)], t, chosen_trial)
            self.augment_evidence.append(why)
            if better:
                chosen_trial, chosen = t, augment
        return chosen

    def _side_trials(self, center: float, trials: list[Trial]) -> float | None:
        """Short runs of the whole model at rates around ``center``, as many as the search's time share
        allows; the best rate (None: none could run)."""
        cache = self.base
        assert cache is not None and self.head_start is not None
        cached = cache.filled
        train = [i for i in self.train_idx if bool(cached[i])]
        score = [i for i in self.score_idx if bool(cached[i])]
        seed = self.cfg.seed * 13 + 1
        args = (self.cfg, self.device, self.autocast, seed, self.should_stop)
        try:
            rates = self._fit_side_trials(st.candidate_rates(center), train, score, args) if train and score else []
            if not rates:
                self.meter.add_trials(-st.TRIALS)
                self.meter.plan_side(0, 1.0)
                self.meter.trials_done(0, 0.0, "side", str(self.side_budget.get("reason", "")))   # the count changed
                return None

            def done(trial: st.SideTrial) -> None:
                trials.append(Trial(lr=trial.lr, augment="none", val_acc=trial.val_acc, val_loss=trial.val_loss,
                                    steps=trial.steps, seconds=trial.seconds, curve=thin(trial.curve), kind="side"))
                self.meter.trials_done(1, trial.seconds, "side", trial_note(trials[-1]))

            self.meter.add_trials(len(rates) - st.TRIALS)
            self.meter.plan_side(len(rates), self.meter.side_guess)
            ran = st.run_side_trials(self.model, cache, self.labels, train, score, self.head_start, rates,
                                     self.side_steps, *args, done)
        except InterruptedError:
            raise SearchStopped() from None
        return st.pick(ran).lr

    def _fit_side_trials(self, rates: list[float], train: list[int], score: list[int], args: tuple) -> list[float]:
        """Time one update of the whole model and fit the trials into the search's share of the run's time."""
        assert self.base is not None and self.head_start is not None
        step = st.measure_step_seconds(self.model, self.base, self.labels, train, self.head_start, rates[0], *args)
        spent = time.process_time() - self.c0 - self.prefix_cpu
        epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        budget = st.fit_budget(rates, st.side_trial_steps(self.total_steps), step, len(score), self.cfg.batch_size,
                               self.total_steps, spent, self.prefix_cpu, run_scored_images=epochs * self.val_images)
        self.side_budget, self.side_steps = budget.to_dict(), budget.steps
        return budget.rates

    # ------------------------------------------------------------------ features
    def _view_indices(self) -> list[int]:
        rng = random.Random(self.cfg.seed * 31 + 5)
        idx = sorted({i for tr, _ in self.folds for i in tr})      # every image some fold trains on
        rng.shuffle(idx)
        return sorted(idx[:MAX_VIEW_IMAGES])

    @torch.no_grad()
    def _features(self, indices: list[int], augment: str = "none") -> dict[int, torch.Tensor]:
        """The classifier's input (on the CPU, float32) for the training samples ``indices``.

        Without augmentation the frozen prefix goes through the run's prefix cache (filled here,
        reused by the run); with one, a random ``augment`` copy of each image is drawn once.
        """
        model = self.model.eval()
        captured: list[torch.Tensor] = []
        hook = model.head.register_forward_hook(lambda _m, args, _out: captured.append(args[0].float().cpu()))
        out: dict[int, torch.Tensor] = {}
        try:
            cache = self.base if augment == "none" else None      # an augmented view is drawn afresh
            todo = [i for i in indices if not (cache is not None and bool(cache.filled[i])) and i not in self.lost]
            if todo:
                self._load_features(todo, augment, cache, captured, out)
            rest = [i for i in indices if i not in out and i not in self.lost]
            size = max(self.cfg.batch_size, 64)
            for start in range(0, len(rest), size):             # prefixes cached before: the suffix only
                assert cache is not None                        # only cached prefixes are left in ``rest``
                chunk = rest[start:start + size]
                captured.clear()
                with self.autocast():
                    model.forward_from_prefix(cache.fetch(torch.tensor(chunk, dtype=torch.long), self.device))
                out.update(zip(chunk, captured[0]))
                self.meter.images(len(chunk), 0.0)
        finally:
            hook.remove()
        return out

    def _load_features(self, todo: list[int], augment: str, cache: FeatureCache | None,
                       captured: list[torch.Tensor], out: dict[int, torch.Tensor]) -> None:
        """Decode the samples ``todo`` (draft-decoded, through the loader workers) and add their features;
        their prefixes go into ``cache`` when one is given."""
        model = self.model
        dataset = image_dataset([self.samples[i] for i in todo], model.data_config, augment,
                                train=augment != "none", on_failure=self.on_failure)
        seed = self.cfg.seed * 101 + (AUGMENT_LADDER.index(augment) if augment in AUGMENT_LADDER else 9)
        _seed(seed)
        loader = BatchLoader(dataset, auto_num_workers(self.cfg.num_workers))
        target = torch.tensor(todo, dtype=torch.long)
        size = self.cfg.batch_size
        start, suffix = time.process_time(), 0.0
        wall = time.perf_counter()
        try:
            for batch in loader([list(range(i, min(i + size, len(todo)))) for i in range(0, len(todo), size)], seed):
                if self.should_stop():
                    raise SearchStopped()
                lost = target[[f.sample_index for f in batch.failed]]     # reported; never a substitute
                self.lost.update(lost.tolist())
                if cache is not None and len(lost):
                    cache.exclude(lost)
                if batch.images is None:
                    continue
                local = batch.indices
                with self.autocast():
                    prefix = model.forward_prefix(batch.images.to(self.device))
                    if cache is not None:
                        cache.store(target[local], prefix)
                    captured.clear()
                    tick = time.process_time()
                    model.forward_from_prefix(prefix)
                    suffix += time.process_time() - tick
                out.update(zip(target[local].tolist(), captured[0]))
                self.meter.images(len(local), time.perf_counter() - wall)
                wall = time.perf_counter()
        finally:
            loader.close()
            if cache is not None:               # decoding + prefixes: the run's own first-epoch work
                self.prefix_cpu += time.process_time() - start - suffix

    def _view(self, augment: str) -> dict[int, torch.Tensor]:
        if augment not in self.views:
            self.views[augment] = self._features(self._view_indices(), augment)
        return self.views[augment]

    # ------------------------------------------------------------------ trials
    def _trials(self, lrs: Sequence[float], augment: str, keep_heads: bool = False) -> list[Trial]:
        """Train one fresh classifier per rate in ``lrs`` on the features, all at once, for the run's length;
        once per fold of the search's images (:func:`search_folds`), each scored on its held-out part.

        ``keep_heads``: keep each classifier of the first fold (by rate) as a possible start of the run's head.
        """
        if self.should_stop():
            raise SearchStopped()
        view = self._view(augment) if augment != "none" else {}
        t0 = time.perf_counter()
        scored: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []     # (losses, correct, alive) per fold
        curves: list[list[float]] = []
        for f, (train_idx, score_idx) in enumerate(self.folds):
            weights, biases, alive, fold_curves = self._train_probes(lrs, train_idx, view)
            scored.append(self._score_fold(weights, biases, alive, score_idx))
            if f == 0:
                curves = fold_curves
                for j, lr in enumerate(lrs):
                    if keep_heads and bool(alive[j]):
                        self._probe_heads[float(lr)] = (weights[j].clone(), biases[j].clone())
        trials = self._combine_folds(lrs, augment, scored, curves, (time.perf_counter() - t0) / len(lrs))
        self.meter.trials_done(len(lrs), time.perf_counter() - t0, "probe" if augment == "none" else "augment",
                               "; ".join(trial_note(t) for t in trials))
        return trials

    def _train_probes(self, lrs: Sequence[float], train_idx: list[int], view: dict[int, torch.Tensor]
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[list[float]]]:
        """The classifiers (weights (k, classes, dim), biases (k, classes)), which stayed finite, their curves."""
        cfg = self.cfg
        x_train = torch.stack([self.features[i] for i in train_idx])
        x_view = torch.stack([view.get(i, self.features[i]) for i in train_idx])
        has_view = torch.tensor([i in view for i in train_idx])
        y_train = self.labels[train_idx]
        _seed(cfg.seed * 1_000_003 + 4242)
        first = torch.nn.Linear(x_train.shape[1], self.num_classes)
        torch.nn.init.trunc_normal_(first.weight, std=0.02)      # as the run's own classifier
        torch.nn.init.zeros_(first.bias)
        k = len(lrs)
        # All classifiers as one tensor, trained by AdamW written out (the run's own optimiser: decay on
        # the weights, not on the biases) with the softmax's gradient in closed form: the same updates as
        # k torch AdamW groups, without autograd and per-group overhead (the trials were most of the
        # linear probe's search).
        weights = first.weight.detach().expand(k, -1, -1).clone()          # (k, classes, dim)
        biases = first.bias.detach().expand(k, -1).clone()                 # (k, classes)
        adam = BatchedAdamW([weights, biases], decays=[cfg.weight_decay, 0.0])
        rates = torch.optim.SGD([{"params": [torch.zeros(1)], "lr": lr} for lr in lrs])  # holds the schedule
        warmup = warmup_steps_for(cfg.warmup_epochs, self.steps_per_epoch, self.steps)
        scheduler = build_scheduler(rates, self.steps, warmup, prefix=cfg.warmup_prefix)
        gen = torch.Generator().manual_seed(cfg.seed * 7 + 3)   # the same batches in every trial
        n, size = len(train_idx), cfg.batch_size
        smooth = float(cfg.label_smoothing)
        order = torch.empty(0, dtype=torch.long)
        history: list[torch.Tensor] = []
        alive = torch.ones(k, dtype=torch.bool)
        for step in range(self.steps):
            if len(order) < size:
                order = torch.cat([order, torch.randperm(n, generator=gen)])
            batch, order = order[:size], order[size:]
            x = torch.where(has_view[batch][:, None], x_view[batch], x_train[batch])
            target = F.one_hot(y_train[batch], self.num_classes).float() * (1.0 - smooth) + smooth / self.num_classes
            scheduler.step_update(step)
            logits = torch.einsum("bd,kcd->kbc", x, weights) + biases[:, None, :]
            log_p = torch.log_softmax(logits, dim=2)
            losses = -(target * log_p).sum(2).mean(1)                       # (k,) cross-entropy per trial
            alive &= torch.isfinite(losses)                                 # a diverged rate stays as it is
            if not bool(alive.any()):
                break
            history.append(torch.where(alive, losses, torch.full_like(losses, float("inf"))))
            grad = (log_p.exp() - target) / len(batch)                      # d loss / d logits, (k, b, c)
            grad = torch.where(alive[:, None, None], grad, torch.zeros_like(grad))
            lr_now = torch.tensor([g["lr"] for g in rates.param_groups]) * alive
            adam.step([torch.einsum("kbc,bd->kcd", grad, x), grad.sum(1)], lr_now)
        curves = torch.stack(history).T.tolist() if history else [[] for _ in lrs]
        return weights, biases, alive, curves

    @torch.no_grad()
    def _score_fold(self, weights: torch.Tensor, biases: torch.Tensor, alive: torch.Tensor, score_idx: list[int]
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-image losses (k, n) and correctness (k, n) on ``score_idx``; a diverged classifier's losses are inf."""
        x_val, y_val = torch.stack([self.features[i] for i in score_idx]), self.labels[score_idx]
        logits = torch.einsum("nd,kcd->knc", x_val, weights) + biases[:, None, :]
        losses = F.cross_entropy(logits.transpose(1, 2), y_val.expand(len(weights), -1), reduction="none")
        losses = torch.where(alive[:, None] & torch.isfinite(losses), losses, torch.full_like(losses, math.inf))
        return losses, logits.argmax(2) == y_val, alive

    def _combine_folds(self, lrs: Sequence[float], augment: str,
                       scored: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], curves: list[list[float]],
                       seconds: float) -> list[Trial]:
        """One Trial per rate from every fold's scores (the per-image losses kept for the evidence)."""
        losses = torch.cat([s[0] for s in scored], dim=1)
        correct = torch.cat([s[1] for s in scored], dim=1).float()
        alive = torch.stack([s[2] for s in scored]).all(0)
        trials = []
        for j, lr in enumerate(lrs):
            self._image_losses[(float(lr), augment)] = losses[j]
            val_loss = float(losses[j].mean()) if bool(alive[j]) else math.inf
            acc = float(correct[j].mean()) if correct.numel() else 0.0
            trials.append(Trial(lr=float(lr), augment=augment, val_acc=acc,
                                val_loss=val_loss if math.isfinite(val_loss) else math.inf,
                                steps=len(curves[j]), seconds=seconds, curve=thin(curves[j])))
        return trials


class SearchStopped(Exception):
    """Stop was requested during the search."""


def side_rate(probe_lr: float, candidates: Sequence[float]) -> float:
    """The model's rate from the probe's best: :data:`SIDE_LR_FACTOR` of it, at the nearest candidate."""
    target = math.log(probe_lr * SIDE_LR_FACTOR)
    return float(min(candidates, key=lambda c: (abs(math.log(c) - target), c)))


def _score(trial: Trial) -> tuple[float, float]:
    # the validation loss first: unlike the accuracy it still ranks trials that all sit near chance
    # (a random backbone after a short run); a diverged trial (infinite loss) loses
    return (trial.val_loss, -trial.val_acc)


def augment_evidence(candidate_losses: torch.Tensor, current_losses: torch.Tensor, candidate: Trial,
                     current: Trial) -> tuple[bool, str]:
    """Whether an augmentation's probe is clearly better than the current choice, and why in words.

    Clearly: its loss on the scored images is lower by :data:`AUGMENT_MARGIN` of the current one and
    by :data:`AUGMENT_EVIDENCE_Z` standard errors of the per-image differences (both probes are scored
    on the same images, so the differences are paired), and its accuracy is not lower. On a few hundred
    images the margin decides; on a few dozen one image's loss can make the margin, and the noise
    bound asks for more (augmentation also makes the run slower: no prefix cache).
    """
    name = AUGMENT_WORDS.get(candidate.augment, candidate.augment)
    gain = (current_losses - candidate_losses).double()
    if not bool(torch.isfinite(gain).all()) or len(gain) == 0:
        return False, f"{name}: not taken (diverged or nothing to score)"
    mean = float(gain.mean())
    noise = AUGMENT_EVIDENCE_Z * float(gain.std()) / math.sqrt(len(gain)) if len(gain) > 1 else math.inf
    margin = AUGMENT_MARGIN * current.val_loss
    accurate = candidate.val_acc >= current.val_acc - 0.005
    taken = mean >= margin and mean >= noise and accurate
    return taken, (f"{name}: {'taken' if taken else 'not taken'} (loss lower by {mean:.4f}; needed "
                   f"{max(margin, noise):.4f}: {AUGMENT_MARGIN:.0%} of {current.val_loss:.3f} and "
                   f"{AUGMENT_EVIDENCE_Z:g} standard errors over {len(gain)} images; accuracy "
                   f"{candidate.val_acc:.0%} against {current.val_acc:.0%})")


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)

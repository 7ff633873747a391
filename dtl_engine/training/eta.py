"""Time left in a run, from the step times this session measured, as a range until it settles.

A run's time is not one rate times the steps left. Its phases cost differently:

- the session's first epoch decodes every image and fills the caches (the feature cache, the
  decoded-image cache), so its steps are slow; a resumed run starts this phase again, since
  the in-memory caches went with the process that stopped;
- the later epochs read the caches, so their steps are often several times faster;
- each epoch ends in a validation (plus a checkpoint), and the run ends in an evaluation:
  time between steps that a per-step average smears over every step;
- a session's first step also pays for starting the loader workers.

:class:`RunEta` keeps each phase's step times apart and adds up what is left phase by phase.
A phase not measured yet (the cached epochs during epoch 1, the validation before the first
one) is bounded, not guessed: its low and high ends span what it may cost, so the estimate is
a range that narrows as each phase is measured. Pure arithmetic on the times it is given
(no clock, no torch), so the tests drive it with synthetic step times.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

#: A later epoch's step costs between these fractions of a step of the session's first epoch:
#: that epoch fills the feature cache, so later ones skip decoding and the frozen blocks (far below 1);
FILLING_CACHE = (0.1, 1.0)
#: no feature cache: later epochs skip decoding only (the decoded-image cache);
DECODING = (0.6, 1.0)
#: the feature cache was full before the first step (the search or an earlier run filled it): alike.
ALIKE = (0.85, 1.15)
#: One step tells little: the next ones cost between these multiples of it (it also started the workers).
FIRST_STEP_RANGE = (0.25, 4.0)
#: A validation batch costs between these fractions of a training step of the same epoch
#: (a forward pass without the backward; decoding the same).
VALIDATION_STEP_RANGE = (0.25, 1.0)
#: The evaluation after the last epoch costs between these multiples of the first validation's time
#: per batch (the images may be decoded already; new loader workers and a report per class).
FINAL_RANGE = (0.5, 2.0)
#: The estimate has settled once the range is narrower than this share of its middle, or once every
#: phase still to repeat was measured over this many steps: one figure from then on (the last
#: evaluation's spread would otherwise widen it again near the end).
SETTLED_SHARE = 0.25
SETTLED_STEPS = 8
#: A step this many times longer than its phase's mean held a pause, not work: it is left out.
PAUSE_FACTOR = 5.0
#: The steps the pace of a phase is mostly taken from (the latest ones).
RECENT_STEPS = 30
#: The drift left when the step times are known well (the machine's load changes).
FLOOR = 0.05


@dataclass(frozen=True)
class Estimate:
    """Seconds left: a central figure and the ends of the range it may fall in (equal once settled)."""

    seconds: float
    low: float
    high: float


@dataclass(frozen=True)
class _Span:
    """A cost known to lie in [low, high], ``mid`` the best single figure for it."""

    low: float
    mid: float
    high: float

    def __add__(self, other: _Span) -> _Span:
        return _Span(self.low + other.low, self.mid + other.mid, self.high + other.high)

    def __mul__(self, factor: float) -> _Span:
        return _Span(self.low * factor, self.mid * factor, self.high * factor)

    def scaled(self, bounds: tuple[float, float]) -> _Span:
        """This cost times an unknown factor within ``bounds`` (its best figure: their geometric mean)."""
        return _Span(self.low * bounds[0], self.mid * math.sqrt(bounds[0] * bounds[1]), self.high * bounds[1])


_ZERO = _Span(0.0, 0.0, 0.0)


def _exact(seconds: float, share: float = 0.0) -> _Span:
    return _Span(seconds * (1 - share), seconds, seconds * (1 + share))


class _Rate:
    """The step times of one phase: their recent mean and how far it may be off.

    The mean weighs the last :data:`RECENT_STEPS` steps most, so a machine whose load changes
    is followed (a plain mean over the whole phase kept an hour-old pace).
    """

    def __init__(self) -> None:
        self.count, self.mean, self.square = 0, 0.0, 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        weight = max(1.0 / self.count, 2.0 / (RECENT_STEPS + 1))
        self.mean += weight * (seconds - self.mean)
        self.square += weight * (seconds * seconds - self.square)

    def span(self) -> _Span:
        """The mean, widened by its spread over the steps seen (wide after one, a few per cent after many)."""
        mean, n = self.mean, min(self.count, RECENT_STEPS)
        spread = math.sqrt(max(0.0, self.square - mean * mean)) / mean if mean > 0 else 0.0
        return _exact(mean, min(0.5, max(FLOOR, (0.5 + spread) / math.sqrt(n))))


class RunEta:
    """The time left in a run, fed one call per finished training step.

    ``total_steps`` and ``steps_per_epoch`` as the run counts them; ``start_step`` where this
    session began (a resumed run begins at an epoch's start); ``val_steps`` the batches of
    one validation and ``final_steps`` those of the evaluation after the last epoch (the
    engine's batches of those images); ``start`` the clock's reading when the session began;
    ``later`` how a later epoch's step may compare with one of the first (:func:`later_pace`).
    """

    def __init__(self, *, total_steps: int, steps_per_epoch: int, start_step: int, start: float,
                 val_steps: float = 0.0, final_steps: float = 0.0,
                 later: tuple[float, float] = FILLING_CACHE) -> None:
        self.total_steps, self.per_epoch = max(0, total_steps), max(1, steps_per_epoch)
        self.later_range = later
        self.val_steps, self.final_steps = max(0.0, val_steps), max(0.0, final_steps)
        self.first_epoch = start_step // self.per_epoch      # the session's epoch that fills the caches
        self.epoch = self.first_epoch
        self.last = start
        self.filling, self.cached = _Rate(), _Rate()    # steps of the first epoch, of the later ones
        self.first_gap: float | None = None             # validation + checkpoint after the first epoch
        self.later_gap: float | None = None             # the same after a later (cached) epoch
        self.warmup: float | None = None                # the session's first step (loader workers start)
        self.settled = False

    def step(self, now: float, epoch: int, global_step: int) -> Estimate:
        """Record the step that ended at ``now`` (``global_step`` steps done, in ``epoch``); the time left."""
        seconds, self.last = now - self.last, now
        if epoch != self.epoch:         # the gap held a validation and a checkpoint besides this step
            rate = self.filling if self.epoch == self.first_epoch else self.cached
            gap = max(0.0, seconds - (rate.mean if rate.count else 0.0))
            if self.epoch == self.first_epoch:
                self.first_gap = gap
            else:
                self.later_gap = gap
            self.epoch = epoch
        elif self.warmup is None:
            self.warmup = seconds       # not a step's cost: the workers started in it
        else:
            rate = self.filling if epoch == self.first_epoch else self.cached
            if rate.count < 3 or seconds < PAUSE_FACTOR * rate.mean:
                rate.add(seconds)       # (longer: the run was paused, or the machine stalled, in this step)
        return self.left(epoch, global_step)

    def left(self, epoch: int, global_step: int) -> Estimate:
        """The time left after ``global_step`` steps, the run being in ``epoch``."""
        steps_left = max(0, self.total_steps - global_step)
        epoch_end = min(self.total_steps, (epoch + 1) * self.per_epoch)
        here = max(0, epoch_end - global_step)                 # steps left in this epoch
        later = steps_left - here                               # steps of the epochs after it
        epochs_after = math.ceil(later / self.per_epoch)
        fill, cached = self._fill_step(), self._cached_step()
        in_first = epoch == self.first_epoch
        total = (fill if in_first else cached) * here + cached * later
        # this epoch's validation is still to come (it follows its last step), then one per later epoch
        later_validation = self._later_validation(fill, cached)
        total = total + (self._first_validation(fill) if in_first else later_validation)
        total = total + later_validation * epochs_after + self._final(fill)
        measured = (self.cached.count >= SETTLED_STEPS and self.later_gap is not None
                    or in_first and not later and self.filling.count >= SETTLED_STEPS)
        self.settled = self.settled or measured or total.high - total.low <= SETTLED_SHARE * total.mid
        return Estimate(total.mid, total.mid, total.mid) if self.settled else Estimate(total.mid, total.low, total.high)

    # ------------------------------------------------------------------ the phases' costs
    def _fill_step(self) -> _Span:
        if self.filling.count:
            return self.filling.span()
        if self.warmup is not None:     # one step, with the workers' start in it: its time bounds a step's
            return _exact(self.warmup).scaled(FIRST_STEP_RANGE)
        return _ZERO                    # nothing measured: the caller shows no figure

    def _cached_step(self) -> _Span:
        if self.cached.count:           # measured (few steps: the span is wide by itself)
            return self.cached.span()
        return self._fill_step().scaled(self.later_range)   # not yet: faster, or as slow as the first epoch

    def _first_validation(self, fill: _Span) -> _Span:
        if self.first_gap is not None:
            return _exact(self.first_gap)
        return fill.scaled(VALIDATION_STEP_RANGE) * self.val_steps

    def _later_validation(self, fill: _Span, cached: _Span) -> _Span:
        if self.later_gap is not None:
            return _exact(self.later_gap, FLOOR)
        # it reads the caches as the later epochs do: as much faster than the first validation
        first = self._first_validation(fill)
        if not fill.mid:
            return first
        low, mid, high = (cached.low / fill.high, cached.mid / fill.mid, min(1.0, cached.high / fill.low))
        return _Span(first.low * low, first.mid * mid, first.high * high)

    def _final(self, fill: _Span) -> _Span:
        """The evaluation after the last epoch: uncached, as the first validation (its images maybe decoded)."""
        if self.first_gap is not None and self.val_steps:
            return _exact(self.first_gap / self.val_steps * self.final_steps).scaled(FINAL_RANGE)
        return fill.scaled(VALIDATION_STEP_RANGE).scaled(FINAL_RANGE) * self.final_steps


def later_pace(feature_cache: bool, cache_full: bool) -> tuple[float, float]:
    """How much faster the later epochs may be, from the feature cache's state at the first step."""
    if not feature_cache:
        return DECODING
    return ALIKE if cache_full else FILLING_CACHE


def work_range(parts: list[tuple[float, int]]) -> tuple[float, float]:
    """The range of time left for work in parts: (seconds estimated, times its unit cost was measured).

    A part whose cost is still a guess (measured 0 times) spans :data:`FIRST_STEP_RANGE` of it; a
    measured one narrows with the measurements. Equal ends when the whole is within
    :data:`SETTLED_SHARE` (the search's trial counts and image rates settle quickly).
    """
    low = high = 0.0
    for seconds, measured in parts:
        half = min(0.5, max(FLOOR, 0.5 / math.sqrt(measured))) if measured > 0 else None
        low += seconds * (FIRST_STEP_RANGE[0] if half is None else 1 - half)
        high += seconds * (FIRST_STEP_RANGE[1] if half is None else 1 + half)
    mid = sum(seconds for seconds, _ in parts)
    return (mid, mid) if high - low <= SETTLED_SHARE * mid else (low, high)

"""The search's progress: its ETA and bar weigh each kind of work by what it costs."""
from __future__ import annotations

import pytest

from dtl_engine.training.search_progress import TRIAL_IMAGES_GUESS, SearchMeter


def test_the_eta_weighs_images_probe_trials_and_trials_of_the_whole_model_apart():
    seen = []
    meter = SearchMeter(seen.append, images_total=100, trials=4)
    meter.plan_side(1, images_each=1000)            # one trial of the whole model, as costly as 1000 images
    assert seen == []
    meter.images(100, seconds=10.0)                 # 0.1 s an image
    assert seen[-1].eta_seconds == pytest.approx(3 * 0.1 * TRIAL_IMAGES_GUESS + 1 * 0.1 * 1000)
    meter.trials_done(3, seconds=3.0, phase="probe", note="probes")   # 1 s a probe trial, measured
    assert seen[-1].eta_seconds == pytest.approx(100.0) and seen[-1].note == "probes"
    assert seen[-1].fraction == pytest.approx(13.0 / 113.0)       # the bar: time spent of the time in all
    meter.trials_done(1, seconds=50.0, phase="side")
    assert seen[-1].eta_seconds == 0 and seen[-1].fraction == 1.0 and seen[-1].trial == seen[-1].trials == 4
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions)                         # never backwards


def test_the_eta_is_a_range_while_a_kind_of_work_has_only_a_guessed_cost():
    seen = []
    meter = SearchMeter(seen.append, images_total=100, trials=4)
    meter.plan_side(1, images_each=1000)
    meter.images(100, seconds=10.0)                 # images measured; trials' costs still guessed
    assert seen[-1].eta_low_seconds < seen[-1].eta_seconds < seen[-1].eta_high_seconds
    meter.trials_done(3, seconds=3.0, phase="probe")
    assert seen[-1].eta_low_seconds < seen[-1].eta_high_seconds   # the side trial's cost is a guess still
    meter.trials_done(1, seconds=50.0, phase="side")
    assert seen[-1].eta_low_seconds == seen[-1].eta_high_seconds == 0


def test_the_first_batch_of_images_warms_up_and_sets_no_rate():
    # At 224 px the first batch cost six times a later one, and the search read "about 5–47 min left" for 70 s.
    seen = []
    meter = SearchMeter(seen.append, images_total=1000, trials=2)
    meter.images(100, seconds=6.0)                  # with the warm-up: 0.06 s an image
    assert seen[-1].eta_seconds is None and 0 < seen[-1].fraction < 0.2
    meter.images(100, seconds=1.0)                  # the steady rate: 0.01 s an image
    images_left = 800 * 0.01
    shown = meter.progress("features")              # (reports are at most every half second)
    assert shown.eta_seconds == pytest.approx(images_left + 2 * 0.01 * TRIAL_IMAGES_GUESS)

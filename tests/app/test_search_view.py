"""The Results step's picture of the automatic search: each kind of trial its own line, in order of rate."""
from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

import pyqtgraph as pg

import dtl_engine.training.autotune as autotune
from app.theme import BLUE, ORANGE
from app.widgets.search_view import SearchView
from dtl_engine.training.search_record import SearchResult, Trial


def _trial(lr: float, acc: float, kind: str = "probe", augment: str = "none") -> Trial:
    return Trial(lr=lr, augment=augment, val_acc=acc, val_loss=1.0, steps=10, seconds=1.0, kind=kind)


def test_probe_trials_and_trials_of_the_whole_model_are_two_lines_in_order_of_rate(qtbot, monkeypatch):
    # At the defaults the one line went 1e-2 → 29 %, 1e-2 → 14 %, 3e-2 → 11 %, 3e-2 → 35 %: a zig-zag.
    trials = [_trial(lr, acc) for lr, acc in ((1e-3, .26), (3e-3, .25), (1e-2, .29), (3e-2, .35), (1e-1, .34))]
    trials += [_trial(3e-3, .30, "side"), _trial(1e-2, .14, "side"), _trial(3e-2, .11, "side")]
    trials += [_trial(3e-2, .33, augment="light")]
    search = SearchResult(lr=3e-3, augment="none", lr_searched=True, augment_searched=True, trials=trials,
                          seconds=83.0, steps_per_trial=50, search_train=1150, search_val=288, view_images=0)
    monkeypatch.setattr(autotune, "read_search", lambda run_dir: search)
    view = SearchView()
    qtbot.addWidget(view)
    view.show_run("a run")
    lines = {}
    for item in view.plot.getPlotItem().listDataItems():
        assert isinstance(item, pg.PlotDataItem)
        xs, _ys = item.getData()
        lines[(item.opts["pen"].color().name().upper() if item.opts["pen"] is not None else None, len(xs))] = xs
        assert list(xs) == sorted(xs), "a line goes back in rate"
    assert (BLUE.upper(), 5) in lines and (ORANGE.upper(), 3) in lines      # the light-augment probe: a point
    text = view.label.text()
    assert "6 probe trials" in text and "3 short trials of the whole model" in text

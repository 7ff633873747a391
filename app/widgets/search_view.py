"""What the automatic search chose for a run: one sentence and a small plot of its trials.

Reads the run folder's search record (``dtl_engine.training.autotune.read_search``); hidden for
runs whose learning rate and augmentation were typed in.
"""
from __future__ import annotations

import math
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

from app.theme import BLUE, ORANGE, colors

_AUGMENT_SYMBOL = {"none": "o", "light-noflip": "t", "light": "s", "standard": "d"}


class SearchView(QWidget):
    """'learning rate chosen automatically: 3e-3, no augmentation' beside the probe's accuracy per rate."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.plot = pg.PlotWidget()
        self.plot.setFixedSize(260, 120)
        self.plot.setLogMode(x=True, y=False)
        self.plot.setMouseEnabled(False, False)
        self.plot.hideButtons()
        self.plot.setLabel("bottom", "learning rate")
        self.plot.setLabel("left", "val. acc. %")
        for side in ("left", "bottom"):
            self.plot.getAxis(side).enableAutoSIPrefix(False)
        self.plot.setBackground(None)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.plot, 0)
        self.setVisible(False)

    def show_run(self, run_dir: str | Path | None) -> None:
        """Show the search of ``run_dir``; hide when the run did not search."""
        from dtl_engine.training.autotune import read_search

        search = read_search(run_dir) if run_dir else None
        self.setVisible(search is not None)
        if search is None:
            return
        probes = sum(1 for t in search.trials if t.kind != "side")
        sides = len(search.trials) - probes
        whole = (f" and {sides} short trials of the whole model (orange: the side network's rate)"
                 if sides else "")
        self.label.setText(f"{search.summary()[0].upper()}{search.summary()[1:]} · {probes} probe trials "
                           f"(blue: the classifier's rate){whole} on {search.search_train + search.search_val} "
                           f"training images, {search.seconds:.0f} s. The dashed line is the rate of the run.")
        self.plot.clear()
        self._plot_trials(search)
        self.plot.addLine(x=math.log10(search.lr),
                          pen=pg.mkPen(colors()["muted"], style=pg.QtCore.Qt.PenStyle.DashLine))

    def _plot_trials(self, search) -> None:
        """One line per kind of trial and augmentation, in order of rate: the probe trials (a classifier on the
        frozen features) and the trials of the whole model try different rates, so one line through both
        zig-zagged between them."""
        muted = colors()["muted"]
        series: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for t in search.trials:
            series.setdefault(("side" if t.kind == "side" else "probe", t.augment), []).append(
                (t.lr, 100.0 * t.val_acc))
        for (kind, augment), points in sorted(series.items()):
            points.sort()
            colour = ORANGE if kind == "side" else BLUE
            pen = pg.mkPen(colour, width=2) if len(points) > 1 else None
            self.plot.plot([p[0] for p in points], [p[1] for p in points], pen=pen,
                           symbol=_AUGMENT_SYMBOL.get(augment, "o"), symbolSize=7,
                           symbolBrush=colour if augment == search.augment else muted)

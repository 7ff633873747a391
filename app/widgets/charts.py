"""Live training curves with pyqtgraph.

pyqtgraph practice: points go into growing numpy buffers as they arrive; the
plot items get ``setData`` from a timer (10 Hz), never once per signal, with
peak downsampling and clip-to-view so thousands of steps stay cheap. X values
are float64 epochs (step 30 of 60 in epoch 2 is x = 1.5), so per-step and
per-epoch series share one axis.
"""
from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QGridLayout, QWidget

from app.theme import BLUE, GREEN, GREY, ORANGE, PURPLE


class SeriesBuffer:
    """Append-only (x, y) float64 buffers with amortised growth."""

    def __init__(self, capacity: int = 256) -> None:
        self._x = np.empty(capacity, dtype=np.float64)
        self._y = np.empty(capacity, dtype=np.float64)
        self.size = 0

    def append(self, x: float, y: float) -> None:
        if self.size == len(self._x):
            self._x = np.resize(self._x, 2 * self.size)
            self._y = np.resize(self._y, 2 * self.size)
        self._x[self.size] = x
        self._y[self.size] = y
        self.size += 1

    def set(self, xs, ys) -> None:
        xs = np.asarray(xs, dtype=np.float64)
        ys = np.asarray(ys, dtype=np.float64)
        self._x, self._y, self.size = xs.copy(), ys.copy(), len(xs)
        if self.size == 0:
            self._x = np.empty(16, dtype=np.float64)
            self._y = np.empty(16, dtype=np.float64)

    def clear(self) -> None:
        self.size = 0

    @property
    def x(self) -> np.ndarray:
        return self._x[: self.size]

    @property
    def y(self) -> np.ndarray:
        return self._y[: self.size]


class LiveChart(pg.PlotWidget):
    """One plot with named series; call :meth:`refresh` from a timer."""

    def __init__(self, title: str, y_label: str, y_units: str | None = None,
                 x_label: str = "Epoch", legend_at: tuple[int, int] = (-8, 8), legend_columns: int = 1,
                 parent: QWidget | None = None) -> None:
        # Colours follow the application palette (light or dark theme).
        palette = QGuiApplication.palette()
        base = palette.color(QPalette.ColorRole.Base)
        text = palette.color(QPalette.ColorRole.Text).name()
        muted = palette.color(QPalette.ColorRole.PlaceholderText).name()
        super().__init__(parent=parent, background=base)
        item = self.getPlotItem()
        self.text_color = text
        self.title = title
        self._muted = muted
        self._colors: dict[str, tuple[str, bool]] = {}     # series -> (colour, dashed), for the key
        self.hidden: set[str] = set()                       # series left out of the key (not drawn)
        item.setTitle(title, color=text, size="11pt")
        for side in ("left", "bottom"):
            axis = item.getAxis(side)
            axis.setPen(pg.mkPen(muted))
            axis.setTextPen(pg.mkPen(text))
        item.setLabel("left", y_label, units=y_units, color=text)
        item.setLabel("bottom", x_label, color=text)
        # No grid: grid lines make every repaint cover the whole plot (measured ~2x the paint time).
        item.setDownsampling(auto=True, mode="peak")
        item.setClipToView(True)
        item.setMenuEnabled(False)
        # Offsets: negative x / y count from the right / bottom edge.
        legend_bg = QColor(base)
        legend_bg.setAlpha(220)
        self.legend = item.addLegend(offset=legend_at, labelTextColor=text, colCount=legend_columns,
                                     brush=pg.mkBrush(legend_bg), pen=pg.mkPen(muted))
        # The key is a line under the title, outside the plot: a legend inside it covers the last
        # points (or the memory line) on a small window.
        self.legend.hide()
        self.setMinimumHeight(170)
        self._series: dict[str, tuple[SeriesBuffer, pg.PlotDataItem]] = {}
        self._dirty: set[str] = set()
        # The y range is set together with the data (one repaint), not by pyqtgraph's
        # auto-range, which re-ranges on the next paint and so paints every update twice.
        item.enableAutoRange(x=False, y=False)
        self.fixed_y: tuple[float, float] | None = None
        self.y_from_zero = False
        self.y_headroom = 0.0

    def add_series(self, name: str, color: str, width: float = 2.0, dashed: bool = False,
                   symbol: str | None = None) -> None:
        pen = pg.mkPen(color, width=width,
                       style=Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
        kw = {}
        if symbol:
            kw = dict(symbol=symbol, symbolSize=7, symbolBrush=color, symbolPen=pg.mkPen(color))
        curve = self.getPlotItem().plot(name=name, pen=pen, **kw)
        self._series[name] = (SeriesBuffer(), curve)
        self._colors[name] = (color, dashed)
        self.set_title(self.title)

    def set_title(self, title: str) -> None:
        """The chart's title, with the key of its series (those not hidden) on a line below it."""
        self.title = title
        keys = [f"<span style='color:{color}'>{'┅' if dashed else '━'}</span> {name}"
                for name, (color, dashed) in self._colors.items() if name not in self.hidden]
        key = ("<br><span style='font-size:9pt'>" + " &nbsp; ".join(keys) + "</span>") if len(keys) > 1 else ""
        self.getPlotItem().setTitle(f"{title}{key}", color=self.text_color, size="11pt")

    def title_text(self) -> str:
        """The title and key as shown (HTML)."""
        return self.getPlotItem().titleLabel.text

    def append(self, name: str, x: float, y: float) -> None:
        if y is None or not np.isfinite(y):
            return  # a NaN loss is reported in the log, not drawn
        self._series[name][0].append(float(x), float(y))
        self._dirty.add(name)

    def set_series(self, name: str, xs, ys) -> None:
        self._series[name][0].set(xs, ys)
        self._dirty.add(name)

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The buffered points of one series (what the next refresh draws)."""
        buf = self._series[name][0]
        return buf.x, buf.y

    def drawn_points(self, name: str) -> int:
        """How many points the plot item currently holds (for tests)."""
        x, _ = self._series[name][1].getData()
        return 0 if x is None else len(x)

    def clear_data(self) -> None:
        for name, (buf, _) in self._series.items():
            buf.clear()
            self._dirty.add(name)

    def has_pending(self) -> bool:
        return bool(self._dirty)

    def refresh(self) -> None:
        if not self._dirty:
            return
        for name in self._dirty:
            buf, curve = self._series[name]
            curve.setData(buf.x, buf.y)
        self._dirty.clear()
        self._fit_y()

    def _fit_y(self) -> None:
        if self.fixed_y is not None:
            lo, hi = self.fixed_y
        else:
            ys = [buf.y for buf, _ in self._series.values() if buf.size]
            if not ys:
                return
            data = np.concatenate(ys)
            lo, hi = float(data.min()), float(data.max())
            if self.y_from_zero:
                lo = min(0.0, lo)
            if hi <= lo:
                hi = lo + (abs(lo) * 0.1 or 1.0)
            hi += (hi - lo) * self.y_headroom
        self.getPlotItem().setYRange(lo, hi, padding=0.05)


class _Ema:
    """Incremental bias-corrected EMA (same smoothing as :func:`ema`)."""

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha, self.acc, self.weight = alpha, 0.0, 0.0

    def update(self, value: float) -> float:
        self.acc = (1 - self.alpha) * self.acc + self.alpha * value
        self.weight = (1 - self.alpha) * self.weight + self.alpha
        return self.acc / self.weight


def ema(values: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    """Bias-corrected exponential moving average (TensorBoard-style smoothing)."""
    out = np.empty(len(values), dtype=np.float64)
    acc, weight = 0.0, 0.0
    for i, v in enumerate(values):
        acc = (1 - alpha) * acc + alpha * v
        weight = (1 - alpha) * weight + alpha
        out[i] = acc / weight
    return out


class TrainingCharts(QWidget):
    """Loss, accuracy, memory and throughput curves of one run, redrawn at 10 Hz."""

    def __init__(self, parent: QWidget | None = None, refresh_hz: float = 10.0) -> None:
        super().__init__(parent)
        self.loss = LiveChart("Loss", "Loss")
        self.loss.add_series("train (step)", "#9ecae1", width=1)
        self.loss.add_series("train (smoothed)", BLUE, width=2.5)
        self.loss.add_series("validation", ORANGE, width=2.5, symbol="o")
        self.accuracy = LiveChart("Accuracy", "Accuracy", "%", legend_at=(-8, -8))
        self.accuracy.add_series("train", BLUE, width=2.5, symbol="o")
        self.accuracy.add_series("validation", ORANGE, width=2.5, symbol="o")
        self.accuracy.fixed_y = (0.0, 100.0)
        self.accuracy.getPlotItem().setYRange(0, 100, padding=0.05)
        self.memory = LiveChart("Memory", "Memory", "B", legend_at=(8, 4), legend_columns=3)
        self.memory.add_series("now", GREEN, width=3)
        self.memory.add_series("peak", PURPLE, width=1.5, dashed=True)  # visible even on top of "now"
        self.memory.add_series("full fine-tuning (est.)", GREY, width=1.5, dashed=True)
        self.memory.hidden.add("full fine-tuning (est.)")     # keyed once a run on a GPU draws it
        self.memory.set_title(self.memory.title)
        self.throughput = LiveChart("Throughput (smoothed)", "Images / s")
        self.throughput.add_series("images/s (smoothed)", BLUE, width=2)
        self.memory.y_from_zero = True
        self.throughput.y_from_zero = True

        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(6)
        grid.addWidget(self.loss, 0, 0)
        grid.addWidget(self.accuracy, 0, 1)
        grid.addWidget(self.memory, 1, 0)
        grid.addWidget(self.throughput, 1, 1)

        # Smoothing state of the step loss (updated incrementally, O(1) per step).
        self._loss_ema = _Ema()
        self._speed_ema = _Ema()
        self._last_x = 0.0
        self.speed = 0.0                       # the smoothed images/s the throughput chart shows last
        self._reference_bytes: int | None = None
        self._memory_kind: str | None = None   # "cuda", "mps" or "cpu" once a run says
        self._x_span = 0.0

        # One chart per tick, in turn: repainting all four in one go blocks the event
        # loop four times as long (measured: the largest gaps on a busy machine).
        self._next_chart = 0
        self.timer = QTimer(self)
        self.timer.setInterval(int(1000 / refresh_hz))
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    @property
    def charts(self) -> tuple[LiveChart, ...]:
        return self.loss, self.accuracy, self.memory, self.throughput

    def clear(self) -> None:
        for chart in self.charts:
            chart.clear_data()
        self._loss_ema = _Ema()
        self._speed_ema = _Ema()
        self._last_x = 0.0
        self.speed = 0.0
        self._memory_kind = None            # the next run (or log) says what its memory curve measures
        self.memory.set_title("Memory")
        self._update_reference()
        self.refresh()

    # --- live points --------------------------------------------------------
    def add_batch(self, stats) -> None:
        """One BatchStats from the engine."""
        x = stats.epoch + (stats.step + 1) / max(1, stats.steps_per_epoch)
        self._last_x = x
        loss = float(stats.loss)
        self.loss.append("train (step)", x, loss)
        if np.isfinite(loss):
            self.loss.append("train (smoothed)", x, self._loss_ema.update(loss))
        if stats.images_per_sec > 0:
            self.speed = self._speed_ema.update(stats.images_per_sec)
            self.throughput.append("images/s (smoothed)", x, self.speed)
        if stats.memory_bytes > 0:
            self.memory.append("now", x, stats.memory_bytes)
            self.memory.append("peak", x, max(stats.peak_memory_bytes, stats.memory_bytes))

    def add_epoch(self, stats) -> None:
        """One EpochStats from the engine."""
        x = float(stats.epoch + 1)
        self._last_x = max(self._last_x, x)
        self.loss.append("validation", x, stats.val_loss)
        self.accuracy.append("train", x, 100.0 * stats.train_acc)
        self.accuracy.append("validation", x, 100.0 * stats.val_acc)

    def set_history(self, epochs: list[dict], steps: list[dict] | None = None) -> None:
        """Draw a finished run from its per-epoch (and optional per-step) records."""
        self.clear()
        if steps:
            self._draw_steps(steps)
        for rec in epochs:
            self._draw_epoch(rec, with_steps=bool(steps))
        self.set_epochs(max(1, int(np.ceil(self._last_x))))
        self.refresh()

    def _draw_steps(self, steps: list[dict]) -> None:
        """The step records: loss (raw and smoothed), speed and memory, in full."""
        for rec in steps:
            x = float(rec.get("x", rec.get("epoch", 0)))
            self._last_x = max(self._last_x, x)
            self.loss.append("train (step)", x, float(rec.get("loss", np.nan)))
        xs, ys = self.loss.series("train (step)")
        self.loss.set_series("train (smoothed)", xs, ema(ys))
        speed = [(float(r["x"]), float(r["images_per_sec"])) for r in steps if r.get("images_per_sec")]
        if speed:
            self.throughput.set_series("images/s (smoothed)", [x for x, _ in speed],
                                       ema(np.array([v for _, v in speed])))
        for rec in steps:
            if rec.get("memory_bytes"):
                x, now = float(rec["x"]), float(rec["memory_bytes"])
                self.memory.append("now", x, now)
                self.memory.append("peak", x, max(now, float(rec.get("peak_memory_bytes") or 0)))

    def _draw_epoch(self, rec: dict, with_steps: bool) -> None:
        """One epoch record: validation loss and both accuracies; without steps also loss, speed and memory."""
        x = float(rec.get("epoch", 0)) + 1
        self._last_x = max(self._last_x, x)
        if not with_steps and rec.get("train_loss") is not None:
            self.loss.append("train (smoothed)", x, float(rec["train_loss"]))
        for key, chart, name, scale in (("val_loss", self.loss, "validation", 1.0),
                                        ("train_acc", self.accuracy, "train", 100.0),
                                        ("val_acc", self.accuracy, "validation", 100.0)):
            if rec.get(key) is not None:
                chart.append(name, x, scale * float(rec[key]))
        if with_steps:
            return                          # the steps drew speed and memory in full
        if rec.get("images_per_sec"):
            self.throughput.append("images/s (smoothed)", x, float(rec["images_per_sec"]))
        if rec.get("peak_memory_bytes"):
            self.memory.append("peak", x, float(rec["peak_memory_bytes"]))

    def set_memory_kind(self, kind: str) -> None:
        """Say what the memory curve measures: GPU memory or the whole process (CPU runs)."""
        title = {"cuda": "GPU memory", "mps": "GPU memory (Apple)"}.get(kind, "Memory (whole process)")
        self.memory.set_title(title)
        self._memory_kind = kind
        self._update_reference()

    def set_steps_per_epoch(self, steps: int) -> None:
        """Smooth the step loss over about half an epoch (at most 20 steps)."""
        window = min(20.0, max(2.0, steps / 2))
        self._loss_ema = _Ema(2.0 / (window + 1))
        # A run followed from its log drew its steps so far as history: the smoothing goes on from them.
        _, losses = self.loss.series("train (step)")
        for value in losses[-200:]:
            if np.isfinite(value):
                self._loss_ema.update(float(value))

    def set_epochs(self, epochs: int) -> None:
        """Fix the x axis of every chart to 0..epochs so curves grow into a stable frame."""
        self._x_span = float(max(1, int(epochs)))
        for chart in self.charts:
            item = chart.getPlotItem()
            item.setXRange(0, max(1, int(epochs)), padding=0.02)
            item.enableAutoRange(axis="x", enable=False)

    def set_reference_memory(self, full_ft_bytes: int | None) -> None:
        """Dashed line: what full fine-tuning would need, for comparison."""
        # Drawn as a dashed series (not an InfiniteLine) so auto-range includes it.
        self._reference_bytes = int(full_ft_bytes) if full_ft_bytes else None
        self._update_reference()

    def _update_reference(self) -> None:
        name = "full fine-tuning (est.)"
        # The estimate is training memory on an accelerator; a CPU run's curve is the whole
        # process (interpreter, libraries, data), so a line beside it would mislead. Until a run
        # says where it trains (a re-opened run's log is read later), the curve's meaning is open.
        if not self._reference_bytes or self._memory_kind not in ("cuda", "mps"):
            self.memory.set_series(name, [], [])
            self._key_reference(False)
            return
        self._key_reference(True)
        right = max(1.0, self._x_span, self._last_x)  # the whole axis: redrawn only when it grows
        xs, _ = self.memory.series(name)
        if xs.size != 2 or xs[1] != right:
            self.memory.set_series(name, [0.0, right], [self._reference_bytes] * 2)

    def _key_reference(self, drawn: bool) -> None:
        # The key names the full fine-tuning estimate only while its line is drawn.
        name = "full fine-tuning (est.)"
        if drawn == (name not in self.memory.hidden):
            return
        (self.memory.hidden.discard if drawn else self.memory.hidden.add)(name)
        self.memory.set_title(self.memory.title)

    def refresh(self) -> None:
        """Redraw every chart with pending points now (end of a run, history)."""
        if self._reference_bytes:
            self._update_reference()
        for chart in self.charts:
            chart.refresh()

    def _tick(self) -> None:
        """Timer: redraw the next chart (round robin) that has pending points."""
        if self._reference_bytes:
            self._update_reference()
        charts = self.charts
        for i in range(len(charts)):
            chart = charts[(self._next_chart + i) % len(charts)]
            if chart.has_pending():
                chart.refresh()
                self._next_chart = (self._next_chart + i + 1) % len(charts)
                return

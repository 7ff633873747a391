"""Compare two to four runs: their curves overlaid, the settings that differ marked, final figures side by side.

The runs are read in the background by the engine (:func:`dtl_engine.runs.compare.compare_runs`,
which goes through the run-folder owner); this window only lays them out.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QIcon, QPixmap
from PySide6.QtWidgets import (QCheckBox, QDialog, QHBoxLayout, QHeaderView, QLabel, QSplitter, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from app import jobs
from app.theme import BLUE, GREEN, ORANGE, PURPLE, role_color
from app.widgets.charts import LiveChart
from dtl_engine.formatting import backbone_text
from dtl_engine.runs.compare import compare_runs

RUN_COLORS = (BLUE, ORANGE, GREEN, PURPLE)      # one per run, in the order the runs were chosen
MAX_RUNS = len(RUN_COLORS)


def run_swatch(index: int) -> QIcon:
    """A small square in run ``index``'s curve colour."""
    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor(RUN_COLORS[index]))
    return QIcon(pixmap)


def setting_text(value: Any) -> str:
    """A setting as a person reads it: '—' for none, 'yes'/'no', numbers without noise."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _shown_setting(settings: dict, name: str) -> str:
    """A run's setting as it ran: a random-weight run's backbone without the pretrained tag it never used."""
    if name not in settings:
        return "(none)"
    if name == "backbone":
        return backbone_text(str(settings[name]), str(settings.get("weights", "") or ""))
    return setting_text(settings[name])


def _percent(value: Any) -> str:
    return "—" if not isinstance(value, (int, float)) else f"{100 * value:.1f} %"


class RunCompareDialog(QDialog):
    """The comparison of the runs given; reads them in the background, then fills itself."""

    loaded = Signal(object)         # the engine's RunComparison
    load_failed = Signal(str)

    def __init__(self, run_dirs: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Compare {len(run_dirs)} runs")
        self.resize(1100, 760)
        self.run_dirs = list(run_dirs)[:MAX_RUNS]
        self.comparison: Any = None
        self.setting_rows: list[str] = []         # the settings table's rows, by setting name

        self.heading = QLabel("Reading the runs…")
        self.heading.setWordWrap(True)
        self.heading.setTextFormat(Qt.TextFormat.RichText)
        chart_box = self._build_charts()

        self.only_differences = QCheckBox("Only the settings that differ")
        self.only_differences.toggled.connect(self._filter_settings)
        self.settings_table = self._table()
        self.results_table = self._table()
        settings_box = QWidget()
        slay = QVBoxLayout(settings_box)
        slay.setContentsMargins(0, 0, 0, 0)
        title_row = QHBoxLayout()
        title_row.addWidget(_bold("Settings (differences marked)"))
        title_row.addStretch(1)
        title_row.addWidget(self.only_differences)
        slay.addLayout(title_row)
        slay.addWidget(self.settings_table, 1)
        results_box = QWidget()
        rlay = QVBoxLayout(results_box)
        rlay.setContentsMargins(0, 0, 0, 0)
        rlay.addWidget(_bold("Final figures and F1 per class (best marked)"))
        rlay.addWidget(self.results_table, 1)
        tables = QSplitter(Qt.Orientation.Horizontal)
        tables.addWidget(settings_box)
        tables.addWidget(results_box)
        tables.setStretchFactor(0, 3)
        tables.setStretchFactor(1, 2)

        body = QSplitter(Qt.Orientation.Vertical)
        body.addWidget(chart_box)
        body.addWidget(tables)
        body.setSizes([330, 370])
        layout = QVBoxLayout(self)
        layout.addWidget(self.heading)
        layout.addWidget(body, 1)

        run_dirs = self.run_dirs
        jobs.submit(lambda _job: _compare(run_dirs), kind="compare-runs", what="Reading the runs", context=self,
                    imports=("dtl_engine.runs.compare",), on_done=self._fill, on_error=self._failed)

    def _build_charts(self) -> QWidget:
        """Validation accuracy and loss per epoch, side by side."""
        self.accuracy_chart = LiveChart("Validation accuracy", "accuracy", "%")
        self.accuracy_chart.fixed_y = (0.0, 100.0)
        self.loss_chart = LiveChart("Validation loss", "loss")
        self.loss_chart.y_from_zero = True
        self.loss_chart.getPlotItem().getAxis("left").enableAutoSIPrefix(False)     # 0.8, not 800 (x0.001)
        charts = QHBoxLayout()
        charts.addWidget(self.accuracy_chart)
        charts.addWidget(self.loss_chart)
        chart_box = QWidget()
        chart_box.setLayout(charts)
        return chart_box

    @staticmethod
    def _table() -> QTableWidget:
        table = QTableWidget(0, 0)
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        table.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
        # The runs share the width; a long value (a folder) is cut in its middle, whole in its tooltip.
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        table.setWordWrap(False)
        table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        return table

    # --- filling -----------------------------------------------------------------
    def _failed(self, message: str, _details: str) -> None:
        self.heading.setText(f"<span style='color:{role_color('error')}'>{_escape(message)}</span>")
        self.load_failed.emit(message)

    def _fill(self, comparison: Any) -> None:
        self.comparison = comparison
        runs = comparison.runs
        keys = " &nbsp; ".join(f"<span style='color:{RUN_COLORS[i]}'>━</span> {i + 1}. {_escape(r.name)}"
                               for i, r in enumerate(runs))
        n = len(comparison.differing)
        self.heading.setText(f"<b>{len(runs)} runs</b> · {n} setting{'s' if n != 1 else ''} differ"
                             f"{'s' if n == 1 else ''}<br>{keys}")
        for i, run in enumerate(runs):
            label = f"{i + 1}. {run.name}"
            for chart, key in ((self.accuracy_chart, "val_acc"), (self.loss_chart, "val_loss")):
                chart.add_series(label, RUN_COLORS[i], symbol="o")
                xs, ys = run.curve(key)
                chart.set_series(label, xs, [100 * y for y in ys] if key == "val_acc" else ys)
        for chart in (self.accuracy_chart, self.loss_chart):
            # The runs' key is the heading above both charts, not a line under each title.
            chart.getPlotItem().setTitle(chart.title, color=chart.text_color, size="11pt")
            chart.refresh()
            chart.getPlotItem().setXRange(1, max([max(r.curve("val_acc")[0] or [1]) for r in runs] + [2]),
                                          padding=0.05)
        self._fill_settings(comparison)
        self._fill_results(comparison)
        self.loaded.emit(comparison)

    def _headers(self, table: QTableWidget, names: list[str]) -> None:
        """"Run 1", "Run 2"… with the run's colour; the heading above names them (a run's name did not fit)."""
        table.setColumnCount(len(names))
        table.setHorizontalHeaderLabels([f"Run {i + 1}" for i in range(len(names))])
        for i, name in enumerate(names):
            # the run's colour as a swatch beside the name: as text colour it was unreadable on a dark header
            table.horizontalHeaderItem(i).setIcon(run_swatch(i))
            table.horizontalHeaderItem(i).setToolTip(f"{i + 1}. {name}\n{self.comparison.runs[i].run_dir}")
        header = table.horizontalHeader()
        header.setMinimumSectionSize(max(header.sectionSizeFromContents(i).width() for i in range(len(names))))

    def _fill_settings(self, comparison: Any) -> None:
        table = self.settings_table
        self._headers(table, [r.name for r in comparison.runs])
        # The settings that differ come first, so they are in view without scrolling.
        self.setting_rows = comparison.differing + [n for n in comparison.settings if n not in comparison.differing]
        table.setRowCount(len(self.setting_rows))
        table.setVerticalHeaderLabels(self.setting_rows)
        marked = QColor(role_color("accent"))
        marked.setAlpha(60)
        bold = QFont()
        bold.setBold(True)
        for row, name in enumerate(self.setting_rows):
            differs = name in comparison.differing
            for col, run in enumerate(comparison.runs):
                item = QTableWidgetItem(_shown_setting(run.settings, name))
                item.setToolTip(item.text())
                if differs:
                    item.setBackground(QBrush(marked))
                    item.setFont(bold)
                table.setItem(row, col, item)
            if differs:
                table.verticalHeaderItem(row).setFont(bold)
                table.verticalHeaderItem(row).setText(f"● {name}")
        self._filter_settings()

    def _filter_settings(self, *_: Any) -> None:
        if self.comparison is None:
            return
        only = self.only_differences.isChecked()
        for row, name in enumerate(self.setting_rows):
            self.settings_table.setRowHidden(row, only and name not in self.comparison.differing)

    def _fill_results(self, comparison: Any) -> None:
        runs = comparison.runs
        rows: list[tuple[str, list[Any], bool]] = [     # (label, one value per run, higher is better)
            ("Status", [r.status for r in runs], False),
            ("Epochs done", [f"{r.epochs_done} / {r.settings.get('epochs', '?')}" for r in runs], False),
            ("Best val. accuracy", [r.best_val_acc for r in runs], True),
            ("Final accuracy", [r.final_accuracy for r in runs], True),
            ("Evaluated on", [r.final_split or "—" for r in runs], False),
        ]
        rows += [(f"F1 · {name}", [r.per_class_f1.get(name) for r in runs], True) for name in comparison.classes()]
        table = self.results_table
        self._headers(table, [r.name for r in runs])
        table.setRowCount(len(rows))
        table.setVerticalHeaderLabels([label for label, _, _ in rows])
        best_color = QColor(role_color("ok"))
        bold = QFont()
        bold.setBold(True)
        for row, (_, values, higher_better) in enumerate(rows):
            numbers = [v for v in values if isinstance(v, (int, float))]
            best = max(numbers) if higher_better and len(numbers) > 1 and len(set(numbers)) > 1 else None
            for col, value in enumerate(values):
                text = _percent(value) if higher_better else str(value)
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if best is not None and value == best:
                    item.setForeground(QBrush(best_color))
                    item.setFont(bold)
                table.setItem(row, col, item)

    # --- for tests and screenshots -------------------------------------------------------
    def differing_rows(self) -> list[str]:
        """The settings shown as differing (by their names)."""
        if self.comparison is None:
            return []
        return [name for row, name in enumerate(self.setting_rows)
                if self.settings_table.verticalHeaderItem(row).text().startswith("● ")]


def _compare(run_dirs: list[str]) -> Any:
    return compare_runs(run_dirs)


def _bold(text: str) -> QLabel:
    label = QLabel(text)
    label.setStyleSheet("font-weight: 600;")
    return label


def _escape(text: Any) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

"""Runs page: every past run, newest first; open one, or resume a stopped / interrupted one."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QItemSelectionModel, QObject, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QPushButton,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from app import jobs
from app.run_life import RunState
from app.theme import state_color
from app.widgets.cache_line import CacheLine
from app.widgets.error_dialog import show_error
from app.widgets.run_compare import MAX_RUNS, RunCompareDialog
from app.worker import describe_error
from dtl_engine.formatting import backbone_text, weights_text
from dtl_engine.runs.listing import list_runs as engine_list_runs
from dtl_engine.paths import runs_dir
from dtl_engine.runs.folder import EVENT_LOG, RUN_FILE, RunFolder

COLUMNS = ["Name", "Date", "Backbone", "Weights", "Method", "Status", "Epochs", "Best val. acc."]
STATUS_COL = COLUMNS.index("Status")
NUMBER_COLS = (COLUMNS.index("Epochs"), COLUMNS.index("Best val. acc."))
NAME_COL, DATE_COL = COLUMNS.index("Name"), COLUMNS.index("Date")
ELIDED_COLS = (NAME_COL, COLUMNS.index("Backbone"), COLUMNS.index("Weights"))


def list_runs() -> list[Any]:
    """The engine's run list (newest first)."""
    return list(engine_list_runs())


def _date_text(created: str) -> str:
    try:
        stamp = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
        return stamp.astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return str(created)


class RunsPage(QWidget):
    """Table of past runs with Open / Resume / Refresh."""

    status_changed = Signal()
    open_run = Signal(str)      # run folder
    resume_run = Signal(str)    # run folder

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runs: list[Any] = []
        self._status = (False, "No runs yet.")

        title = QLabel("Runs")
        title.setStyleSheet("font-size: 16pt; font-weight: 600;")
        self.summary = QLabel("")
        self.summary.setStyleSheet("color: palette(placeholder-text);")

        self.table = self._build_table()

        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Show this run's curves and results, and export it again")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue a stopped or interrupted run from its last checkpoint")
        self.refresh_button = QPushButton("Refresh")
        self.open_folder_button = QPushButton("Open run folder…")
        self.open_folder_button.setToolTip("Open a run from anywhere, e.g. one the command line or a cluster job "
                                           "is training: it is followed live as it trains")
        self.open_folder_button.clicked.connect(self._browse_run_folder)
        self.compare_button = QPushButton("Compare")
        self.compare_button.setToolTip(f"Select 2 to {MAX_RUNS} runs (Ctrl-click) to see their curves, settings "
                                       "and results side by side")
        self.compare_button.clicked.connect(self.compare_selected)
        self.compare_dialog: RunCompareDialog | None = None
        self.open_button.clicked.connect(self._open)
        self.resume_button.clicked.connect(self._resume)
        self.refresh_button.clicked.connect(self.refresh)
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.resume_button)
        buttons.addWidget(self.compare_button)
        buttons.addStretch(1)
        buttons.addWidget(self.open_folder_button)
        buttons.addWidget(self.refresh_button)

        self.empty_label = QLabel("No runs yet. Runs appear here once you press Start on the Train page.")
        self.empty_label.setStyleSheet("color: palette(placeholder-text);")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)

        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(self.summary)
        layout.addLayout(buttons)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.empty_label)
        self.cache_line = CacheLine()           # the reusable caches' size, and "Clear caches"
        layout.addWidget(self.cache_line)
        self._update_buttons()

    def _build_table(self) -> QTableWidget:
        table = QTableWidget(0, len(COLUMNS))
        table.setHorizontalHeaderLabels(COLUMNS)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        # Several rows can be chosen (Ctrl/Shift-click) to compare them; Open and Resume act on one.
        table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        table.setAlternatingRowColors(True)
        table.verticalHeader().setVisible(False)
        header = table.horizontalHeader()
        # The short columns (date, status, epochs, accuracy…) as wide as their text; the run's name, its
        # backbone and weights share what is left, cut in the middle when the window is narrow (whole in
        # their tooltips).
        # A table as wide as all its texts scrolled sideways and hid the status and the accuracy.
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        for col in ELIDED_COLS:
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
        table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        table.setWordWrap(False)
        table.viewport().installEventFilter(self)       # its width changed: share it again
        table.itemSelectionChanged.connect(self._update_buttons)
        table.cellDoubleClicked.connect(lambda *_: self._open())
        return table

    # --- page contract ----------------------------------------------------------
    def status(self) -> tuple[bool, str]:
        return self._status

    def refresh(self) -> None:
        """Re-read the run folders now (JSON files only, once the engine's modules are loaded)."""
        self.cache_line.refresh()           # the caches' size is measured in the background
        try:
            runs = list_runs()
        except Exception as exc:  # a damaged runs folder must not break the page
            message, details = describe_error(exc, "Listing the runs")
            self._list_failed(message, details)
            return
        self._fill(runs)

    def refresh_in_background(self) -> None:
        """Re-read the run folders off the GUI thread (the first listing loads torch)."""
        self.cache_line.refresh()
        self._status = (self._status[0], "Listing past runs…") if not self.runs else self._status
        jobs.submit(lambda _job: list_runs(), kind="list-runs", what="Listing the runs", context=self,
                    lane="list-runs", imports=("dtl_engine.runs.listing",), on_done=self._fill,
                    on_error=self._list_failed)

    def _list_failed(self, message: str, details: str) -> None:
        self._fill([])
        self.error_dialog = show_error(self, "Runs could not be listed", message, details)

    def _fill(self, runs: list[Any]) -> None:
        selected = set(self.selected_runs())     # kept across the refresh, one row or several
        self.table.clearSelection()
        self.runs = list(runs)
        self.table.setRowCount(len(self.runs))
        for row, run in enumerate(self.runs):
            acc = run.best_val_acc
            weights = str(getattr(run, "weights", "") or "")
            cells = [run.name, _date_text(run.created), backbone_text(run.backbone, weights), weights_text(weights),
                     run.method, run.status,
                     "—" if run.status == "damaged" else f"{run.epochs_done} / {run.epochs}",
                     "—" if acc is None else f"{100 * acc:.1f} %"]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(str(text))
                if col == 0:
                    item.setData(Qt.ItemDataRole.UserRole, str(run.run_dir))
                    item.setToolTip(str(run.run_dir))
                elif col in ELIDED_COLS:
                    item.setToolTip(str(text))
                if col == STATUS_COL and getattr(run, "problem", ""):
                    item.setToolTip(run.problem)        # why a damaged run cannot be opened
                if col in NUMBER_COLS:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, item)
            if str(run.run_dir) in selected:
                self.table.selectionModel().select(
                    self.table.model().index(row, 0),
                    QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)
        self._paint_statuses()
        self._share_width()
        n = len(self.runs)
        resumable = sum(RunState.of(r.status).resumable for r in self.runs)
        self.summary.setText(f"{n} run(s)" + (f", {resumable} can be resumed" if resumable else "")
                             if n else "")
        self.empty_label.setVisible(n == 0)
        self._status = (n > 0, f"{n} past run(s)" if n else "No runs yet.")
        self._update_buttons()
        self.status_changed.emit()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.Resize and watched is self.table.viewport():
            self._share_width()
        return super().eventFilter(watched, event)

    def _share_width(self) -> None:
        """The name, backbone and weights share the width the other columns leave: each at least its header,
        at most its longest text (so a wide window shows them whole), the name first. When even the name
        cannot be whole, the date goes: a run's name begins with its date and time."""
        table, header = self.table, self.table.horizontalHeader()
        table.setColumnHidden(DATE_COL, False)
        least = {c: header.sectionSizeFromContents(c).width() for c in ELIDED_COLS}
        most = {c: max(least[c], table.sizeHintForColumn(c)) for c in ELIDED_COLS}
        fixed = sum(header.sectionSize(c) for c in range(len(COLUMNS)) if c not in ELIDED_COLS)
        extra = table.viewport().width() - fixed - sum(least.values())
        if extra < most[NAME_COL] - least[NAME_COL]:
            extra += header.sectionSize(DATE_COL)
            table.setColumnHidden(DATE_COL, True)
        width = dict(least)
        for col in ELIDED_COLS:             # the name first, then the backbone, then the weights
            grow = max(0, min(extra, most[col] - width[col]))
            width[col] += grow
            extra -= grow
        for col, size in width.items():
            header.resizeSection(col, size)

    def _paint_statuses(self) -> None:
        for row in range(self.table.rowCount()):
            item = self.table.item(row, STATUS_COL)
            if item is not None:
                item.setForeground(QColor(state_color(item.text())))

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "table"):
            self._paint_statuses()      # the status colours follow a light/dark switch

    def selected_run(self) -> str | None:
        """The run folder of the one selected row (None when none, or several, are selected)."""
        runs = self.selected_runs()
        return runs[0] if len(runs) == 1 else None

    def selected_runs(self) -> list[str]:
        """The run folders of the selected rows, top to bottom."""
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        items = [self.table.item(index.row(), 0) for index in sorted(rows, key=lambda i: i.row())]
        return [item.data(Qt.ItemDataRole.UserRole) for item in items if item is not None]

    def compare_selected(self) -> RunCompareDialog | None:
        """Open the comparison of the 2–4 selected runs (read in the background)."""
        runs = self._comparable()
        if not runs:
            return None
        if self.compare_dialog is not None:      # one comparison open at a time
            self.compare_dialog.close()
            self.compare_dialog.deleteLater()
        self.compare_dialog = RunCompareDialog(runs, self)
        self.compare_dialog.show()
        return self.compare_dialog

    def _comparable(self) -> list[str]:
        runs = self.selected_runs()
        infos = [self._run_info(r) for r in runs]
        ok = 2 <= len(runs) <= MAX_RUNS and all(i is not None and i.status != "damaged" for i in infos)
        return runs if ok else []

    def select_run(self, run_dir: str) -> bool:
        """Select the row of ``run_dir``; False when it is not listed."""
        for row in range(self.table.rowCount()):
            if Path(self.table.item(row, 0).data(Qt.ItemDataRole.UserRole)) == Path(run_dir):
                self.table.selectRow(row)
                return True
        return False

    def _run_info(self, run_dir: str | None) -> Any:
        return next((r for r in self.runs if str(r.run_dir) == run_dir), None)

    def _update_buttons(self) -> None:
        info = self._run_info(self.selected_run())
        self.open_button.setEnabled(info is not None and info.status != "damaged")
        self.resume_button.setEnabled(info is not None and RunState.of(info.status).resumable)
        self.compare_button.setEnabled(bool(self._comparable()))

    def _open(self) -> None:
        run_dir = self.selected_run()
        if run_dir:
            self.open_run.emit(run_dir)

    def _browse_run_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a run folder", str(runs_dir()))
        if folder:
            self.open_run_folder(folder)

    def open_run_folder(self, folder: str) -> bool:
        """Open the run in ``folder`` (any place, e.g. a cluster's shared disk); False with a message if none."""
        if RunFolder(folder).has_run_file() or (Path(folder) / EVENT_LOG).is_file():
            self.open_run.emit(str(folder))
            return True
        self.error_dialog = show_error(self, "Not a run folder",
                                       f"'{Path(folder).name}' holds no run: a run folder has a {RUN_FILE} and "
                                       f"an {EVENT_LOG}, written by the app or by `python -m dtl_engine train`.")
        return False

    def _resume(self) -> None:
        info = self._run_info(self.selected_run())
        if info is not None and RunState.of(info.status).resumable:
            self.resume_run.emit(str(info.run_dir))

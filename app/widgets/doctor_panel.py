"""Results' "Data doctor": what may be wrong with a run's images, with thumbnails.

A button runs :func:`dtl_engine.inference.doctor.diagnose_run` in a background job (with
progress, stoppable); the findings (duplicates and leakage across splits, likely
mislabeled images with the suggested label, class imbalance, images far from their
class, unreadable files) fill a table with a thumbnail per image. The suggested
relabelings can be saved as a CSV of moves: nothing in the image folder is ever
changed, and an existing file is replaced only after asking.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QProgressBar,
                               QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from app import jobs
from app.theme import role_color
from app.widgets.error_dialog import ask_to_replace
from app.widgets.thumbnails import read_thumbnail
from dtl_engine.errors import DTLError
from dtl_engine.runs.folder import RunFolder

ICON = 48
MAX_ROWS = 500              # a table longer than this is not read; the CSV from the command line has them all
MAX_THUMBNAILS = 200
# What each kind of finding is called, in the order the table lists them (worst first).
KIND_NAMES = {"leak": "Duplicate across splits (leakage)", "mislabeled": "Likely mislabeled",
              "outlier": "Far from its class", "imbalance": "Class imbalance",
              "exact_duplicate": "Exact duplicate", "near_duplicate": "Near duplicate", "unreadable": "Unreadable"}
COLUMNS = ("Finding", "Image", "Split", "Label", "Suggested label", "Detail")


def finding_kind(finding: Any) -> str:
    """The table's kind of a finding: duplicates that span splits are leakage."""
    if finding.kind.endswith("duplicate") and "leakage" in finding.detail:
        return "leak"
    return finding.kind


def _html(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


def run_doctor(job: jobs.Job, run_dir: str) -> Any:
    """The doctor's report of ``run_dir``; progress ``(done, total)`` about every 1 % of the images."""
    from dtl_engine.inference.doctor import diagnose_run

    last = [-1]

    def progress(done: int, total: int) -> None:
        if done == total or done - last[0] >= max(1, total // 100):
            last[0] = done
            job.report((done, total))
    return diagnose_run(run_dir, device="auto", progress=progress, should_stop=lambda: job.is_cancelled)


class DoctorPanel(QWidget):
    """Run the data check of one run and show what it found."""

    finished = Signal(object)           # the DoctorReport now shown

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_dir: str | None = None
        self.report: Any = None
        self._job: jobs.Job | None = None
        self.thumbnails_loaded = 0

        self.run_button = QPushButton("Check the data")
        self.run_button.setToolTip("Look for duplicates (and leakage between train, validation and test), likely "
                                   "mislabeled images, class imbalance and images far from their class. "
                                   "Only reads the images.")
        self.run_button.clicked.connect(self._run_or_stop)
        self.save_button = QPushButton("Save suggested moves (CSV)…")
        self.save_button.setToolTip("A list of the likely mislabeled images and the class each may belong to. "
                                    "Nothing is moved.")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self.choose_moves_file)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.summary = QLabel("Checks every image of the run without changing any: duplicates, leakage between "
                              "the splits, likely mislabeled images, class imbalance, images far from their class.")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(ICON + 6)
        self.table.setIconSize(QSize(ICON, ICON))
        # A detail ("same as 0/12.png; across train/val (leakage)") wraps onto the row's second line: cut in
        # its middle it lost what matters. A row is as tall as its thumbnail, or its text on a narrow window.
        self.table.setWordWrap(True)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.table.verticalHeader().setMinimumSectionSize(ICON + 6)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        # The finding's name and the image wrap in columns of their own width (the user can widen them):
        # as wide as their texts they pushed the detail off a small window.
        for col, width in ((0, 150), (1, 165)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
            self.table.setColumnWidth(col, width)
        header.setStretchLastSection(True)
        self.table.setVisible(False)

        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.save_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)

    # --- the run --------------------------------------------------------------
    def set_run(self, run_dir: str | None) -> None:
        """Forget the findings of another run; the check starts only when asked."""
        if run_dir == self.run_dir:
            return
        self.stop()
        self.run_dir, self.report = run_dir, None
        jobs.drop(self, "doctor")           # nothing of the other run's check or thumbnails arrives now
        jobs.drop(self, "thumbnails")
        self.table.setRowCount(0)
        self.table.setVisible(False)
        self.save_button.setEnabled(False)
        self.run_button.setEnabled(run_dir is not None)
        self.summary.setText("Checks every image of the run without changing any: duplicates, leakage between "
                             "the splits, likely mislabeled images, class imbalance, images far from their class.")

    def is_running(self) -> bool:
        return self._job is not None

    def start(self) -> None:
        """Check the run's images in the background."""
        if self.run_dir is None or self._job is not None:
            return
        run_dir = self.run_dir
        self.run_button.setText("Stop the check")
        self.save_button.setEnabled(False)
        self.progress.setRange(0, 0)
        self.progress.setFormat("Loading the model…")
        self.progress.setVisible(True)
        self.summary.setText("Checking the images…")
        self._job = jobs.submit(lambda job: run_doctor(job, run_dir), kind="doctor", what="The data check",
                                context=self, loses_work=True, supersede="doctor",
                                imports=("timm", "dtl_engine.training"), lane="doctor",
                                on_progress=self._progressed, on_done=self._done,
                                on_error=lambda message, _details: self._failed(message),
                                on_cancelled=lambda: self._failed("The data check was stopped."))

    def stop(self) -> None:
        """Stop a running check (its result is dropped)."""
        if self._job is not None:
            self._job.cancel()
            self._job = None
        self.run_button.setText("Check the data")
        self.progress.setVisible(False)

    def _run_or_stop(self) -> None:
        if self._job is not None:
            self.stop()
            self.summary.setText("The data check was stopped.")
        else:
            self.start()

    def _progressed(self, value: tuple[int, int]) -> None:
        done, total = value
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        self.progress.setFormat(f"Reading {done} / {total} images…" if done < total
                                else f"Read {total} images; comparing them…")

    def _failed(self, message: str) -> None:
        self._job = None
        self.run_button.setText("Check the data")
        self.progress.setVisible(False)
        self.summary.setText(f"<span style='color:{role_color('error')}'>{html.escape(message)}</span>"
                             if "stopped" not in message else message)

    def _done(self, report: Any) -> None:
        self._job = None
        self.report = report
        self.run_button.setText("Check again")
        self.progress.setVisible(False)
        self.summary.setText(_html(report.summary()))
        self.save_button.setEnabled(bool(report.of("mislabeled")))
        self._fill(report)
        self.finished.emit(report)

    # --- the table ------------------------------------------------------------
    def rows(self) -> list[Any]:
        """The findings in the order the table lists them (worst kind first, strongest first)."""
        if self.report is None:
            return []
        order = list(KIND_NAMES)
        return sorted(self.report.findings,
                      key=lambda f: (order.index(finding_kind(f)) if finding_kind(f) in order else len(order),
                                     f.group if f.group is not None else -1, -f.score))

    def _fill(self, report: Any) -> None:
        rows = self.rows()[:MAX_ROWS]
        self.table.setRowCount(len(rows))
        for r, f in enumerate(rows):
            kind = finding_kind(f)
            name = KIND_NAMES.get(kind, kind)
            if f.group is not None:
                name += f" (group {f.group})"
            cells = (name, Path(f.path).name if f.kind != "imbalance" else f.label, f.split, f.label,
                     f.suggested_label, f.detail)
            for c, text in enumerate(cells):
                item = QTableWidgetItem(str(text))
                if c == 1 and f.kind != "imbalance":
                    item.setToolTip(f.path)
                if c == 5:
                    item.setToolTip(str(text))
                self.table.setItem(r, c, item)
        self.table.setVisible(True)
        self.thumbnails_loaded = 0
        paths = [(r, f.path) for r, f in enumerate(rows) if f.kind not in ("imbalance", "unreadable")]
        paths = paths[:MAX_THUMBNAILS]
        jobs.submit(lambda _job: [(r, read_thumbnail(p, ICON)) for r, p in paths], kind="thumbnails",
                    what="Loading thumbnails", context=self, lane="thumbnails", supersede="thumbnails",
                    on_done=self._set_thumbnails)

    def _set_thumbnails(self, images: list[tuple[int, QImage]]) -> None:
        for row, image in images:
            item = self.table.item(row, 1)
            if item is not None and not image.isNull():
                item.setIcon(QIcon(QPixmap.fromImage(image)))
                self.thumbnails_loaded += 1

    # --- the suggested moves ----------------------------------------------------
    def default_moves_path(self) -> str:
        name = Path(self.run_dir).name if self.run_dir else "run"
        return str(Path.home() / f"{name}-suggested-moves.csv")

    def choose_moves_file(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the suggested moves", self.default_moves_path(),
                                              "CSV (*.csv)", options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            self.save_moves(path if Path(path).suffix else path + ".csv")

    def save_moves(self, path: str) -> Path | None:
        """Write the suggested moves to ``path``; asks before replacing a file; None when nothing was written."""
        if self.report is None:
            return None
        out = Path(path).expanduser()
        overwrite = False
        if out.exists() and not out.is_dir():
            if not ask_to_replace(self, out):
                return None
            overwrite = True
        try:
            # the run's image folder as a real path (an older run's relative one is refused with a sentence)
            data_dir = RunFolder(self.run_dir).data_folder() if self.run_dir else None
            written = self.report.write_moves_csv(out, overwrite=overwrite, data_dir=data_dir)
        except DTLError as exc:
            self.summary.setText(f"<span style='color:{role_color('error')}'>{html.escape(str(exc))}</span>")
            return None
        moves = len(self.report.of("mislabeled"))
        self.summary.setText(_html(self.report.summary()) +
                             f"<br>Saved {moves} suggested move(s) to {html.escape(str(written))}. Nothing was moved.")
        return written

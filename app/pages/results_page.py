"""Results page: how good the trained model is.

Headline (accuracy, best epoch), confusion matrix, per-class precision /
recall / F1, and a gallery of misclassified images. A click on a matrix cell (or
Enter on it) fills the gallery with exactly that cell's images; the diagonal holds
the correct ones; "Show all mistakes" goes back. "Why?" on a chosen image computes
its heatmap in a background job and shows it beside the gallery. The "Data doctor"
tab checks the run's images (duplicates and leakage, likely mislabeled, imbalance,
outliers) on request. Reads the run's saved
report; when a run has none yet, or its images changed on disk, it is evaluated
in the background, with a progress bar ("Evaluating 120 / 359 images…") on the page
and in the step's status line. When some images of the split are missing or changed,
the figures say how many they cover.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QProgressBar,
                               QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout,
                               QWidget)

from app.widgets.confusion_matrix import ConfusionMatrixView
from app.widgets.doctor_panel import DoctorPanel
from app.widgets.error_dialog import show_error
from app.widgets.mistakes_gallery import MAX_SHOWN, MistakesGallery, show_in_folder
from app.widgets.search_view import SearchView
from app.widgets.why_view import WhyView, compute_heatmap
from app import jobs
from app.run_life import has_model


def load_evaluation(run_dir: str | Path, job: jobs.Job | None = None):
    """The run's saved evaluation while its images are unchanged, else a fresh one that says what it covers.

    With ``job``, a fresh evaluation reports ``(done, total)`` images as the job's progress and
    stops when the job is cancelled.
    """
    from dtl_engine.inference.evaluate import current_evaluation

    if job is None:
        return current_evaluation(run_dir)
    return current_evaluation(run_dir, progress=lambda done, total: job.report((done, total)),
                              should_stop=lambda: job.is_cancelled)


class ResultsPage(QWidget):
    """Shows one run's evaluation."""

    status_changed = Signal()
    evaluation_shown = Signal(object)     # the Evaluation now on screen

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_dir: str | None = None
        self.evaluation: Any = None
        self._status = (False, "No results yet: train a model or open a past run.")

        self.headline = QLabel("No results yet")
        self.headline.setStyleSheet("font-size: 16pt; font-weight: 600;")
        self.subline = QLabel("Train a model on the Train page, or open a past run on the Runs page.")
        self.subline.setStyleSheet("color: palette(placeholder-text);")
        self.subline.setWordWrap(True)
        # A fresh evaluation takes a while on a CPU: the count of images scored, not a blank page.
        self.progress = QProgressBar()
        self.progress.setVisible(False)

        matrix_box, table_box, gallery_box = self._build_matrix(), self._build_table(), self._build_gallery()
        # The matrix and the table share the width; each scrolls when it needs more.
        top = QWidget()
        top_row = QHBoxLayout(top)
        top_row.setContentsMargins(0, 0, 0, 0)
        top_row.addWidget(matrix_box, 1)    # on a small window both share the width (each scrolls)
        top_row.addWidget(table_box, 1)
        self.doctor = DoctorPanel()
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(gallery_box, "Images")
        self.tabs.addTab(self.doctor, "Data doctor")
        self.tabs.setCornerWidget(self.gallery_buttons, Qt.Corner.TopRightCorner)
        self.tabs.currentChanged.connect(self._tab_changed)
        self.tabs.setTabToolTip(1, "Check the run's images: duplicates and leakage between the splits, likely "
                                   "mislabeled images, class imbalance, images far from their class")
        main = QSplitter(Qt.Orientation.Vertical)
        main.addWidget(top)
        main.addWidget(self.tabs)
        main.setStretchFactor(0, 3)
        main.setStretchFactor(1, 2)
        main.setChildrenCollapsible(False)
        self.body = main

        layout = QVBoxLayout(self)
        layout.addWidget(self.headline)
        layout.addWidget(self.subline)
        layout.addWidget(self.progress)
        self.search_view = SearchView()     # the automatic learning rate / augmentation, when searched
        layout.addWidget(self.search_view)
        layout.addWidget(main, 1)

    def _tab_changed(self, index: int) -> None:
        self.gallery_buttons.setVisible(index == 0)
        if self.tabs.widget(index) is self.doctor:
            # The doctor's summary and table need more than the gallery's share: with it the table showed
            # one row at 1240x820 until the splitter was dragged.
            top, bottom = self.body.sizes()
            if bottom < 2 * (top + bottom) // 3:
                self.body.setSizes([(top + bottom) // 3, (top + bottom) - (top + bottom) // 3])

    # --- layout ----------------------------------------------------------------
    def _build_matrix(self) -> QGroupBox:
        self.matrix = ConfusionMatrixView()
        self.matrix.cell_opened.connect(self.open_cell)
        self.cell: tuple[int, int] | None = None        # the matrix cell the gallery shows, or None: all mistakes
        matrix_box = QGroupBox("Confusion matrix")
        mlay = QVBoxLayout(matrix_box)
        hint = QLabel("Rows: true class · columns: predicted class · colour: share of the row · "
                      "click a cell (or press Enter on it) to see its images")
        hint.setStyleSheet("color: palette(placeholder-text);")
        hint.setWordWrap(True)          # never cut off when the matrix gets little room
        mlay.addWidget(hint)
        mlay.addWidget(self.matrix)
        mlay.addStretch(1)
        return matrix_box

    def _build_table(self) -> QGroupBox:
        self.per_class = QTableWidget(0, 5)
        self.per_class.setHorizontalHeaderLabels(["Class", "Precision", "Recall", "F1", "Images"])
        self.per_class.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.per_class.setAlternatingRowColors(True)
        self.per_class.verticalHeader().setVisible(False)
        self.per_class.setMinimumWidth(380)
        header = self.per_class.horizontalHeader()
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # class order until the user sorts
        self.per_class.setSortingEnabled(True)
        # No room kept for a sort arrow on every column until the user sorts: with it the columns
        # outgrew the table on a small window and "Images" was cut to "Ima".
        header.setSortIndicatorShown(False)
        header.sortIndicatorChanged.connect(lambda *_: header.setSortIndicatorShown(True))
        # Every column as wide as its text ("Class" was cut to "las" on a small window); the last takes the rest.
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        table_box = QGroupBox("Per class")
        QVBoxLayout(table_box).addWidget(self.per_class)
        return table_box

    def _build_gallery(self) -> QGroupBox:
        self.gallery = MistakesGallery()
        self.gallery.itemSelectionChanged.connect(self._update_buttons)
        self.gallery.why_requested.connect(self.explain)
        self.why_view = WhyView()
        self._why_waiting = False                   # the latest question has no answer yet
        self._why_cache: dict[str, Any] = {}        # the model of one run, used by the "explain" lane only
        self.why_button = QPushButton("Why?")
        self.why_button.setToolTip("Show where the model looked in the chosen image (a heatmap over it)")
        self.why_button.clicked.connect(lambda: self.explain())
        gallery_box = QGroupBox("Misclassified images (most confident first)")
        self.gallery_box = gallery_box
        self.all_mistakes_button = QPushButton("← Show all mistakes")
        self.all_mistakes_button.setToolTip("Back from one cell of the matrix to every misclassified image")
        self.all_mistakes_button.clicked.connect(self.show_all_mistakes)
        self.all_mistakes_button.setVisible(False)
        self.folder_button = QPushButton("Show in folder")
        self.folder_button.setToolTip("Open the folder that holds the chosen image")
        self.folder_button.clicked.connect(self._show_selected_in_folder)
        # The gallery's buttons sit in the tab bar's row: on a small window every line of height counts.
        self.gallery_buttons = QWidget()
        gallery_buttons = QHBoxLayout(self.gallery_buttons)
        gallery_buttons.setContentsMargins(0, 0, 0, 2)
        gallery_buttons.addWidget(self.all_mistakes_button)
        gallery_buttons.addWidget(self.why_button)
        gallery_buttons.addWidget(self.folder_button)
        glay = QVBoxLayout(gallery_box)
        gallery_row = QHBoxLayout()
        gallery_row.addWidget(self.gallery, 1)
        gallery_row.addWidget(self.why_view)
        glay.addLayout(gallery_row, 1)
        self._update_buttons()
        return gallery_box

    # --- page contract -------------------------------------------------------
    def status(self) -> tuple[bool, str]:
        return self._status

    def show_run(self, run_dir: str) -> None:
        """Show a run's report (evaluating it in the background if needed)."""
        self.run_dir = str(run_dir)
        jobs.drop(self, "evaluate")         # an older request's answer must not arrive after this one
        if not has_model(run_dir):          # stopped before its first model existed: nothing to score
            self.evaluation = None
            self.doctor.set_run(None)
            self.headline.setText("No model yet: the run stopped before its first epoch ended")
            self.subline.setText(f"Run {Path(run_dir).name} · nothing was trained yet. Resume it on the Train "
                                 "step (it starts again at epoch 1), or start a new run.")
            self.progress.setVisible(False)
            self.body.setVisible(True)
            self.matrix.set_matrix([], [])
            self._fill_table([])
            self.cell = None
            self.all_mistakes_button.setVisible(False)
            self._forget_why()
            self.gallery_box.setTitle("Misclassified images")
            self.gallery.set_mistakes([])
            self._set_status(False, "Stopped before the first epoch: no results")
            return
        self.headline.setText("Evaluating the run…")
        self.subline.setText(f"Run {Path(run_dir).name} · the saved report is checked against the images; "
                             "when it is missing or out of date, the model scores the images again.")
        self.body.setVisible(False)             # the panels of another run must not stand there meanwhile
        self.progress.setRange(0, 0)            # busy until the first count arrives
        self.progress.setFormat("Checking the run's images…")
        self.progress.setVisible(True)
        self._set_status(False, f"Loading the results of {Path(run_dir).name}…")
        jobs.submit(lambda job: load_evaluation(run_dir, job), kind="evaluate", what="Evaluating the run",
                    context=self, loses_work=True, supersede="evaluate", imports=("timm", "dtl_engine.training"),
                    lane="evaluate", on_progress=self._progressed, on_done=self.show_evaluation, on_error=self._failed)

    def show_result(self, result: Any) -> None:
        """Show a RunResult straight away when it carries its evaluation."""
        report = getattr(result, "report", None)
        if report is None:
            self.show_run(result.run_dir)
            return
        self.run_dir = str(result.run_dir)
        jobs.drop(self, "evaluate")
        self.show_evaluation(report)

    def show_evaluation(self, evaluation: Any) -> None:
        """Fill every part of the page from an Evaluation."""
        self.evaluation = evaluation
        self.progress.setVisible(False)
        self.body.setVisible(True)
        self.doctor.set_run(self.run_dir)
        name = Path(self.run_dir).name if self.run_dir else "this run"
        split = "test" if getattr(evaluation, "split", "val") == "test" else "validation"
        n = getattr(evaluation, "num_images", 0) or sum(map(sum, evaluation.confusion))
        total = max(getattr(evaluation, "total_images", 0) or n, n)
        left_out = list(getattr(evaluation, "left_out", []) or [])
        count = f"{n} {split} images" if n == total else f"{n} of {total} {split} images"
        self.headline.setText(f"Accuracy {100 * evaluation.accuracy:.1f} %")
        best = evaluation.best_epoch
        epoch_text = "" if best is None else " · the first model (epoch 0)" if best < 0 else \
            f" · weights of the best epoch ({best + 1})"
        missing = f" · {len(left_out)} left out (missing, changed or unreadable)" if left_out else ""
        self.subline.setText(f"Run {name} · {count}, {len(evaluation.classes)} classes{epoch_text}{missing}")
        self.search_view.show_run(self.run_dir)
        self.matrix.set_matrix(evaluation.classes, evaluation.confusion)
        self._fill_table(evaluation.per_class)
        self.show_all_mistakes()
        self._set_status(True, f"accuracy {100 * evaluation.accuracy:.1f} % on {count}")   # the name is on the page
        self.evaluation_shown.emit(evaluation)

    # --- the gallery: all mistakes, or one cell of the matrix -----------------
    def show_all_mistakes(self) -> None:
        """The gallery shows the misclassified images, most confident first."""
        evaluation = self.evaluation
        self.cell = None
        self.all_mistakes_button.setVisible(False)
        self.matrix.clearSelection()
        self._forget_why()
        if evaluation is None:
            return
        mistakes = list(evaluation.mistakes)
        # The count comes from the matrix: the engine keeps only the most confident mistakes' images.
        wrong = sum(map(sum, evaluation.confusion)) - sum(row[i] for i, row in enumerate(evaluation.confusion))
        shown = min(len(mistakes), MAX_SHOWN)
        order = f"the {shown} most confident shown" if shown < wrong else "most confident first"
        self.gallery_box.setTitle(f"Misclassified images: {wrong} ({order})")
        self.gallery.set_mistakes(mistakes)
        self._update_buttons()

    def open_cell(self, true_index: int, predicted_index: int) -> None:
        """The gallery shows exactly the images of one matrix cell (true class, predicted class)."""
        evaluation = self.evaluation
        if evaluation is None or not (0 <= true_index < len(evaluation.classes)
                                      and 0 <= predicted_index < len(evaluation.classes)):
            return
        true, predicted = evaluation.classes[true_index], evaluation.classes[predicted_index]
        count = int(evaluation.confusion[true_index][predicted_index])
        correct = true_index == predicted_index
        listed = list(getattr(evaluation, "predictions", None) or [])
        if listed:
            images = [p for p in listed if p["true"] == true and p["predicted"] == predicted]
        else:       # an evaluation without per-image predictions: only its most confident mistakes are known
            images = [] if correct else [m for m in evaluation.mistakes
                                         if m["true"] == true and m["predicted"] == predicted]
        # Mistakes: the most confident first (the surprising ones); correct: the least sure first (borderline).
        images.sort(key=lambda m: float(m.get("confidence", 0.0)), reverse=not correct)
        what = f"Correct {true}" if correct else f"True {true}, predicted {predicted}"
        order = "least sure first" if correct else "most confident first"
        shown = min(len(images), MAX_SHOWN)
        if shown < count:
            order = f"the {shown} {'least sure' if correct else 'most confident'} shown"
        self.gallery_box.setTitle(f"{what}: {count} image{'s' if count != 1 else ''} ({order})")
        empty = ("No image in this cell." if count == 0 else
                 "This run's report does not list these images; open the run again to evaluate it anew.")
        self.cell = (true_index, predicted_index)
        self.matrix.choose(true_index, predicted_index)
        self._forget_why()
        self.gallery.set_mistakes(images, empty_text=empty)
        self.all_mistakes_button.setVisible(True)
        self._update_buttons()

    def _update_buttons(self) -> None:
        chosen = self.gallery.selected_record() is not None
        self.folder_button.setEnabled(chosen)
        self.why_button.setEnabled(chosen and self.run_dir is not None)

    # --- why-heatmaps ----------------------------------------------------------
    def explain(self, record: dict | None = None) -> None:
        """Compute the heatmap of ``record``'s image (default: the chosen tile) in the background."""
        record = record or self.gallery.selected_record()
        if not record or self.run_dir is None:
            return
        run_dir, path, cache = self.run_dir, str(record.get("path", "")), self._why_cache
        self._why_waiting = True
        self.why_view.waiting(record)
        jobs.submit(lambda job: compute_heatmap(job, run_dir, path, cache), kind="explain", what="The heatmap",
                    context=self, supersede="why", imports=("timm", "dtl_engine.training"), lane="explain",
                    on_done=lambda answer: self._why_done(record, answer),
                    on_error=lambda message, _details: self._why_failed(message))

    def _show_selected_in_folder(self) -> None:
        record = self.gallery.selected_record()
        if record is not None:
            show_in_folder(str(record.get("path", "")), self)

    def _forget_why(self) -> None:
        """The gallery shows other images: an old heatmap (or its job) must not stay."""
        jobs.drop(self, "why")          # only the latest question is answered
        self._why_waiting = False
        self.why_view.setVisible(False)

    def is_explaining(self) -> bool:
        """True while the latest heatmap asked for has not arrived (nor failed)."""
        return self._why_waiting

    def _why_done(self, record: dict, answer: tuple[Any, Any]) -> None:
        self._why_waiting = False
        result, image = answer
        if result is not None:
            self.why_view.show_heatmap(record, result, image)

    def _why_failed(self, message: str) -> None:
        self._why_waiting = False
        self.why_view.failed(message)

    # --- helpers --------------------------------------------------------------
    def _fill_table(self, rows: list[dict]) -> None:
        self.per_class.setSortingEnabled(False)
        self.per_class.setRowCount(len(rows))
        for r, row in enumerate(rows):
            self.per_class.setItem(r, 0, QTableWidgetItem(str(row["name"])))
            for c, key in enumerate(("precision", "recall", "f1"), start=1):
                item = _NumberItem(f"{100 * float(row[key]):.1f} %", float(row[key]))
                self.per_class.setItem(r, c, item)
            self.per_class.setItem(r, 4, _NumberItem(str(int(row["support"])), float(row["support"])))
        self.per_class.setSortingEnabled(True)
        header = self.per_class.horizontalHeader()
        header.setSortIndicatorShown(header.sortIndicatorSection() >= 0)    # Qt showed it again: only once sorted

    def _progressed(self, value: Any) -> None:
        done, total = value
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        text = f"Evaluating {done} / {total} images…"
        self.progress.setFormat(text)
        self._set_status(False, text)

    def _failed(self, message: str, details: str) -> None:
        self.headline.setText("No results for this run")
        self.subline.setText(message)
        self.progress.setVisible(False)
        self._set_status(False, message)
        self.error_dialog = show_error(self, "Results could not be shown", message, details)

    def _set_status(self, ready: bool, text: str) -> None:
        self._status = (ready, text)
        self.status_changed.emit()


class _NumberItem(QTableWidgetItem):
    """Sorts by value, shows formatted text."""

    def __init__(self, text: str, value: float) -> None:
        super().__init__(text)
        self.value = value
        self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        return self.value < getattr(other, "value", 0.0)

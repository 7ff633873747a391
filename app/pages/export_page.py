"""Export page: write the trained classifier to a file that runs anywhere PyTorch runs, then try it.

The export and its verification (a fresh process must reproduce the engine's
probabilities) run in the background; the page shows the engine's verdict.
"Try it" runs the exported file on images the user drops or picks.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from PySide6.QtCore import QStandardPaths, Qt, Signal
from PySide6.QtGui import QGuiApplication, QIcon, QPalette, QPixmap
from PySide6.QtWidgets import (QButtonGroup, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QMessageBox, QProgressBar,
                               QPushButton, QRadioButton, QSizePolicy, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from app import jobs
from app.run_life import NOT_TRAINED, has_model
from app.theme import state_color
from app.widgets.classify_folder_dialog import ClassifyFolderDialog
from app.widgets.error_dialog import ask_to_replace, show_error
from app.widgets.image_drop_table import IMAGE_SUFFIXES, ImageDropTable
from app.widgets.thumbnails import read_thumbnail
from app.widgets.why_panel import WhyPanel
from dtl_engine.errors import RunError
from dtl_engine.runs.folder import BEST_WEIGHTS, LAST_WEIGHTS, RunFolder

SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}


def onnx_available() -> bool:
    """ONNX export needs the optional ``onnx`` package."""
    return importlib.util.find_spec("onnx") is not None


NO_EXPORT_HINT = "Export the model first; then drop images here or press “Add images…” to see what it predicts."


def documents_folder() -> Path:
    """The user's Documents folder when it exists, else the home folder (never a folder made for us)."""
    docs = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
    return Path(docs) if docs and Path(docs).is_dir() else Path.home()


def run_data_folder(run_dir: str | None) -> Path | None:
    """The image folder the run was trained on, when it still exists (where "Try it" starts looking)."""
    if not run_dir:
        return None

    try:
        folder = Path(str(RunFolder(run_dir).read_config().get("data_dir") or ""))
    except RunError:
        return None
    return folder if str(folder) not in ("", ".") and folder.is_dir() else None


def run_export(run_dir: str, out_path: str, fmt: str, overwrite: bool, weights: str = "best"):
    """Export and verify (runs on a worker thread); ``weights`` "last" only when the user chose it."""
    from dtl_engine.export.run_export import export_run

    return export_run(run_dir, out_path, fmt, overwrite=overwrite, verify=True, weights=weights)


def ask_for_last_weights(parent: QWidget | None, run_dir: str) -> str | None:
    """The weights to export: "best", or "last" when the best are missing and the user agrees; None = cancel.

    The engine never exports the last checkpoint in place of missing best weights on its own, so the
    page asks, and says which weights those are.
    """
    folder = RunFolder(run_dir)
    if folder.best_weights.exists() or not folder.last_weights.exists():
        return "best"               # (without any weights the engine says why it cannot export)
    answer = QMessageBox.question(
        parent, "Export the last checkpoint?",
        f"This run has no best weights ({BEST_WEIGHTS} is missing).\nIts last checkpoint ({LAST_WEIGHTS}) can be "
        "exported instead; it may be less accurate than the best epoch was.\nExport the last checkpoint?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
    return "last" if answer == QMessageBox.StandardButton.Yes else None


def run_predict(export_path: str, images: list[str]):
    """Top-3 predictions of the exported file (runs on a worker thread), with thumbnails and per-image errors.

    An unreadable image gets its reason (and no classes); the other images keep their results.
    """
    from dtl_engine.inference.predict import predict_each

    results = predict_each(export_path, images, top_k=3)
    return [r.top for r in results], [read_thumbnail(p, 56) for p in images], [r.error for r in results]


class ExportPage(QWidget):
    """Export a run to TorchScript (or ONNX) and try the exported file."""

    status_changed = Signal()
    exported = Signal(object)        # ExportResult
    predicted = Signal(object)       # list of top-3 lists, one per image

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_dir: str | None = None
        self.last_result: Any = None
        self.predictions: list = []
        self._busy = False
        self._trained = False
        self._status = (False, "Train a model or open a past run to export it.")

        self.title = QLabel("Export")
        self.title.setStyleSheet("font-size: 16pt; font-weight: 600;")
        self.run_label = QLabel("No run chosen yet. Train a model, or open one on the Runs page.")
        self.run_label.setStyleSheet("color: palette(placeholder-text);")
        self.run_label.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.run_label)
        layout.addWidget(self._build_export_box())
        layout.addWidget(self._build_try_box(), 1)
        self._update_buttons()

    def _build_formats(self) -> QVBoxLayout:
        """TorchScript or ONNX (greyed, with the reason, without the onnx package)."""
        self.torchscript_radio = QRadioButton("TorchScript (.pt) — needs only PyTorch to run")
        self.onnx_radio = QRadioButton("ONNX (.onnx) — for ONNX Runtime and other engines")
        self.torchscript_radio.setChecked(True)
        if not onnx_available():
            self.onnx_radio.setEnabled(False)
            self.onnx_radio.setText(self.onnx_radio.text() + " (install the 'onnx' package)")
        self.format_group = QButtonGroup(self)
        self.format_group.addButton(self.torchscript_radio)
        self.format_group.addButton(self.onnx_radio)
        self.format_group.buttonToggled.connect(self._format_changed)
        formats = QVBoxLayout()
        formats.addWidget(self.torchscript_radio)
        formats.addWidget(self.onnx_radio)
        return formats


    def _build_export_box(self) -> QGroupBox:
        """Format, place, Export, and what the check in a fresh process found."""
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("Where to save the exported model")
        self.path_edit.textChanged.connect(self._update_buttons)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.choose_path)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path_edit, 1)
        path_row.addWidget(browse)

        self.export_button = QPushButton("Export")
        self.export_button.setMinimumWidth(120)
        self.export_button.clicked.connect(self.export)
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)
        self.busy_bar.setMaximumHeight(14)
        self.busy_bar.setTextVisible(False)
        self.busy_bar.hide()
        action_row = QHBoxLayout()
        action_row.addWidget(self.export_button)
        action_row.addWidget(self.busy_bar, 1)
        action_row.addStretch(0)

        self.result_label = QLabel("")
        self.result_label.setTextFormat(Qt.TextFormat.RichText)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message_label = QLabel("")     # the engine's sentence; wraps, outside the form
        self.message_label.setWordWrap(True)
        self.message_label.setStyleSheet("color: palette(placeholder-text);")
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        export_box = QGroupBox("Export the trained model")
        export_box.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        box_layout = QVBoxLayout(export_box)
        form = QFormLayout()
        form.addRow("Format:", self._build_formats())
        form.addRow("Save as:", path_row)
        form.addRow("", action_row)
        box_layout.addLayout(form)
        box_layout.addWidget(self.result_label)
        box_layout.addWidget(self.message_label)
        # Measured on the written file in the fresh process: its size, latency, and its validation
        # accuracy beside the run's own (the engine's ExportResult.details()).
        self.details_label = QLabel("")
        self.details_label.setWordWrap(True)
        self.details_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box_layout.addWidget(self.details_label)
        self.details_label.hide()               # shown once an export was verified and measured
        return export_box

    def _build_try_box(self) -> QGroupBox:
        """Try it: images dropped or added, their top-3 classes, Why?, and Classify a folder…."""
        self.try_table = ImageDropTable()
        self.try_table.files_dropped.connect(self.try_images)
        self.add_button = QPushButton("Add images…")
        self.add_button.clicked.connect(self.choose_images)
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self._clear_predictions)
        self.classify_button = QPushButton("Classify a folder…")
        self.classify_button.setToolTip("Sort a whole folder of new images with the exported model: a CSV row per "
                                        "image, and copies sorted into one folder per class if you like")
        self.classify_button.clicked.connect(self.open_classify_folder)
        self.classify_dialog: ClassifyFolderDialog | None = None
        self.try_hint = QLabel(NO_EXPORT_HINT)
        self.try_hint.setStyleSheet("color: palette(placeholder-text);")
        self.try_hint.setWordWrap(True)
        try_row = QHBoxLayout()
        try_row.addWidget(self.add_button)
        try_row.addWidget(self.clear_button)
        try_row.addWidget(self.try_hint, 1)
        try_row.addWidget(self.classify_button)
        try_box = QGroupBox("Try it")
        tlay = QVBoxLayout(try_box)
        tlay.addLayout(try_row)
        self.why_panel = WhyPanel()             # the heatmap of the image whose "Why?" is pressed
        self.why_panel.hide()
        self.why_buttons: list[QPushButton] = []
        table_row = QHBoxLayout()
        table_row.addWidget(self.try_table, 1)
        table_row.addWidget(self.why_panel)
        tlay.addLayout(table_row, 1)
        return try_box

    # --- page contract ---------------------------------------------------------
    def status(self) -> tuple[bool, str]:
        return self._status

    def set_run(self, run_dir: str) -> None:
        """Export this run next; proposes Documents/<run name>.<ext>."""
        self.run_dir = str(run_dir)
        name = Path(run_dir).name
        self.title.setText(f"Export {name}")
        self.run_label.setText(f"Run folder: {run_dir}")
        self.path_edit.setText(str(documents_folder() / f"{name}{SUFFIX[self.format()]}"))
        self.result_label.setText("")
        self.message_label.setText("")
        self.details_label.setText("")
        self.details_label.hide()
        for button in self.why_buttons:     # the heatmaps of another run's model are not shown for this one
            button.setChecked(False)
        self.why_panel.close_image()
        self._trained = has_model(run_dir)      # a completed epoch, or the first model (step 0) it keeps
        self.last_result = None
        previous = Path(self.path_edit.text())
        if self._trained and previous.is_file():
            # Exported before: "Try it" works with that file straight away.
            self.last_result = SimpleNamespace(path=str(previous), verified=None)
            self.try_hint.setText(f"Drop images here or press “Add images…” to try {previous.name}, "
                                  "exported earlier.")
        else:
            self.try_hint.setText(NO_EXPORT_HINT)   # (Add images… is off until there is a file to try)
        if not self._trained:
            self.message_label.setText(f"{NOT_TRAINED} Resume the run on the Train step, or start a new one, "
                                       "then export it.")
            self._set_status(False, "Stopped before the first epoch: nothing to export")
        else:
            self._set_status(False, "Ready to export")    # the run's name is the page's title
        self._update_buttons()

    def format(self) -> str:
        return "onnx" if self.onnx_radio.isChecked() else "torchscript"

    def export_path(self) -> str | None:
        """The file "Try it" uses: the last successful export."""
        return getattr(self.last_result, "path", None)

    # --- export -------------------------------------------------------------
    def choose_path(self) -> None:
        fmt = self.format()
        pattern = "TorchScript (*.pt)" if fmt == "torchscript" else "ONNX (*.onnx)"
        path, _ = QFileDialog.getSaveFileName(self, "Save the exported model", self.path_edit.text(), pattern,
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            if not Path(path).suffix:
                path += SUFFIX[fmt]
            self.path_edit.setText(path)

    def export(self) -> None:
        """Export in the background; asks first when the file exists."""
        if self._busy or not self.run_dir:
            return
        out = self.path_edit.text().strip()
        if not out:
            return
        overwrite = False
        if Path(out).expanduser().exists():
            if not ask_to_replace(self, Path(out)):
                return
            overwrite = True
        run_dir, fmt = self.run_dir, self.format()
        weights = ask_for_last_weights(self, run_dir)
        if weights is None:
            return
        self._set_busy(True, "Exporting and checking the file in a fresh process…")
        # The engine writes beside the target and renames at the end; closing waits for that.
        jobs.submit(lambda _job: run_export(run_dir, out, fmt, overwrite, weights), kind="export", what="The export",
                    context=self, loses_work=True, imports=("timm", "dtl_engine.training"),
                    on_done=self._export_done, on_error=self._export_failed)

    def _export_done(self, result: Any) -> None:
        self._set_busy(False)
        self.last_result = result
        if result.verified:
            d = result.max_abs_diff
            diff = "n/a" if d is None else "0 (identical)" if d == 0 else f"{d:.1e}"
            ok = state_color("verified")
            verdict = (f"<span style='color:{ok}; font-weight:600'>Verified ✓</span> — "
                       f"max abs difference {diff} over {result.images_checked} images checked")
        else:
            warn = state_color("not verified")
            verdict = f"<span style='color:{warn}; font-weight:600'>Not verified</span>"
        self.result_label.setText(verdict)
        self.message_label.setText(result.message)
        details = result.details() if result.verified else []
        self.details_label.setText("\n".join(f"• {line[:1].upper()}{line[1:]}" for line in details))
        self.details_label.setVisible(bool(details))
        self._set_status(True, "Exported and verified" if result.verified else "Exported, not verified")
        self.try_hint.setText(f"Drop images here or press “Add images…” to see what {Path(result.path).name} "
                              "predicts.")
        self._update_buttons()
        self.exported.emit(result)

    def _export_failed(self, message: str, details: str) -> None:
        self._set_busy(False)
        failed = state_color("failed")
        self.result_label.setText(f"<span style='color:{failed}; font-weight:600'>Export failed ✗</span>")
        self.message_label.setText(message)
        self._set_status(False, message)
        self.error_dialog = show_error(self, "Export failed", message, details)

    # --- try it ---------------------------------------------------------------
    def choose_images(self) -> None:
        start = str(run_data_folder(self.run_dir) or Path(self.export_path() or documents_folder()).parent)
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Images to try", start, "Images (" + " ".join(f"*{s}" for s in sorted(IMAGE_SUFFIXES)) + ")")
        if paths:
            self.try_images(paths)

    def try_images(self, paths: list[str]) -> None:
        """Predict the top-3 classes of ``paths`` with the exported file, in the background."""
        export_path = self.export_path()
        if not export_path:
            self.try_hint.setText(NO_EXPORT_HINT)
            return
        paths = [str(p) for p in paths]
        self.try_hint.setText(f"Predicting {len(paths)} image(s)…")
        jobs.submit(lambda _job: run_predict(export_path, paths), kind="predict", what="The prediction",
                    context=self, imports=("dtl_engine.inference.predict",),
                    on_done=lambda out: self._show_predictions(paths, *out), on_error=self._predict_failed)

    def _show_predictions(self, paths: list[str], predictions: list, thumbs: list,
                          errors: list | None = None) -> None:
        errors = errors or [None] * len(paths)
        for path, top, thumb, error in zip(paths, predictions, thumbs, errors):
            row = self.try_table.rowCount()
            self.try_table.insertRow(row)
            image = QTableWidgetItem()
            if not thumb.isNull():
                image.setIcon(QIcon(QPixmap.fromImage(thumb)))
            self.try_table.setItem(row, 0, image)
            name = QTableWidgetItem(Path(path).name)
            name.setToolTip(path)
            self.try_table.setItem(row, 1, name)
            if error:                           # this image could not be read; the others still count
                problem = QTableWidgetItem(error)
                problem.setToolTip(error)
                self.try_table.setItem(row, 2, problem)
                continue
            self.try_table.setItem(row, 2, QTableWidgetItem())  # the label below shows it
            self.try_table.setCellWidget(row, 2, _prediction_label(top))
            self.try_table.setCellWidget(row, 3, self._why_button(path))
        self.predictions.extend(predictions)
        self.try_hint.setText(f"{len(self.predictions)} image(s) tried with {Path(self.export_path()).name}.")
        self.predicted.emit(predictions)

    def _predict_failed(self, message: str, details: str) -> None:
        self.try_hint.setText(message)
        self.error_dialog = show_error(self, "Prediction failed", message, details)

    def open_classify_folder(self) -> ClassifyFolderDialog:
        """The "Classify a folder…" dialog, with the exported file as its model (one dialog, kept)."""
        if self.classify_dialog is None:
            self.classify_dialog = ClassifyFolderDialog(self.export_path(), [documents_folder()], self)
        else:
            self.classify_dialog.set_model(self.export_path())
        self.classify_dialog.show()
        self.classify_dialog.raise_()
        return self.classify_dialog

    def _clear_predictions(self) -> None:
        self.try_table.setRowCount(0)
        self.predictions = []
        self.why_buttons = []
        self.why_panel.close_image()

    def _why_button(self, path: str) -> QWidget:
        """A "Why?" toggle for one tried image: on, the panel beside the table shows its heatmap."""
        button = QPushButton("Why?")
        button.setCheckable(True)
        button.setToolTip("Show where the model looked to decide (a heatmap over the image)")
        button.toggled.connect(lambda on: self._why_toggled(button, path, on))
        self.why_buttons.append(button)
        holder = QWidget()                  # keeps the button its natural size, centred in the cell
        lay = QHBoxLayout(holder)
        lay.setContentsMargins(6, 0, 6, 0)
        lay.addWidget(button)
        return holder

    def _why_toggled(self, button: QPushButton, path: str, on: bool) -> None:
        if not on:
            if not any(b.isChecked() for b in self.why_buttons):
                self.why_panel.close_image()
            return
        for other in self.why_buttons:      # one heatmap at a time
            if other is not button and other.isChecked():
                other.blockSignals(True)
                other.setChecked(False)
                other.blockSignals(False)
        if self.run_dir:
            self.why_panel.explain(self.run_dir, path)

    # --- helpers ----------------------------------------------------------------
    def _format_changed(self, *_: Any) -> None:
        text = self.path_edit.text().strip()
        if text:
            self.path_edit.setText(str(Path(text).with_suffix(SUFFIX[self.format()])))

    def _set_busy(self, busy: bool, text: str = "") -> None:
        self._busy = busy
        self.busy_bar.setVisible(busy)
        if busy:
            self.result_label.setText(_escape(text))
            self.message_label.setText("")
            self.details_label.setText("")
            self.details_label.hide()
        self._update_buttons()

    def _update_buttons(self, *_: Any) -> None:
        can_export = bool(self.run_dir) and self._trained and bool(self.path_edit.text().strip()) and not self._busy
        self.export_button.setEnabled(can_export)
        has_export = self.export_path() is not None
        self.add_button.setEnabled(has_export)
        self.classify_button.setEnabled(has_export)
        self.try_table.setAcceptDrops(has_export)

    def _set_status(self, ready: bool, text: str) -> None:
        self._status = (ready, text)
        self.status_changed.emit()


def _prediction_label(top: list[tuple[str, float]]) -> QLabel:
    """'<b>cat 91.2 %</b> · dog 6.1 % · fox 1.0 %' with the best guess stressed; on a narrow window the
    runners-up wrap below it (between guesses only), not cut off at the cell's edge."""
    parts = [f"{_escape(cls)}&nbsp;{100 * p:.1f}&nbsp;%" for cls, p in top]
    html = f"<span style='font-size:12pt'><b>{parts[0]}</b></span>" if parts else ""
    if len(parts) > 1:
        muted = QGuiApplication.palette().color(QPalette.ColorRole.PlaceholderText).name()
        html += f"&nbsp;&nbsp;<span style='color:{muted}'>" + " · ".join(parts[1:]) + "</span>"
    label = QLabel(html)
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setWordWrap(True)
    label.setContentsMargins(8, 0, 8, 0)
    return label


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

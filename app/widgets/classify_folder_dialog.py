""""Classify a folder…": sort a folder of new images with an exported model, in the background.

The engine (:func:`dtl_engine.inference.classify_folder.classify_folder`) only reads the input folder,
writes one CSV row per file and, when asked, copies (never moves) each image into
``<sort folder>/<class>/`` or ``_unsure/``. This dialog picks the places (suggested outside
the input folder), shows the engine's refusal sentences as they are, runs the work as one
background job with progress and a Stop that keeps the rows done, and ends with a summary.
An existing CSV is replaced only after the user said so, and only once the new one is complete.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QDialog, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                               QPlainTextEdit, QProgressBar, QPushButton, QSpinBox, QVBoxLayout,
                               QWidget)

from app import jobs
from app.theme import role_color
from app.widgets.open_folder import open_folder
from app.widgets.path_edit import PathEdit
from app.widgets.error_dialog import ask_to_replace, show_error
from dtl_engine.inference.classify_folder import classify_folder


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def free_path(path: Path) -> Path:
    """``path`` itself when nothing is there, else ``name (2).ext``, ``name (3).ext``… (never an existing one)."""
    if not path.exists():
        return path
    n = 2
    while (candidate := path.with_name(f"{path.stem} ({n}){path.suffix}")).exists():
        n += 1
    return candidate


def suggest_place(folder: Path, name: str, bases: list[Path]) -> Path | None:
    """A free ``name`` in the first of ``bases`` that exists and lies outside ``folder`` (None: no such base)."""
    folder = folder.expanduser().resolve()
    for base in bases:
        base = base.expanduser().resolve()
        if base.is_dir() and not _inside(base, folder):
            return free_path(base / name)
    return None


def classify_in_background(job: Any, model: str, folder: str, csv_path: str, sort_into: str | None,
                           min_confidence: float, replace: bool, stop: threading.Event) -> Any:
    """Run the engine on a worker thread; with ``replace``, the new CSV takes the old one's place once complete
    (the engine writes it beside and moves it in place only then; a stop keeps the old file as it was)."""
    return classify_folder(model, folder, csv_path, sort_into=sort_into, min_confidence=min_confidence,
                           progress=lambda done, total: job.report((done, total)), should_stop=stop.is_set,
                           overwrite=replace)


UNEXPECTED = "Classifying the folder"      # the job's name in a sentence about an unexpected failure


class ClassifyFolderDialog(QDialog):
    """Pick a folder, the model, the CSV and an optional "sort copies into" folder; classify; summarise."""

    classified = Signal(object)     # the engine's FolderResult (also after Stop)

    def __init__(self, model_path: str | None, places: list[Path], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Classify a folder")
        self.setMinimumWidth(620)
        self.places = places                    # where results are suggested (first one outside the input wins)
        self.result: Any = None
        self._job: jobs.Job | None = None
        self._stop = threading.Event()
        self._suggested: dict[str, str] = {"csv": "", "sort": ""}
        self._browse_buttons: list[QPushButton] = []
        self._sort_into: str | None = None

        intro = QLabel("Classify every image in a folder with the exported model. The folder itself is only "
                       "read: results go to a CSV file, and copies (never moves) can be sorted into one "
                       "folder per class.")
        intro.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(self._build_places(model_path))
        layout.addLayout(self._build_actions())
        self._build_outcome(layout)
        self._update()

    def _build_places(self, model_path: str | None) -> QFormLayout:
        """The folder, the model, the CSV, the optional sort folder and the unsure threshold."""
        self.folder_edit, folder_row = self._path_row("The folder of new images", self.choose_folder)
        self.folder_edit.editingFinished.connect(self._suggest_places)
        self.folder_edit.textChanged.connect(self._forget_result)
        self.model_edit, model_row = self._path_row("The exported model (.pt or .onnx)", self.choose_model)
        self.model_edit.setText(model_path or "")
        self.csv_edit, csv_row = self._path_row("Where to save the results (CSV)", self.choose_csv)
        self.sort_check = QCheckBox("Also sort copies into:")
        self.sort_check.setToolTip("Copies each image into <folder>/<class>/; the originals stay where they are")
        self.sort_edit, sort_row = self._path_row("A folder outside the one being classified", self.choose_sort)
        self.sort_check.toggled.connect(self._update)
        self.confidence_spin = QSpinBox()
        self.confidence_spin.setRange(0, 99)
        self.confidence_spin.setSuffix(" %")
        self.confidence_spin.setSpecialValueText("off")
        self.confidence_spin.setMaximumWidth(90)
        self.confidence_spin.setToolTip("Images whose best class is less likely than this count as unsure; "
                                        "their copies go to _unsure/")
        for edit in (self.folder_edit, self.model_edit, self.csv_edit, self.sort_edit):
            edit.textChanged.connect(self._update)
        form = QFormLayout()
        form.addRow("Images:", folder_row)
        form.addRow("Model:", model_row)
        form.addRow("Results:", csv_row)
        form.addRow(self.sort_check, sort_row)
        form.addRow("Unsure below:", self.confidence_spin)
        return form

    def _build_actions(self) -> QHBoxLayout:
        """Classify, Stop and the progress bar."""
        self.start_button = QPushButton("Classify")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current image; the rows done so far are kept")
        self.stop_button.clicked.connect(self.stop)
        self.progress = QProgressBar()
        self.progress.setFormat("%v of %m")
        self.progress.hide()
        action_row = QHBoxLayout()
        action_row.addWidget(self.start_button)
        action_row.addWidget(self.stop_button)
        action_row.addWidget(self.progress, 1)
        action_row.addStretch(0)
        for button in (self.start_button, self.stop_button):
            button.setMinimumWidth(110)
        return action_row

    def _build_outcome(self, layout: QVBoxLayout) -> None:
        """The message line, the summary, the unreadable files, and Show in folder / Close."""
        self.message_label = QLabel("")         # progress, the engine's refusal, or the summary's headline
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary_label = QLabel("")
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.unreadable_view = QPlainTextEdit()
        self.unreadable_view.setReadOnly(True)
        self.unreadable_view.setMaximumHeight(110)
        self.unreadable_view.hide()
        self.show_button = QPushButton("Show in folder")
        self.show_button.clicked.connect(self.show_in_folder)
        self.show_button.hide()
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        bottom = QHBoxLayout()
        bottom.addWidget(self.show_button)
        bottom.addStretch(1)
        bottom.addWidget(self.close_button)
        for widget in (self.message_label, self.summary_label, self.unreadable_view):
            layout.addWidget(widget)
        layout.addStretch(1)
        layout.addLayout(bottom)

    def _forget_result(self) -> None:
        """Another folder is picked: the last summary (or refusal) was about the one before."""
        if self.is_running():
            return
        self.result = None
        self.message_label.setText("")
        self.summary_label.setText("")
        self.unreadable_view.hide()
        self.show_button.hide()

    # --- places -------------------------------------------------------------------
    def _path_row(self, placeholder: str, browse_fn: Any) -> tuple[QLineEdit, QHBoxLayout]:
        edit = PathEdit()
        edit.setPlaceholderText(placeholder)
        browse = QPushButton("Browse…")
        browse.clicked.connect(browse_fn)
        self._browse_buttons.append(browse)
        row = QHBoxLayout()
        row.addWidget(edit, 1)
        row.addWidget(browse)
        return edit, row

    def set_folder(self, folder: str) -> None:
        """Classify ``folder`` next; suggests the CSV and the sort folder beside it, outside it."""
        self.folder_edit.setText(str(folder))
        self._suggest_places()

    def set_model(self, model_path: str | None) -> None:
        if not self.is_running():
            self.model_edit.setText(model_path or "")

    def choose_folder(self) -> None:
        start = self.folder_edit.text() or str(self.places[0] if self.places else Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Folder of images to classify", start)
        if folder:
            self.set_folder(folder)

    def choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Exported model", self.model_edit.text(),
                                              "Exported models (*.pt *.onnx)")
        if path:
            self.model_edit.setText(path)

    def choose_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the results as", self.csv_edit.text(), "CSV (*.csv)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            self.csv_edit.setText(path if Path(path).suffix else path + ".csv")

    def choose_sort(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Sort copies into", self.sort_edit.text())
        if folder:
            self.sort_edit.setText(folder)
            self.sort_check.setChecked(True)

    def _suggest_places(self) -> None:
        """Fill the CSV and sort-folder fields the user has not changed: free names outside the input folder."""
        text = self.folder_edit.text().strip()
        if not text or not Path(text).expanduser().is_dir():
            return
        folder = Path(text).expanduser()
        for key, edit, name in (("csv", self.csv_edit, f"{folder.name} predictions.csv"),
                                ("sort", self.sort_edit, f"{folder.name} sorted")):
            if edit.text().strip() in ("", self._suggested[key]):
                place = suggest_place(folder, name, self.places + [folder.parent])
                self._suggested[key] = str(place) if place else ""
                edit.setText(self._suggested[key])

    # --- the work -----------------------------------------------------------------
    def is_running(self) -> bool:
        return self._job is not None

    def start(self) -> None:
        """Classify in the background (asks first before replacing an existing CSV)."""
        if self.is_running():
            return
        folder, model = self.folder_edit.text().strip(), self.model_edit.text().strip()
        csv_path = self.csv_edit.text().strip()
        sort_into = self.sort_edit.text().strip() if self.sort_check.isChecked() else None
        if not (folder and model and csv_path) or (self.sort_check.isChecked() and not sort_into):
            return
        target = Path(csv_path).expanduser()
        replace = False
        if target.is_file():
            if not ask_to_replace(self, target, "Do you want to replace it once the new results are complete?"):
                return
            replace = True
        self._sort_into = sort_into
        self._stop = stop = threading.Event()
        min_confidence = self.confidence_spin.value() / 100.0
        self.result = None
        self.summary_label.setText("")
        self.unreadable_view.hide()
        self.show_button.hide()
        self.progress.setRange(0, 0)
        self.progress.show()
        self._say("Looking for images…")
        # The Stop button sets the engine's own stop flag (the result still arrives, with the rows done);
        # closing the app cancels the job, which sets the same flag through on_cancel.
        self._job = jobs.submit(
            lambda job: classify_in_background(job, model, folder, csv_path, sort_into, min_confidence, replace,
                                               stop),
            kind="classify-folder", what=UNEXPECTED, context=self, loses_work=True,
            imports=("dtl_engine.inference.predict",),
            on_progress=self._progressed, on_done=self._done, on_error=self._failed, on_cancel=stop.set,
            on_ended=self._ended)
        self._update()

    def stop(self) -> None:
        """Stop after the current image; the CSV keeps the rows done so far."""
        if self.is_running():
            self._stop.set()
            self.stop_button.setEnabled(False)
            self._say("Stopping after the current image…")

    def _progressed(self, value: tuple[int, int]) -> None:
        done, total = value
        if self.progress.maximum() != total:
            self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        if not self._stop.is_set():
            self._say(f"Classifying… {done} of {total} files")

    def _done(self, result: Any) -> None:
        self.result = result
        self._show_summary(result)
        self.classified.emit(result)

    def _failed(self, message: str, details: str) -> None:
        # A refusal (an existing CSV, a place inside the input folder, no such model) is the engine's own
        # sentence, shown as it is; only an unexpected failure also opens the details.
        self._say(message, role="error")
        if message.startswith(f"{UNEXPECTED} failed unexpectedly") or "out of memory" in message:
            self.error_dialog = show_error(self, "Classifying the folder failed", message, details)

    def _ended(self) -> None:
        self._job = None
        self.progress.hide()
        self._update()

    def _show_summary(self, r: Any) -> None:
        done = r.classified + len(r.unreadable)
        if r.cancelled:
            head = (f"Stopped after {done} of {r.total} files: those {done} rows are kept in a file named as "
                    f"partial, so that it is never taken for the whole result. {r.classified} classified.")
        else:
            head = f"Done: {r.classified} of {r.total} files classified."
        where = "Partial results" if getattr(r, "partial", False) else "Results"
        self._say(head + f" {where}: {r.csv_path}", role="ok" if not r.cancelled else "muted")
        # Lines that wrap, not a table: a table's height was under-measured and its last line cut off,
        # and a hundred classes made it a hundred rows.
        counts = " · ".join(f"{_escape(name)}:&nbsp;{n}"
                            for name, n in sorted(r.counts.items(), key=lambda kv: (-kv[1], kv[0])))
        lines = [f"<b>Images per predicted class</b><br>{counts or '—'}"]
        unsure = self.confidence_spin.value()
        tail = []
        if unsure:
            where = " (copies in _unsure)" if self._sort_into else ""
            tail.append(f"unsure, below {unsure} %{where}: {r.unsure}")
        tail.append(f"could not be read: {len(r.unreadable)}")
        line = " · ".join(tail)
        lines.append(line[:1].upper() + line[1:])
        if self._sort_into:
            lines.append(f"<span style='color:{role_color('muted')}'>{r.copied} copies made in "
                         f"{_escape(self._sort_into)}</span>")
        self.summary_label.setText("<br>".join(lines))
        if r.unreadable:
            self.unreadable_view.setPlainText("\n".join(f"{path} — {reason}" for path, reason in r.unreadable))
            self.unreadable_view.show()
        self.show_button.setToolTip(str(self.result_folder()))
        self.show_button.show()
        self.adjustSize()                       # room for the summary (the dialog does not grow by itself)

    def result_folder(self) -> Path | None:
        """Where "Show in folder" goes: the sorted copies, else the CSV's folder."""
        if self.result is None:
            return None
        return Path(self._sort_into).expanduser() if self._sort_into else Path(self.result.csv_path).parent

    def show_in_folder(self) -> None:
        folder = self.result_folder()
        if folder is not None:
            open_folder(folder, self, "The results folder")

    # --- helpers ------------------------------------------------------------------
    def _say(self, text: str, role: str = "") -> None:
        self.message_label.setStyleSheet(f"color: {role_color(role)};" if role else "")
        self.message_label.setText(text)

    def _update(self, *_: Any) -> None:
        running = self.is_running()
        ready = all(e.text().strip() for e in (self.folder_edit, self.model_edit, self.csv_edit))
        ready = ready and (not self.sort_check.isChecked() or bool(self.sort_edit.text().strip()))
        self.start_button.setEnabled(ready and not running)
        self.stop_button.setEnabled(running and not self._stop.is_set())
        for widget in (self.folder_edit, self.model_edit, self.csv_edit, self.sort_check, self.confidence_spin):
            widget.setEnabled(not running)
        self.sort_edit.setEnabled(not running and self.sort_check.isChecked())
        for button in self._browse_buttons:
            button.setEnabled(not running)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.stop()             # closing stops the work; the rows done are kept
        super().closeEvent(event)


def _escape(text: Any) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

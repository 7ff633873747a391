"""Step 1 — Data: choose an image folder (drop, Browse…, recent, sample), scan it in the background,
show what was found."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (QComboBox, QFileDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QProgressBar,
                               QPushButton, QSizePolicy, QSplitter, QStyle, QVBoxLayout, QWidget)

from app import jobs
from app.settings import Settings
from app.widgets.card import card as _card
from app.widgets.class_table import ClassTable
from app.widgets.drop_zone import DropZone
from dtl_engine.errors import DTLError, DataError

MAX_LISTED_SKIPS = 200


def _scan(folder: str, job: jobs.Job):
    """Scan ``folder`` on a worker thread, reporting (done, total) and stopping when cancelled."""
    from dtl_engine.data import scan_folder

    try:
        return scan_folder(folder, progress=lambda done, total: job.report((int(done), -1 if total is None
                                                                             else int(total))),
                           should_stop=lambda: job.is_cancelled)
    except DTLError:
        raise
    except Exception as exc:   # an unexpected error still becomes a sentence
        raise DataError(f"The folder could not be read: {exc}") from exc


def _label(text: str = "", role: str | None = None, wrap: bool = False) -> QLabel:
    label = QLabel(text)
    if role:
        label.setProperty("role", role)
    label.setWordWrap(wrap)
    return label


class DataPage(QWidget):
    """Choose and scan an image folder. Emits ``scan_ready(ScanResult)`` when a folder is usable."""

    status_changed = Signal()
    scan_ready = Signal(object)

    def __init__(self, settings: Settings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings or Settings()
        self._scan = None                   # ScanResult of the folder shown
        self._split = None
        self._scan_job: jobs.Job | None = None
        self._sample_job: jobs.Job | None = None
        self._state = "empty"               # empty | scanning | ready | error
        self._message = ""
        self.val_fraction = 0.2
        self.seed = 0
        self._build()
        self.refresh_recent()

    # --- layout ---------------------------------------------------------------------
    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(28, 22, 28, 22)
        root.setSpacing(12)
        root.addLayout(self._build_head())
        root.addLayout(self._build_actions())

        self.drop_zone = DropZone()
        self.drop_zone.setMinimumHeight(150)
        self.drop_zone.folder_dropped.connect(self.open_folder)
        self.drop_zone.drop_rejected.connect(self._show_problem)
        root.addWidget(self.drop_zone)

        self.message = _label("", "error", wrap=True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.hide()
        root.addWidget(self.message)
        root.addWidget(self._build_progress())
        root.addWidget(self._build_results(), 1)
        self.spacer = self._help_card()
        root.addWidget(self.spacer, 1)
        self._set_results_visible(False)

    def _build_head(self) -> QHBoxLayout:
        head = QHBoxLayout()
        titles = QVBoxLayout()
        titles.setSpacing(2)
        titles.addWidget(_label("Images", "title"))
        titles.addWidget(_label("A folder with one sub-folder per class, or train/ and val/ folders of class "
                                "sub-folders. Nothing in it is ever changed.", "subtitle", wrap=True))
        head.addLayout(titles, 1)
        return head

    def _build_actions(self) -> QHBoxLayout:
        actions = QHBoxLayout()
        actions.setSpacing(8)
        self.browse_button = QPushButton("Browse…")
        self.browse_button.setProperty("role", "primary")
        self.browse_button.setToolTip("Choose an image folder (Ctrl+O)")
        self.browse_button.clicked.connect(self.browse)
        self.sample_button = QPushButton("Use sample data")
        self.sample_button.setToolTip("Handwritten digits 0–9 that ship with DTL Studio: "
                                      "a quick way to try everything.")
        self.sample_button.clicked.connect(self.use_sample)
        self.recent_combo = QComboBox()
        self.recent_combo.setMinimumWidth(260)
        self.recent_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.recent_combo.setToolTip("Folders opened before")
        self.recent_combo.activated.connect(self._recent_chosen)
        actions.addWidget(self.browse_button)
        actions.addWidget(self.sample_button)
        actions.addStretch(1)
        actions.addWidget(_label("Recent:", "muted"))
        actions.addWidget(self.recent_combo)
        return actions

    def _build_progress(self) -> QWidget:
        progress_row = QHBoxLayout()
        self.progress_label = _label("", "muted")
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_scan)
        progress_row.addWidget(self.progress_label)
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.cancel_button)
        self.progress_box = QWidget()
        self.progress_box.setLayout(progress_row)
        progress_row.setContentsMargins(0, 0, 0, 0)
        self.progress_box.hide()
        return self.progress_box

    def _build_results(self) -> QWidget:
        # Results: summary line, class table and warnings side by side.
        self.results = QWidget()
        res = QVBoxLayout(self.results)
        res.setContentsMargins(0, 0, 0, 0)
        res.setSpacing(10)
        summary_card, summary = _card()
        self.folder_label = _label("", "section")
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.totals_label = _label("", None, wrap=True)
        self.split_label = _label("", "muted", wrap=True)
        summary.addWidget(self.folder_label)
        summary.addWidget(self.totals_label)
        summary.addWidget(self.split_label)
        res.addWidget(summary_card)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setChildrenCollapsible(False)
        table_box = QWidget()
        tb = QVBoxLayout(table_box)
        tb.setContentsMargins(0, 0, 0, 0)
        tb.addWidget(_label("Classes", "section"))
        self.class_table = ClassTable()
        tb.addWidget(self.class_table)
        warn_box = QWidget()
        wb = QVBoxLayout(warn_box)
        wb.setContentsMargins(0, 0, 0, 0)
        self.warnings_title = _label("Warnings", "section")
        wb.addWidget(self.warnings_title)
        self.warnings_list = QListWidget()
        self.warnings_list.setWordWrap(True)
        self.warnings_list.setSpacing(3)
        self.warnings_list.setIconSize(QSize(16, 16))
        self.warnings_list.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        wb.addWidget(self.warnings_list)
        splitter.addWidget(table_box)
        splitter.addWidget(warn_box)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        res.addWidget(splitter, 1)
        self.results.hide()
        return self.results

    def _help_card(self) -> QWidget:
        """Shown while no folder is loaded: how to arrange the images, in two small examples."""
        box = QWidget()
        outer = QVBoxLayout(box)
        outer.setContentsMargins(0, 6, 0, 0)
        card, layout = _card()
        layout.addWidget(_label("How to arrange your images", "section"))
        row = QHBoxLayout()
        row.setSpacing(28)
        examples = (
            ("One folder per class", "my_photos/\n  cats/   001.jpg  002.jpg …\n  dogs/   a.png  b.png …\n"
             "  birds/  …", "DTL Studio holds out a share of each class for validation."),
            ("Your own split", "my_photos/\n  train/  cats/ dogs/ birds/\n  val/    cats/ dogs/ birds/\n"
             "  test/   (optional)", "The folders decide which images are used for what."),
        )
        for title, tree, note in examples:
            col = QVBoxLayout()
            col.setSpacing(4)
            col.addWidget(_label(title, None))
            code = _label(tree, None)
            code.setTextFormat(Qt.TextFormat.PlainText)
            code.setStyleSheet("font-family: monospace;")
            col.addWidget(code)
            col.addWidget(_label(note, "muted", wrap=True))
            row.addLayout(col, 1)
        layout.addLayout(row)
        layout.addWidget(_label("Pictures are recognised by their content (JPEG, PNG, WebP, TIFF, BMP …); anything "
                                "else is listed as skipped, with the reason. Hidden files are ignored.", "muted",
                                wrap=True))
        outer.addWidget(card)
        outer.addStretch(1)
        return box

    # --- page contract -----------------------------------------------------------------
    def status(self) -> tuple[bool, str]:
        """(ready, one line) for the step bar."""
        if self._state == "scanning":
            return False, "Scanning the folder…"
        if self._state == "ready" and self._scan is not None:
            n = sum(self._scan.counts.values())
            return True, f"{len(self._scan.classes)} classes · {n:,} images"
        if self._state == "error":
            return False, "That folder cannot be used — choose another"
        return False, "Waiting for an image folder"

    def scan_result(self):
        """The ScanResult shown, or None."""
        return self._scan if self._state == "ready" else None

    def data_root(self) -> str | None:
        """The folder in use, or None."""
        return str(self._scan.root) if self.scan_result() is not None else None

    def split(self):
        """The train/val split shown (dtl_engine Split), or None."""
        return self._split

    def message_text(self) -> str:
        """The one-line explanation shown under the drop zone ('' when none)."""
        return self.message.text() if not self.message.isHidden() else ""

    def is_scanning(self) -> bool:
        """True while a scan (or the sample preparation) runs."""
        return self._state == "scanning"

    # --- choosing a folder ------------------------------------------------------------------
    def browse(self) -> None:
        """Ask for a folder with the system dialog."""
        start = self.settings.last_folder() or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Choose an image folder", start)
        if folder:
            self.open_folder(folder)

    def use_sample(self) -> None:
        """Prepare the built-in sample data in the background, then scan it."""
        if self.is_scanning():
            return

        def prepare(_job: jobs.Job) -> str:
            from dtl_engine.data.sample import ensure_sample_dataset
            return str(ensure_sample_dataset())

        self._set_scanning("Preparing the sample data…")
        # Writing the sample files is not interrupted halfway: a cancelled job still finishes them.
        self._sample_job = jobs.submit(
            prepare, kind="sample", what="Preparing the sample data", context=self, imports=("dtl_engine.data",),
            on_done=self._sample_ready,
            on_error=lambda text, _details: self._scan_failed(f"The sample data could not be prepared: {text}"))

    def _sample_ready(self, path: str) -> None:
        self._sample_job = None
        self._state = "idle"
        self.open_folder(path)

    def open_folder(self, folder: str) -> None:
        """Scan ``folder`` in the background (a running scan is cancelled first)."""
        path = Path(folder)
        if not path.is_dir():
            self._show_problem(f"'{folder}' is not a folder that exists.")
            return
        self.cancel_scan()
        self._set_scanning(f"Scanning {path.name}…")
        mine: list[jobs.Job] = []       # progress arrives on this thread after submit() has returned
        job = jobs.submit(
            lambda job: _scan(str(path), job), kind="scan", what="Reading the folder", context=self,
            imports=("dtl_engine.data",), on_done=self._scan_done,
            on_error=lambda text, _details: self._scan_failed(text),
            # A cancelled scan may still report a little; only the current one moves the bar.
            on_progress=lambda p: self._on_progress(*p) if mine and mine[0] is self._scan_job else None)
        mine.append(job)
        self._scan_job = job

    def cancel_scan(self) -> None:
        """Stop a running scan (or stop waiting for the sample data); the previous result comes back."""
        for job in (self._sample_job, self._scan_job):
            if job is not None and not job.is_done():
                job.cancel()                # its late answer arrives as "cancelled" and is ignored
        if self._sample_job is not None or self._scan_job is not None:
            self._sample_job = self._scan_job = None
            self._state = "empty" if self._scan is None else "ready"
            self.progress_box.hide()
            self._set_results_visible(self._scan is not None)
            self.status_changed.emit()

    # --- scan life cycle ----------------------------------------------------------------------
    def _set_scanning(self, text: str) -> None:
        self._state = "scanning"
        self.message.hide()
        self.progress_label.setText(text)
        self.progress.setRange(0, 0)        # busy until the first count arrives
        self.progress_box.show()
        self.browse_button.setEnabled(True)
        self.status_changed.emit()

    def _on_progress(self, done: int, total: int) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(min(done, total))
            self.progress_label.setText(f"Scanning… {done:,} / {total:,} files")
        else:
            self.progress_label.setText(f"Scanning… {done:,} files")

    def _scan_done(self, result) -> None:
        self._scan_job = None
        self.progress_box.hide()
        self._scan = result
        self._state = "ready"
        self.settings.add_recent_folder(str(result.root))
        self.refresh_recent()
        self._show_result()
        self.status_changed.emit()
        self.scan_ready.emit(result)

    def _scan_failed(self, sentence: str) -> None:
        self._scan_job = None
        self._sample_job = None
        self.progress_box.hide()
        self._scan = None
        self._split = None
        self._state = "error"
        self._set_results_visible(False)
        self._show_problem(sentence, keep_state=True)
        self.status_changed.emit()

    def _show_problem(self, sentence: str, keep_state: bool = False) -> None:
        self.message.setProperty("role", "error")
        self.message.style().unpolish(self.message)
        self.message.style().polish(self.message)
        self.message.setText(sentence)
        self.message.show()

    # --- showing a result ------------------------------------------------------------------------
    def set_val_fraction(self, fraction: float, seed: int | None = None) -> None:
        """Use the model page's validation share (and seed) for the split shown."""
        changed = abs(fraction - self.val_fraction) > 1e-9 or (seed is not None and seed != self.seed)
        self.val_fraction = fraction
        if seed is not None:
            self.seed = seed
        if changed and self.scan_result() is not None:
            self._show_result()

    def _compute_split(self):
        try:
            from dtl_engine.data import make_split
            return make_split(self._scan, val_fraction=self.val_fraction, seed=self.seed)
        except Exception as exc:  # a split problem is shown, the class table still is
            self._split_problem = str(exc)
            return None

    def _show_result(self) -> None:
        scan = self._scan
        self._split_problem = ""
        self._split = self._compute_split()
        train_counts: Counter = Counter()
        val_counts: Counter = Counter()
        n_test = 0
        if self._split is not None:
            train_counts = Counter(label for _, label in self._split.train)
            val_counts = Counter(label for _, label in self._split.val)
            n_test = len(self._split.test or [])
        first: dict[int, str] = {}
        for samples in scan.items.values():
            for path, label in samples:
                first.setdefault(label, path)
        rows = [{"name": name, "count": int(scan.counts.get(name, 0)),
                 "train": train_counts.get(i, 0) if self._split is not None else None,
                 "val": val_counts.get(i, 0) if self._split is not None else None,
                 "first": first.get(i)} for i, name in enumerate(scan.classes)]
        self.class_table.set_classes(rows)

        total = sum(r["count"] for r in rows)
        self.folder_label.setText(str(scan.root))
        layout = "train / val folders" if scan.layout == "split" else "one folder per class"
        self.totals_label.setText(f"<b>{len(scan.classes)}</b> classes · <b>{total:,}</b> images · "
                                  f"{len(scan.skipped):,} files skipped · layout: {layout}")
        if self._split is not None:
            how = ("as given by the folders" if scan.layout == "split"
                   else f"{self.val_fraction:.0%} of each class held out for validation")
            test = f" · test {n_test:,}" if n_test else ""
            self.split_label.setText(f"Split: train {len(self._split.train):,} · val {len(self._split.val):,}"
                                     f"{test} ({how})")
        else:
            self.split_label.setText(f"No split yet: {self._split_problem}")
        self._fill_warnings()
        self.message.hide()
        self._set_results_visible(True)

    def _fill_warnings(self) -> None:
        scan = self._scan
        lines = list(scan.warnings)
        if self._split is not None and len(self._split.val) == 0:
            lines.append("No validation images: add more images per class or raise the validation share.")
        for skipped in scan.skipped[:MAX_LISTED_SKIPS]:
            lines.append(f"Skipped {Path(skipped.path).name}: {skipped.reason}")
        if len(scan.skipped) > MAX_LISTED_SKIPS:
            lines.append(f"… and {len(scan.skipped) - MAX_LISTED_SKIPS:,} more skipped files.")
        self.warnings_list.clear()
        icon = self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        for line in lines:
            self.warnings_list.addItem(QListWidgetItem(icon, line))
        if not lines:
            self.warnings_list.addItem("No problems found.")
        self.warnings_title.setText(f"Warnings ({len(lines)})" if lines else "Warnings")

    def warnings(self) -> list[str]:
        """The warning lines shown (empty when there are none)."""
        items = [self.warnings_list.item(i).text() for i in range(self.warnings_list.count())]
        return [] if items == ["No problems found."] else items

    def _set_results_visible(self, visible: bool) -> None:
        self.results.setVisible(visible)
        self.spacer.setVisible(not visible)
        # The drop zone shrinks once a folder is shown, so the table gets the room.
        self.drop_zone.setFixedHeight(96 if visible else 220)
        if visible:
            self.drop_zone.set_text("Drop another folder here to replace it", "or press Browse… (Ctrl+O)")
        else:
            self.drop_zone.set_text("Drop an image folder here",
                                    "One sub-folder per class (cats/, dogs/ …) or train/ + val/ folders")

    # --- recent folders ------------------------------------------------------------------------------
    def refresh_recent(self) -> None:
        """Reload the recent folder list from the settings."""
        self.recent_combo.clear()
        recent = self.settings.recent_folders()
        self.recent_combo.addItem("Choose a recent folder…" if recent else "No recent folders")
        for folder in recent:
            self.recent_combo.addItem(Path(folder).name or folder, folder)
            self.recent_combo.setItemData(self.recent_combo.count() - 1, folder, Qt.ItemDataRole.ToolTipRole)
        self.recent_combo.setEnabled(bool(recent))

    def _recent_chosen(self, index: int) -> None:
        folder = self.recent_combo.itemData(index)
        self.recent_combo.setCurrentIndex(0)
        if folder:
            self.open_folder(folder)

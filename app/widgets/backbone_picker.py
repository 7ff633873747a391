"""Backbone chooser: a curated table (parameters, input size, weights cached?) plus a search over timm names.

Everything that imports torch/timm (cache check, name list, parameter counts of other models)
runs in a thread pool; the table fills in as answers arrive.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QStringListModel, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QAbstractItemView, QCompleter, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from app.backbones import CURATED, BackboneInfo, by_name, describe_backbone, supported_timm_names
from app import jobs
from app.theme import colors
from dtl_engine.formatting import format_count
from dtl_engine.registry import family_of


def _weights_cached(name: str) -> bool | None:
    try:
        from dtl_engine.model.weights import weights_cached
    except ImportError:
        return None
    try:
        return bool(weights_cached(name))
    except Exception:  # unknown cache state is shown as such
        return None


class BackbonePicker(QWidget):
    """Emits ``backbone_changed(name)`` when the selection changes."""

    backbone_changed = Signal(str)
    cache_known = Signal()              # whether some backbones' weights are downloaded is now known
    COLUMNS = ("Backbone", "Parameters", "Input", "Weights")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._infos: dict[str, BackboneInfo] = {b.name: b for b in CURATED}
        self._cached: dict[str, bool | None] = {}
        self._known_names: list[str] = []

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        search_row = QHBoxLayout()
        self.search = QLineEdit()
        self.search.setPlaceholderText("Any timm ViT, DeiT or Swin, e.g. vit_large_patch16_224")   # whole at 1240 px
        self.search.setClearButtonEnabled(True)
        self.search.setToolTip("Type a timm model name; supported families are ViT, DeiT, DeiT III and Swin (V1).")
        self.completer_model = QStringListModel([])
        completer = QCompleter(self.completer_model, self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        completer.setFilterMode(Qt.MatchFlag.MatchContains)
        completer.setMaxVisibleItems(12)
        completer.activated.connect(self.select)
        self.search.setCompleter(completer)
        self.search.returnPressed.connect(lambda: self.select(self.search.text().strip()))
        self.use_button = QPushButton("Use")
        self.use_button.clicked.connect(lambda: self.select(self.search.text().strip()))
        # The open suggestion list takes every click; one on "Use" must still use the name, not only close it.
        completer.popup().installEventFilter(self)
        search_row.addWidget(self.search, 1)
        search_row.addWidget(self.use_button)
        layout.addLayout(search_row)
        self.search_message = QLabel("")
        self.search_message.setProperty("role", "error")
        self.search_message.setWordWrap(True)
        self.search_message.hide()
        layout.addWidget(self.search_message)
        self.search.textEdited.connect(self.search_message.hide)    # the sentence was about the old text

        self.table = self._build_table()
        layout.addWidget(self.table, 1)
        self.detail = QLabel("")
        self.detail.setProperty("role", "muted")
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.detail)

        for info in CURATED:
            self._add_row(info)
        self._refresh_cached([b.name for b in CURATED])
        self._submit(lambda _job: supported_timm_names(), "Listing the timm models", self._names_loaded)

    def _build_table(self) -> QTableWidget:
        table = QTableWidget(0, len(self.COLUMNS))
        table.setHorizontalHeaderLabels(list(self.COLUMNS))
        table.verticalHeader().setVisible(False)
        table.verticalHeader().setDefaultSectionSize(30)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setShowGrid(False)
        table.setAlternatingRowColors(True)
        # A long name wraps onto a second line rather than being cut short (wide fonts, narrow windows).
        table.setWordWrap(True)
        table.setTextElideMode(Qt.TextElideMode.ElideNone)
        table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header = table.horizontalHeader()
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in (1, 2, 3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        table.setMinimumHeight(230)
        table.itemSelectionChanged.connect(self._selection_changed)
        return table

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        """A click on "Use" while the suggestions are open closes them and uses the name at once."""
        if event.type() == QEvent.Type.MouseButtonPress and watched is self.search.completer().popup():
            spot = self.use_button.mapFromGlobal(event.globalPosition().toPoint())
            if self.use_button.isEnabled() and self.use_button.rect().contains(spot):
                watched.hide()
                self.use_button.click()
                return True
        return super().eventFilter(watched, event)

    # --- rows ------------------------------------------------------------------------------
    def _add_row(self, info: BackboneInfo) -> int:
        row = self.table.rowCount()
        self.table.insertRow(row)
        name_item = QTableWidgetItem(info.label)
        name_item.setData(Qt.ItemDataRole.UserRole, info.name)
        name_item.setToolTip(f"{info.name}\n{info.note}" if info.note else info.name)
        self.table.setItem(row, 0, name_item)
        self._fill_facts(row, info)
        self.table.setItem(row, 3, QTableWidgetItem("…"))
        return row

    def _fill_facts(self, row: int, info: BackboneInfo) -> None:
        for col, text in ((1, format_count(info.params)), (2, f"{info.input_size} px" if info.input_size else "—")):
            item = QTableWidgetItem(text)
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(row, col, item)

    def _row_of(self, name: str) -> int:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) == name:
                return row
        return -1

    def _refresh_cached(self, names: list[str]) -> None:
        def check(_job: jobs.Job) -> dict:
            return {n: _weights_cached(n) for n in names}
        self._submit(check, "Checking the weights cache", self._cached_loaded)

    def _cached_loaded(self, answers: dict) -> None:
        self._cached.update(answers)
        for name, cached in answers.items():
            row = self._row_of(name)
            if row < 0:
                continue
            text = {True: "cached", False: "download", None: "unknown"}[cached]
            item = QTableWidgetItem(text)
            if cached:
                item.setForeground(QColor(colors()["ok"]))
            item.setToolTip("Already on this computer" if cached else
                            "Downloaded once when training starts (needs internet), then cached")
            self.table.setItem(row, 3, item)
        self._update_detail()
        self.cache_known.emit()

    def _names_loaded(self, names: list) -> None:
        self._known_names = list(names)
        self.completer_model.setStringList(self._known_names)

    # --- selection ---------------------------------------------------------------------------
    def select(self, name: str) -> bool:
        """Select ``name`` (adding a row for a searched model). Returns False with a sentence shown when unusable."""
        name = name.strip()
        if not name:
            return False
        if family_of(name) is None:
            self.search_message.setText(f"'{name}' is not a ViT, DeiT or Swin (V1) model; DTL Studio can only "
                                        "adapt those families.")
            self.search_message.show()
            return False
        if self._known_names and name not in self._known_names and name.split(".")[0] not in self._known_names:
            self.search_message.setText(f"'{name}' is not a model name timm knows; pick one from the suggestions.")
            self.search_message.show()
            return False
        self.search_message.hide()
        row = self._row_of(name)
        if row < 0:
            info = BackboneInfo(name, name, None, None, None, family_of(name) or "vit")
            self._infos[name] = info
            row = self._add_row(info)
            self._submit(lambda _job: describe_backbone(name), "Reading the backbone", self._described)
            self._refresh_cached([name])
        self.table.selectRow(row)
        self.table.scrollToItem(self.table.item(row, 0))
        return True

    def _described(self, info: BackboneInfo) -> None:
        row = self._row_of(info.name)
        if row >= 0:
            self._infos[info.name] = info
            self._fill_facts(row, info)
            self._update_detail()
            if info.name == self.current():
                self.backbone_changed.emit(info.name)   # depth is known now: 'Auto' labels can say more

    def current(self) -> str:
        """The selected timm name ('' when none)."""
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return ""
        return self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)

    def info(self, name: str | None = None) -> BackboneInfo | None:
        """Known facts about ``name`` (default: the selection)."""
        name = name or self.current()
        return self._infos.get(name) or by_name(name)

    def cached(self, name: str | None = None) -> bool | None:
        """Whether the pretrained weights are already downloaded (None = not known yet)."""
        return self._cached.get(name or self.current())

    def _selection_changed(self) -> None:
        self.search_message.hide()          # a backbone is chosen: a refusal of a typed name is over
        self._update_detail()
        name = self.current()
        if name:
            self.backbone_changed.emit(name)

    def _update_detail(self) -> None:
        info = self.info()
        if info is None:
            self.detail.setText("")
            return
        note = f" — {info.note}" if info.note else ""
        self.detail.setText(f"<code>{info.name}</code>{note}")

    def _submit(self, fn, what: str, on_done) -> None:
        # One lane: background imports stay off the GUI thread and off the second core, in order.
        jobs.submit(fn, kind="backbone", what=what, context=self, lane="backbone", imports=("timm", "dtl_engine.data"),
                    on_done=on_done)

"""The Model step's controls, built section by section onto the page (see model_page.ModelPage).

Each builder makes one card or form, keeps its controls as the page's attributes (the page and the
tests read them by name) and connects them to the page's ``_changed``; ``bindings`` ties the plain
settings to their TrainConfig fields.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout,
                               QLabel, QLineEdit, QPushButton, QRadioButton, QSpinBox, QVBoxLayout, QWidget)

from app.pages.bindings import (AUTO_NUMBER, DATA_CHOICE, FLAG, NUMBER, OPTIONAL_NUMBER, PERCENT, TEXT_CHOICE,
                                Binding)
from app.widgets.auto_spin import AutoSpinBox
from app.widgets.backbone_picker import BackbonePicker
from app.widgets.card import card
from app.widgets.collapsible import Collapsible
from app.widgets.gpu_fit import GpuFitRow
from dtl_engine.config import AUGMENTS, DEVICES, PRECISIONS, TrainConfig
from dtl_engine.registry import METHODS

ModelPage = Any         # the page these build onto (not imported: it imports this module)
RECIPE_LABELS = {"quick": "Quick (default)", "paper": "Paper"}
AUGMENT_LABELS = {"auto": "Automatic", "none": "None", "light-noflip": "Light, no flips",
                  "light": "Light (crops and flips)", "standard": "Standard"}
FIELD_WIDTH = 150


def section(text: str) -> QLabel:
    label = QLabel(text)
    label.setProperty("role", "section")
    return label


def top(field: str) -> int:
    """The largest value of a setting (TrainConfig's range), within what a spin box holds."""
    return int(min(TrainConfig.bounds(field)[1], 2 ** 31 - 1))


def _wired(page: ModelPage, widget: QWidget, field: str) -> QWidget:
    """``widget`` with the setting's help as tooltip, telling the page when it changes."""
    widget.setToolTip(TrainConfig.help(field))
    widget.setMinimumWidth(FIELD_WIDTH)
    for signal in ("valueChanged", "currentIndexChanged", "toggled"):
        if hasattr(widget, signal):
            getattr(widget, signal).connect(page._changed)
            break
    return widget


def spin(page: ModelPage, lo: int, hi: int, field: str, special: str | None = None, step: int = 1) -> QSpinBox:
    """A whole-number setting; ``special`` names its lowest value ("Auto", "Never"…)."""
    box = AutoSpinBox() if special else QSpinBox()
    box.setRange(lo, hi)
    box.setSingleStep(step)
    if special:
        box.setSpecialValueText(special)
    _wired(page, box, field)
    return box


def decimal(page: ModelPage, field: str, decimals: int, step: float, bounds: tuple[float, float] | None = None,
            special: str = "") -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(*(bounds or TrainConfig.bounds(field)))
    box.setSingleStep(step)
    if special:
        box.setSpecialValueText(special)
    _wired(page, box, field)
    return box


def combo(page: ModelPage, items: dict[str, str], field: str) -> QComboBox:
    """A choice: ``items`` maps each value to its label."""
    box = QComboBox()
    for value, text in items.items():
        box.addItem(text, value)
    _wired(page, box, field)
    return box


def check(page: ModelPage, text: str, field: str) -> QCheckBox:
    box = QCheckBox(text)
    box.setToolTip(TrainConfig.help(field))
    box.toggled.connect(page._changed)
    return box


# --- the cards -----------------------------------------------------------------------------------
def backbone_card(page: ModelPage) -> QWidget:
    """Left: the backbone picker and where its weights come from."""
    frame, left = card()
    left.addWidget(section("Backbone"))
    page.picker = BackbonePicker()
    page.picker.backbone_changed.connect(page._backbone_changed)
    page.picker.cache_known.connect(page.status_changed)
    left.addWidget(page.picker, 1)
    left.addSpacing(4)
    left.addWidget(section("Weights"))
    page.weights_group = QButtonGroup(page)
    page.w_hub = QRadioButton("Pretrained (downloaded once, then cached)")
    page.w_file = QRadioButton("Local weights file")
    page.w_random = QRadioButton("Random (no pre-training)")
    for i, button in enumerate((page.w_hub, page.w_file, page.w_random)):
        button.setToolTip(TrainConfig.help("weights"))
        page.weights_group.addButton(button, i)
    page.w_hub.setChecked(True)
    file_row = QHBoxLayout()
    file_row.setContentsMargins(22, 0, 0, 0)
    page.weights_path = QLineEdit()
    page.weights_path.setPlaceholderText(".safetensors, .pth, .bin or .npz file")
    page.weights_path.textChanged.connect(page._changed)
    page.weights_browse = QPushButton("Choose…")
    page.weights_browse.clicked.connect(page._choose_weights)
    file_row.addWidget(page.weights_path, 1)
    file_row.addWidget(page.weights_browse)
    page.random_warning = QLabel("Random weights: the backbone has learnt nothing, so results will be poor. "
                                 "Use this only to try the app.")
    page.random_warning.setProperty("role", "warn")
    page.random_warning.setWordWrap(True)
    for widget in (page.w_hub, page.w_file, file_row, page.w_random, page.random_warning):
        (left.addLayout if isinstance(widget, QHBoxLayout) else left.addWidget)(widget)
    page.weights_group.idToggled.connect(lambda *_: page._changed())
    return frame


def _form() -> QFormLayout:
    form = QFormLayout()
    form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    form.setHorizontalSpacing(12)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
    return form


def method_card(page: ModelPage) -> QWidget:
    """The method (DTL, DTL+, linear probe) as segments, its summary and its own settings."""
    frame, mc = card()
    mc.addWidget(section("Method"))
    seg = QHBoxLayout()
    seg.setSpacing(0)
    page.method_group = QButtonGroup(page)
    page.method_buttons = {}
    for i, spec in enumerate(METHODS.values()):
        b = QPushButton(spec.label)
        b.setCheckable(True)
        b.setProperty("role", "segment")
        b.setToolTip(spec.summary)
        page.method_group.addButton(b, i)
        page.method_buttons[spec.key] = b
        seg.addWidget(b)
    seg.addStretch(1)
    page.method_buttons["dtl"].setChecked(True)
    page.method_group.idToggled.connect(lambda *_: page._changed())
    mc.addLayout(seg)
    page.method_text = QLabel("")
    page.method_text.setWordWrap(True)
    page.method_text.setProperty("role", "muted")
    mc.addWidget(page.method_text)
    form = _form()
    page.rank = spin(page, 0, top("rank"), "rank", special="Auto")
    page.inject_from = spin(page, -1, top("inject_from"), "inject_from", special="Auto")
    page.beta = decimal(page, "beta", 1, 1.0)
    page.beta.setValue(100.0)
    page.kernel = spin(page, -1, top("fusion_kernel"), "fusion_kernel", special="Auto", step=2)
    for label, widget in (("Rank r", page.rank), ("Injection start M", page.inject_from),
                          ("Swish steepness β", page.beta), ("DTL+ kernel", page.kernel)):
        form.addRow(label, widget)
    mc.addLayout(form)
    return frame


def memory_card(page: ModelPage) -> QWidget:
    """The training-memory estimate and "Fit to my GPU"; room for the estimate is kept from the start."""
    frame, mem = card()
    mem.addWidget(section("Training memory (estimate)"))
    page.memory_label = QLabel("Estimating…")
    page.memory_label.setProperty("role", "big")
    page.memory_label.setWordWrap(True)
    page.memory_detail = QLabel("")
    page.memory_detail.setProperty("role", "muted")
    page.memory_detail.setWordWrap(True)
    mem.addWidget(page.memory_label)
    mem.addWidget(page.memory_detail)
    page.gpu_fit = GpuFitRow(page._gpu_probe)
    page.gpu_fit.fit_requested.connect(page.fit_to_gpu)
    mem.addWidget(page.gpu_fit)
    return frame


def advanced_settings(page: ModelPage) -> Collapsible:
    """The training settings behind "Advanced": recipe, epochs, batch, rate, augmentation, precision…"""
    adv = QWidget()
    af = _form()
    adv.setLayout(af)
    af.setContentsMargins(16, 4, 4, 4)
    page.epochs = spin(page, 1, top("epochs"), "epochs")
    page.batch_size = spin(page, 1, top("batch_size"), "batch_size")
    page.recipe = QComboBox()
    for value, text in RECIPE_LABELS.items():
        page.recipe.addItem(text, value)
    page.recipe.setMinimumWidth(FIELD_WIDTH)
    page.recipe.setToolTip(TrainConfig.help("recipe"))
    page.recipe.currentIndexChanged.connect(page._recipe_changed)
    # 0 shows "Automatic": the rate is searched on the training images.
    page.lr = decimal(page, "lr", 5, 0.0001, (0.0, min(1.0, TrainConfig.bounds("lr")[1])), "Automatic")
    page.weight_decay = decimal(page, "weight_decay", 3, 0.01)
    page.augment = combo(page, {v: AUGMENT_LABELS.get(v, v) for v in AUGMENTS}, "augment")
    page.precision = combo(page, {v: v for v in PRECISIONS}, "precision")
    page.device = combo(page, {v: v for v in DEVICES}, "device")
    page.seed = spin(page, 0, top("seed"), "seed")
    page.val_percent = spin(page, 5, 50, "val_fraction")
    page.val_percent.setSuffix(" %")
    page.image_size = spin(page, 0, top("image_size"), "image_size", special="Backbone default", step=16)
    page.early_stopping = spin(page, 0, top("early_stopping"), "early_stopping", special="Never")
    page.checkpoint_blocks = check(page, "Recompute blocks (slower, less memory)", "checkpoint_blocks")
    page.low_precision_taps = check(page, "Side-network inputs in bf16", "low_precision_taps")
    for label, widget in (("Training recipe", page.recipe), ("Epochs", page.epochs),
                          ("Batch size", page.batch_size), ("Learning rate", page.lr),
                          ("Weight decay", page.weight_decay), ("Augmentation", page.augment),
                          ("Image size", page.image_size), ("Validation share", page.val_percent),
                          ("Precision", page.precision), ("Device", page.device), ("Seed", page.seed),
                          ("Early stopping", page.early_stopping), ("Memory savers", page.checkpoint_blocks),
                          ("", page.low_precision_taps)):
        af.addRow(label, widget)
    return Collapsible("Advanced training settings", adv)


def bindings(page: ModelPage) -> tuple[Binding, ...]:
    """Every plain setting: (widget, TrainConfig field, converter). A new setting is one row here."""
    return (
        Binding(page.rank, "rank", OPTIONAL_NUMBER),
        Binding(page.inject_from, "inject_from", OPTIONAL_NUMBER),
        Binding(page.beta, "beta", NUMBER),
        Binding(page.kernel, "fusion_kernel", OPTIONAL_NUMBER),
        Binding(page.epochs, "epochs", NUMBER),
        Binding(page.batch_size, "batch_size", NUMBER),
        Binding(page.recipe, "recipe", DATA_CHOICE),
        Binding(page.lr, "lr", AUTO_NUMBER),
        Binding(page.weight_decay, "weight_decay", NUMBER),
        Binding(page.augment, "augment", DATA_CHOICE),
        Binding(page.precision, "precision", TEXT_CHOICE),
        Binding(page.device, "device", TEXT_CHOICE),
        Binding(page.seed, "seed", NUMBER),
        Binding(page.val_percent, "val_fraction", PERCENT),
        Binding(page.image_size, "image_size", OPTIONAL_NUMBER),
        Binding(page.early_stopping, "early_stopping", OPTIONAL_NUMBER),
        Binding(page.checkpoint_blocks, "checkpoint_blocks", FLAG),
        Binding(page.low_precision_taps, "low_precision_taps", FLAG),
    )


def right_column(page: ModelPage) -> QWidget:
    """Method, memory and the advanced settings, one below the other."""
    right = QWidget()
    right.setMinimumWidth(400)
    rl = QVBoxLayout(right)
    rl.setContentsMargins(0, 0, 0, 0)
    rl.setSpacing(12)
    rl.addWidget(method_card(page))
    rl.addWidget(memory_card(page))
    page.advanced = advanced_settings(page)
    rl.addWidget(page.advanced)
    rl.addStretch(1)
    return right

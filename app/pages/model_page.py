"""Step 2 — Model: backbone, weights source, method (DTL / DTL+ / linear probe) and its settings,
with a live memory estimate computed in the background."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QBoxLayout, QFileDialog, QFrame, QLabel, QScrollArea, QVBoxLayout, QWidget

from app import jobs
from app.pages import model_form as form
from app.pages.bindings import Binding, read_all, show_all, show_changes
from app.settings import Settings
from app.widgets.gpu_fit import GpuProbe
from dtl_engine.config import TrainConfig
from dtl_engine.errors import DTLError, WeightsError
from dtl_engine.formatting import format_bytes
from dtl_engine.recipes import RECIPE_FIELDS, recipe_values
from dtl_engine.registry import FAMILIES, METHODS, family_spec
from dtl_engine.sizing.planner import plan_fit

DEFAULT_BACKBONE = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
TO_DOWNLOAD = "pretrained, to download"    # the Model step's last words while its weights are not here yet
FIRST_EPOCHS = 10                           # a first run in the app: half the quick recipe's, to see a model sooner
ESTIMATE_DELAY_MS = 350
CHANGE_HINT = "Change the rank, batch size, image size or memory savers to see the effect."
WIDE_LAYOUT_PX = 960                        # a page narrower than this stacks its two columns
# What "Fit to my GPU" may change, as the page names it.
FIT_LABELS = {"precision": "Precision", "batch_size": "Batch size", "checkpoint_blocks": "Recompute blocks",
              "low_precision_taps": "Side-network inputs in bf16",
              "half_frozen_weights": "Frozen weights in half precision"}


class ModelPage(QWidget):
    """Choose what to train and how. ``build_config(data_root)`` turns the page into a TrainConfig."""

    status_changed = Signal()
    config_changed = Signal()
    estimate_ready = Signal(str)

    def __init__(self, settings: Settings | None = None, parent: QWidget | None = None,
                 gpu_probe: GpuProbe | None = None) -> None:
        """``gpu_probe`` returns the GPU's facts (default: the current CUDA device); tests fake a card with it."""
        super().__init__(parent)
        self.settings = settings or Settings()
        self._gpu_probe = gpu_probe
        self._fit_job: jobs.Job | None = None
        self.last_plan = None               # the FitPlan "Fit to my GPU" made last
        self.num_classes = 10
        self._loading = False
        self._extra: dict = {}              # remembered fields this page shows no control for
        self._estimate_text = ""
        self.last_estimate = None           # MemoryEstimate of the settings shown, once known
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(ESTIMATE_DELAY_MS)
        self._debounce.timeout.connect(self._start_estimate)
        self._loading = True                # no reaction to the controls' first values while they are made
        self._build()
        self._loading = False
        self.load_config(self.settings.last_config())

    # --- layout ------------------------------------------------------------------------------
    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(28, 22, 28, 22)
        root.setSpacing(12)
        title = QLabel("Model")
        title.setProperty("role", "title")
        subtitle = QLabel("Pick a pretrained backbone and how to adapt it. The backbone stays frozen; "
                          "only a few thousand parameters are trained.")
        subtitle.setProperty("role", "subtitle")
        subtitle.setWordWrap(True)
        root.addWidget(title)
        root.addWidget(subtitle)

        # Two columns on a wide window, one below the other on a narrow one; the whole body scrolls.
        body = QWidget()
        self._columns = columns = QBoxLayout(QBoxLayout.Direction.LeftToRight, body)
        columns.setContentsMargins(0, 0, 6, 0)
        columns.setSpacing(16)
        self._scroll = scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(body)
        root.addWidget(scroll, 1)
        columns.addWidget(form.backbone_card(self), 5)
        columns.addWidget(form.right_column(self), 4)
        self.bindings: tuple[Binding, ...] = form.bindings(self)

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        wide = event.size().width() >= WIDE_LAYOUT_PX
        direction = QBoxLayout.Direction.LeftToRight if wide else QBoxLayout.Direction.TopToBottom
        if self._columns.direction() != direction:
            self._columns.setDirection(direction)

    # --- values <-> widgets ------------------------------------------------------------------
    def method(self) -> str:
        """'dtl', 'dtl+' or 'linear'."""
        return next(k for k, b in self.method_buttons.items() if b.isChecked())

    def weights(self) -> str:
        """'hub', 'random' or the local file path."""
        if self.w_random.isChecked():
            return "random"
        if self.w_file.isChecked():
            return self.weights_path.text().strip()
        return "hub"

    def config_dict(self) -> dict:
        """The page's settings as TrainConfig fields (without data_dir)."""
        # settings a recipe fills are left open, so the chosen recipe fills them
        d = {k: v for k, v in self._extra.items() if k not in RECIPE_FIELDS}
        d.update(backbone=self.picker.current() or DEFAULT_BACKBONE, weights=self.weights(), method=self.method())
        d.update(read_all(self.bindings))
        return d

    def build_config(self, data_root: str | None) -> TrainConfig:
        """A validated TrainConfig for ``data_root`` (raises RunError / WeightsError with a sentence)."""
        d = self.config_dict()
        d["data_dir"] = str(data_root or "")
        if d["weights"] not in ("hub", "random"):
            if not d["weights"]:
                raise WeightsError("Choose a local weights file, or pick pretrained or random weights.")
        config = TrainConfig.from_dict(d)
        self.save_config()
        return config

    def load_config(self, data: dict) -> None:
        """Show a remembered configuration (unknown or bad values fall back to the defaults)."""
        try:
            config = TrainConfig.from_dict({**TrainConfig().to_dict(), "backbone": DEFAULT_BACKBONE,
                                            "epochs": FIRST_EPOCHS, **(data or {})})
        except (DTLError, TypeError, ValueError):
            config = TrainConfig(backbone=DEFAULT_BACKBONE, epochs=FIRST_EPOCHS)
        self._loading = True
        try:
            shown = {"backbone", "weights", "method", "data_dir", *(b.field for b in self.bindings)}
            self._extra = {k: v for k, v in config.to_dict().items() if k not in shown}
            if not self.picker.select(config.backbone):
                self.picker.select(DEFAULT_BACKBONE)
            if config.weights == "random":
                self.w_random.setChecked(True)
            elif config.weights == "hub":
                self.w_hub.setChecked(True)
            else:
                self.w_file.setChecked(True)
                self.weights_path.setText(config.weights)
            self.method_buttons.get(config.method, self.method_buttons["dtl"]).setChecked(True)
            show_all(self.bindings, config)
        finally:
            self._loading = False
        self._changed()

    def save_config(self) -> None:
        """Remember the current settings for the next session."""
        self.settings.set_last_config(self.config_dict())

    # --- reactions ------------------------------------------------------------------------------
    def set_scan(self, scan) -> None:
        """The data page found ``scan``: the estimate uses its class count."""
        if scan is not None and getattr(scan, "classes", None):
            self.num_classes = len(scan.classes)
            self._schedule_estimate()

    def _choose_weights(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a weights file", str(Path.home()),
                                              "Weights (*.safetensors *.pth *.pt *.bin *.npz);;All files (*)")
        if path:
            self.weights_path.setText(path)
            self.w_file.setChecked(True)

    def _backbone_changed(self, name: str) -> None:
        info = self.picker.info(name)
        family = family_spec(name) or FAMILIES["vit"]
        self.rank.setSpecialValueText(f"Auto ({family.rank})")
        self.kernel.setSpecialValueText(f"Auto ({family.fusion_kernel})")
        depth = info.depth if info else None
        # A single-stage family's M follows from the depth; the engine's own answer (from the stage
        # depths) follows from the background.
        if depth and family.name == "vit":
            self.inject_from.setSpecialValueText(f"Auto ({family.default_taps([depth])[1]})")
        else:
            self.inject_from.setSpecialValueText("Auto")
        if depth:
            self.inject_from.setMaximum(depth - 1)
        size = info.input_size if info else None
        self.image_size.setSpecialValueText(f"Backbone default ({size} px)" if size else "Backbone default")
        self._changed()

        def defaults(_job: jobs.Job) -> tuple[str, dict]:
            from dtl_engine.model.dtl import backbone_defaults
            return name, backbone_defaults(name)

        # The same lane as the picker's facts: model building stays on one core, in order.
        jobs.submit(defaults, kind="backbone", what="Reading the backbone's defaults", context=self,
                    lane="backbone", imports=("timm", "dtl_engine.data"), on_done=self._defaults_known)

    def _defaults_known(self, answer) -> None:
        name, d = answer
        if name != self.picker.current():
            return                          # the selection moved on
        self.rank.setSpecialValueText(f"Auto ({d['rank']})")
        self.kernel.setSpecialValueText(f"Auto ({d['fusion_kernel']})")
        self.inject_from.setSpecialValueText(f"Auto ({d['inject_from']})")
        self.inject_from.setMaximum(max(0, int(d["depth"]) - 1))
        self.status_changed.emit()

    def _recipe_changed(self, *_args) -> None:
        """A recipe brings its epochs, learning rate and augmentation; the rest it fills when training starts."""
        if not self._loading:
            values = recipe_values(self.recipe.currentData(), self.picker.current() or DEFAULT_BACKBONE)
            self.epochs.setValue(values["epochs"])
            self.lr.setValue(0.0 if values["lr"] == "auto" else values["lr"])
            self.augment.setCurrentIndex(max(0, self.augment.findData(values["augment"])))
        self._changed()

    def _changed(self, *_args) -> None:
        if self._loading:
            return
        method = self.method()
        spec = METHODS[method]
        self.method_text.setText(spec.summary)
        for w in (self.rank, self.inject_from, self.beta):
            w.setEnabled(spec.side_network)
        self.kernel.setEnabled(spec.fusion_kernel)
        self.weights_path.setEnabled(self.w_file.isChecked())
        self.weights_browse.setEnabled(self.w_file.isChecked())
        self.random_warning.setVisible(self.w_random.isChecked())
        self._schedule_estimate()
        self.config_changed.emit()
        self.status_changed.emit()

    # --- page contract ------------------------------------------------------------------------------
    def status(self) -> tuple[bool, str]:
        """(ready, one line) for the step bar."""
        name = self.picker.current()
        if not name:
            return False, "Choose a backbone"
        if self.w_file.isChecked():
            path = self.weights_path.text().strip()
            if not path:
                return False, "Waiting for a local weights file"
            if not Path(path).is_file():
                return False, "The weights file does not exist"
        info = self.picker.info(name)
        short = (info.label.split(" · ")[0] if info else name)
        method = METHODS[self.method()].label
        rank = ""
        if METHODS[self.method()].side_network:
            r = self.rank.value() or (family_spec(name) or FAMILIES["vit"]).rank
            rank = f" · rank {r}"
        random = " · random weights" if self.w_random.isChecked() else ""
        if self.w_hub.isChecked() and self.picker.cached(name) is False:
            # Not a green check: training needs the internet once (offline it fails with a sentence).
            return False, f"{short} · {method}{rank} · {TO_DOWNLOAD}"
        return True, f"{short} · {method}{rank}{random}"

    def needs_settings(self) -> bool:
        """True when the settings themselves are incomplete (not merely weights still to download)."""
        ready, line = self.status()
        return not ready and not line.endswith(TO_DOWNLOAD)

    # --- memory estimate --------------------------------------------------------------------------
    def memory_text(self) -> str:
        """The estimate line shown ('' until the first estimate arrived)."""
        return self._estimate_text

    def _schedule_estimate(self) -> None:
        jobs.drop(self, "estimate")         # settings changed: an answer for the old ones is moot
        if not self._estimate_text:
            self._hold_room_for_the_estimate()
        self.memory_label.setText("Estimating…" if not self._estimate_text else self._estimate_text)
        self._debounce.start()

    def _hold_room_for_the_estimate(self) -> None:
        """Wait in the estimate's own shape: the page below must not jump (and a click miss) when it arrives."""
        self.memory_label.ensurePolished()      # the theme's "big" font, not the default one
        self.memory_label.setMinimumHeight(2 * self.memory_label.fontMetrics().lineSpacing())
        self.memory_detail.setText(
            f"Batch {self.batch_size.value()}: the activations, the weights, the gradients and the optimiser "
            f"state of these settings are being worked out. {CHANGE_HINT}")

    def _start_estimate(self) -> None:
        d = self.config_dict()
        kwargs = dict(backbone=d["backbone"], batch_size=d["batch_size"], image_size=d["image_size"],
                      method=d["method"], rank=d["rank"], checkpoint_blocks=d["checkpoint_blocks"],
                      low_precision_taps=d["low_precision_taps"], precision=d["precision"],
                      half_frozen_weights=d.get("half_frozen_weights", True), num_classes=self.num_classes)

        def estimate(_job: jobs.Job) -> tuple:
            from dtl_engine.sizing.memory_probe import estimate_memory
            return kwargs, estimate_memory(**kwargs)

        # The newest request wins: an earlier one still queued never starts, a running one's answer is dropped.
        jobs.submit(estimate, kind="estimate", what="The estimate", context=self, lane="estimate",
                    imports=("timm", "dtl_engine.data"), supersede="estimate", on_done=self._estimate_done,
                    on_error=lambda text, _d: self._estimate_failed(text))

    def _estimate_done(self, answer) -> None:
        kwargs, est = answer
        self.last_estimate = est
        method = METHODS[kwargs["method"]].label
        self._estimate_text = (f"{method}: ~{format_bytes(est.method.total_bytes)} · full fine-tuning would need "
                               f"~{format_bytes(est.full.total_bytes)}")
        self.memory_label.setText(self._estimate_text)
        m = est.method
        precision = getattr(est, "precision", kwargs["precision"])
        self.memory_detail.setText(
            f"Batch {kwargs['batch_size']}, {precision}: activations {format_bytes(m.activation_bytes)}, "
            f"weights {format_bytes(m.param_bytes)}, "
            f"gradients + optimiser {format_bytes(m.grad_bytes + m.optimizer_bytes)}. " + CHANGE_HINT)
        self.estimate_ready.emit(self._estimate_text)

    def _estimate_failed(self, text: str) -> None:
        self._estimate_text = ""
        if "memory_probe" in text or "No module" in text:
            self.memory_label.setText("No estimate available in this installation.")
        else:
            self.memory_label.setText("No estimate for these settings.")
        self.memory_detail.setText(text)

    # --- Fit to my GPU ------------------------------------------------------------------------------
    def fit_to_gpu(self) -> None:
        """Plan the backbone for the GPU's free memory (in the background), then apply the plan."""
        d = self.config_dict()
        key = (d["backbone"], d["method"], d["image_size"])
        probe, num_classes = self.gpu_fit.probe, self.num_classes

        def plan(_job: jobs.Job):
            gpu = probe()                   # the free memory now, not when the page opened
            if gpu is None:
                return key, None, None
            return key, gpu, plan_fit(d["backbone"], gpu.free_bytes, method=d["method"], image_size=d["image_size"],
                                      num_classes=num_classes, bf16=gpu.bf16, gpu=gpu)

        self.gpu_fit.show_busy()
        self._fit_job = jobs.submit(plan, kind="plan", what="Fitting to the GPU", context=self, lane="estimate",
                                    imports=("timm", "dtl_engine.data"), on_done=self._fit_done,
                                    on_error=lambda text, _d: self.gpu_fit.show_outcome(text, "error"))

    def _fit_done(self, answer) -> None:
        key, gpu, plan = answer
        self.gpu_fit.gpu = gpu
        if gpu is None:
            self.gpu_fit.set_gpu(None)
            self.gpu_fit.show_outcome("")
            return
        d = self.config_dict()
        if key != (d["backbone"], d["method"], d["image_size"]):
            self.gpu_fit.show_outcome("The backbone or method changed meanwhile: press Fit to my GPU again.", "warn")
            return
        self.last_plan = plan
        values = plan.recommended()
        if values is None:                  # nothing fits: the settings stay as they are
            self.gpu_fit.show_outcome(plan.summary() + " Your settings were left as they are.", "error")
            return
        if d["precision"] == "auto" and values["precision"] == ("bf16" if gpu.bf16 else "fp16"):
            values["precision"] = "auto"    # 'auto' already trains in that precision on this card
        self._loading = True
        try:
            changed = show_changes(self.bindings, values)
            before = d.get("half_frozen_weights", True)
            if values["half_frozen_weights"] != before:
                self._extra["half_frozen_weights"] = values["half_frozen_weights"]
                changed["half_frozen_weights"] = (before, values["half_frozen_weights"])
        finally:
            self._loading = False
        if changed:
            self.advanced.set_expanded(True)    # the changed settings are in view
        self._changed()
        self.gpu_fit.show_outcome(_fit_outcome(plan, changed), "ok" if plan.choice.fits_target else "warn")


def _fit_outcome(plan, changed: dict) -> str:
    """What the plan changed (or that nothing needed to) and its estimate, in two or three short sentences."""
    def shown(value) -> str:
        return ("on" if value else "off") if isinstance(value, bool) else str(value)

    c = plan.choice
    if changed:
        head = "Changed: " + "; ".join(f"{FIT_LABELS.get(f, f)} {shown(a)} → {shown(b)}"
                                       for f, (a, b) in changed.items()) + "."
    else:
        head = "Your settings already fit this GPU."
    text = (f"{head} Estimate: ~{format_bytes(c.batch_bytes)} at batch {c.batch_size}, "
            f"of {format_bytes(plan.usable_bytes)} usable.")
    if not c.fits_target and plan.smallest_card:
        text += f" Batch {plan.target_batch} would need {plan.smallest_card}."
    return text

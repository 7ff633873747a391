""""Why?": where the model looked, as a heatmap over the image, computed on demand in the background.

The engine's :func:`dtl_engine.inference.explain.explain_image` takes Grad-CAM through the run's trained
side network and classifier; :func:`dtl_engine.inference.explain.overlay` lays it over the photo. The
run's model is loaded once per run (in the job's lane, so one heatmap is worked out at a time)
and kept for the next image.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QFrame, QLabel, QSizePolicy, QVBoxLayout, QWidget

from app import jobs

SIDE = 220          # the heatmap's longest side on screen, in pixels (leaves the table room at 1000x680)


def pil_to_qimage(picture: Any) -> QImage:
    """An RGB PIL image as a QImage that owns its pixels (safe to make off the GUI thread)."""
    rgb = picture.convert("RGB")
    data = rgb.tobytes()
    return QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format.Format_RGB888).copy()


def heatmap_caption(result: Any, true_class: Any = None) -> str:
    """The one caption of a heatmap, wherever it is shown (rich text): the class it explains, how sure the
    model is, the true class when known, and how to read the colours (the engine's blue-to-red ramp)."""
    text = f"Where the model looked to say <b>{html.escape(str(result.class_name))}</b> " \
           f"({100 * result.probability:.0f} % sure)."
    if true_class is not None:
        text += f" True class: {html.escape(str(true_class))}."
    return text + " Red: what counted most; blue: what counted least."


def explain_in_background(cache: dict[str, Any], run_dir: str, image_path: str) -> tuple[Any, QImage]:
    """The heatmap of the run's best model for one image, and the photo with it laid over (a worker thread)."""
    from dtl_engine.inference.explain import explain_image, overlay
    from dtl_engine.runs.listing import load_run_model

    if cache.get("run_dir") != run_dir:
        model, classes = load_run_model(run_dir, which="best")
        cache.clear()
        cache.update(run_dir=run_dir, model=model, classes=classes)
    result = explain_image(cache["model"], cache["classes"], image_path)
    return result, pil_to_qimage(overlay(image_path, result.heatmap))


class WhyPanel(QFrame):
    """The heatmap of one image, with a line saying which class it explains."""

    explained = Signal(object)          # the engine's Explanation

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
        self.setFixedWidth(SIDE + 24)
        self.image_path: str | None = None
        self.result: Any = None
        self._cache: dict[str, Any] = {}        # the run's loaded model, reused for the next image
        self.title = QLabel("Why?")
        self.title.setStyleSheet("font-weight: 600;")
        self.title.setWordWrap(True)
        self.title.setFixedWidth(SIDE)          # word-wrapped labels get their height only at a fixed width
        self.picture = QLabel()
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.picture.setMinimumHeight(120)
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        self.caption.setTextFormat(Qt.TextFormat.RichText)
        self.caption.setFixedWidth(SIDE)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.picture)
        layout.addWidget(self.caption)
        layout.addStretch(1)

    def explain(self, run_dir: str, image_path: str) -> None:
        """Show the heatmap of ``image_path`` for the run's model (worked out in the background)."""
        self.image_path, self.result = str(image_path), None
        self.title.setText(f"Why? — {Path(image_path).name}")
        self.picture.clear()
        self.caption.setText("Working out where the model looked…")
        self.show()
        cache, path = self._cache, str(image_path)
        jobs.submit(lambda _job: explain_in_background(cache, str(run_dir), path), kind="explain",
                    what="The heatmap", context=self, lane="explain", imports=("timm", "dtl_engine.training"),
                    on_done=lambda out: self._show(path, *out), on_error=lambda m, _d: self._failed(path, m))

    def close_image(self) -> None:
        """Hide the panel; a heatmap still being worked out is not shown when it arrives."""
        self.image_path, self.result = None, None
        self.hide()

    def _show(self, path: str, result: Any, image: QImage) -> None:
        if path != self.image_path:
            return                      # the user moved on meanwhile
        self.result = result
        pixmap = QPixmap.fromImage(image)
        mode = (Qt.TransformationMode.FastTransformation if max(image.width(), image.height()) < SIDE // 2
                else Qt.TransformationMode.SmoothTransformation)      # tiny images stay crisp
        self.picture.setPixmap(pixmap.scaled(SIDE, SIDE, Qt.AspectRatioMode.KeepAspectRatio, mode))
        self.caption.setText(heatmap_caption(result))
        self.explained.emit(result)

    def _failed(self, path: str, message: str) -> None:
        if path == self.image_path:
            self.caption.setText(message.replace("&", "&amp;").replace("<", "&lt;"))

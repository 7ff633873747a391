""""Why?" for one image of the Results gallery: a Grad-CAM heatmap over the photo.

:func:`compute_heatmap` runs in a background job (see ``app.jobs``) through the one
heatmap routine of :mod:`app.widgets.why_panel` (the run's model loaded once per run, the
overlay returned as a QImage, safe off the GUI thread). :class:`WhyView` shows it beside
the gallery; the Export step's "Try it" uses :class:`~app.widgets.why_panel.WhyPanel`.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from app import jobs
from app.widgets.why_panel import explain_in_background, heatmap_caption

SIDE = 180          # the heatmap's on-screen size (longest side, pixels): fits the gallery on a small window
TEXT_WIDTH = 190


def compute_heatmap(job: jobs.Job, run_dir: str, image_path: str, cache: dict[str, Any]) -> tuple[Any, QImage]:
    """(Explanation, overlay QImage) of the run's best model for one image; ``cache`` keeps the model of one run."""
    if job.is_cancelled:
        return None, QImage()
    return explain_in_background(cache, run_dir, image_path)


class WhyView(QWidget):
    """The heatmap of one image and a sentence about it; hidden until asked for."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.picture = QLabel()
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.picture.setFixedSize(SIDE, SIDE)
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self.caption.setTextFormat(Qt.TextFormat.RichText)
        self.caption.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.caption.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        self.hide_button = QPushButton("Hide")
        self.hide_button.clicked.connect(self.hide)
        # Picture and words side by side: the gallery's height is what a small window lacks.
        text = QVBoxLayout()
        text.addWidget(self.caption, 1)
        text.addWidget(self.hide_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.picture, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(text)
        self.caption.setFixedWidth(TEXT_WIDTH)
        self.image: QImage | None = None
        self.setVisible(False)

    def waiting(self, record: dict) -> None:
        """Say that the heatmap of ``record``'s image is being computed."""
        self.image = None
        self.picture.clear()
        self.picture.setText("…")
        name = html.escape(Path(str(record.get("path", ""))).name)
        self.caption.setText(f"Finding where the model looked in {name}…")
        self.setVisible(True)

    def show_heatmap(self, record: dict, result: Any, image: QImage) -> None:
        """Show the overlay ``image`` and what it explains."""
        self.image = image
        pixmap = QPixmap.fromImage(image)
        small = image.width() < SIDE // 2 and image.height() < SIDE // 2
        # Tiny images grow without smoothing (their pixels stay visible); big ones shrink smoothly.
        mode = Qt.TransformationMode.FastTransformation if small else Qt.TransformationMode.SmoothTransformation
        self.picture.setPixmap(pixmap.scaled(SIDE, SIDE, Qt.AspectRatioMode.KeepAspectRatio, mode))
        self.caption.setText(heatmap_caption(result, record.get("true", "?")))
        self.setVisible(True)

    def failed(self, message: str) -> None:
        self.image = None
        self.picture.clear()
        self.caption.setText(html.escape(message))
        self.setVisible(True)

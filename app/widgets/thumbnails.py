"""Small upright thumbnails read off the GUI thread (QImage is safe there; QPixmap is not)."""
from __future__ import annotations

import os

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QImageReader

THUMB = 96


def read_thumbnail(path: str, side: int = THUMB) -> QImage:
    """A small upright (EXIF-aware) image, or a null QImage when unreadable."""
    if not os.path.isfile(path):        # missing, or a FIFO / device that would block the reader
        return QImage()
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)
    size = reader.size()
    if size.isValid() and size.width() > 0:
        reader.setScaledSize(size.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio))
    image = reader.read()
    if not image.isNull() and (image.width() < side // 2 or image.height() < side // 2):
        # Tiny images (e.g. 8x8 digits) are scaled up without smoothing to stay legible.
        image = image.scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio,
                             Qt.TransformationMode.FastTransformation)
    return image

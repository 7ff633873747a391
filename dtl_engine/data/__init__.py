"""Data: scan an image folder, split it, load images safely, build timm transforms, the sample data set."""
from __future__ import annotations

from .dataset import ImageDataset
from .images import check_image, load_image
from .sample import ensure_sample_dataset, sample_dataset_info
from .scan import ScanCancelled, ScanResult, SkippedFile, scan_folder
from .split import Split, make_split
from .transforms import AUGMENT_PRESETS, build_transform

__all__ = [
    "AUGMENT_PRESETS", "ImageDataset", "ScanCancelled", "ScanResult", "SkippedFile", "Split",
    "build_transform", "check_image", "ensure_sample_dataset", "load_image", "make_split",
    "sample_dataset_info", "scan_folder",
]

"""Data: scan an image folder, split it, load images safely, build timm transforms, the sample data set.

The dataset and transform names are loaded on first use, so scanning a folder
does not wait for torch and timm to import.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from dtl_engine.data.images import check_image, load_image
from dtl_engine.data.sample import ensure_sample_dataset, sample_dataset_info
from dtl_engine.data.scan import ScanCancelled, ScanResult, SkippedFile, scan_folder
from dtl_engine.data.split import Split, make_split

if TYPE_CHECKING:
    from dtl_engine.data.dataset import ImageDataset, collate_samples
    from dtl_engine.data.transforms import AUGMENT_PRESETS, build_transform

_LAZY = {"ImageDataset": ".dataset", "collate_samples": ".dataset",
         "build_transform": ".transforms", "AUGMENT_PRESETS": ".transforms"}

__all__ = [
    "AUGMENT_PRESETS", "ImageDataset", "ScanCancelled", "ScanResult", "SkippedFile", "Split",
    "build_transform", "check_image", "collate_samples", "ensure_sample_dataset", "load_image", "make_split",
    "sample_dataset_info", "scan_folder",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

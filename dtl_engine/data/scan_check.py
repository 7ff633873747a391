"""No second scan: a run reuses the scan the app has just made when the folder has not changed.

The scan records every usable image's stamp (size, modification and change time, see
:mod:`dtl_engine.data.file_stamps`), and the modification time
of every folder it listed; the check costs one ``stat`` per image and folder instead
of opening every file again. Anything different (a file changed, gone or added, a folder added, or
a scan of another folder) means a fresh scan.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dtl_engine.data.file_stamps import unchanged
from dtl_engine.data.scan import ScanResult, StopFn, scan_folder


def scan_still_valid(scan: ScanResult, root: str | os.PathLike[str]) -> bool:
    """True when ``scan`` is of ``root`` and every image in it still has its scanned stamp."""
    try:
        if Path(scan.root) != Path(root).expanduser().resolve():
            return False
    except OSError:
        return False
    if not scan.stamps or len(scan.stamps) != scan.num_images:
        return False                       # an old scan without stamps cannot be checked
    for path, stamp in scan.stamps.items():
        try:
            st = os.stat(path)
        except OSError:
            return False
        if not unchanged(stamp, st):
            return False
    return _folders_unchanged(scan)


def _folders_unchanged(scan: ScanResult) -> bool:
    """True when no folder the scan listed gained or lost an entry since (images or classes added).

    The scanned files' own stamps cannot tell: adding or removing a file or a folder changes
    the modification time of the folder that holds it.
    """
    if not scan.folder_stamps:
        return False                       # a scan from before folder times were recorded
    for folder, mtime in scan.folder_stamps.items():
        try:
            if os.stat(folder).st_mtime_ns != mtime:
                return False
        except OSError:
            return False
    return True


def scan_or_reuse(root: str | os.PathLike[str], scan: ScanResult | dict[str, Any] | None,
                  should_stop: StopFn | None = None) -> ScanResult:
    """``scan`` when it still describes ``root`` exactly (see :func:`scan_still_valid`), else a new scan."""
    if isinstance(scan, dict):
        scan = ScanResult.from_dict(scan)
    if scan is not None and scan_still_valid(scan, root):
        return scan
    return scan_folder(root, should_stop=should_stop)

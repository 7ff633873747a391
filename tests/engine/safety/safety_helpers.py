"""What the safety tests share: a run trained from a relative image folder, and checksums of a tree."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def checksums(root: Path) -> dict[str, str]:
    """SHA-256 of every file below ``root``, and the kind of everything else (a FIFO stays a FIFO)."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link -> " + os.readlink(p)
        elif p.is_fifo():
            out[rel] = "fifo"
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "folder"
    return out

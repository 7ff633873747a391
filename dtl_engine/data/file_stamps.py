"""What the engine remembers of an image file, to tell later whether it is still the same file.

A stamp is (size, modification time, inode change time), the times in ns. The modification time can be
set back by anyone (``os.utime``, ``touch -d``, a copy tool that keeps times); the inode change time
cannot: every write moves it, and so does setting the modification time. A photo whose content was
swapped at the same byte size with its modification time restored is therefore still seen as changed.
Stamps saved before the change time was kept have two numbers and are compared on those two.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import Any

from dtl_engine.fileio import NOT_REGULAR

Stamp = tuple[int, ...]


def stamp_of(st: os.stat_result) -> Stamp:
    """The stamp of a file from its ``os.stat`` result."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def unchanged(saved: Sequence[int], st: os.stat_result) -> bool:
    """True when the file ``st`` describes still has the stamp ``saved`` (two or three numbers)."""
    return tuple(int(v) for v in saved) == stamp_of(st)[:len(saved)]


def cache_key(st: os.stat_result) -> str:
    """The part of a cache key that changes whenever the file's content may have (decoded images, features)."""
    return "\0".join(str(v) for v in stamp_of(st))


def check_split_files(samples: Sequence[tuple[str, int]], stamps: dict[str, Stamp]
                      ) -> tuple[list[tuple[str, int]], list[dict[str, Any]]]:
    """Split ``samples`` into those still on disk as they were and ``{path, reason}`` of the others.

    ``stamps`` holds each file's stamp when the run was made; a file without one (runs made by older
    versions) is only checked for being there.
    """
    kept: list[tuple[str, int]] = []
    gone: list[dict[str, Any]] = []
    for path, label in samples:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            gone.append({"path": path, "reason": "the file no longer exists"})
            continue
        except OSError as exc:
            gone.append({"path": path, "reason": f"the file cannot be read ({exc.strerror or exc})"})
            continue
        if not stat.S_ISREG(st.st_mode):
            gone.append({"path": path, "reason": NOT_REGULAR})
            continue
        stamp = stamps.get(path)
        if stamp is not None and not unchanged(stamp, st):
            gone.append({"path": path, "reason": "the file changed since the run was trained"})
            continue
        kept.append((path, label))
    return kept, gone

"""A run's lock: the ``.lock`` file a process holds while it writes the run (pid, start time, host, token).

It is created with ``O_EXCL``, so a second writer is refused at once. A lock whose process is gone
(same host, pid dead or reused) is stale and is taken over; one held from another host is taken
over only when asked (``--break-lock``: that machine is known to be down).
"""
from __future__ import annotations

import json
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtl_engine import fileio
from dtl_engine.errors import RunError
from dtl_engine.runs.folder import LOCK, RunFolder, now_iso, process_alive, process_identity


def lock_run(folder: RunFolder, break_lock: bool = False) -> "RunLock":
    """Take the run's lock, or raise :class:`RunError` naming the process that holds it.

    ``break_lock`` takes over a lock held from another host (which cannot be checked from here).
    """
    return RunLock.acquire(folder.path / LOCK, folder.name, break_lock)


@dataclass
class RunLock:
    """An exclusive lock file; :meth:`release` removes it (only if it is still this lock)."""

    path: Path
    token: str
    content: bytes = b""            # what this process wrote into the lock file
    released: bool = field(default=False)

    @classmethod
    def acquire(cls, path: Path, run_name: str, break_lock: bool = False) -> "RunLock":
        token = secrets.token_hex(8)
        mine = json.dumps({**process_identity(), "token": token, "since": now_iso()}).encode("utf-8")
        for _ in range(5):
            if fileio.create_exclusive(path, mine):
                return cls(path, token, mine)
            holder = _read_lock(path)
            if holder is None:
                continue                        # it vanished (released) or is being written: try again
            elsewhere = holder.get("host") not in (None, socket.gethostname())
            if elsewhere and not break_lock:
                raise RunError(f"The run folder '{run_name}' is locked by a training process on {holder['host']} "
                               f"(pid {holder.get('pid')}; lock file {path}). If that machine is down, run the "
                               "same command again with --break-lock.")
            if not elsewhere and process_alive(holder.get("pid"), holder.get("pid_started"), holder.get("host")):
                raise RunError(f"The run folder '{run_name}' is in use by another training process "
                               f"(pid {holder.get('pid')}); wait until it ends or stop it first.")
            _break_stale(path, holder)
        raise RunError(f"The run folder '{run_name}' could not be locked; try again.")

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        holder = _read_lock(self.path)
        if holder is not None and holder.get("token") == self.token:
            fileio.remove_signed(self.path, self.content)       # this very lock, nothing else

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        data = fileio.read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # Empty or torn: a writer between create and write, or one killed there. Old enough = stale.
        try:
            if time.time() - path.stat().st_mtime > 10:
                return {"pid": None}
        except OSError:
            pass
        return None
    return data if isinstance(data, dict) else {"pid": None}


def _break_stale(path: Path, holder: dict[str, Any]) -> None:
    """Move a dead process's lock away; if another process replaced it meanwhile, put theirs back."""
    aside = path.with_name(f"{path.name}.stale-{secrets.token_hex(4)}")
    try:
        fileio.move(path, aside)
    except FileNotFoundError:
        return
    try:
        content = fileio.read_bytes(aside)
    except OSError:
        return
    moved = _read_lock(aside)
    if moved is not None and moved.get("token") != holder.get("token"):
        try:
            fileio.move(aside, path)            # a live lock taken away by mistake: restore it (never overwrites)
            return
        except OSError:
            pass
    fileio.remove_signed(aside, content)

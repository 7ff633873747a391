"""Claiming a run folder for writing: a new run (a fresh folder, an empty one, or one whose run it
replaces with ``--overwrite``) or an existing run to resume.

A claim holds the run's lock (:mod:`dtl_engine.runs.lock`) until it is released. A run being
replaced is set aside in the folder and comes back whole unless the new run commits an epoch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dtl_engine import fileio
from dtl_engine.errors import RunError
from dtl_engine.runs.folder import RUN_FILE, RunFolder, drop_set_aside, effective_status, new_run_dir
from dtl_engine.runs.lock import RunLock, lock_run


def overlap_reason(run_dir: Path, data_dir: Path) -> str | None:
    """Why ``run_dir`` cannot hold a run trained on ``data_dir`` (inside, equal to, or containing it)."""
    run, data = run_dir.expanduser().resolve(), data_dir.expanduser().resolve()
    if run == data:
        return "The run folder must not be the image folder itself: DTL Studio never writes into your data."
    if data in run.parents:
        return "The run folder must not be inside the image folder: DTL Studio never writes into your data."
    if run in data.parents:
        return ("The run folder must not contain the image folder: a run folder is the engine's to replace, "
                "and your images must never be at risk.")
    return None


@dataclass
class Claim:
    """A run folder held by this process for writing; :meth:`release` gives it back."""

    folder: RunFolder
    lock: RunLock
    created: bool               # this process made the folder itself
    replaced: Path | None = None        # the run this one replaces, set aside until this one trains

    def keep_replacement(self) -> None:
        """The new run committed an epoch: the run it replaces is deleted for good."""
        if self.replaced is not None:
            drop_set_aside(self.replaced)
            self.replaced = None

    def release(self) -> None:
        """Give the folder back; temporary files older than this run's last commit (a killed writer's) go first.

        A run this one was to replace comes back unless :meth:`keep_replacement` was called (the new
        run committed an epoch): a stop, a divergence or a crash before that never loses it.
        """
        try:
            if self.replaced is not None and not self.lock.released:
                self.folder.put_back(self.replaced)     # a failure here leaves it set aside, never deleted
                self.replaced = None
            if not self.lock.released:
                self.folder.remove_leftovers()
        except OSError:
            pass
        finally:
            self.lock.release()

    def discard(self) -> None:
        """Remove what this run wrote (a refused input leaves no run behind), then the folder if it made it.

        A run it was to replace is put back as it was.
        """
        if self.replaced is not None:
            self.folder.put_back(self.replaced)
            self.replaced = None
        else:
            self.folder.remove_run_files()
        self.lock.release()
        if self.created:
            fileio.remove_empty_folder(self.folder.path)   # only when empty: nothing of anyone else's is removed


def claim_new(run_dir: str | os.PathLike[str] | None, data_dir: str | os.PathLike[str] | None,
              backbone: str, method: str, overwrite: bool = False, image_size: int | None = None,
              break_lock: bool = False) -> Claim:
    """Claim a folder for a new run: a fresh unique one, or ``run_dir`` when it is empty (or ``overwrite``).

    Refuses (with :class:`RunError`) a folder inside, equal to or containing the image folder, a
    non-empty folder without ``overwrite``, and a folder another process is writing.
    """
    if run_dir is None:
        path = new_run_dir(backbone, method, image_size=image_size)
        folder = RunFolder(path)
        return Claim(folder, lock_run(folder, break_lock), created=True)
    path = Path(run_dir).expanduser()
    if data_dir:
        reason = overlap_reason(path, Path(data_dir))
        if reason:
            raise RunError(reason)
    if path.exists() and not path.is_dir():
        raise RunError(f"'{path}' is a file; give a folder for the run.")
    folder = RunFolder(path)
    if not overwrite and not folder.is_empty():
        raise RunError(f"The folder '{path}' already exists and is not empty; choose a new folder, "
                       "or allow replacing the run in it (--overwrite).")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"Cannot create the run folder '{path}': {exc.strerror or exc}.") from exc
    lock = lock_run(folder, break_lock)
    replaced = None
    try:
        folder.recover_replaced()   # a replacement killed before its first epoch: the earlier run is this folder's
        if not folder.is_empty():
            if not overwrite:       # another run got here between the check and the lock
                raise RunError(f"The folder '{path}' already exists and is not empty; choose a new folder, "
                               "or allow replacing the run in it (--overwrite).")
            if not folder.has_run_file():
                raise RunError(f"The folder '{path}' holds files but no run ({RUN_FILE} is missing); --overwrite "
                               "replaces only a run. Choose a new or empty folder.")
            if folder.has_run_file() and _running_elsewhere(folder):
                raise RunError(f"The run in '{path.name}' is still training; stop it before replacing it.")
            replaced = folder.set_aside_run_files()     # deleted once the new run trains, else put back
    except BaseException:
        lock.release()
        raise
    return Claim(folder, lock, created, replaced)


def claim_existing(run_dir: str | os.PathLike[str], break_lock: bool = False) -> Claim:
    """Claim an existing run folder (to resume it); refuses one that another process is writing."""
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise RunError(f"There is no run folder at '{path}'.")
    folder = RunFolder(path)
    if not folder.has_run_file() and not folder.set_aside_by_others():
        raise RunError(f"'{path}' is not a run folder ({RUN_FILE} is missing); nothing in it was touched.")
    lock = lock_run(folder, break_lock)
    try:
        if folder.has_run_file() and _running_elsewhere(folder):
            raise RunError(f"The run '{path.name}' is still running in another window or process.")
        if folder.recover_replaced() is not None:
            raise RunError(f"The run in '{path}' was being replaced (--overwrite) by a run that ended before it "
                           "finished its first epoch; the earlier run is back as it was. Check it, then resume "
                           "or replace it again.")
        folder.remove_leftovers()
    except BaseException:
        lock.release()
        raise
    return Claim(folder, lock, created=False)


def _running_elsewhere(folder: RunFolder) -> bool:
    try:
        run = folder.read_run()
    except RunError:
        return False
    return effective_status(run) == "running"

"""The run folder: the only module that knows its layout. Everything else uses :class:`RunFolder`.

A run folder holds::

    run.json                 status, dates, progress, the owning process (schema version inside)
    config.json              the TrainConfig
    classes.json             class names, index = model output
    split.json               the train / val / test samples, plus size and time of each file
    spec.json                how to rebuild the model (backbone, method, sizes)
    checkpoint.safetensors   last trainable weights (side network + head)
    best.safetensors         trainable weights of the best epoch
    state.pt                 the resume point: its rename commits an epoch
    metrics.json             one record per finished epoch
    report.json              the final evaluation
    autotune.json            the automatic search: chosen learning rate and augmentation, its curve
    events.jsonl             the live event log, one JSON line per event
    doctor.csv               the findings of a data check, when one was made
    .lock                    held while a process writes the run: pid, start time and host
    .cache-XXXX/             the engine's own feature-cache spill folder, marked by .dtl-cache
    .replaced-XXXX/          the run being replaced (--overwrite), kept until the new run commits an epoch, marked

Every write is atomic (:mod:`dtl_engine.fileio`). Every read turns a missing, damaged or
non-regular file into a :class:`RunError` that names the file and the run.

Claiming: a process writes a run only while it holds the run's lock (:mod:`dtl_engine.runs.lock`);
how a folder is claimed for a new run or a resumed one is :mod:`dtl_engine.runs.claim`.
"""
from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dtl_engine import fileio
from dtl_engine.errors import RunError
from dtl_engine.paths import runs_dir

SCHEMA_VERSION = 1          # of run.json and the files beside it; bumped on an incompatible change

RUN_FILE = "run.json"
CONFIG = "config.json"
CLASSES = "classes.json"
SPLIT = "split.json"
SPEC = "spec.json"
LAST_WEIGHTS = "checkpoint.safetensors"
BEST_WEIGHTS = "best.safetensors"
STATE = "state.pt"
METRICS = "metrics.json"
REPORT = "report.json"
EVENT_LOG = "events.jsonl"          # one JSON line per event, appended while the run trains
DOCTOR_CSV = "doctor.csv"           # the findings of a data check (``doctor``)
SEARCH = "autotune.json"            # the automatic learning-rate / augmentation search and its curve
LOCK = ".lock"
CACHE_PREFIX = ".cache-"
CACHE_MARK = ".dtl-cache"
REPLACED_PREFIX = ".replaced-"

# Everything a run writes, in the order a new run writes it (used to replace or discard a run).
RUN_FILES = (RUN_FILE, CONFIG, CLASSES, SPLIT, SPEC, LAST_WEIGHTS, BEST_WEIGHTS, METRICS, STATE, REPORT, EVENT_LOG)
# What a run has only sometimes (the automatic search's record; a later data check's findings);
# replaced or discarded with the run all the same.
CHECK_FILES = (SEARCH, DOCTOR_CSV)
STATUSES = ("running", "finished", "stopped", "failed", "interrupted")
fileio.recognise_run_folders_by(RUN_FILE)      # the write guard keeps user outputs out of run folders

_CREATED_CACHES: set[str] = set()       # cache folders this process made (the only ones close() may delete)
_SET_ASIDE: set[str] = set()            # replaced runs this process set aside and may still put back


def now_iso() -> str:
    """The current UTC time, to the second, as ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- processes ------------------------------------------------------------------------------

process_identity = fileio.process_identity      # the owner of a lock, a run, a set-aside run
process_alive = fileio.process_alive


# --- the folder -------------------------------------------------------------------------------

class RunFolder:
    """Typed access to the files of one run folder."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def name(self) -> str:
        return self.path.name

    def __fspath__(self) -> str:
        return str(self.path)

    # ---- paths of the binary files (written by training.checkpoint) ----
    @property
    def last_weights(self) -> Path:
        return self.path / LAST_WEIGHTS

    @property
    def best_weights(self) -> Path:
        return self.path / BEST_WEIGHTS

    @property
    def state_file(self) -> Path:
        return self.path / STATE

    def weights(self, which: str) -> Path:
        """The ``best`` weights (the last ones when no epoch was validated yet) or the ``last`` ones."""
        if which not in ("best", "last"):
            raise RunError(f"Choose the 'best' or the 'last' weights of a run, not '{which}'.")
        if which == "best" and self.best_weights.exists():
            return self.best_weights
        return self.last_weights

    # ---- what exists ----
    def has_run_file(self) -> bool:
        return (self.path / RUN_FILE).exists()

    def has_state(self) -> bool:
        return self.state_file.exists()

    def has_spec(self) -> bool:
        return (self.path / SPEC).exists()

    def has_weights(self) -> bool:
        return self.best_weights.exists() or self.last_weights.exists()

    def has_metrics(self) -> bool:
        return (self.path / METRICS).exists()

    def has_report(self) -> bool:
        return (self.path / REPORT).exists()

    def is_empty(self) -> bool:
        """True when the folder does not exist or holds nothing but a lock."""
        try:
            return all(e.name == LOCK for e in os.scandir(self.path))
        except FileNotFoundError:
            return True

    def commit_time(self) -> float:
        """The time of the newest committed file (leftover temporary files older than it are dead)."""
        return fileio.newest_mtime([self.path / n for n in RUN_FILES])

    # ---- JSON files ----
    def _read(self, name: str, kind: type | tuple[type, ...]) -> Any:
        path = self.path / name
        try:
            value = fileio.read_json(path)
        except FileNotFoundError:
            raise RunError(f"'{self.name}' is not a complete run folder: {name} is missing.") from None
        except fileio.NotRegularFileError:
            raise RunError(f"The file {name} of the run '{self.name}' is {fileio.NOT_REGULAR}.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunError(f"The file {name} of the run '{self.name}' is damaged and cannot be read ({exc}).") from exc
        if not isinstance(value, kind):
            raise RunError(f"The file {name} of the run '{self.name}' is damaged (unexpected content).")
        return value

    def _write(self, name: str, value: Any) -> None:
        fileio.atomic_write_json(self.path / name, value)

    def read_config(self) -> dict[str, Any]:
        return self._read(CONFIG, dict)

    def data_folder(self) -> Path | None:
        """The real path of the image folder the run trained on (None when it records none).

        Runs record it as an absolute path. An older run recorded it as given (perhaps relative to
        the folder the command ran in): it is resolved against the current folder only when the
        run's recorded images are found there, else refused, so that nothing is written into an
        image folder the engine cannot locate.
        """
        data_dir = self.read_config().get("data_dir")
        if not data_dir:
            return None
        path = Path(str(data_dir)).expanduser()
        if path.is_absolute():
            return fileio.real_path(path)
        files = [str(p) for p in (self._read(SPLIT, dict).get("files") or {})] if (self.path / SPLIT).exists() else []
        if path.is_dir() and (not files or all(Path(f).exists() for f in files[:5])):
            return fileio.real_path(path)
        raise RunError(f"The run '{self.name}' recorded its image folder only as '{data_dir}' (relative to the "
                       "folder it was trained from); run this command from that folder, so that nothing is "
                       "written into the images.")

    def write_config(self, config: dict[str, Any]) -> None:
        self._write(CONFIG, config)

    def read_classes(self) -> list[str]:
        classes = self._read(CLASSES, list)
        if not classes or not all(isinstance(c, str) for c in classes):
            raise RunError(f"The file {CLASSES} of the run '{self.name}' is damaged (unexpected content).")
        return classes

    def write_classes(self, classes: list[str]) -> None:
        self._write(CLASSES, list(classes))

    def read_split(self) -> dict[str, Any]:
        """The split as :meth:`dtl_engine.data.Split.to_dict` wrote it."""
        data = dict(self._read(SPLIT, dict))
        data.pop("files", None)
        return data

    def write_split(self, split: dict[str, Any]) -> None:
        """Write the split with each file's stamp as it is now, to detect later changes (see data.file_stamps)."""
        from dtl_engine.data.file_stamps import stamp_of

        files: dict[str, list[int]] = {}
        for part in ("train", "val", "test"):
            for path, _label in split.get(part, []):
                try:
                    files[str(path)] = list(stamp_of(os.stat(path)))
                except OSError:
                    continue
        self._write(SPLIT, {**split, "files": files})

    def read_file_stamps(self) -> dict[str, tuple[int, ...]]:
        """The stamp of each split file when the run was made: (size, mtime, ctime) in ns, or (size, mtime) for
        runs made before the change time was kept ({} for older runs still)."""
        files = self._read(SPLIT, dict).get("files") or {}
        return {str(p): tuple(int(x) for x in v) for p, v in files.items()
                if isinstance(v, list) and len(v) in (2, 3) and all(isinstance(x, int) for x in v)}

    def read_spec(self) -> dict[str, Any]:
        return self._read(SPEC, dict)

    def write_spec(self, spec: dict[str, Any]) -> None:
        self._write(SPEC, spec)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The per-epoch records ([] when no epoch finished yet)."""
        if not self.has_metrics():
            return []
        data = self._read(METRICS, (list, dict))
        if isinstance(data, dict):              # an early format: {"epochs": [...], "steps": [...]}
            data = data.get("epochs") or data.get("history") or []
        if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
            raise RunError(f"The file {METRICS} of the run '{self.name}' is damaged (unexpected content).")
        return data

    def write_metrics(self, metrics: list[dict[str, Any]]) -> None:
        self._write(METRICS, metrics)

    def read_report(self) -> dict[str, Any] | None:
        """The saved final evaluation, or None when there is none yet."""
        if not self.has_report():
            return None
        return self._read(REPORT, dict)

    def write_report(self, report: dict[str, Any]) -> None:
        self._write(REPORT, report)

    # ---- run.json ----
    def read_search(self) -> dict[str, Any] | None:
        """The automatic search's record, or None when the run did not search (or it is unreadable)."""
        if not (self.path / SEARCH).is_file():
            return None
        try:
            return self._read(SEARCH, dict)
        except RunError:
            return None

    def write_search(self, record: dict[str, Any]) -> None:
        self._write(SEARCH, record)

    def read_run(self) -> dict[str, Any]:
        run = self._read(RUN_FILE, dict)
        if int(run.get("schema", 1)) > SCHEMA_VERSION:
            raise RunError(f"The run '{self.name}' was made by a newer version of DTL Studio; update to open it.")
        return run

    def update_run(self, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into run.json (atomically); a change of status to running stamps this process."""
        run = self.read_run() if self.has_run_file() else {"schema": SCHEMA_VERSION, "created": now_iso()}
        run.update(changes)
        if changes.get("status") == "running":
            run.update(process_identity())
        run["updated"] = now_iso()
        self._write(RUN_FILE, run)
        return run

    def status(self) -> str:
        """run.json's status, with a 'running' run whose process is gone reported as 'interrupted'."""
        return effective_status(self.read_run())

    def resume_problem(self) -> str | None:
        """Why this run cannot continue from where it was (None when it can).

        A run that trained nothing yet may start over (nothing is lost); one that trained
        must have its model description and resume state, else resuming would silently
        start again and overwrite its weights.
        """
        run = self.read_run()
        if effective_status(run) == "finished":
            return (f"The run '{self.name}' has already finished; evaluate or export it, "
                    "or start a new run to train again.")
        # Progress counts once an epoch was committed (recorded after its resume state). Before that, a
        # stop or a crash inside the first epoch leaves nothing that starting over would lose.
        trained = int(run.get("epochs_done", 0) or 0) > 0
        missing = [name for name, present in ((SPEC, self.has_spec()), (STATE, self.has_state())) if not present]
        if not trained or not missing:
            return None
        what = " and ".join(missing)
        still = (f"Its trained weights ({BEST_WEIGHTS if self.best_weights.exists() else LAST_WEIGHTS}) "
                 "can still be evaluated and exported." if self.has_weights() and SPEC not in missing
                 else "Start a new run to train again.")
        return (f"The run '{self.name}' cannot be resumed: {what} {'is' if len(missing) == 1 else 'are'} "
                f"missing from its folder, so training would have to start over. {still}")

    # ---- claiming ----
    def remove_leftovers(self) -> list[Path]:
        """Remove temporary files and cache folders a killed writer left (call while holding the lock)."""
        # Older than the newest committed file, or older than a minute: no live writer is behind them.
        if not self.has_run_file():
            return []               # not (yet) a run folder: nothing in it is provably the engine's
        removed = fileio.remove_leftovers(self.path, (*RUN_FILES, *CHECK_FILES),
                                          older_than=max(self.commit_time(), time.time() - 60))
        for entry in self.path.glob(CACHE_PREFIX + "*"):
            if str(entry) not in _CREATED_CACHES and fileio.remove_marked_folder(entry, CACHE_MARK):
                removed.append(entry)
        # A replaced run set aside by a killed process is never removed here: see recover_replaced().
        return removed

    def set_aside_by_others(self) -> list[Path]:
        """Runs set aside (--overwrite) by a process that is gone: marked folders this process did not make."""
        return sorted(e for e in self.path.glob(REPLACED_PREFIX + "*")
                      if e.is_dir() and (e / CACHE_MARK).is_file() and str(e) not in _SET_ASIDE)

    def recover_replaced(self) -> Path | None:
        """Put back a run whose replacement was killed before it finished an epoch (call while holding the lock).

        The replacement stood only once it committed an epoch; before that, the run it replaced
        is the run of this folder and comes back whole. Returns the folder it came back from.
        """
        for aside in self.set_aside_by_others():
            try:
                trained = int(self.read_run().get("epochs_done", 0) or 0) > 0 if self.has_run_file() else False
            except (RunError, ValueError, TypeError):
                trained = False
            if trained:             # killed between its first commit and dropping the old run: it stood
                _SET_ASIDE.add(str(aside))
                drop_set_aside(aside)
                continue
            _SET_ASIDE.add(str(aside))
            self.put_back(aside)
            return aside
        return None

    def remove_run_files(self) -> None:
        """Delete the run's own files (and the engine's caches): used to replace or discard a run."""
        self.remove_leftovers()
        fileio.remove_named_files(self.path, (*CHECK_FILES, *reversed(RUN_FILES)))    # run.json, the marker, last

    def new_cache_dir(self) -> Path:
        """A fresh, uniquely named, marked cache folder inside the run (see :func:`new_cache_dir`)."""
        return new_cache_dir(self.path)

    def set_aside_run_files(self) -> Path | None:
        """Move the run's own files into a new hidden, marked folder in it (None when there were none).

        A run being replaced is kept there until its successor commits an epoch
        (:meth:`dtl_engine.runs.claim.Claim.keep_replacement`); a refusal, a stop or a crash before
        that puts it back whole.
        """
        names = [n for n in (*RUN_FILES, *CHECK_FILES) if os.path.lexists(self.path / n)]
        aside = None
        if names:
            aside = fileio.make_marked_folder(self.path, REPLACED_PREFIX, CACHE_MARK)
            _SET_ASIDE.add(str(aside))
            for name in sorted(names, key=lambda n: n == RUN_FILE):    # run.json, the marker, last
                fileio.move(self.path / name, aside / name)
        self.remove_leftovers()
        return aside

    def put_back(self, aside: Path) -> None:
        """Return the files :meth:`set_aside_run_files` moved to ``aside`` (the run's own are removed first)."""
        self.remove_run_files()
        for entry in sorted(os.scandir(aside), key=lambda e: e.name == RUN_FILE):   # the marker last
            if entry.name != CACHE_MARK:
                fileio.move(entry.path, self.path / entry.name)
        drop_set_aside(aside)


def effective_status(run: dict[str, Any]) -> str:
    """``run.json``'s status, with a dead 'running' run reported as 'interrupted'."""
    status = run.get("status", "interrupted")
    if status == "running" and not process_alive(run.get("pid"), run.get("pid_started"), run.get("host")):
        return "interrupted"
    return status if status in STATUSES else "interrupted"


# --- new folders and caches -------------------------------------------------------------------------

def new_run_dir(backbone: str, method: str, root: str | os.PathLike[str] | None = None,
                image_size: int | None = None) -> Path:
    """Create a fresh, uniquely named run folder: ``<UTC timestamp>_<backbone>_<method>``.

    With ``image_size``, the name says the size the run trains at: ``vit_tiny_patch16_224`` at
    96 px is named ``vit_tiny_patch16_96`` (a name without a size gets ``_96px``).
    """
    root = Path(root) if root is not None else runs_dir()
    short = re.sub(r"[^A-Za-z0-9_.-]+", "-", backbone.split("/")[-1].split(".")[0])
    if image_size:
        sized = re.sub(r"_\d+$", f"_{int(image_size)}", short)
        short = sized if sized != short or short.endswith(f"_{int(image_size)}") else f"{short}_{int(image_size)}px"
    short = short[:40]
    stem = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}_{short}_{method.replace('+', 'plus')}"
    for n in range(1000):
        path = root / (stem if n == 0 else f"{stem}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise RunError(f"Cannot create a new run folder in {root}.")


def new_cache_dir(parent: str | os.PathLike[str]) -> Path:
    """Create a uniquely named cache folder in ``parent``, marked as the engine's own."""
    path = fileio.make_marked_folder(parent, CACHE_PREFIX, CACHE_MARK)
    _CREATED_CACHES.add(str(path))
    return path


def drop_set_aside(aside: str | os.PathLike[str]) -> None:
    """Delete a replaced run set aside by this process (its successor trains: the replacement stands)."""
    if str(aside) in _SET_ASIDE:
        fileio.remove_marked_folder(aside, CACHE_MARK)
        _SET_ASIDE.discard(str(aside))


def remove_cache_dir(path: str | os.PathLike[str]) -> bool:
    """Delete a cache folder made by :func:`new_cache_dir` in this process; anything else is left alone."""
    path = Path(path)
    if str(path) not in _CREATED_CACHES or not fileio.remove_marked_folder(path, CACHE_MARK):
        return False
    _CREATED_CACHES.discard(str(path))
    return True

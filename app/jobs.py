"""The app's one way to run work off the GUI thread.

Every background job — scan, sample data, estimate, backbone facts, train,
evaluate, export + verify, predict, thumbnails — goes through :func:`submit`.
A job runs ``fn(job)`` on the one thread pool; ``fn`` may call
``job.report(value)`` for progress and check ``job.cancelled`` to stop early.
Its answer comes back on the GUI thread as exactly one of ``succeeded``,
``failed`` (a sentence + details) or ``cancelled``, then ``ended``.

Long jobs that may run for minutes (training) ask for ``low_priority``: they run
on threads below the GUI's priority, kept apart from the others' threads because
an operating system does not let a thread raise its priority again.

The pool keeps every job (and the Qt object its signals live on) referenced
until its thread has finished, so no widget going away can delete a signal
source under a running thread. Jobs in the same *lane* run one after another
(the estimate and the backbone facts each keep to one core). The main window
asks before closing about jobs that lose work (training), cancels the rest and
waits for all of them (:func:`active_jobs`, :func:`cancel_all`, :func:`wait_all`).
"""
from __future__ import annotations

import importlib
import os
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any, Callable

import shiboken6
from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal

from dtl_engine.errors import DTLError

MAX_THREADS = 6                     # a scan + a few short jobs; lanes keep each kind to one thread
MAX_LOW_PRIORITY_THREADS = 2        # training (one run at a time) and room for one more
ENDED_KEPT = 64                     # ended jobs kept referenced (each is small) before they may be freed
_IMPORT_LOCK = threading.Lock()


def ensure_heavy_imports(*modules: str) -> None:
    """Import heavy modules (default: timm, which loads torch) one thread at a time.

    Two threads importing timm at the same moment can see a half-initialised module
    ("partially initialized module 'timm.models'"); jobs that need it call this first.
    """
    with _IMPORT_LOCK:
        for name in modules or ("timm", "dtl_engine.data"):
            importlib.import_module(name)


def describe_error(exc: BaseException, what: str = "The run") -> tuple[str, str]:
    """A sentence for a person plus the traceback for the "details" section."""
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, DTLError):
        return str(exc), details
    if isinstance(exc, MemoryError):
        return f"{what} ran out of memory. Try a smaller batch size or image size.", details
    text = str(exc).strip() or type(exc).__name__
    return f"{what} failed unexpectedly: {text}", details


def lower_thread_priority() -> None:
    """Run the calling (background) thread below the GUI thread's priority.

    On a busy CPU the window then still gets its share first: event-loop gaps
    stay short, while background work loses nothing on an idle machine. Linux
    applies niceness per thread (Qt's thread priorities do not map to it there).
    """
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
    else:
        QThread.currentThread().setPriority(QThread.Priority.LowPriority)


class Job(QObject):
    """One background job: its signals, its cancel flag and its end.

    ``kind`` names it ("scan", "train", "export", …); ``loses_work`` marks a job
    whose cancelling throws work away (the window asks before closing on it).
    """

    progress = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str, str)       # sentence, details
    cancelled = Signal()
    ended = Signal()                # always last, after one of the three above

    def __init__(self, kind: str, what: str, loses_work: bool = False,
                 on_cancel: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.kind, self.what, self.loses_work = kind, what, loses_work
        self.keep: Any = None                   # an object that must live as long as the job (e.g. its signals)
        self.runnable: Any = None               # its QRunnable, owned here (see _Runnable)
        self._on_cancel = on_cancel
        self._cancel = threading.Event()
        self._done = threading.Event()

    @property
    def is_cancelled(self) -> bool:
        """True once :meth:`cancel` was called (safe from any thread)."""
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the job to stop; its result, if it still comes, is reported as ``cancelled``."""
        self._cancel.set()
        if self._on_cancel is not None:
            self._on_cancel()

    def report(self, value: Any) -> None:
        """Progress from the worker thread (arrives as ``progress`` on the GUI thread)."""
        self.progress.emit(value)

    def is_done(self) -> bool:
        """True once the worker has returned (or the job was dropped before it started)."""
        return self._done.is_set()

    def wait(self, timeout_ms: int) -> bool:
        """Block up to ``timeout_ms`` for the worker to return; True when it has."""
        return self._done.wait(max(0, timeout_ms) / 1000.0)


def _released(_job: Job) -> None:
    raise RuntimeError("this job has already run")


class _Runnable(QRunnable):
    def __init__(self, job: Job, fn: Callable[[Job], Any], imports: tuple[str, ...], low_priority: bool) -> None:
        super().__init__()
        # Python owns the runnable and frees it only long after run() returned (see _Jobs.ended):
        # a wrapper collected while its thread still ran it crashed the interpreter in the GC.
        self.setAutoDelete(False)
        self._job, self._fn, self._imports, self.low_priority = job, fn, imports, low_priority

    def release(self) -> None:
        """Drop the function (GUI thread, once the job has ended); the runnable itself stays referenced."""
        self._fn = _released

    def run(self) -> None:
        job = self._job
        if self.low_priority:
            lower_thread_priority()     # this pool's threads only ever run low-priority jobs
        try:
            if job.is_cancelled:
                job.cancelled.emit()
                return
            try:
                if self._imports:
                    ensure_heavy_imports(*self._imports)
                result = self._fn(job)
            except BaseException as exc:  # every failure must reach the user as a sentence
                if job.is_cancelled:
                    job.cancelled.emit()
                else:
                    job.failed.emit(*describe_error(exc, job.what))
            else:
                if job.is_cancelled:
                    job.cancelled.emit()
                else:
                    job.succeeded.emit(result)
        finally:
            job._done.set()
            job.ended.emit()        # the last thing this thread does with the job


class _Jobs:
    """The pool, the live jobs and the lanes (one instance per process, on the GUI thread)."""

    def __init__(self) -> None:
        self.pool = QThreadPool()
        self.pool.setMaxThreadCount(MAX_THREADS)
        self.low_priority_pool = QThreadPool()
        self.low_priority_pool.setMaxThreadCount(MAX_LOW_PRIORITY_THREADS)
        self.live: list[Job] = []
        self.lanes: dict[str, deque[tuple[Job, _Runnable]]] = {}
        self.lane_busy: dict[str, Job] = {}
        # Ended jobs (with their runnables and callbacks) stay referenced a while, so that none is
        # freed, by reference count or by the GC, while its worker thread may still be returning.
        self.ended: deque[Job] = deque(maxlen=ENDED_KEPT)

    def start(self, job: Job, runnable: _Runnable, lane: str | None) -> None:
        job.runnable = runnable                 # lives as long as the job
        self.live.append(job)
        job.ended.connect(lambda: self._ended(job, lane))
        if lane is None:
            self._run(runnable)
        elif lane in self.lane_busy:
            self.lanes.setdefault(lane, deque()).append((job, runnable))
        else:
            self.lane_busy[lane] = job
            self._run(runnable)

    def _run(self, runnable: _Runnable) -> None:
        (self.low_priority_pool if runnable.low_priority else self.pool).start(runnable)

    def _ended(self, job: Job, lane: str | None) -> None:
        if job in self.live:
            self.live.remove(job)
            self.ended.append(job)
        if job.runnable is not None:
            # run() has called its function for good: what the function holds (a run's settings and
            # the Data step's scan of every file) must not live on with the kept job.
            job.runnable.release()
        if lane is not None and self.lane_busy.get(lane) is job:
            del self.lane_busy[lane]
            waiting = self.lanes.get(lane)
            while waiting:
                nxt, runnable = waiting.popleft()
                if nxt.is_cancelled:        # never started: drop it, but still end it once
                    self._drop(nxt)
                    continue
                self.lane_busy[lane] = nxt
                self._run(runnable)
                break

    def _drop(self, job: Job) -> None:
        job._done.set()
        job.cancelled.emit()
        job.ended.emit()


_JOBS: _Jobs | None = None


def _jobs() -> _Jobs:
    global _JOBS
    if _JOBS is None:
        _JOBS = _Jobs()
    return _JOBS


def submit(fn: Callable[[Job], Any], *, kind: str, what: str = "The task",
           on_done: Callable[[Any], None] | None = None,
           on_error: Callable[[str, str], None] | None = None,
           on_progress: Callable[[Any], None] | None = None,
           on_cancelled: Callable[[], None] | None = None,
           on_ended: Callable[[], None] | None = None,
           context: QObject | None = None, lane: str | None = None, imports: tuple[str, ...] = (),
           loses_work: bool = False, on_cancel: Callable[[], None] | None = None,
           low_priority: bool = False) -> Job:
    """Run ``fn(job)`` in the background and return the :class:`Job`.

    The callbacks run on the GUI thread and are skipped once ``context`` (the
    widget that asked) is deleted. ``what`` names the job in an error sentence
    ("The export failed unexpectedly: …"). ``lane``: jobs of one lane run one at
    a time, in order. ``imports``: heavy modules loaded first, one thread at a
    time. ``on_cancel`` is called (GUI thread) when the job is cancelled, for jobs
    with their own stop mechanism (training's stop token). ``low_priority``: a long
    job that must leave the CPU to the window first (training).
    """
    job = Job(kind, what, loses_work, on_cancel)

    def guarded(callback: Callable[..., None] | None) -> Callable[..., None] | None:
        if callback is None:
            return None

        def call(*args: Any) -> None:
            if context is None or shiboken6.isValid(context):
                callback(*args)
        return call

    # Every callback is connected before the job starts: a job that reports or ends at once loses nothing.
    for signal, callback in ((job.succeeded, on_done), (job.failed, on_error),
                             (job.progress, on_progress), (job.cancelled, on_cancelled), (job.ended, on_ended)):
        slot = guarded(callback)
        if slot is not None:
            signal.connect(slot)
    _jobs().start(job, _Runnable(job, fn, tuple(imports), low_priority), lane)
    return job


def active_jobs() -> list[Job]:
    """Jobs not yet ended (queued or running), oldest first."""
    return [] if _JOBS is None else list(_JOBS.live)


def cancel_all(*, kinds: tuple[str, ...] | None = None) -> None:
    """Cancel every live job (or those of ``kinds``); queued ones never start."""
    for job in active_jobs():
        if kinds is None or job.kind in kinds:
            job.cancel()


def wait_all(timeout_ms: int) -> bool:
    """Block up to ``timeout_ms`` until every running job's worker has returned; True when all have."""
    if _JOBS is None:
        return True
    deadline = time.monotonic() + max(0, timeout_ms) / 1000.0
    done = True
    for pool in (_JOBS.pool, _JOBS.low_priority_pool):
        left_ms = max(0, int((deadline - time.monotonic()) * 1000))
        done = pool.waitForDone(left_ms) and done
    return done

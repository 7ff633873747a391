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

The pool keeps every job (a Qt object: its signals) referenced until its worker
thread is done with it, so no widget going away can delete a signal source under
a running thread. Then, on the GUI thread, it lets go of the job's function, its
callbacks and what it keeps, so that they and the job are freed there, by
reference count: the worker holds only a weak reference, and nothing of a job is
left to the cyclic garbage collector, which runs in whichever thread allocates
(a worker's too) and would destroy Qt objects there. Jobs in the same *lane* run one after another
(the estimate and the backbone facts each keep to one core). A job submitted with ``supersede=key``
makes the same widget's earlier job of that key moot: the earlier one is cancelled and none of its
callbacks run any more, so the newest request wins without a request counter in the widget;
:func:`drop` does the same without a new job. The main window
asks before closing about jobs that lose work (training, classifying a folder, an export, the data
check, an evaluation: ``loses_work=True``), stops them or lets them finish, cancels the rest and
waits for all of them (:func:`active_jobs`, :func:`cancel_all`, :func:`wait_all`).
"""
from __future__ import annotations

import functools
import gc
import importlib
import os
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from typing import Any, Callable, Sequence

import shiboken6
from PySide6.QtCore import QObject, Qt, QThread, QThreadPool, QTimer, Signal

from dtl_engine.errors import DTLError

MAX_THREADS = 6                     # a scan + a few short jobs; lanes keep each kind to one thread
MAX_LOW_PRIORITY_THREADS = 2        # training (one run at a time) and room for one more
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
        self.fn: Callable[[Job], Any] | None = None
        self.imports: tuple[str, ...] = ()
        self.low_priority = False
        self._on_cancel = on_cancel
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._released = threading.Event()     # the worker holds no reference to the job any more
        self._connected: set[str] = set()       # names of its signals with callbacks, disconnected when let go
        self._superseded = threading.Event()    # a newer request of the same widget and key made it moot

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


def _run(job_ref: "weakref.ReferenceType[Job]") -> None:
    """The job's work in its worker thread; every reference to the job ends with this frame."""
    job = job_ref()
    if job is None:
        return
    if job.low_priority:
        lower_thread_priority()     # this pool's threads only ever run low-priority jobs
    try:
        if job.is_cancelled:
            job.cancelled.emit()
            return
        try:
            if job.imports:
                ensure_heavy_imports(*job.imports)
            assert job.fn is not None
            result = job.fn(job)
        except BaseException as exc:  # every failure must reach the user as a sentence
            if job.is_cancelled:
                job.cancelled.emit()
            else:
                job.failed.emit(*describe_error(exc, job.what))
            traceback.clear_frames(exc.__traceback__)   # its frames' locals (the job among them) go now, here
        else:
            if job.is_cancelled:
                job.cancelled.emit()
            else:
                job.succeeded.emit(result)
    finally:
        job._done.set()
        job.ended.emit()            # the last signal of the job


def _work(job_ref: "weakref.ReferenceType[Job]", released: threading.Event, notifier: "_Notifier") -> None:
    try:
        _run(job_ref)
    except BaseException:           # never left set in the thread for Qt's caller to trip over
        traceback.print_exc()
    finally:
        released.set()
        notifier.released.emit()    # the GUI thread may now let go of the job (see _Jobs.let_go)


class _Notifier(QObject):
    """Lives as long as the process: workers tell the GUI thread through it that they let go of a job."""

    released = Signal()


class _CollectOnGuiThread:
    """While any job runs, Python's cyclic garbage collector runs on the GUI thread only.

    Left automatic, it runs in whichever thread happens to allocate: a job thread building a model
    would destroy there the Qt objects of widgets that went away, and Qt crashes (segfaults inside
    the collector beside a job thread). So while jobs run, automatic collection is off and a timer
    on the GUI thread collects each generation when the collector itself would have; once no job is
    left it is automatic again.
    """

    INTERVAL_MS = 250

    def __init__(self) -> None:
        self.timer = QTimer()
        self.timer.setInterval(self.INTERVAL_MS)
        self.timer.timeout.connect(self.collect_due)
        self.was_enabled = True

    def hold(self) -> None:
        if not self.timer.isActive():
            self.was_enabled = gc.isenabled()
            gc.disable()
            self.timer.start()

    def release(self) -> None:
        if self.timer.isActive():
            self.timer.stop()
            self.collect_due()
            if self.was_enabled:
                gc.enable()

    @staticmethod
    def collect_due() -> None:
        thresholds, counts = gc.get_threshold(), gc.get_count()
        for generation in (2, 1, 0):        # the oldest due generation (collecting it collects the younger)
            if counts[generation] > thresholds[generation]:
                gc.collect(generation)
                return


class _Jobs:
    """The pool, the live jobs and the lanes (one instance per process, on the GUI thread)."""

    def __init__(self) -> None:
        self.pool = QThreadPool()
        self.pool.setMaxThreadCount(MAX_THREADS)
        self.low_priority_pool = QThreadPool()
        self.low_priority_pool.setMaxThreadCount(MAX_LOW_PRIORITY_THREADS)
        self.live: list[Job] = []
        self.lanes: dict[str, deque[Job]] = {}
        self.lane_busy: dict[str, Job] = {}
        # Ended jobs whose worker may still hold them: let go of on the GUI thread once it does not.
        self.ending: list[Job] = []
        self.notifier = _Notifier()
        # Always queued, also when sent from this thread: a job is let go from the event loop, never
        # from inside one of its own signals (which let_go disconnects).
        self.notifier.released.connect(self.let_go, Qt.ConnectionType.QueuedConnection)
        self.collector = _CollectOnGuiThread()

    def start(self, job: Job, lane: str | None) -> None:
        self.collector.hold()
        self.live.append(job)
        job.ended.connect(functools.partial(self._ended, weakref.ref(job), lane))   # no cycle through the job
        job._connected.add("ended")
        if lane is None:
            self._run(job)
        elif lane in self.lane_busy:
            self.lanes.setdefault(lane, deque()).append(job)
        else:
            self.lane_busy[lane] = job
            self._run(job)

    def _run(self, job: Job) -> None:
        # A plain callable: Qt owns the runnable it wraps it in; the callable holds the job weakly only.
        work = functools.partial(_work, weakref.ref(job), job._released, self.notifier)
        (self.low_priority_pool if job.low_priority else self.pool).start(work)

    def _ended(self, job_ref: "weakref.ReferenceType[Job]", lane: str | None) -> None:
        job = job_ref()
        if job is None:
            return
        if job in self.live:
            self.live.remove(job)
            self.ending.append(job)
        if lane is not None and self.lane_busy.get(lane) is job:
            del self.lane_busy[lane]
            waiting = self.lanes.get(lane)
            while waiting:
                nxt = waiting.popleft()
                if nxt.is_cancelled:        # never started: drop it, but still end it once
                    self._drop(nxt)
                    continue
                self.lane_busy[lane] = nxt
                self._run(nxt)
                break

    def _drop(self, job: Job) -> None:
        job._done.set()
        job._released.set()                 # no worker ever held it
        job.cancelled.emit()
        job.ended.emit()
        self.notifier.released.emit()

    def let_go(self) -> None:
        """Let go of every ended job its worker is done with: callbacks, function and kept objects go now."""
        for job in [j for j in self.ending if j._released.is_set()]:
            self.ending.remove(job)
            # Every queued signal of the job was delivered before this (the worker sent them first).
            for name in job._connected:
                getattr(job, name).disconnect()
            job._connected.clear()
            job.fn = job.keep = None
        if not self.live and not self.ending:      # no job thread holds anything: collect as usual again
            self.collector.release()


_JOBS: _Jobs | None = None


def _jobs() -> _Jobs:
    global _JOBS
    if _JOBS is None:
        _JOBS = _Jobs()
    return _JOBS


_LATEST: dict[tuple[int, str], "weakref.ReferenceType[Job]"] = {}   # (id of the widget, key) -> its newest job


def drop(context: QObject, key: str) -> None:
    """Make ``context``'s live job of ``key`` moot: it is cancelled and none of its callbacks run any more."""
    ref = _LATEST.pop((id(context), key), None)
    job = ref() if ref is not None else None
    if job is not None:
        job._superseded.set()
        job.cancel()


def submit(fn: Callable[[Job], Any], *, kind: str, what: str = "The task",
           on_done: Callable[[Any], None] | None = None,
           on_error: Callable[[str, str], None] | None = None,
           on_progress: Callable[[Any], None] | None = None,
           on_cancelled: Callable[[], None] | None = None,
           on_ended: Callable[[], None] | None = None,
           context: QObject | None = None, lane: str | None = None, imports: tuple[str, ...] = (),
           loses_work: bool = False, on_cancel: Callable[[], None] | None = None,
           low_priority: bool = False, supersede: str | None = None) -> Job:
    """Run ``fn(job)`` in the background and return the :class:`Job`.

    The callbacks run on the GUI thread and are skipped once ``context`` (the
    widget that asked) is deleted. ``what`` names the job in an error sentence
    ("The export failed unexpectedly: …"). ``lane``: jobs of one lane run one at
    a time, in order. ``imports``: heavy modules loaded first, one thread at a
    time. ``on_cancel`` is called (GUI thread) when the job is cancelled, for jobs
    with their own stop mechanism (training's stop token). ``low_priority``: a long
    job that must leave the CPU to the window first (training). ``supersede``: a key; this job
    replaces ``context``'s earlier job of the same key (see :func:`drop`), so only the newest
    request's answer arrives.
    """
    job = Job(kind, what, loses_work, on_cancel)
    superseded = job._superseded            # the callbacks hold the flag, not the job (no reference cycle)
    if supersede is not None:
        if context is None:
            raise ValueError("supersede needs the context whose newest request wins")
        drop(context, supersede)
        for stale in [k for k, r in _LATEST.items() if r() is None]:
            del _LATEST[stale]
        _LATEST[(id(context), supersede)] = weakref.ref(job)

    def guarded(callback: Callable[..., None] | None) -> Callable[..., None] | None:
        if callback is None:
            return None

        def call(*args: Any) -> None:
            if not superseded.is_set() and (context is None or shiboken6.isValid(context)):
                callback(*args)
        return call

    # Every callback is connected before the job starts: a job that reports or ends at once loses nothing.
    for name, callback in (("succeeded", on_done), ("failed", on_error), ("progress", on_progress),
                           ("cancelled", on_cancelled), ("ended", on_ended)):
        slot = guarded(callback)
        if slot is not None:
            getattr(job, name).connect(slot)
            job._connected.add(name)
    job.fn, job.imports, job.low_priority = fn, tuple(imports), low_priority
    _jobs().start(job, lane)
    return job


def active_jobs() -> list[Job]:
    """Jobs not yet ended (queued or running), oldest first."""
    return [] if _JOBS is None else list(_JOBS.live)


def cancel_all(*, kinds: tuple[str, ...] | None = None, keep: "Sequence[Job]" = ()) -> None:
    """Cancel every live job (or those of ``kinds``) but the jobs in ``keep``; queued ones never start."""
    for job in active_jobs():
        if (kinds is None or job.kind in kinds) and not any(job is kept for kept in keep):
            job.cancel()


def wait_all(timeout_ms: int) -> bool:
    """Block up to ``timeout_ms`` until every running job's worker has returned; True when all have.

    A job still queued in its lane starts only from the event loop, which this call blocks: True also
    needs every such job to be cancelled (it will never run), else that job is not done and this is False.
    """
    if _JOBS is None:
        return True
    deadline = time.monotonic() + max(0, timeout_ms) / 1000.0
    done = True
    for pool in (_JOBS.pool, _JOBS.low_priority_pool):
        left_ms = max(0, int((deadline - time.monotonic()) * 1000))
        done = pool.waitForDone(left_ms) and done
    queued = [job for lane in _JOBS.lanes.values() for job in lane]
    return done and all(job.is_cancelled for job in queued)

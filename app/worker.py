"""The one bridge between the engine and Qt.

The engine reports through plain :class:`~dtl_engine.listener.RunListener`
calls made on the training thread. :class:`SignalListener` turns each call
into a Qt signal; Qt queues those signals to the main thread, where the pages
update their widgets. Nothing here touches a widget.

:class:`RunController` owns the training thread: it starts ``train`` or
``resume`` (or any function with the same shape, which is how tests drive the
pages without a real model), forwards pause / resume / stop to a
:class:`~dtl_engine.listener.StopToken`, and reports exactly one of
``finished`` or ``failed`` per run, with a readable message and the details.

:func:`run_in_background` runs a short one-off job (export, prediction,
evaluation, thumbnails) on a pool thread and returns its result the same way.
"""
from __future__ import annotations

import os
import sys
import threading
import traceback
from typing import Any, Callable

import shiboken6
from PySide6.QtCore import QObject, Qt, QRunnable, QThread, QThreadPool, Signal, Slot

from dtl_engine.errors import DTLError
from dtl_engine.listener import RunListener, StopToken

#: A run function: gets the listener and the stop token, returns a RunResult.
RunTask = Callable[[RunListener, StopToken], Any]


def describe_error(exc: BaseException, what: str = "The run") -> tuple[str, str]:
    """A sentence for a person plus the traceback for the "details" section."""
    details = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if isinstance(exc, DTLError):
        return str(exc), details
    if isinstance(exc, MemoryError):
        return f"{what} ran out of memory. Try a smaller batch size or image size.", details
    text = str(exc).strip() or type(exc).__name__
    return f"{what} failed unexpectedly: {text}", details


class RunSignals(QObject):
    """One Qt signal per listener hook (payloads are the engine's dataclasses)."""

    started = Signal(object)        # RunStarted
    batch = Signal(object)          # BatchStats
    epoch = Signal(object)          # EpochStats
    memory = Signal(object)         # MemorySample
    checkpoint = Signal(str, int)   # path, epoch
    warning = Signal(str)
    finished = Signal(object)       # RunResult
    failed = Signal(str, str)       # message, details


class SignalListener(RunListener):
    """A RunListener that emits a Qt signal for every hook, nothing more."""

    def __init__(self, signals: RunSignals) -> None:
        self.signals = signals
        self.finished_sent = False
        self.failed_sent = False

    def run_started(self, info) -> None:
        self.signals.started.emit(info)

    def batch_finished(self, stats) -> None:
        self.signals.batch.emit(stats)

    def epoch_finished(self, stats) -> None:
        self.signals.epoch.emit(stats)

    def memory_sample(self, sample) -> None:
        self.signals.memory.emit(sample)

    def checkpoint_saved(self, path, epoch) -> None:
        self.signals.checkpoint.emit(str(path), int(epoch))

    def warning(self, message) -> None:
        self.signals.warning.emit(str(message))

    def run_finished(self, result) -> None:
        # The engine may both call this hook and return the result: report once.
        if not (self.finished_sent or self.failed_sent):
            self.finished_sent = True
            self.signals.finished.emit(result)

    def run_failed(self, message, details) -> None:
        if not (self.finished_sent or self.failed_sent):
            self.failed_sent = True
            self.signals.failed.emit(str(message), str(details))


class RunWorker(QObject):
    """Runs one task on its QThread; always ends with ``done``."""

    done = Signal()

    def __init__(self, task: RunTask, listener: SignalListener, token: StopToken) -> None:
        super().__init__()
        self._task = task
        self._listener = listener
        self._token = token

    @Slot()
    def run(self) -> None:
        lower_thread_priority()
        try:
            result = self._task(self._listener, self._token)
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the user
            message, details = describe_error(exc, "Training")
            self._listener.run_failed(message, details)
        else:
            self._listener.run_finished(result)
        finally:
            self.done.emit()


# Threads (with their worker and signals) stay referenced until they end, even
# if their controller goes away first: Qt aborts when a running QThread is deleted.
_LIVE_RUNS: set[tuple[QThread, "RunWorker", RunSignals]] = set()


def lower_thread_priority() -> None:
    """Run the calling (training) thread below the GUI thread's priority.

    On a busy CPU the window then still gets its share first: event-loop gaps
    stay short, while training loses nothing on an idle machine. Linux applies
    niceness per thread (Qt's thread priorities do not map to it there).
    """
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
    else:
        QThread.currentThread().setPriority(QThread.Priority.LowPriority)


def _heavy_imports(*modules: str) -> None:
    # One thread at a time: concurrent first imports of timm can see half-initialised modules.
    from app.scan_worker import ensure_heavy_imports

    ensure_heavy_imports(*modules)


def _default_train(config, listener=None, token=None, run_dir=None):
    _heavy_imports("timm", "dtl_engine.training")  # heavy, only when a run starts
    from dtl_engine.training import train
    return train(config, listener=listener, token=token, run_dir=run_dir)


def _default_resume(run_dir, listener=None, token=None):
    _heavy_imports("timm", "dtl_engine.training")
    from dtl_engine.training import resume
    return resume(run_dir, listener=listener, token=token)


class RunController(QObject):
    """Starts a run on a QThread and relays its signals to the main thread.

    ``train_fn(config, listener=, token=)`` and ``resume_fn(run_dir, listener=,
    token=)`` default to the engine's ``train`` / ``resume``; tests pass fakes.
    """

    started = Signal(object)
    batch = Signal(object)
    epoch = Signal(object)
    memory = Signal(object)
    checkpoint = Signal(str, int)
    warning = Signal(str)
    finished = Signal(object)
    failed = Signal(str, str)
    running_changed = Signal(bool)

    def __init__(self, train_fn: Callable[..., Any] | None = None,
                 resume_fn: Callable[..., Any] | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._train_fn = train_fn or _default_train
        self._resume_fn = resume_fn or _default_resume
        self._thread: QThread | None = None
        self._worker: RunWorker | None = None
        self._signals: RunSignals | None = None
        self._token: StopToken | None = None
        self._active = False

    # --- starting -----------------------------------------------------------
    def start_training(self, config) -> None:
        """Train a new model from ``config`` (a TrainConfig)."""
        fn = self._train_fn
        self.start_task(lambda listener, token: fn(config, listener=listener, token=token))

    def start_resume(self, run_dir: str) -> None:
        """Continue a stopped or interrupted run from its last checkpoint."""
        fn = self._resume_fn
        self.start_task(lambda listener, token: fn(str(run_dir), listener=listener, token=token))

    def start_task(self, task: RunTask) -> None:
        """Run ``task(listener, token)`` on a fresh training thread."""
        if self.is_running():
            raise RuntimeError("A run is already in progress.")
        signals = RunSignals()  # lives in the main thread; emitted from the worker
        signals.started.connect(self.started)
        signals.batch.connect(self.batch)
        signals.epoch.connect(self.epoch)
        signals.memory.connect(self.memory)
        signals.checkpoint.connect(self.checkpoint)
        signals.warning.connect(self.warning)
        signals.finished.connect(self._on_finished)
        signals.failed.connect(self._on_failed)

        token = StopToken()
        thread = QThread()
        thread.setObjectName("dtl-training")
        worker = RunWorker(task, SignalListener(signals), token)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        # Direct: quit() is thread-safe, and the main thread may be blocked in wait().
        worker.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.finished.connect(self._on_thread_finished)
        entry = (thread, worker, signals)
        _LIVE_RUNS.add(entry)
        thread.finished.connect(lambda: _LIVE_RUNS.discard(entry))

        self._signals, self._token, self._thread, self._worker = signals, token, thread, worker
        self._active = True
        self.running_changed.emit(True)
        thread.start()

    # --- control ---------------------------------------------------------------
    def pause(self) -> None:
        if self._token is not None and self._active:
            self._token.pause()

    def resume(self) -> None:
        if self._token is not None:
            self._token.resume()

    def stop(self) -> None:
        if self._token is not None:
            self._token.stop()

    def is_running(self) -> bool:
        """True from start until the run's final signal reached the main thread."""
        return self._active or (self._thread is not None and self._thread.isRunning())

    def is_paused(self) -> bool:
        return self._active and self._token is not None and self._token.paused

    def wait(self, timeout_ms: int) -> bool:
        """Block up to ``timeout_ms`` for the thread to end; True when it has."""
        thread = self._thread
        return thread is None or thread.wait(max(0, int(timeout_ms)))

    def stop_and_wait(self, timeout_ms: int) -> bool:
        """Ask the run to stop (it saves a checkpoint) and wait for the thread."""
        self.stop()
        return self.wait(timeout_ms)

    # --- ending (main thread) ---------------------------------------------------
    def _end(self) -> None:
        if self._active:
            self._active = False
            self.running_changed.emit(False)

    def _on_finished(self, result) -> None:
        self._end()
        self.finished.emit(result)

    def _on_failed(self, message: str, details: str) -> None:
        self._end()
        self.failed.emit(message, details)

    def _on_thread_finished(self) -> None:
        thread, worker = self._thread, self._worker
        self._thread = self._worker = None
        if worker is not None:
            worker.deleteLater()
        if thread is not None:
            thread.deleteLater()
        self._end()  # in case the final signal was lost (it never should be)


class BackgroundCall(QObject):
    """Result of :func:`run_in_background`: exactly one of succeeded / failed."""

    succeeded = Signal(object)
    failed = Signal(str, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.done = False


class _Job(QRunnable):
    def __init__(self, call: BackgroundCall, fn: Callable[[], Any], what: str, imports: tuple[str, ...]) -> None:
        super().__init__()
        self.setAutoDelete(True)
        self._call, self._fn, self._what, self._imports = call, fn, what, imports

    def run(self) -> None:
        try:
            if self._imports:
                _heavy_imports(*self._imports)
            result = self._fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the user, never lost
            message, details = describe_error(exc, self._what)
            self._call.failed.emit(message, details)
        else:
            self._call.succeeded.emit(result)


_LIVE_CALLS: set[BackgroundCall] = set()  # keeps calls alive until they report
_POOL: QThreadPool | None = None


def _pool() -> QThreadPool:
    global _POOL
    if _POOL is None:
        _POOL = QThreadPool()
        _POOL.setMaxThreadCount(2)
    return _POOL


def run_in_background(fn: Callable[[], Any], *, what: str = "The task",
                      on_done: Callable[[Any], None] | None = None,
                      on_error: Callable[[str, str], None] | None = None,
                      context: QObject | None = None, imports: tuple[str, ...] = ()) -> BackgroundCall:
    """Run ``fn()`` off the main thread; its result or error arrives as a signal.

    ``on_done(result)`` / ``on_error(message, details)`` are called on the main
    thread, and skipped when ``context`` (the widget that asked) is gone by
    then. ``what`` names the job in an error sentence ("The export failed...").
    ``imports`` are heavy modules to load first, one thread at a time.
    """
    call = BackgroundCall()
    _LIVE_CALLS.add(call)

    def _alive(callback: Callable[..., None]) -> Callable[..., None]:
        def wrapped(*args: Any) -> None:
            if context is None or shiboken6.isValid(context):
                callback(*args)
        return wrapped

    on_done = _alive(on_done) if on_done is not None else None
    on_error = _alive(on_error) if on_error is not None else None

    def _finish(*_: Any) -> None:
        call.done = True
        _LIVE_CALLS.discard(call)

    if on_done is not None:
        call.succeeded.connect(on_done)
    if on_error is not None:
        call.failed.connect(on_error)
    call.succeeded.connect(_finish)
    call.failed.connect(_finish)
    _pool().start(_Job(call, fn, what, tuple(imports)))
    return call


def wait_for_background(timeout_ms: int = 30000) -> bool:
    """Wait for pending background jobs (used when the window closes)."""
    return _POOL is None or _POOL.waitForDone(timeout_ms)

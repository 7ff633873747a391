"""The bridge between the engine's training run and Qt.

The engine reports through plain :class:`~dtl_engine.listener.RunListener`
calls made on the training thread. :class:`SignalListener` turns each call
into a Qt signal; Qt queues those signals to the main thread, where the pages
update their widgets. Nothing here touches a widget.

:class:`RunController` starts ``train`` or ``resume`` (or any function with the
same shape, which is how tests drive the pages without a real model) as a job
of :mod:`app.jobs`, forwards pause / resume / stop to a
:class:`~dtl_engine.listener.StopToken`, and reports exactly one of
``finished`` or ``failed`` per run, with a readable message and the details.
"""
from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QObject, Signal

from app import jobs
from app.jobs import describe_error, ensure_heavy_imports
from dtl_engine.devices import release_freed_memory
from dtl_engine.listener import RunListener, StopToken

#: A run function: gets the listener and the stop token, returns a RunResult.
RunTask = Callable[[RunListener, StopToken], Any]

__all__ = ["RunController", "RunSignals", "SignalListener", "describe_error"]


class RunSignals(QObject):
    """One Qt signal per listener hook (payloads are the engine's dataclasses)."""

    started = Signal(object)        # RunStarted
    batch = Signal(object)          # BatchStats
    epoch = Signal(object)          # EpochStats
    memory = Signal(object)         # MemorySample
    checkpoint = Signal(str, int)   # path, epoch
    warning = Signal(str)
    search = Signal(object)         # SearchProgress: the search before the first epoch
    first_model = Signal(object)    # FirstModel: epoch 0, the step-0 model scored
    backed_off = Signal(object)     # BackedOff: a divergence undone
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

    def search_progress(self, progress) -> None:
        self.signals.search.emit(progress)

    def first_model(self, stats) -> None:
        self.signals.first_model.emit(stats)

    def backed_off(self, event) -> None:
        self.signals.backed_off.emit(event)

    def run_finished(self, result) -> None:
        # The engine may both call this hook and return the result: report once.
        if not (self.finished_sent or self.failed_sent):
            self.finished_sent = True
            self.signals.finished.emit(result)

    def run_failed(self, message, details) -> None:
        if not (self.finished_sent or self.failed_sent):
            self.failed_sent = True
            self.signals.failed.emit(str(message), str(details))


def _default_train(config, listener=None, token=None, run_dir=None, scan=None):
    ensure_heavy_imports("timm", "dtl_engine.training")  # heavy, only when a run starts
    from dtl_engine.training import train
    return train(config, listener=listener, token=token, run_dir=run_dir, scan=scan)


def _default_resume(run_dir, listener=None, token=None):
    ensure_heavy_imports("timm", "dtl_engine.training")
    from dtl_engine.training import resume
    return resume(run_dir, listener=listener, token=token)


class RunController(RunSignals):
    """Starts a run as a background job and relays its signals to the main thread.

    ``train_fn(config, listener=, token=)`` and ``resume_fn(run_dir, listener=,
    token=)`` default to the engine's ``train`` / ``resume``; tests pass fakes.
    """

    running_changed = Signal(bool)  # beside the run's signals (RunSignals), forwarded from each run

    def __init__(self, train_fn: Callable[..., Any] | None = None,
                 resume_fn: Callable[..., Any] | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._train_fn = train_fn or _default_train
        self._resume_fn = resume_fn or _default_resume
        self._job: jobs.Job | None = None
        self._token: StopToken | None = None
        self._active = False

    # --- starting -----------------------------------------------------------
    def start_training(self, config: Any, scan: Any = None) -> None:
        """Train a new model from ``config`` (a TrainConfig).

        ``scan``: the Data step's fresh scan of the folder; the engine checks it against the
        files' sizes and times instead of scanning the folder a second time.
        """
        fn = self._train_fn
        extra = {"scan": scan} if scan is not None else {}
        self.start_task(lambda listener, token: fn(config, listener=listener, token=token, **extra))

    def start_resume(self, run_dir: str) -> None:
        """Continue a stopped or interrupted run from its last checkpoint."""
        fn = self._resume_fn
        self.start_task(lambda listener, token: fn(str(run_dir), listener=listener, token=token))

    def start_task(self, task: RunTask) -> None:
        """Run ``task(listener, token)`` as the "train" job."""
        if self.is_running():
            raise RuntimeError("A run is already in progress.")
        signals = RunSignals()  # lives in the main thread; emitted from the worker
        signals.started.connect(self.started)
        signals.batch.connect(self.batch)
        signals.epoch.connect(self.epoch)
        signals.memory.connect(self.memory)
        signals.checkpoint.connect(self.checkpoint)
        signals.warning.connect(self.warning)
        signals.search.connect(self.search)
        signals.first_model.connect(self.first_model)
        signals.backed_off.connect(self.backed_off)
        signals.finished.connect(self._on_finished)
        signals.failed.connect(self._on_failed)
        listener = SignalListener(signals)
        token = StopToken()

        def run(_job: jobs.Job) -> None:
            try:
                result = task(listener, token)
            except BaseException as exc:  # every failure must reach the user
                listener.run_failed(*describe_error(exc, "Training"))
            else:
                listener.run_finished(result)
            finally:    # the run's memory goes back to the system, not to an idle app
                release_freed_memory()

        self._token = token
        self._active = True
        self.running_changed.emit(True)
        # Stopping keeps the last checkpoint, but the epoch in progress is lost: the window asks first.
        job = jobs.submit(run, kind="train", what="Training", loses_work=True, on_cancel=token.stop,
                          low_priority=True, context=self, on_ended=self._on_job_ended)
        job.keep = signals
        self._job = job

    # --- control ---------------------------------------------------------------
    def pause(self) -> None:
        """Hold the run after its current batch."""
        if self._token is not None and self._active:
            self._token.pause()

    def resume(self) -> None:
        """Let a paused run continue."""
        if self._token is not None:
            self._token.resume()

    def stop(self) -> None:
        """Ask the run to stop; it saves a checkpoint first."""
        if self._token is not None:
            self._token.stop()

    def is_running(self) -> bool:
        """True from start until the run's final signal reached the main thread."""
        return self._active or (self._job is not None and not self._job.is_done())

    def is_paused(self) -> bool:
        """True while a running run is held by :meth:`pause`."""
        return self._active and self._token is not None and self._token.paused

    def wait(self, timeout_ms: int) -> bool:
        """Block up to ``timeout_ms`` for the run's thread to end; True when it has."""
        job = self._job
        return job is None or job.wait(int(timeout_ms))

    def stop_and_wait(self, timeout_ms: int) -> bool:
        """Ask the run to stop (it saves a checkpoint) and wait for its thread."""
        self.stop()
        return self.wait(timeout_ms)

    # --- ending (main thread) ---------------------------------------------------
    def _end(self) -> None:
        if self._active:
            self._active = False
            self.running_changed.emit(False)

    def _on_finished(self, result: Any) -> None:
        self._end()
        self.finished.emit(result)

    def _on_failed(self, message: str, details: str) -> None:
        self._end()
        self.failed.emit(message, details)

    def _on_job_ended(self) -> None:
        # The final signal arrives while the thread is still returning, so is_running() stays
        # True until here: say so again now that a new run may start.
        self._job = None
        self._active = False
        self.running_changed.emit(False)

"""The bridge between the engine's training run and Qt.

The engine reports through plain :class:`~dtl_engine.listener.RunListener`
calls made on the training thread. :class:`SignalListener` turns each call
into one :class:`~dtl_engine.events.Event` on a Qt signal; Qt queues it to the
main thread, where :meth:`RunSignals.relay` hands it to the views. Nothing here
touches a widget.

:class:`RunController` starts ``train`` or ``resume`` (or any function with the
same shape, which is how tests drive the pages without a real model) as a job
of :mod:`app.jobs`, forwards pause / resume / stop to a
:class:`~dtl_engine.listener.StopToken`, and reports exactly one of
``finished`` (a :class:`~dtl_engine.events.RunEnded`) or ``failed`` per run, with a readable
message and the details.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal

from app import jobs
from app.jobs import describe_error, ensure_heavy_imports
from dtl_engine.devices import release_freed_memory
from dtl_engine.events import KINDS, Event, EventSink
from dtl_engine.listener import RunListener, StopToken

#: A run function: gets the listener and the stop token, returns a RunResult.
RunTask = Callable[[RunListener, StopToken], Any]

__all__ = ["RunController", "RunSignals", "SignalListener", "describe_error"]


class RunSignals(QObject):
    """A run's events as Qt signals: ``event`` carries every :class:`~dtl_engine.events.Event`.

    :meth:`relay` also emits the event's own typed signal below (named after its kind), so a view
    may take one event or all; each payload is the engine's dataclass (:mod:`dtl_engine.events`).
    """

    event = Signal(object)          # Event: every one, before its typed signal
    started = Signal(object)        # RunStarted
    batch = Signal(object)          # BatchStats
    epoch = Signal(object)          # EpochStats
    memory = Signal(object)         # MemorySample
    checkpoint = Signal(str, int)   # path, epoch
    warning = Signal(str)
    finished = Signal(object)       # RunEnded: the one result, whoever ran the run
    failed = Signal(str, str)       # message, details

    def relay(self, event: Event) -> None:
        """Emit ``event`` and its typed signal, where it has one (on the thread this object lives in)."""
        self.event.emit(event)
        signal = getattr(self, _SIGNAL_OF.get(event.kind, event.kind), None)
        if signal is None:          # the newer kinds (search, first model, back-off) travel as ``event`` only
            return
        if KINDS[event.kind].spread:
            signal.emit(*(getattr(event.data, f.name) for f in fields(event.data)))
        else:
            signal.emit(event.data)


# The kinds whose signal is not named after the kind.
_SIGNAL_OF = {"run_started": "started"}


class SignalListener(EventSink):
    """A RunListener that hands every hook call to ``signals.event`` (queued to the GUI thread), nothing more."""

    def __init__(self, signals: RunSignals) -> None:
        super().__init__(self._send)
        self.signals = signals
        self.ended = False

    def _send(self, event: Event) -> None:
        if event.kind in ("finished", "failed"):
            # The engine may both call run_finished and return the result, or report a failure and raise: once.
            if self.ended:
                return
            self.ended = True
        self.signals.event.emit(event)


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
        signals.event.connect(self.relay)
        listener = SignalListener(signals)
        token = StopToken()

        def run(_job: jobs.Job) -> None:
            try:
                result = task(listener, token)
            except BaseException as exc:  # every failure must reach the user
                listener.run_failed(*describe_error(exc, "Training"))
            else:
                listener.run_finished(result)

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
        """True from start until the run's job has ended and said so on the main thread (running_changed)."""
        return self._active or self._job is not None

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

    def relay(self, event: Event) -> None:
        if event.kind in ("finished", "failed"):
            self._end()             # not running any more by the time anyone hears how it ended
        super().relay(event)

    def _on_job_ended(self) -> None:
        # The final signal arrives while the thread is still returning, so is_running() stays
        # True until here: say so again now that a new run may start.
        self._job = None
        self._active = False
        self.running_changed.emit(False)
        # The run's memory goes back to the system, not to an idle app; here, on the GUI thread,
        # because its garbage collection may free Qt objects, which must never die on a job's thread.
        release_freed_memory()

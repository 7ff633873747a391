"""Background work for the window: the folder scan (QThread, progress, cancel) and small pool jobs."""
from __future__ import annotations

import threading
import warnings

from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal

from dtl_engine.errors import DTLError


_IMPORT_LOCK = threading.Lock()


def ensure_heavy_imports(*modules: str) -> None:
    """Import heavy modules (default: timm, which loads torch) one thread at a time.

    Two threads importing timm at the same moment can see a half-initialised module
    ("partially initialized module 'timm.models'"); every background job calls this first.
    """
    import importlib

    with _IMPORT_LOCK:
        for name in modules or ("timm", "dtl_engine.data"):
            importlib.import_module(name)


# Threads still running when their window closed. Qt aborts the process when a running
# QThread is destroyed, so they are detached from the window and kept here until done.
_ORPHANS: set[QThread] = set()


def keep_alive(thread: QThread) -> None:
    """Detach a still-running thread from its parent so closing the window cannot destroy it."""
    if not thread.isRunning():
        return
    # Its answers were meant for widgets that are going away: cut those connections first.
    for name in ("done", "failed", "succeeded", "progress", "cancelled", "finished"):
        signal = getattr(thread, name, None)
        if signal is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)   # "nothing to disconnect"
                try:
                    signal.disconnect()
                except (RuntimeError, TypeError):
                    pass
    thread.setParent(None)
    _ORPHANS.add(thread)


def wait_for_orphans(timeout_ms: int = 60000) -> bool:
    """Wait for detached threads (call after the event loop ended); True when all finished."""
    done = all(t.wait(timeout_ms) for t in list(_ORPHANS))
    _ORPHANS.clear()
    return done


class ScanThread(QThread):
    """Scan one folder off the GUI thread.

    Signals: ``progress(done, total)`` (total = -1 while unknown), ``succeeded(ScanResult)``,
    ``failed(sentence)``, ``cancelled()``. Exactly one of the last three is emitted.
    """

    progress = Signal(int, int)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, folder: str, parent=None) -> None:
        super().__init__(parent)
        self.folder = folder
        self._cancel = threading.Event()

    def cancel(self) -> None:
        """Ask the scan to stop at its next check."""
        self._cancel.set()

    def run(self) -> None:  # runs in the worker thread
        try:
            ensure_heavy_imports("dtl_engine.data")   # the scan needs no timm
            from dtl_engine.data import scan_folder   # imported here: torch/timm load off the GUI thread
        except ImportError as exc:  # the engine is missing a piece: say so, do not crash
            self.failed.emit(f"The image scanner is not available in this installation ({exc}).")
            return
        try:
            result = scan_folder(
                self.folder,
                progress=lambda done, total: self.progress.emit(int(done), -1 if total is None else int(total)),
                should_stop=self._cancel.is_set,
            )
        except DTLError as exc:
            if self._cancel.is_set():
                self.cancelled.emit()
            else:
                self.failed.emit(str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - an unexpected error still becomes a sentence
            self.failed.emit(f"The folder could not be read: {exc}")
            return
        if self._cancel.is_set():
            self.cancelled.emit()
        else:
            self.succeeded.emit(result)


class CallThread(QThread):
    """Run one plain function off the GUI thread: ``done(result)`` or ``failed(sentence)``."""

    done = Signal(object)
    failed = Signal(str)

    def __init__(self, fn, parent=None) -> None:
        super().__init__(parent)
        self.fn = fn

    def run(self) -> None:
        try:
            ensure_heavy_imports("dtl_engine.data")
            result = self.fn()
        except DTLError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # noqa: BLE001 - shown as a sentence, never a crash
            self.failed.emit(f"{type(exc).__name__}: {exc}")
        else:
            self.done.emit(result)


class _JobSignals(QObject):
    done = Signal(object)
    failed = Signal(str)


class PoolJob(QRunnable):
    """A plain function for a QThreadPool; its result comes back to the GUI thread through signals."""

    def __init__(self, fn, signals: _JobSignals) -> None:
        super().__init__()
        self.fn = fn
        self.signals = signals

    def run(self) -> None:
        try:
            try:
                ensure_heavy_imports()
                result = self.fn()
            except Exception as exc:  # noqa: BLE001 - reported to the GUI as a sentence
                self._emit(self.signals.failed, str(exc) or type(exc).__name__)
            else:
                self._emit(self.signals.done, result)
        except BaseException:  # noqa: BLE001 - the program is ending: never let an error escape into Qt
            pass

    @staticmethod
    def _emit(signal, value) -> None:
        try:
            signal.emit(value)
        except RuntimeError:    # the receiver went away while the job ran (window closed): nothing to tell
            pass


def start_job(pool: QThreadPool, fn, on_done=None, on_failed=None, keep: set | None = None) -> _JobSignals:
    """Run ``fn()`` on ``pool``; ``on_done(result)`` / ``on_failed(sentence)`` run in the GUI thread.

    ``keep`` holds the signal object until it has reported, so it outlives the worker thread.
    """
    signals = _JobSignals()
    holder = keep if keep is not None else set()
    holder.add(signals)
    if on_done is not None:
        signals.done.connect(on_done)
    if on_failed is not None:
        signals.failed.connect(on_failed)
    signals.done.connect(lambda *_: holder.discard(signals))
    signals.failed.connect(lambda *_: holder.discard(signals))
    pool.start(PoolJob(fn, signals))
    return signals

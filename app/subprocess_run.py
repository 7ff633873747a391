"""One run over every GPU of this machine: ``torchrun`` started, awaited and stopped by the app.

The Train step's "Use all N GPUs" starts
``python -m torch.distributed.run --standalone --nproc_per_node N -m dtl_engine train DIR …``
with the step's settings (:func:`dtl_engine.cli.main.train_arguments`) in a run folder the app names,
and follows that folder's event log like any other run (:mod:`app.run_follower`).

The process is awaited by a job of :mod:`app.jobs` (the app's one way to run background work):
closing the window asks first and waits for it, as for a run in the app's own thread.

Stop sends SIGTERM to the launcher's process group (CTRL_BREAK on Windows); ``torchrun`` passes
it on to every process, which stops after its current batch and keeps the last checkpoint. When
the processes have not exited :data:`STOP_WAIT_S` later, the launcher and every process below it
are killed; the last saved checkpoint still stands and the run can be resumed.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from PySide6.QtCore import QObject, Signal
import psutil

from app import jobs
from dtl_engine.cli.main import train_arguments
from dtl_engine.runs.folder import new_run_dir
from dtl_engine import fileio
import dtl_engine

STOP_WAIT_S = 60.0          # torchrun gives its processes 30 s after a stop before it kills them
OUTPUT_TAIL = 20_000        # bytes of the launcher's output kept for the error sentence


def cuda_device_count() -> int:
    """How many CUDA GPUs this machine has (imports torch: call it from a job)."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def can_launch() -> bool:
    """False in a frozen bundle: its executable is the app, which cannot run ``-m torch.distributed.run``."""
    return not getattr(sys, "frozen", False)


def torchrun_command(config: Any, run_dir: str | Path, processes: int, extra_args: Sequence[str] = ()) -> list[str]:
    """The command that trains ``config`` (a TrainConfig) in ``run_dir`` on ``processes`` processes.

    Raises :class:`~dtl_engine.errors.RunError` for a setting the command line cannot take.
    ``extra_args``: further ``train`` options (tests pass ``--model-kwargs`` for a tiny backbone).
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(processes)}",
            "-m", "dtl_engine", "train", *train_arguments(config), "--out", str(run_dir), *extra_args]


def launch_command(config: Any, processes: int, extra_args: Sequence[str] = ()) -> tuple[list[str], str]:
    """(the torchrun command, the new run folder it trains in) for ``config``; no folder is left on an error."""
    run_dir = new_run_dir(config.backbone, config.method, image_size=config.image_size)
    try:
        return torchrun_command(config, run_dir, processes, extra_args), str(run_dir)
    except BaseException:
        remove_if_empty(run_dir)
        raise


def launch_env() -> dict[str, str]:
    """This process's environment, with the engine this app runs first on the module path."""
    root = str(Path(dtl_engine.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, path]) if path else root, "PYTHONUNBUFFERED": "1"}


def error_sentence(output: str) -> str:
    """The engine's one-sentence error ("error: …") from a launcher's output, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: "):]
    return f"The run's processes ended without a result ({lines[-1][:300]})." if lines else ""


def remove_if_empty(run_dir: str | Path) -> None:
    """Remove the run folder the app made for a launch when the run left nothing in it (it was refused)."""
    fileio.remove_empty_folder(run_dir)     # only an empty folder: nothing anyone wrote is lost


def _group_options() -> dict[str, Any]:
    # Its own process group: Stop reaches the launcher and only it, and Ctrl+C in the app's terminal does not.
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def _kill_tree(proc: subprocess.Popen) -> None:
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        family = []
    for p in [*family, proc]:
        try:
            p.kill()
        except (psutil.Error, OSError):
            pass


class SubprocessRun(QObject):
    """A launcher process awaited by a job; ``ended(exit status, error sentence)`` once it has exited."""

    ended = Signal(int, str)

    def __init__(self, command: Sequence[str], *, env: dict[str, str] | None = None,
                 stop_wait_s: float | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.command = list(command)
        self.env = env if env is not None else launch_env()
        self.stop_wait_s = STOP_WAIT_S if stop_wait_s is None else stop_wait_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._stop_since: float | None = None
        self._result: tuple[int, str] = (-1, "")
        self._job: jobs.Job | None = None

    @property
    def pid(self) -> int | None:
        """The launcher's process id once it started."""
        with self._lock:
            return None if self._proc is None else self._proc.pid

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop_since is not None

    def start(self) -> None:
        """Start the launcher in a job that waits for it (the window awaits that job before it closes)."""
        self._job = jobs.submit(self._run, kind="train", what="Training on several GPUs", loses_work=True,
                                on_cancel=self.stop, context=self, on_ended=self._on_ended,
                                on_error=self._on_error)

    def is_running(self) -> bool:
        """True until the launcher has exited and its job has returned."""
        return self._job is not None and not self._job.is_done()

    def wait(self, timeout_ms: int) -> bool:
        """Block up to ``timeout_ms`` for the launcher's job to return; True when it has."""
        return self._job is None or self._job.wait(timeout_ms)

    def stop(self) -> None:
        """Ask every process to stop after its current batch (safe from any thread; repeats are ignored)."""
        with self._lock:
            if self._stop_since is not None:
                return
            self._stop_since = time.monotonic()
            proc = self._proc
        if proc is not None:
            self._signal(proc)

    @staticmethod
    def _signal(proc: subprocess.Popen) -> None:
        if proc.poll() is not None:
            return
        try:
            if sys.platform == "win32":
                proc.send_signal(signal.CTRL_BREAK_EVENT)   # type: ignore[attr-defined]
            else:
                os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError, OSError):
            pass

    def _run(self, _job: jobs.Job) -> tuple[int, str]:
        with tempfile.TemporaryFile() as out:       # a file, not a pipe: a full pipe would stall the run
            proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=self.env, **_group_options())
            with self._lock:
                self._proc = proc
                stop_asked = self._stop_since is not None
            if stop_asked:                          # Stop pressed before the launcher existed
                self._signal(proc)
            while proc.poll() is None:
                try:
                    proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
                since = self._stop_since
                if since is not None and time.monotonic() - since > self.stop_wait_s:
                    _kill_tree(proc)                # bounded: a stop never waits forever
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        pass
                    break
            size = out.seek(0, os.SEEK_END)
            out.seek(max(0, size - OUTPUT_TAIL))
            output = out.read().decode("utf-8", errors="replace")
        code = proc.returncode if proc.returncode is not None else -1
        self._result = (code, "" if code == 0 else error_sentence(output))
        return self._result

    def _on_error(self, message: str, _details: str) -> None:
        self._result = (-1, message)            # the launcher could not start (or waiting for it failed)

    def _on_ended(self) -> None:
        self.ended.emit(*self._result)

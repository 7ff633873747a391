"""A run's lock (runs/lock.py): a second writer is refused at once, a dead holder's lock is taken over."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dtl_engine
from dtl_engine.errors import RunError
from dtl_engine.runs import folder as run_folder
from dtl_engine.runs.folder import RunFolder
from dtl_engine.runs.lock import lock_run

ROOT = Path(dtl_engine.__file__).resolve().parents[1]        # the tree whose code is under test


def test_a_second_writer_is_refused_at_once_and_a_dead_holder_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from dtl_engine.runs.folder import RunFolder; "
         "from dtl_engine.runs.lock import lock_run; lock_run(RunFolder(sys.argv[1])); "
         "print('locked', flush=True); time.sleep(600)", str(run)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(RunError, match=rf"in use by another training process \(pid {holder.pid}\)"):
            lock_run(RunFolder(run))
        assert time.monotonic() - started < 5
    finally:
        holder.kill()           # kill -9: the lock file stays behind, stale
        holder.wait()
    assert (run / run_folder.LOCK).exists()
    with lock_run(RunFolder(run)):
        lock = json.loads((run / run_folder.LOCK).read_text())
        assert lock["pid"] == os.getpid() and lock["host"]
    assert not (run / run_folder.LOCK).exists()

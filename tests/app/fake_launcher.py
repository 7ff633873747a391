"""Stands in for ``torchrun`` in the app's launch tests: ``python fake_launcher.py MODE MARKER``.

- ``wait``: runs until SIGTERM (at most a minute), then writes "stopped" to MARKER and exits 130,
  as torchrun does once its processes have stopped after their batch;
- ``ignore``: ignores SIGTERM (a launcher that hangs), so only a kill ends it (at most a minute);
- ``refuse``: prints the engine's one-sentence error and exits 2, as a refused run does.
"""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

MODE, MARKER = sys.argv[1], Path(sys.argv[2])
stopped = []

if MODE == "refuse":
    print("some launcher noise", file=sys.stderr)
    print("error: The image folder has only one class; a classifier needs at least two.", file=sys.stderr)
    sys.exit(2)
signal.signal(signal.SIGTERM, signal.SIG_IGN if MODE == "ignore" else (lambda *_: stopped.append(1)))
MARKER.write_text("started", encoding="utf-8")
deadline = time.monotonic() + 60
while not stopped and time.monotonic() < deadline:
    time.sleep(0.05)
if stopped:
    time.sleep(0.3)                     # the processes finish their batch and save
    MARKER.write_text("stopped", encoding="utf-8")
    sys.exit(130)
sys.exit(3)

"""Stands in for a training process in another program: writes a run folder's run.json and event log.

Run as ``python event_writer.py RUN_DIR``. It writes in three parts and waits (at most a minute
each) for the test to create ``RUN_DIR/../go-1`` and ``go-2`` between them, so the test can check
what the app shows after each part:

1. run.json (running, this process as the writer), ``run_started``, two ``batch`` events, and
   the first half of a third ``batch`` line, without its newline (a reader racing the writer);
2. the rest of that line, an ``epoch``, a ``memory`` and a ``checkpoint`` event;
3. run.json finished, then the ``finished`` event; exit.

Only the standard library and psutil: no project code, as a cluster job's process would be.
"""
from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import psutil

RUN = Path(sys.argv[1])
LOG = RUN / "events.jsonl"
EPOCHS, STEPS = 2, 3


def write_run(status: str, **extra: object) -> None:
    me = psutil.Process()
    record = {"schema": 1, "status": status, "pid": me.pid, "pid_started": me.create_time(),
              "host": socket.gethostname(), "epochs_done": 0, **extra}
    tmp = RUN / "run.json.tmp"
    tmp.write_text(json.dumps(record), encoding="utf-8")
    tmp.replace(RUN / "run.json")


def line(event: str, **fields: object) -> str:
    return json.dumps({"event": event, "time": time.time(), **fields}) + "\n"


def append(text: str) -> None:
    with open(LOG, "a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()


def batch(step: int, loss: float) -> str:
    return line("batch", epoch=0, step=step, steps_per_epoch=STEPS, global_step=step, total_steps=EPOCHS * STEPS,
                loss=loss, lr=0.001, images_per_sec=50.0 + step, memory_bytes=300_000_000,
                peak_memory_bytes=310_000_000, eta_seconds=12.0)


def wait_for(name: str) -> None:
    deadline = time.monotonic() + 60
    while not (RUN.parent / name).exists():
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.05)


RUN.mkdir(parents=True, exist_ok=True)
write_run("running")
third = batch(2, 0.9)
append(line("run_started", run_dir=str(RUN), device="cpu", device_name="CPU (2 threads)", precision="fp32",
            epochs=EPOCHS, steps_per_epoch=STEPS, start_epoch=0, classes=["a", "b"], num_train=12, num_val=4,
            trainable_params=1234, total_params=56789, config={"world_size": 2})
       + batch(0, 1.2) + batch(1, 1.0) + third[:25])
wait_for("go-1")
append(third[25:] + line("epoch", epoch=0, epochs=EPOCHS, train_loss=1.0, train_acc=0.5, val_loss=None,
                         val_acc=0.75, seconds=1.5, is_best=True)
       + line("memory", bytes_now=300_000_000, bytes_peak=320_000_000, kind="process")
       + line("checkpoint", path=str(RUN / "checkpoint.safetensors"), epoch=0))
wait_for("go-2")
write_run("finished", epochs_done=1, best_epoch=0, best_val_acc=0.75)
append(line("finished", run_dir=str(RUN), status="finished", epochs_done=1, best_epoch=0, best_val_acc=0.75))

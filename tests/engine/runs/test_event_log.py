"""The run folder's event log: written by every run, read incrementally, a half-written last line left for later."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from dtl_engine.runs.event_log import EVENT_LOG, EventFollower, EventLogWriter, read_events
from dtl_engine.training import train
from run_builders import MODEL_KWARGS, image_folder, tiny_config


def test_reader_keeps_a_partial_last_line_for_the_next_call(tmp_path):
    log = tmp_path / EVENT_LOG
    log.write_bytes(b'{"event": "a"}\n{"event": "b"}\n{"event": "c", "lo')
    events, offset = read_events(log)
    assert [e["event"] for e in events] == ["a", "b"]
    assert offset == len(b'{"event": "a"}\n{"event": "b"}\n')
    with open(log, "ab") as fh:
        fh.write(b'ss": 0.5}\nnot json\n{"event": "d"}\n')
    events, offset2 = read_events(log, offset)
    assert [(e["event"], e.get("loss")) for e in events] == [("c", 0.5), ("d", None)]   # the bad line is skipped
    assert offset2 == log.stat().st_size
    assert read_events(log, offset2) == ([], offset2)
    assert read_events(tmp_path / "missing.jsonl", 7) == ([], 7)


def test_a_fifo_in_place_of_the_log_is_refused_at_once(tmp_path):
    """Reading a named pipe would wait for a writer for ever (the app reads the log in a background job)."""
    import os
    import threading

    import pytest

    from dtl_engine.fileio import NotRegularFileError

    if not hasattr(os, "mkfifo"):
        pytest.skip("named pipes are a POSIX feature")
    os.mkfifo(tmp_path / EVENT_LOG)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            read_events(tmp_path / EVENT_LOG)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert outcome and isinstance(outcome[0], NotRegularFileError)


def test_every_run_writes_its_events(tmp_path):
    result = train(tiny_config(image_folder(tmp_path), epochs=2), run_dir=tmp_path / "run", model_kwargs=MODEL_KWARGS)
    events = EventFollower(result.run_dir).poll()
    names = [e["event"] for e in events]
    assert names[0] == "run_started" and names[-1] == "finished"
    assert names.count("epoch") == 2 and names.count("batch") == 2 * 3 and "checkpoint" in names
    epoch = [e for e in events if e["event"] == "epoch"][-1]
    assert json.loads((Path(result.run_dir) / "metrics.json").read_text())[-1]["val_acc"] == epoch["val_acc"]
    assert events[-1]["status"] == "finished"


def test_writer_does_not_create_a_missing_run_folder(tmp_path):
    EventLogWriter(tmp_path / "gone").warning("nothing to write into")
    assert not (tmp_path / "gone").exists()


WRITER = r"""
import sys, time
path = sys.argv[1]
with open(path, "a", encoding="utf-8") as fh:
    fh.write('{"event": "batch", "loss": 1.0}\n{"event": "batch", "loss": 0.9}\n{"event": "epo')
    fh.flush()
    sys.stdout.write("half\n"); sys.stdout.flush()
    sys.stdin.readline()                      # wait until the reader has looked
    fh.write('ch", "val_acc": 0.5}\n')
    fh.flush()
"""


def test_follower_reads_a_log_another_process_is_writing(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir / EVENT_LOG)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "half"     # bounded by the process timeout below
        follower = EventFollower(run_dir)
        assert [e["loss"] for e in follower.poll()] == [1.0, 0.9]
        assert follower.poll() == []                          # the half line is not an event yet
        writer.stdin.write("go\n")
        writer.stdin.flush()
        writer.wait(timeout=30)
        deadline, events = time.monotonic() + 10, []
        while not events and time.monotonic() < deadline:
            events = follower.poll()
        assert events == [{"event": "epoch", "val_acc": 0.5}]
    finally:
        writer.kill()
        writer.wait(timeout=30)

"""The run-event vocabulary (dtl_engine.events): one log form, one replay, one line per event."""
from __future__ import annotations

import io
import json
import math

from dtl_engine import events
from dtl_engine.cli.progress import ProgressPrinter
from dtl_engine.listener import BatchStats, EpochStats, FirstModel, RunListener, RunStarted
from dtl_engine.runs.event_log import EventLogWriter, read_events
from dtl_engine.runs.folder import EVENT_LOG


def _every_event() -> list[events.Event]:
    started = RunStarted("runs/r1", "cpu", "CPU (2 threads)", "fp32", 3, 4, 0, ["a", "b"], 8, 4, 10, 100)
    return [events.make("run_started", started),
            events.make("search_finished", {"summary": "learning rate chosen automatically: 3e-03",
                                            "trials": [{}, {}], "seconds": 4.0}),
            events.make("first_model", FirstModel(0.9, 0.5, 2.0, "runs/r1/best.safetensors")),
            events.make("batch", BatchStats(0, 0, 4, 0, 12, 1.2, 1e-3, 50.0, 10, 20, 30.0)),
            events.make("epoch", EpochStats(0, 3, 1.0, 0.4, math.nan, 0.5, 3.0, True)),
            events.make("checkpoint", "runs/r1/state.pt", 0),
            events.make("warning", "a file went"),
            events.make("finished", {"run_dir": "runs/r1", "status": "stopped", "epochs_done": 1, "epochs": 3})]


def test_every_event_goes_through_the_log_and_back_unchanged(tmp_path):
    writer = EventLogWriter(tmp_path)
    sent = _every_event()
    for event in sent:
        writer.append(event)
    back = events.decode_all(read_events(tmp_path / EVENT_LOG)[0])
    assert [e.kind for e in back] == [e.kind for e in sent]
    assert back[4].data.val_loss != back[4].data.val_loss          # NaN is null in the log and NaN again
    assert [events.describe(e) for e in back] == [events.describe(e) for e in sent]


def test_search_finished_reaches_the_log():
    # It reached only the CLI before: the log (and so the app following a run) never heard of it.
    buffer = []
    events.EventSink(buffer.append).search_finished({"summary": "x", "trials": [], "seconds": 1.0})
    assert [e.kind for e in buffer] == ["search_finished"]
    assert events.encode(buffer[0])["result"]["summary"] == "x"


def test_an_older_log_decodes_with_missing_fields_and_unknown_kinds_are_skipped():
    old = [{"event": "search_progress", "phase": "probe", "trial": 1, "trials": 3},      # no note, no fraction
           {"event": "finished", "status": "finished", "epochs_done": 2, "report": {"x": 1}},
           {"event": "a_kind_of_the_future"}, {"event": "epoch", "epoch": 0}]
    decoded = events.decode_all(old)
    assert [e.kind for e in decoded] == ["search_progress", "finished", "epoch"]
    assert decoded[0].data.note == "" and decoded[1].data.epochs_done == 2


def test_replay_calls_each_hook_once_in_order():
    calls = []

    class Recorder(RunListener):
        def checkpoint_saved(self, path, epoch): calls.append(("checkpoint", path, epoch))
        def warning(self, message): calls.append(("warning", message))
        def run_finished(self, result): calls.append(("finished", result.status, result.epochs_done))
        def epoch_finished(self, stats): calls.append(("epoch", stats.epoch))

    events.replay(_every_event(), Recorder())
    assert calls == [("epoch", 0), ("checkpoint", "runs/r1/state.pt", 0), ("warning", "a file went"),
                     ("finished", "stopped", 1)]


def test_the_terminal_prints_the_lines_the_app_shows():
    out = io.StringIO()
    printer = ProgressPrinter(out)
    events.replay(_every_event(), printer)
    printed = out.getvalue()
    for event in _every_event():
        line = events.describe(event)
        if line and event.kind not in ("checkpoint", "finished"):
            assert line in printed
    assert printed.count("Epoch 1/3:") == 1 and "val loss —" in printed


def test_a_stopped_run_says_how_far_it_came():
    assert events.describe(events.make("finished", {"status": "stopped", "epochs_done": 3, "epochs": 10})) \
        == "Stopped after 3 of 10 epochs"
    assert "before the first epoch" in events.ended_line(events.RunEnded("r", "stopped", 0))


def test_encode_is_strict_json():
    for event in _every_event():
        json.dumps(events.encode(event), allow_nan=False)

"""The memory chart says what it measures, and draws the full fine-tuning estimate only beside the same quantity."""
from __future__ import annotations

import json

from app.run_history import read_event_history
from app.widgets.charts import TrainingCharts

ESTIMATE = "full fine-tuning (est.)"


def _drawn(charts: TrainingCharts) -> bool:
    xs, _ = charts.memory.series(ESTIMATE)
    return xs.size > 0


def test_the_estimate_is_drawn_only_against_accelerator_memory(qtbot):
    charts = TrainingCharts()
    qtbot.addWidget(charts)
    charts.set_reference_memory(1_000_000_000)
    assert not _drawn(charts)                       # a re-opened run before its log says where it trained
    charts.set_memory_kind("cpu")
    assert not _drawn(charts) and charts.memory.title == "Memory (whole process)"
    charts.set_memory_kind("cuda")
    assert _drawn(charts) and charts.memory.title == "GPU memory"
    charts.clear()                                  # another run: its own device decides again
    assert not _drawn(charts) and charts.memory.title == "Memory"


def test_a_reopened_run_tells_its_device_from_its_log(tmp_path):
    from dtl_engine.runs.folder import EVENT_LOG

    (tmp_path / EVENT_LOG).write_text("\n".join(json.dumps(e) for e in (
        {"event": "run_started", "device": "cpu", "device_name": "CPU", "time": 1.0},
        {"event": "batch", "epoch": 0, "step": 0, "steps_per_epoch": 2, "global_step": 0, "loss": 1.5, "time": 2.0},
    )) + "\n")
    steps, _lines, device = read_event_history(tmp_path)
    assert device == "cpu" and len(steps) == 1

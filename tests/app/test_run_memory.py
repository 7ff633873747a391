"""A finished run's model is freed: memory does not grow from run to run in one launch of the app."""
from __future__ import annotations

import gc
import weakref

import pytest

pytest.importorskip("pytestqt")

from app import jobs
from app.worker import RunController
from run_fixtures import tiny_config, tiny_train


def test_no_model_of_a_finished_run_stays_referenced(qtbot, tiny_dataset, monkeypatch):
    import dtl_engine.runs.listing as runs

    models: list[weakref.ref] = []
    build = runs.build_run_model

    def build_and_watch(*args, **kwargs):
        model = build(*args, **kwargs)
        models.append(weakref.ref(model))
        return model
    monkeypatch.setattr(runs, "build_run_model", build_and_watch)
    controller = RunController(train_fn=tiny_train())
    for _ in range(2):                        # a second run in the same launch, as a user does
        with qtbot.waitSignal(controller.finished, timeout=180_000):
            controller.start_training(tiny_config(tiny_dataset, epochs=1))
        qtbot.waitUntil(lambda: not controller.is_running() and not jobs.active_jobs(), timeout=30_000)
    gc.collect()
    assert len(models) == 2 and [ref() for ref in models] == [None, None]


def test_an_ended_run_job_keeps_neither_its_settings_nor_the_scan(qtbot):
    # Ended jobs stay referenced a while (their threads may still be returning); what their
    # functions captured, such as the Data step's scan of every file, must not stay with them.
    class Scan:                               # stands for a ScanResult: every file's path
        pass

    def fake_train(config, listener=None, token=None, scan=None):
        return None

    scan, config = Scan(), Scan()
    seen = weakref.ref(scan), weakref.ref(config)
    controller = RunController(train_fn=fake_train)
    controller.start_training(config, scan=scan)
    del scan, config
    qtbot.waitUntil(lambda: not controller.is_running() and not jobs.active_jobs(), timeout=30_000)
    qtbot.wait(50)
    gc.collect()
    assert [ref() for ref in seen] == [None, None]

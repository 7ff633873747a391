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


def test_a_run_hands_the_memory_it_freed_back_once_it_has_returned(qtbot, monkeypatch):
    # glibc keeps freed heap pages in the arena of the job thread that allocated them until they are
    # trimmed, and CUDA's allocator its freed blocks: after a run, the app hands both back.
    import app.worker as worker

    order: list[str] = []
    monkeypatch.setattr(worker, "release_freed_memory", lambda: order.append("released"))

    def fake_train(config, listener=None, token=None):
        order.append("trained")

    controller = RunController(train_fn=fake_train)
    controller.start_training(object())
    qtbot.waitUntil(lambda: not controller.is_running() and not jobs.active_jobs(), timeout=30_000)
    assert order == ["trained", "released"]


def _alive() -> tuple[int, int]:
    """Real (not meta or fake) torch modules alive, and the bytes of the tensors alive."""
    import torch

    gc.collect()
    modules = tensor_bytes = 0
    for obj in gc.get_objects():
        if isinstance(obj, torch.nn.Module):
            modules += not any(p.device.type == "meta" or "Fake" in type(p).__name__ for p in obj.parameters())
        elif isinstance(obj, torch.Tensor) and obj.device.type != "meta" and "Fake" not in type(obj).__name__:
            tensor_bytes += obj.untyped_storage().nbytes()
    return modules, tensor_bytes


@pytest.mark.slow
def test_the_third_run_leaves_what_the_first_left(qtbot, tiny_dataset):
    import psutil

    controller = RunController(train_fn=tiny_train())
    alive, rss = [], []
    for _ in range(3):
        with qtbot.waitSignal(controller.finished, timeout=180_000):
            controller.start_training(tiny_config(tiny_dataset, epochs=2))
        qtbot.waitUntil(lambda: not controller.is_running() and not jobs.active_jobs(), timeout=30_000)
        qtbot.wait(50)
        alive.append(_alive())
        rss.append(psutil.Process().memory_info().rss / 2**20)
    print("idle RSS after each run (MB):", ", ".join(f"{r:.0f}" for r in rss), "; modules, tensor bytes:", alive)
    assert alive[2] == alive[0]

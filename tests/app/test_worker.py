"""The worker bridge: listener hooks become main-thread Qt signals; failures are never silent."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QThread

from app import jobs
from app.worker import RunController, describe_error
from dtl_engine.errors import DataError, RunError
from dtl_engine.listener import BatchStats, EpochStats, MemorySample, RunStarted
from run_fixtures import tiny_config, tiny_train


def _started(epochs=2, steps=3):
    return RunStarted("run-x", "cpu", "CPU", "fp32", epochs, steps, 0, ["a", "b"], 6, 2, 10, 100)


def fake_train(epochs=2, steps=3, fail_at=None, engine_reports_failure=False, delay=0.0):
    """A stand-in for dtl_engine.training.train that calls every hook from the worker thread."""
    seen_threads = []

    def run(config, listener=None, token=None, run_dir=None):
        seen_threads.append(threading.get_ident())
        listener.run_started(_started(epochs, steps))
        g = 0
        for e in range(epochs):
            for s in range(steps):
                token.wait_while_paused()
                time.sleep(delay)
                if token.stop_requested:
                    return SimpleNamespace(run_dir="run-x", status="stopped", epochs_done=e, best_epoch=None,
                                           best_val_acc=None, report=None)
                if g == fail_at:
                    if engine_reports_failure:  # the real runner calls run_failed, then re-raises
                        listener.run_failed("The images ran out.", "details here")
                    raise DataError("The images ran out.")
                listener.batch_finished(BatchStats(e, s, steps, g, epochs * steps, 1.0 / (g + 1), 1e-3,
                                                   100.0, 1000, 2000, 1.0))
                listener.memory_sample(MemorySample(1000, 2000, "process"))
                g += 1
            listener.epoch_finished(EpochStats(e, epochs, 0.5, 0.6, 0.5, 0.6, 0.1, True))
            listener.checkpoint_saved("run-x/checkpoint.safetensors", e)
            listener.warning(f"note {e}")
        result = SimpleNamespace(run_dir="run-x", status="finished", epochs_done=epochs, best_epoch=1,
                                 best_val_acc=0.6, report=None)
        listener.run_finished(result)  # the runner both reports and returns: must arrive once
        return result

    run.threads = seen_threads
    return run


def _record(controller):
    got = {k: [] for k in ("started", "batch", "epoch", "memory", "checkpoint", "warning", "finished", "failed")}
    threads = []
    for name, lst in got.items():
        def slot(*args, _lst=lst):
            threads.append(QThread.currentThread())
            _lst.append(args)
        getattr(controller, name).connect(slot)
    return got, threads


def test_hooks_arrive_as_signals_on_the_main_thread(qtbot):
    fn = fake_train()
    controller = RunController(train_fn=fn)
    got, threads = _record(controller)
    with qtbot.waitSignal(controller.finished, timeout=5000):
        controller.start_training(config=None)
    assert len(got["started"]) == 1 and got["started"][0][0].classes == ["a", "b"]
    assert [a[0].global_step for a in got["batch"]] == list(range(6))
    assert len(got["epoch"]) == 2 and len(got["memory"]) == 6
    assert got["checkpoint"] == [("run-x/checkpoint.safetensors", 0), ("run-x/checkpoint.safetensors", 1)]
    assert got["warning"] == [("note 0",), ("note 1",)]
    assert len(got["finished"]) == 1 and got["finished"][0][0].status == "finished"
    assert got["failed"] == []
    # The run happened on another thread; every slot ran on the main (GUI) thread.
    assert fn.threads and fn.threads[0] != threading.get_ident()
    main = QThread.currentThread()
    assert threads and all(t is main for t in threads)
    qtbot.waitUntil(lambda: not controller.is_running(), timeout=3000)


@pytest.mark.parametrize("engine_reports_failure", [False, True])
def test_a_failure_arrives_once_with_message_and_details(qtbot, engine_reports_failure):
    controller = RunController(train_fn=fake_train(fail_at=2, engine_reports_failure=engine_reports_failure))
    got, _ = _record(controller)
    with qtbot.waitSignal(controller.failed, timeout=5000) as blocker:
        controller.start_training(config=None)
    message, details = blocker.args
    assert message == "The images ran out."
    assert details.strip()
    qtbot.wait(100)  # nothing else may trail behind the failure
    assert len(got["failed"]) == 1 and got["finished"] == []
    assert len(got["batch"]) == 2
    qtbot.waitUntil(lambda: not controller.is_running(), timeout=3000)


def test_unexpected_exception_becomes_a_sentence_with_traceback(qtbot):
    def broken(config, listener=None, token=None, run_dir=None):
        raise ZeroDivisionError("division by zero")

    controller = RunController(train_fn=broken)
    with qtbot.waitSignal(controller.failed, timeout=5000) as blocker:
        controller.start_training(config=None)
    message, details = blocker.args
    assert "division by zero" in message and message.startswith("Training failed")
    assert "ZeroDivisionError" in details and "Traceback" in details


def test_pause_holds_the_run_and_stop_ends_it(qtbot):
    controller = RunController(train_fn=fake_train(epochs=50, steps=10, delay=0.005))
    got, _ = _record(controller)
    with qtbot.waitSignal(controller.batch, timeout=5000):
        controller.start_training(config=None)
    controller.pause()
    assert controller.is_paused()
    qtbot.wait(150)
    count = len(got["batch"])
    qtbot.wait(300)
    assert len(got["batch"]) <= count + 1  # at most the batch in flight when paused
    with qtbot.waitSignal(controller.finished, timeout=5000) as blocker:
        controller.stop()  # a paused run must wake up to stop
    assert blocker.args[0].status == "stopped"
    assert len(got["batch"]) < 500
    assert controller.wait(3000)


def test_only_one_run_at_a_time(qtbot):
    controller = RunController(train_fn=fake_train(epochs=100, steps=10, delay=0.005))
    with qtbot.waitSignal(controller.started, timeout=5000):
        controller.start_training(config=None)
    with pytest.raises(RuntimeError):
        controller.start_training(config=None)
    assert controller.stop_and_wait(5000)


def test_resume_calls_the_resume_function_with_the_folder(qtbot):
    calls = []

    def fake_resume(run_dir, listener=None, token=None):
        calls.append(run_dir)
        return SimpleNamespace(run_dir=run_dir, status="finished")

    controller = RunController(resume_fn=fake_resume)
    with qtbot.waitSignal(controller.finished, timeout=5000) as blocker:
        controller.start_resume("some/run")
    assert calls == ["some/run"] and blocker.args[0].run_dir == "some/run"


def test_a_job_returns_its_result_or_a_readable_error(qtbot):
    results, errors = [], []
    job = jobs.submit(lambda _job: sum(range(10)), kind="test", on_done=results.append)
    qtbot.waitUntil(lambda: job not in jobs.active_jobs(), timeout=5000)
    assert results == [45]

    def bad(_job):
        raise RunError("That run folder is incomplete.")

    job = jobs.submit(bad, kind="test", what="Opening", on_error=lambda m, d: errors.append((m, d)))
    qtbot.waitUntil(lambda: job not in jobs.active_jobs(), timeout=5000)
    assert errors[0][0] == "That run folder is incomplete." and "RunError" in errors[0][1]


def test_a_cancelled_job_reports_cancelled_not_its_result(qtbot):
    release = threading.Event()
    got = []

    def slow(job):
        release.wait(5)
        return "late"

    job = jobs.submit(slow, kind="test", on_done=got.append, on_cancelled=lambda: got.append("cancelled"))
    job.cancel()
    release.set()
    qtbot.waitUntil(lambda: job not in jobs.active_jobs(), timeout=5000)
    assert got == ["cancelled"]


def test_a_lane_runs_its_jobs_one_at_a_time_and_skips_cancelled_ones(qtbot):
    running, overlap, order = [], [], []
    lock = threading.Lock()

    def work(name):
        def fn(_job):
            with lock:
                running.append(name)
                overlap.append(len(running))
            time.sleep(0.05)
            with lock:
                running.remove(name)
            order.append(name)
        return fn

    first = jobs.submit(work("a"), kind="test", lane="t")
    skipped = jobs.submit(work("b"), kind="test", lane="t")
    last = jobs.submit(work("c"), kind="test", lane="t")
    skipped.cancel()
    qtbot.waitUntil(lambda: not {first, skipped, last} & set(jobs.active_jobs()), timeout=5000)
    assert order == ["a", "c"] and max(overlap) == 1


def test_wait_all_does_not_call_a_job_still_queued_in_its_lane_done(qtbot):
    release = threading.Event()
    first = jobs.submit(lambda _job: release.wait(5), kind="test", lane="w")
    queued = jobs.submit(lambda _job: None, kind="test", lane="w")
    release.set()
    assert not jobs.wait_all(5000)      # the first returned, but the second never started
    queued.cancel()
    assert jobs.wait_all(5000)          # cancelled, it never will: nothing is left to wait for
    qtbot.waitUntil(lambda: not {first, queued} & set(jobs.active_jobs()), timeout=5000)


def test_a_job_callback_is_skipped_once_its_widget_is_gone(qtbot):
    from PySide6.QtWidgets import QWidget

    release, got = threading.Event(), []
    widget = QWidget()
    job = jobs.submit(lambda _job: release.wait(5), kind="test", context=widget, on_done=got.append)
    widget.deleteLater()
    qtbot.wait(20)
    release.set()
    qtbot.waitUntil(lambda: job not in jobs.active_jobs(), timeout=5000)
    assert got == []


def test_the_newest_request_of_a_widget_wins(qtbot):
    from PySide6.QtWidgets import QWidget

    widget, other = QWidget(), QWidget()
    release, got = threading.Event(), []

    def answer(text):
        def fn(_job):
            release.wait(5)
            return text
        return fn

    old = jobs.submit(answer("old"), kind="test", context=widget, supersede="k", on_done=got.append,
                      on_progress=got.append, on_error=lambda *a: got.append("error"),
                      on_cancelled=lambda: got.append("cancelled"), on_ended=lambda: got.append("ended"))
    beside = jobs.submit(answer("other widget"), kind="test", context=other, supersede="k", on_done=got.append)
    other_key = jobs.submit(answer("other key"), kind="test", context=widget, supersede="j", on_done=got.append)
    new = jobs.submit(answer("new"), kind="test", context=widget, supersede="k", on_done=got.append)
    assert old.is_cancelled and not new.is_cancelled and not beside.is_cancelled and not other_key.is_cancelled
    release.set()
    qtbot.waitUntil(lambda: not {old, beside, other_key, new} & set(jobs.active_jobs()), timeout=5000)
    assert sorted(got) == ["new", "other key", "other widget"]      # nothing at all of the superseded one


def test_dropping_a_request_silences_its_answer_without_a_new_job(qtbot):
    from PySide6.QtWidgets import QWidget

    widget, release, got = QWidget(), threading.Event(), []
    job = jobs.submit(lambda _job: release.wait(5) and "late", kind="test", context=widget, supersede="k",
                      on_done=got.append)
    jobs.drop(widget, "k")
    jobs.drop(widget, "not asked")                                  # nothing of that key: nothing happens
    release.set()
    qtbot.waitUntil(lambda: job not in jobs.active_jobs(), timeout=5000)
    assert job.is_cancelled and got == []
    with pytest.raises(ValueError):
        jobs.submit(lambda _job: None, kind="test", supersede="k")  # whose newest request? a context is needed


def test_an_ended_job_and_what_it_holds_are_freed_on_the_gui_thread(qtbot):
    """Once a job ended, it, its function and its callbacks are let go on the GUI thread, by reference count.

    Kept for ever, every job pinned its callbacks' widgets and the data its function captured. Left to
    the cyclic garbage collector, a job (a Qt object) died in whichever thread the collector happened
    to run in, a running job's worker thread included.
    """
    import gc
    import weakref

    class Payload:
        pass

    freed: list[tuple[str, bool]] = []

    def note(what: str) -> None:
        freed.append((what, threading.current_thread() is threading.main_thread()))

    gc.disable()            # only reference counts may free them: nothing may wait for the collector
    try:
        for i in range(3):
            payload = Payload()
            weakref.finalize(payload, note, "payload")
            job = jobs.submit(lambda _job, p=payload: i, kind="test", lane="t" if i else None,
                              on_done=lambda _result, p=payload: None)
            weakref.finalize(job, note, "job")
            del job, payload
        qtbot.waitUntil(lambda: len(freed) == 6, timeout=5000)
    finally:
        gc.enable()
    assert sorted(what for what, _ in freed) == ["job"] * 3 + ["payload"] * 3
    assert all(on_main for _, on_main in freed), freed


def test_the_cyclic_collector_runs_on_the_gui_thread_only_while_jobs_run(qtbot):
    """A job thread that allocates must never run the cyclic collector: it would destroy there the Qt
    objects of widgets that went away (whole test processes died in the collector beside a job thread)."""
    import gc
    import weakref

    class Cycle:
        pass

    go, allocated = threading.Event(), threading.Event()
    freed_on_gui_thread: list[bool] = []
    kept: list[list[int]] = []

    def work(_job):
        go.wait(10)
        kept.extend([i] for i in range(20 * gc.get_threshold()[0]))   # far past a collection's threshold
        allocated.set()

    assert gc.isenabled()
    job = jobs.submit(work, kind="test")
    enabled_while_running = gc.isenabled()
    garbage = Cycle()
    garbage.me = garbage
    weakref.finalize(garbage, lambda: freed_on_gui_thread.append(threading.current_thread() is threading.main_thread()))
    del garbage
    go.set()
    qtbot.waitUntil(lambda: allocated.is_set() and bool(freed_on_gui_thread), timeout=10_000)
    done = job.is_done
    del job
    qtbot.waitUntil(lambda: done() and not jobs.active_jobs(), timeout=10_000)
    qtbot.waitUntil(gc.isenabled, timeout=5000)      # automatic again once no job thread holds anything
    assert not enabled_while_running
    assert freed_on_gui_thread == [True]


def test_describe_error_keeps_engine_sentences():
    assert describe_error(DataError("No images in that folder."))[0] == "No images in that folder."
    msg, details = describe_error(KeyError("x"), "The export")
    assert msg.startswith("The export failed unexpectedly") and "KeyError" in details
    assert "memory" in describe_error(MemoryError(), "Training")[0]


def test_real_engine_tiny_run_reports_through_signals(qtbot, tiny_dataset):
    """The real trainer on a tiny model: every hook reaches the main thread, the result once."""
    controller = RunController(train_fn=tiny_train())
    got, _ = _record(controller)
    with qtbot.waitSignal(controller.finished, timeout=60000) as blocker:
        controller.start_training(tiny_config(tiny_dataset, epochs=2))
    result = blocker.args[0]
    assert result.status == "finished" and result.epochs_done == 2
    info = got["started"][0][0]
    assert 0 < info.trainable_params < info.total_params
    assert len(got["batch"]) == 2 * info.steps_per_epoch and len(got["epoch"]) == 2
    assert got["failed"] == [] and len(got["finished"]) == 1
    assert Path(result.run_dir, "checkpoint.safetensors").exists()
    qtbot.waitUntil(lambda: not controller.is_running(), timeout=3000)


def test_real_engine_failure_reaches_the_failed_signal(qtbot, tmp_path):
    """A folder with one class: the engine's own sentence arrives, with details."""
    data = tmp_path / "images"          # beside DTL Studio's own folder, never around it
    (data / "only").mkdir(parents=True)
    controller = RunController(train_fn=tiny_train())
    with qtbot.waitSignal(controller.failed, timeout=60000) as blocker:
        controller.start_training(tiny_config(data))
    message, details = blocker.args
    assert message.startswith("No images were found in the class folders") and "Traceback" not in message
    assert "Error" in details

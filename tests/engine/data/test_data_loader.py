"""Loader workers: automatic count, bad files found in a worker reported like in-process, prompt shutdown."""
from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
import torch
from image_factory import jpeg_bytes
from run_builders import MODEL_KWARGS, Recorder, image_folder, tiny_config

from dtl_engine.data import loader as loader_mod
from dtl_engine.data.loader import BatchLoader, auto_num_workers, image_dataset
from dtl_engine.listener import StopToken
from dtl_engine.training import train

CONFIG = {"input_size": (3, 32, 32), "crop_pct": 0.875, "interpolation": "bilinear",
          "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_mode": "center"}


@pytest.mark.parametrize("cores, expected", [(1, 0), (2, 1), (4, 3), (16, 8), (64, 8)])
def test_automatic_worker_count(monkeypatch, cores, expected):
    monkeypatch.setattr(loader_mod, "available_cores", lambda: cores)
    assert auto_num_workers() == expected
    assert auto_num_workers(0) == 0 and auto_num_workers(3) == 3


def _jpegs(folder: Path, n: int) -> list[tuple[str, int]]:
    folder.mkdir(parents=True)
    out = []
    for i in range(n):
        p = folder / f"img_{i:02d}.jpg"
        p.write_bytes(jpeg_bytes((48, 40), index=i % 3))
        out.append((str(p), i % 3))
    return out


def _epoch(samples, workers, truncate: str) -> tuple[list[int], list[tuple[str, str]], list[int]]:
    """One epoch with batches of 1; ``truncate`` is cut short after the first batch arrived (mid-epoch)."""
    reports: list[tuple[str, str]] = []
    pids: list[int] = []

    def on_failure(path: str, reason: str) -> None:
        reports.append((path, reason))
        pids.append(os.getpid())

    dataset = image_dataset(samples, CONFIG, "none", train=False, on_failure=on_failure, cache=None)
    loader = BatchLoader(dataset, workers)
    seen: list[int] = []
    try:
        for step, (_images, _labels, idx, _failed) in enumerate(loader([[i] for i in range(len(samples))])):
            seen += idx.tolist()
            if step == 0:
                data = Path(truncate).read_bytes()
                Path(truncate).write_bytes(data[: len(data) // 2])
        assert dataset.failures == reports                    # the main process's dataset knows it too
        return seen, reports, pids
    finally:
        loader.close()


def test_truncated_jpeg_met_by_a_worker_mid_epoch_is_reported_and_skipped_as_in_process(tmp_path):
    n = 16
    in_worker = _jpegs(tmp_path / "w", n)
    in_process = _jpegs(tmp_path / "p", n)
    bad = n - 2                                              # far beyond what the worker prefetched at step 0
    seen_w, reports_w, pids = _epoch(in_worker, 1, in_worker[bad][0])
    seen_p, reports_p, _ = _epoch(in_process, 0, in_process[bad][0])

    assert len(reports_w) == 1 and reports_w[0][0] == in_worker[bad][0]
    assert "truncated" in reports_w[0][1] and Path(reports_w[0][0]).name in reports_w[0][1]
    assert pids == [os.getpid()]                             # reported in the main process, not lost in the worker
    assert bad not in seen_w and len(seen_w) == n - 1       # skipped, never replaced by a neighbour
    assert seen_w == seen_p                                  # exactly as in-process
    assert [Path(p).name for p, _ in reports_w] == [Path(p).name for p, _ in reports_p]


def test_close_ends_the_workers_at_once(tmp_path):
    samples = _jpegs(tmp_path / "w", 8)
    loader = BatchLoader(image_dataset(samples, CONFIG, cache=None), 2)
    next(iter(loader([[i] for i in range(8)])))
    workers = list(loader._loader._iterator._workers)
    assert len(workers) == 2 and all(w.is_alive() for w in workers)
    loader.close()
    assert not any(w.is_alive() for w in workers)


def test_ctrl_c_leaves_the_workers_to_the_main_process(tmp_path):
    # The first Ctrl+C means "stop after this batch": the workers must still deliver it.
    import signal

    samples = _jpegs(tmp_path / "w", 8)
    loader = BatchLoader(image_dataset(samples, CONFIG, cache=None), 1)
    batches = loader([[i] for i in range(8)])
    seen = next(batches)[2].tolist()
    (worker,) = loader._loader._iterator._workers
    os.kill(worker.pid, signal.SIGINT)
    seen += [i for _images, _labels, idx, _failed in batches for i in idx.tolist()]
    assert seen == list(range(8)) and worker.is_alive()
    loader.close()


def test_stop_ends_a_runs_workers_and_a_finished_run_leaves_none(tmp_path):
    data = image_folder(tmp_path)
    token = StopToken()
    rec = Recorder(batch_finished=lambda stats: token.stop())
    result = train(tiny_config(data, num_workers=2), rec, token, model_kwargs=MODEL_KWARGS)
    assert result.status == "stopped"
    assert multiprocessing.active_children() == []
    result = train(tiny_config(data, epochs=1), model_kwargs=MODEL_KWARGS)   # default: automatic workers
    assert result.status == "finished" and multiprocessing.active_children() == []


def test_what_a_spawned_worker_receives_pickles_without_the_runs_listener(tmp_path):
    # macOS and Windows (and the bundle) start workers with spawn: the dataset travels pickled.
    import pickle
    import threading

    lock = threading.Lock()                                  # unpicklable, like a run's listener

    def on_failure(path, reason):
        with lock:
            pass

    dataset = image_dataset(_jpegs(tmp_path / "w", 2), CONFIG, "standard", train=True, on_failure=on_failure)
    loader = BatchLoader(dataset, 0)
    copy = pickle.loads(pickle.dumps(loader._loader.dataset))
    assert copy.dataset.on_failure is None and len(copy) == 2
    a, b, c = copy[(1, 7)][0][0], copy[(1, 7)][0][0], copy[(1, 8)][0][0]   # (image, label, index), failures
    assert a.shape == (3, 32, 32) and torch.equal(a, b)     # augmentation is a function of the sample seed
    assert not torch.equal(a, c)


def test_a_loader_made_off_the_main_thread_loads_in_worker_processes(tmp_path):
    # The app trains on a background thread beside Qt's threads: its workers come from the fork
    # server (Linux), never forked from this process, and load there as on the main thread.
    import sys
    import threading

    samples = _jpegs(tmp_path / "w", 4)
    seen: dict[str, object] = {}

    def make(name: str) -> None:
        loader = BatchLoader(image_dataset(samples, CONFIG, cache=None), 1)
        try:
            indices = [i for batch in loader([[0, 1], [2, 3]]) for i in batch.indices.tolist()]
            seen[name] = (loader._loader.num_workers, loader._loader.multiprocessing_context.get_start_method(),
                          indices)
        finally:
            loader.close()

    thread = threading.Thread(target=make, args=("thread",))
    thread.start()
    thread.join(timeout=120)
    make("main")
    linux = sys.platform.startswith("linux")
    assert seen == {"thread": (1, "forkserver" if linux else "spawn", [0, 1, 2, 3]),
                    "main": (1, "fork" if linux else "spawn", [0, 1, 2, 3])}   # the platform's default
    assert multiprocessing.active_children() == []

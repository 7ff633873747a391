#!/usr/bin/env python3
"""Idle memory of one launch of DTL Studio over several runs (does a run leave memory behind?).

Drives the real window headless: the built-in sample (or its first N images per class), the
default settings but random weights (offline) and a short run, Train pressed again once each run
has ended. After each run, once the app is idle again, it prints the process's resident memory,
the bytes of torch tensors still alive, and the Python object types that grew since the run before.

    python packaging/measure_run_memory.py                          # 3 runs of 2 epochs, the whole sample
    python packaging/measure_run_memory.py --per-class 40 --image-size 224
    python packaging/measure_run_memory.py --keep-freed     # the baseline: freed memory not handed back
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "packaging"))
sys.path.insert(0, str(ROOT))

from make_screenshots import _settle, _wait  # noqa: E402


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20      # what the Train step's memory chart reads


def tensor_mb() -> float:
    import torch

    storages: dict[int, int] = {}          # views share a storage: count each once
    for obj in gc.get_objects():
        try:
            if type(obj) in (torch.Tensor, torch.nn.Parameter) and obj.device.type == "cpu":
                storage = obj.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, ReferenceError):
            continue
    return sum(storages.values()) / 2**20


def type_counts() -> Counter:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def subset(sample: Path, per_class: int, into: Path) -> Path:
    for cls in sorted(p for p in sample.iterdir() if p.is_dir()):
        (into / cls.name).mkdir(parents=True)
        for image in sorted(cls.iterdir())[:per_class]:
            shutil.copy2(image, into / cls.name / image.name)
    return into


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--per-class", type=int, default=0, help="images per class of the sample (0: all)")
    parser.add_argument("--image-size", type=int, default=0, help="0: the backbone's own size")
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    parser.add_argument("--keep-freed", action="store_true",
                        help="the baseline: skip the step that hands a finished run's freed memory back")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="dtl-memory-"))
    os.environ["DTL_STUDIO_HOME"] = str(home / "home")
    os.environ["DTL_STUDIO_SETTINGS"] = str(home / "settings.ini")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from app import jobs
    from app.main_window import TRAIN, MainWindow
    from app.settings import Settings
    from dtl_engine.data.sample import ensure_sample_dataset

    QApplication.instance() or QApplication([])
    if args.keep_freed:
        import app.worker

        app.worker.release_freed_memory = lambda: None
    data = ensure_sample_dataset()
    if args.per_class:
        data = subset(data, args.per_class, home / "subset")
    settings = Settings()
    config = {"weights": "random", "epochs": args.epochs, "data_dir": str(data)}
    if args.image_size:
        config["image_size"] = args.image_size
    settings.set_last_config(config)
    window = MainWindow(settings)
    window.resize(1280, 820)
    window.show()

    window.data_page.open_folder(str(data))
    _wait("the folder's scan", lambda: window.step_states()[0][0], 300)
    _settle(args.idle_seconds)
    gc.collect()
    print(f"before any run: {rss_mb():7.0f} MB resident, {tensor_mb():6.1f} MB of tensors", flush=True)
    before = type_counts()
    page = window.train_page
    for run in range(1, args.runs + 1):
        ended: list = []
        page.run_finished.connect(ended.append)
        window.show_step(TRAIN)
        started = time.monotonic()
        window.start_training()
        _wait(f"run {run}", lambda: bool(ended), 7200)
        page.run_finished.disconnect(ended.append)
        _wait("the jobs after the run (its evaluation)", lambda: not jobs.active_jobs(), 600)
        _settle(args.idle_seconds)
        gc.collect()
        counts = type_counts()
        grown = ", ".join(f"{name} +{n}" for name, n in (counts - before).most_common(6))
        before = counts
        print(f"after run {run} ({ended[0].status}, {time.monotonic() - started:.0f} s): {rss_mb():7.0f} MB "
              f"resident, {tensor_mb():6.1f} MB of tensors; grew: {grown}", flush=True)
    window.close()
    shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

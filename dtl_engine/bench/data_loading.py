"""Benchmark of the data path: photos a second before and after draft decoding, the cache and workers.

    python -m dtl_engine bench-data [DIR]            # DIR: a folder of class folders (default: 40 generated
                                                     # 12 MP photos)
    python -m dtl_engine bench-data --train          # also the same 5-epoch training run, old data path vs new
    python -m dtl_engine bench-data --scan           # scan a generated tree of 100,000 small files
    python -m dtl_engine bench-data --app-thread     # also the new path on a background thread, as the app
                                                     # trains: without workers vs with the automatic count
                                                     # (with --train: that training run, not old vs new)

Loading rows (one process, same photos, the default backbone's training transform):

* old path: every photo fully decoded in the training thread, no cache (the engine before draft decoding);
* new path, epoch 1: draft decoding in loader workers, each photo stored in a fresh decoded-image cache;
* new path, epoch 2+: the same loader reading the cache.

Everything generated or cached goes to a temporary folder that is removed afterwards.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, cast
import io
import threading

from dtl_engine.config import TrainConfig

PHOTO_SIZE = (4032, 3024)       # 12 MP, a phone camera's 4:3 frame


# --- generated inputs ---------------------------------------------------------------------------

def make_photos(folder: str | os.PathLike[str], count: int = 40, classes: int = 2, seed: int = 0,
                size: tuple[int, int] = PHOTO_SIZE) -> Path:
    """Write ``count`` photo-like JPEGs (smooth colour gradients plus fine noise) in ``classes`` folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(folder)
    w, h = size
    for i in range(count):
        cls = root / f"class_{i % classes}"
        cls.mkdir(parents=True, exist_ok=True)
        # A coarse random field scaled up gives photo-like smooth areas; fine noise gives texture.
        field = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        coarse = field.resize((w, h), Image.Resampling.BICUBIC)
        noise = rng.normal(0, 12, (h // 4, w // 4, 1)).astype(np.float32)
        arr = np.asarray(coarse, dtype=np.float32)
        arr += np.repeat(np.repeat(noise, 4, axis=0), 4, axis=1)[:h, :w]
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(cls / f"photo_{i:04d}.jpg", quality=90)
    return root


_TINY_PNG: bytes | None = None


def make_tree(folder: str | os.PathLike[str], files: int = 100_000, classes: int = 10, per_folder: int = 1000) -> Path:
    """Write ``files`` tiny PNGs in ``classes`` class folders, ``per_folder`` files per sub-folder."""
    from PIL import Image

    global _TINY_PNG
    if _TINY_PNG is None:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (120, 30, 200)).save(buf, format="PNG")
        _TINY_PNG = buf.getvalue()
    root = Path(folder)
    for i in range(files):
        folder_i = root / f"class_{i % classes}" / f"part_{(i // classes) // per_folder}"
        if (i // classes) % per_folder == 0:
            folder_i.mkdir(parents=True, exist_ok=True)
        with open(folder_i / f"img_{i}.png", "wb") as fh:
            fh.write(_TINY_PNG)
    return root


# --- loading ------------------------------------------------------------------------------------

def _default_data_config() -> dict[str, Any]:
    import timm
    from timm.data import resolve_data_config


    cfg = timm.models.get_pretrained_cfg(TrainConfig().backbone)
    return resolve_data_config({}, pretrained_cfg=cfg.to_dict() if cfg is not None else {})


def _worker_server_ready() -> None:
    """Start this thread's fork server, if it uses one, and wait until it has forked a process."""
    from dtl_engine.data.loader import start_worker_server, worker_context

    start_worker_server()
    context = worker_context()
    if context.get_start_method() == "forkserver":
        probe = cast(Any, context).Process(target=time.sleep, args=(0,))     # a concrete context has Process
        probe.start()
        probe.join()


def measure_loading(folder: str | os.PathLike[str], epochs: int = 5, workers: int | None = None,
                    batch_size: int = 32, old_limit: int | None = None, old: bool = True) -> dict[str, Any]:
    """Images a second of the old path and of epochs 1 and 2+ of the new path on the photos in ``folder``.

    ``old=False`` skips the old path (its rate is then nan).
    """
    from dtl_engine.data import ImageDataset, build_transform, scan_folder
    from dtl_engine.data.image_cache import ImageCache
    from dtl_engine.data.loader import BatchLoader, auto_num_workers, image_dataset

    if auto_num_workers(workers) > 0:
        _worker_server_ready()          # once per process, as a run does first: not part of an epoch
    samples = [s for items in scan_folder(folder).items.values() for s in items]
    data_config, augment = _default_data_config(), TrainConfig().augment
    if augment not in ("none", "light-noflip", "light", "standard"):
        augment = "light"           # 'auto' is settled by a search inside a run: measure the light crops
    old_samples = samples[:old_limit] if old_limit else samples
    old_set = ImageDataset(old_samples if old else [], build_transform(data_config, augment, train=True))
    t = time.perf_counter()
    for i in range(len(old_set)):
        old_set[i]
    old_rate = len(old_set) / (time.perf_counter() - t) if old else float("nan")

    n_workers = auto_num_workers(workers)
    with tempfile.TemporaryDirectory(prefix="dtl-bench-cache-") as tmp:
        cache = ImageCache(tmp, budget_bytes=2**40)
        new = image_dataset(samples, data_config, augment, train=True, cache=cache)
        loader = BatchLoader(new, n_workers)
        batches = [list(range(i, min(i + batch_size, len(new)))) for i in range(0, len(new), batch_size)]
        seconds = []
        try:
            for _ in range(epochs):
                t = time.perf_counter()
                for _batch in loader(batches):
                    pass
                seconds.append(time.perf_counter() - t)
        finally:
            loader.close()
        cached_mb = cache.info().bytes / 2**20
    later = statistics.median(seconds[1:]) if len(seconds) > 1 else float("nan")
    return {"images": len(samples), "old_images": len(old_set), "workers": n_workers, "min_side": new.min_side,
            "old": old_rate, "epoch1": len(samples) / seconds[0], "epoch2plus": len(samples) / later,
            "cache_mb": cached_mb, "epoch_seconds": seconds}


def measure_app_thread(folder: str | os.PathLike[str], epochs: int = 5,
                       workers: int | None = None) -> dict[str, dict[str, Any]]:
    """The new path measured on a background thread, as the app's runs load: with 0 workers and with ``workers``.

    Until loader workers started from the fork server, the app's thread decoded by itself (0 workers).
    """
    from dtl_engine.data.loader import auto_num_workers

    out: dict[str, dict[str, Any]] = {}
    for name, count in (("in the thread", 0), ("workers", auto_num_workers(workers))):
        _on_a_thread(lambda name=name, count=count: out.__setitem__(
            name, measure_loading(folder, epochs=epochs, workers=count, old=False)))
    return out


# --- training side by side ------------------------------------------------------------------------

@contextlib.contextmanager
def _old_data_path() -> Iterator[None]:
    """The engine's data path before this benchmark's changes: full decode in the training thread, no cache."""
    from dtl_engine.data import loader

    def legacy(samples, data_config, augment="none", train=False, on_failure=None, cache=None):
        from dtl_engine.data import ImageDataset, build_transform

        return ImageDataset(samples, build_transform(data_config, augment, train=train), on_failure)

    saved = loader.image_dataset
    loader.image_dataset = legacy
    try:
        yield
    finally:
        loader.image_dataset = saved


def _on_a_thread(fn: Any) -> None:
    """Run ``fn()`` on a background thread, as the app runs its training, and wait for it."""
    errors: list[BaseException] = []

    def call() -> None:
        try:
            fn()
        except BaseException as exc:  # re-raised on the calling thread
            errors.append(exc)
    thread = threading.Thread(target=call, name="bench-app-thread")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def measure_training(folder: str | os.PathLike[str], epochs: int = 5, backbone: str | None = None,
                     model_kwargs: dict[str, Any] | None = None, app_thread: bool = False) -> dict[str, float]:
    """Wall seconds of the same training run (defaults, random weights) with the old and the new data path.

    ``app_thread``: instead, the new path on a background thread as the app trains, with no loader
    workers (``"thread"``, what the app did before they were safe there) and with the automatic
    count (``"workers"``); each run gets a cold cache.
    """
    from dtl_engine.training import train

    out: dict[str, float] = {}
    home = os.environ.get("DTL_STUDIO_HOME")
    with tempfile.TemporaryDirectory(prefix="dtl-bench-runs-") as tmp:
        try:
            for name in (("thread", "workers") if app_thread else ("old", "new")):
                os.environ["DTL_STUDIO_HOME"] = str(Path(tmp) / f"home_{name}")   # cold, private cache
                extra: dict[str, Any] = {"backbone": backbone} if backbone else {}
                config = TrainConfig(data_dir=str(folder), weights="random", epochs=epochs, **extra)
                if name in ("old", "thread"):
                    config.num_workers = 0               # the old default; the app's thread until now
                t = time.perf_counter()
                with _old_data_path() if name == "old" else contextlib.nullcontext():
                    run = partial(train, config, run_dir=Path(tmp) / f"run_{name}", model_kwargs=model_kwargs)
                    _on_a_thread(run) if app_thread else run()
                out[name] = time.perf_counter() - t
        finally:
            if home is None:
                os.environ.pop("DTL_STUDIO_HOME", None)
            else:
                os.environ["DTL_STUDIO_HOME"] = home
    return out


# --- scan ---------------------------------------------------------------------------------------

def _peak_mb_linux() -> float | None:
    # VmHWM starts afresh with the new program; ru_maxrss would keep the (larger) parent's peak
    # across fork + exec on Linux.
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _scan_child(folder: str) -> None:
    """Scan ``folder`` in this (fresh) process and print seconds and peak memory as JSON."""
    import resource

    from dtl_engine.data import scan_folder

    t = time.perf_counter()
    result = scan_folder(folder)
    seconds = time.perf_counter() - t
    peak_mb = _peak_mb_linux()
    if peak_mb is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mb = peak / 2**20 if sys.platform == "darwin" else peak / 2**10
    print(json.dumps({"seconds": seconds, "images": result.num_images, "peak_mb": peak_mb}))


def measure_scan(folder: str | os.PathLike[str]) -> dict[str, float]:
    """Seconds, usable images and peak memory (MB) of a scan of ``folder`` in a fresh process."""
    code = f"from dtl_engine.bench.data_loading import _scan_child; _scan_child({str(folder)!r})"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parent.parent),
                                                                     os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- command line -------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``bench-data`` options."""
    parser.add_argument("folder", metavar="DIR", nargs="?", default=None,
                        help="A folder of class folders (default: generated photos in a temporary folder).")
    parser.add_argument("--photos", type=int, default=40, help="Photos of 12 MP to generate when DIR is not given.")
    parser.add_argument("--epochs", type=int, default=5, help="Epochs of the new loading path (and of --train).")
    parser.add_argument("--workers", type=int, default=None, help="Loader workers (default: automatic).")
    parser.add_argument("--train", action="store_true",
                        help="Also time the same training run (defaults, random weights) with the old and new path.")
    parser.add_argument("--backbone", default=None, help="Backbone of --train (default: the product default).")
    parser.add_argument("--model-kwargs", default=None, help="JSON dict for timm.create_model in --train.")
    parser.add_argument("--app-thread", action="store_true",
                        help="Also load on a background thread, as the app does: without and with loader workers.")
    parser.add_argument("--scan", action="store_true",
                        help="Instead: scan DIR (default: a generated tree of --files small files) in a fresh process.")
    parser.add_argument("--files", type=int, default=100_000, help="Files of the generated --scan tree.")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and print its table."""
    from dtl_engine.data.loader import auto_num_workers, available_cores

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{available_cores()} CPU cores, load average {load:.1f} at the start")
    with tempfile.TemporaryDirectory(prefix="dtl-bench-data-") as tmp:
        if args.scan:
            return _run_scan(args, Path(tmp))
        folder = args.folder
        if folder is None:
            t = time.perf_counter()
            folder = make_photos(Path(tmp) / "photos", args.photos)
            print(f"generated {args.photos} photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} "
                  f"in {time.perf_counter() - t:.0f} s")
        r = measure_loading(folder, epochs=args.epochs, workers=args.workers)
        print(f"{r['images']} images, training transform of the default backbone, JPEG draft + cache at short side "
              f"{r['min_side']} px, {r['workers']} loader worker(s), cache {r['cache_mb']:.0f} MB")
        print(f"{'path':<26} {'images/s':>9} {'vs old':>7}")
        for key, label in (("old", "old (full decode, no cache)"), ("epoch1", "new, epoch 1"),
                           ("epoch2plus", "new, epoch 2+")):
            print(f"{label:<26} {r[key]:>9.1f} {r[key] / r['old']:>6.1f}x")
        if args.app_thread:
            rows = measure_app_thread(folder, epochs=args.epochs, workers=args.workers)
            base = rows["in the thread"]
            print(f"on a background thread, as the app loads: {'path':<24} {'epoch 1':>8} {'epoch 2+':>9} (images/s)")
            for name, row in rows.items():
                label = f"{row['workers']} worker(s)" if name == "workers" else "decoded in the thread"
                print(f"{'':<42} {label:<24} {row['epoch1']:>8.1f} {row['epoch2plus']:>9.1f}"
                      f"  ({row['epoch1'] / base['epoch1']:.2f}x, {row['epoch2plus'] / base['epoch2plus']:.2f}x)")
        if args.train:
            kwargs = json.loads(args.model_kwargs) if args.model_kwargs else None
            what = (f"training run, {args.epochs} epochs, defaults (random weights"
                    f"{', ' + args.backbone if args.backbone else ''})")
            if args.app_thread:
                run = measure_training(folder, args.epochs, args.backbone, kwargs, app_thread=True)
                print(f"{what} on a background thread: 0 workers {run['thread']:.1f} s, "
                      f"{auto_num_workers(args.workers)} worker(s) {run['workers']:.1f} s, "
                      f"workers/0 = {run['workers'] / run['thread']:.2f}")
            else:
                run = measure_training(folder, args.epochs, args.backbone, kwargs)
                print(f"{what}: old {run['old']:.1f} s, new {run['new']:.1f} s, "
                      f"new/old = {run['new'] / run['old']:.2f}")
    return 0


def _run_scan(args: argparse.Namespace, tmp: Path) -> int:
    folder = args.folder
    rows = []
    if folder is None:
        small = max(1, args.files // 10)
        for n in (small, args.files):
            t = time.perf_counter()
            tree = make_tree(tmp / f"tree_{n}", n)
            made = time.perf_counter() - t
            rows.append((n, made, measure_scan(tree)))
    else:
        rows.append((None, 0.0, measure_scan(folder)))
    print(f"{'files':>8} {'scan s':>7} {'us/file':>8} {'peak MB':>8}")
    for n, _made, r in rows:
        per = r["seconds"] / max(1, r["images"]) * 1e6
        print(f"{r['images'] if n is None else n:>8} {r['seconds']:>7.1f} {per:>8.0f} {r['peak_mb']:>8.0f}")
    return 0

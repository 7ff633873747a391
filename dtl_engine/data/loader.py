"""Batches of images from loader worker processes, with bad files reported back to the main process.

* ``auto_num_workers``: the default number of worker processes (cores - 1, at most 8).
* :class:`BatchLoader`: one persistent ``DataLoader`` per dataset whose batches are set
  per epoch. Decoding runs in the workers, started by :func:`worker_context` on any
  thread (the app trains on a thread beside Qt's): off the main thread on Linux they are
  forked from the fork server, never from this process; macOS and Windows spawn them (the
  app and the bundle call ``multiprocessing.freeze_support()``).
* A file that fails in a worker is reported to ``on_failure`` in the main process,
  once per file, exactly as when loading in-process: each item carries the
  failures met while producing it.
* Random augmentation is seeded per sample from (epoch seed, index), so it is the same
  whichever worker (or the main process) loads the sample, and a resumed run continues
  exactly.
* :meth:`BatchLoader.close` ends the workers at once (Stop, Ctrl+C, the end of a run).
"""
from __future__ import annotations

import copy
import multiprocessing
import os
import random
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from dtl_engine.errors import RunError
from dtl_engine.data.dataset import ImageDataset, collate_samples
from dtl_engine.data.decode_size import decode_side
from dtl_engine.data.image_cache import default_image_cache
from dtl_engine.data.transforms import build_transform

WORKER_DIED = ("A process that loads the images ended unexpectedly ({detail}). The run stopped; its last "
               "checkpoint is kept and it can be resumed. If this happens again, the computer may be short of "
               "memory: close other programs or train with a smaller batch.")

MAX_AUTO_WORKERS = 8
#: What the fork server imports once, so that each worker forked from it starts with torch and
#: the dataset code already loaded (never ``__main__``: the app's or the bundle's entry point).
WORKER_PRELOAD = ["dtl_engine.data.dataset", "dtl_engine.data.image_cache", "dtl_engine.data.transforms",
                  "dtl_engine.data.loader"]


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_num_workers(requested: int | None = None) -> int:
    """``requested`` if given, else cores - 1 (leaving one for training), at most 8."""
    if requested is not None:
        return max(0, int(requested))
    return max(0, min(MAX_AUTO_WORKERS, available_cores() - 1))


class _EpochBatches(Sampler):
    """A batch sampler whose batches are replaced before each epoch (the loader itself persists)."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []     # indices, or (index, seed) pairs

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Reporting(Dataset):
    """Wraps an ImageDataset: each item also carries the (path, reason) failures met while loading it."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = copy.copy(dataset)
        self.dataset.on_failure = None          # reported from the main process instead
        self.dataset.failures = []
        self.dataset._bad = dict(getattr(dataset, "_bad", {}))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, ...]:
        index = key
        if isinstance(key, tuple):              # (index, seed): augmentation as a function of the seed
            index, seed = key
            random.seed(seed)
            np.random.seed(seed % 2**32)        # timm's RandAugment picks its operations with numpy
            torch.manual_seed(seed)
        before = len(self.dataset.failures)
        item = self.dataset[index]             # (image, label, index), or Failed: never a substitute
        return item, self.dataset.failures[before:]


def _ignore_interrupts(_worker_id: int) -> None:
    # Ctrl+C reaches every process of the terminal; the main process turns the first one into
    # "stop after this batch" and then ends the workers itself, so they must not die on it first.
    # SIGTERM is the same stop request under torchrun (which sends it to each process's whole group)
    # and Slurm: a worker killed by it failed the run instead of stopping it. A worker still ends
    # with its main process (torch's watchdog), and SIGKILL still ends it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def worker_context() -> multiprocessing.context.BaseContext:
    """How loader workers start: the platform's default, except off the main thread on Linux.

    Forking a process while other threads run is unsafe: the app trains on a thread beside
    Qt's, whose locks a forked child inherits held (a worker died so). Off the main thread on
    Linux the workers are therefore forked from the fork server, a fresh one-thread interpreter
    started once per process that imports :data:`WORKER_PRELOAD` once; a worker starts from it
    in a fraction of a second (a spawned one imports torch and timm itself) and is its child,
    not this process's. Such a worker gets the dataset pickled (small: the paths, the transform
    and the cache's folder) and the fork server's environment and working directory as they
    were when it started. On the main thread (the command line, scripts) Linux forks as it
    always did, and a script needs no ``if __name__ == "__main__"`` guard; macOS and Windows
    spawn (their default; the app and the bundle call ``multiprocessing.freeze_support()``).
    """
    if sys.platform.startswith("linux") and threading.current_thread() is not threading.main_thread():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(WORKER_PRELOAD)      # read once, when the server starts
        return context
    return multiprocessing.get_context()


def start_worker_server() -> None:
    """Start the fork server now, without waiting for it, if this thread's loaders will use it.

    Its imports (a few seconds of one core) then overlap whatever comes before the first
    batch; a loader's first workers would otherwise wait for them. Once per process.
    """
    if worker_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def sample_seed(seed: int, index: int) -> int:
    """The random seed of one sample's augmentation in the epoch whose seed is ``seed``."""
    return (seed * 6_364_136_223_846_793_005 + index * 1_442_695_040_888_963_407 + 1) % (2**63 - 1)


def _collate(items: Sequence[tuple[Any, list[tuple[str, str]]]]) -> tuple[Any, list[tuple[str, str]]]:
    return collate_samples([item for item, _ in items]), [f for _, failures in items for f in failures]


class BatchLoader:
    """Yields a :class:`~.dataset.Batch` (images, labels, indices, failed) for given batches of indices.

    A sample whose file fails is in ``failed`` (by its index), never replaced by another image.
    """

    def __init__(self, dataset: Any, num_workers: int, *, pin_memory: bool = False,
                 on_failure: Callable[[str, str], None] | None = None) -> None:
        self.dataset = dataset
        self.on_failure = on_failure if on_failure is not None else getattr(dataset, "on_failure", None)
        self.num_workers = num_workers
        self._reported: set[str] = set()
        self._sampler = _EpochBatches()
        self._loader = DataLoader(_Reporting(dataset), batch_sampler=self._sampler, num_workers=num_workers,
                                  collate_fn=_collate, pin_memory=pin_memory,
                                  multiprocessing_context=worker_context() if num_workers > 0 else None,
                                  persistent_workers=num_workers > 0,
                                  worker_init_fn=_ignore_interrupts if num_workers > 0 else None,
                                  prefetch_factor=2 if num_workers > 0 else None)   # batches per worker ahead

    def __call__(self, batches: list[list[int]], seed: int | None = None) -> Iterator[Any]:
        """One pass over ``batches``; with ``seed``, each sample's random transform is seeded by (seed, index)."""
        if seed is None:
            self._sampler.batches = [list(b) for b in batches]
        else:
            self._sampler.batches = [[(i, sample_seed(seed, i)) for i in b] for b in batches]
        try:
            for batch, failures in self._loader:
                for path, reason in failures:
                    self._report(path, reason)
                yield batch
        except RuntimeError as exc:
            # torch's own words ("DataLoader worker (pid(s) 123) exited unexpectedly") say what, not what now
            if "DataLoader worker" not in str(exc):
                raise
            detail = str(exc).strip().split("\n")[0].rstrip(". ")
            raise RunError(WORKER_DIED.format(detail=detail)) from exc
        except (EOFError, ConnectionError) as exc:
            # A worker killed while it sent a batch leaves half a message in the pipe: the same death, seen sooner
            if self._loader.num_workers == 0:
                raise
            raise RunError(WORKER_DIED.format(detail="its batch was cut off mid-way")) from exc

    def _report(self, path: str, reason: str) -> None:
        if path in self._reported:
            return
        self._reported.add(path)
        self.dataset.failures.append((path, reason))
        if self.on_failure is not None:
            self.on_failure(path, reason)

    def close(self) -> None:
        """End the worker processes now (safe to call twice)."""
        iterator = getattr(self._loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self._loader._iterator = None


def image_dataset(samples: Sequence[tuple[str, int]], data_config: dict[str, Any], augment: str = "none",
                  train: bool = False, on_failure: Callable[[str, str], None] | None = None,
                  cache: Any = "default") -> Any:
    """An ImageDataset with the transform for ``data_config`` and photos decoded only as large as it needs.

    JPEGs are draft-decoded to the short side :func:`.decode_size.decode_side` asks for and
    kept, pre-resized, in the decoded-image cache (``cache``: an ImageCache, ``"default"``
    for the per-user one, or None for none).
    """
    if cache == "default":
        cache = default_image_cache()
    return ImageDataset(samples, build_transform(data_config, augment, train=train), on_failure,
                        min_side=decode_side(data_config, augment, train), cache=cache)

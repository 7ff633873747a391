"""A map-style dataset over (path, label) samples that reports bad files instead of hiding them.

A file that cannot be decoded at load time (it changed or disappeared since the
scan, or was truncated in a way the cheap header check cannot see) is reported
by its index and left out of the batch. It is never replaced by another image:
a substitute would be counted, scored and shown under the wrong name.
Use :func:`collate_samples` as the DataLoader's ``collate_fn``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset, default_collate

from dtl_engine.errors import DataError
from dtl_engine.data.images import load_image
from dtl_engine.data.image_cache import load_shrunk

FailureFn = Callable[[str, str], None]


class Failed(NamedTuple):
    """The item of a sample whose file could not be loaded."""

    sample_index: int
    path: str
    reason: str


class Batch(NamedTuple):
    """What :func:`collate_samples` returns: the loaded samples, and the ones that failed."""

    images: Any                         # a batch tensor, or None when nothing loaded
    labels: torch.Tensor
    indices: torch.Tensor
    failed: list[Failed]


class ImageDataset(Dataset):
    """Items are ``(image, label, index)``; ``image`` is ``transform(PIL RGB image)``.

    A sample whose file fails to load comes back as a :class:`Failed` item instead
    (and is reported to ``on_failure`` and kept in ``failures`` as (path, reason),
    once per file). With DataLoader worker processes ``failures`` lives in the
    workers; the :class:`Batch` of :func:`collate_samples` carries them to the
    main process. ``min_side`` lets large JPEGs decode at a reduced scale (see
    :func:`load_image`) and shrinks larger images to that short side, with or without the cache
    (see :func:`.image_cache.load_shrunk`).
    ``cache`` (an :class:`~.image_cache.ImageCache`, with ``min_side``) keeps each decoded
    image pre-resized on disk so later epochs skip the decode.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable[[Any], Any] | None = None,
                 on_failure: FailureFn | None = None, *, min_side: int | None = None,
                 cache: Any = None) -> None:
        self.samples = [(str(p), int(y)) for p, y in samples]
        self.transform = transform
        self.on_failure = on_failure
        self.min_side = min_side
        self.cache = cache if min_side else None
        self.failures: list[tuple[str, str]] = []
        self._bad: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [y for _, y in self.samples]

    def _report(self, index: int, reason: str) -> None:
        self._bad[index] = reason
        path = self.samples[index][0]
        self.failures.append((path, reason))
        if self.on_failure is not None:
            self.on_failure(path, reason)

    def __getitem__(self, index: int) -> tuple[Any, int, int] | Failed:
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(index)
        index %= n
        path, label = self.samples[index]
        if index in self._bad:
            return Failed(index, path, self._bad[index])
        try:
            image = self._load(path)
        except DataError as exc:
            self._report(index, str(exc))
            return Failed(index, path, str(exc))
        if self.transform is not None:
            image = self.transform(image)
        return image, label, index

    def _load(self, path: str) -> Any:
        if self.cache is not None:
            return self.cache.load(path, self.min_side)
        if self.min_side:
            return load_shrunk(path, self.min_side)     # exactly what the cache would have held
        return load_image(path)


def collate_samples(items: list[Any]) -> Batch:
    """DataLoader ``collate_fn``: stack the loaded items, list the failed ones apart."""
    failed = [item for item in items if isinstance(item, Failed)]
    loaded = [item for item in items if not isinstance(item, Failed)]
    if not loaded:
        empty = torch.zeros(0, dtype=torch.long)
        return Batch(None, empty, empty, failed)
    images, labels, indices = default_collate(loaded)
    return Batch(images, labels, indices, failed)

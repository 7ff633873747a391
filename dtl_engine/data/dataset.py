"""A map-style dataset over (path, label) samples that survives bad files.

A file that cannot be decoded at load time (it changed since the scan, or was
truncated in a way the cheap header check cannot see) is reported once and a
neighbouring sample is returned in its place, so one bad file never stops a run.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch.utils.data import Dataset

from ..errors import DataError
from .images import load_image

FailureFn = Callable[[str, str], None]


class ImageDataset(Dataset):
    """Items are ``(image, label, index)``; ``image`` is ``transform(PIL RGB image)``.

    ``index`` is the index of the sample actually returned (the replacement's
    when a file failed), so per-sample caches stay consistent. Failures are
    collected in ``failures`` as (path, reason) and passed to ``on_failure``.
    With DataLoader worker processes these live in the workers; use
    ``on_failure`` (or num_workers=0) to see them in the main process.
    ``min_side`` lets large JPEGs decode at a reduced scale (see :func:`load_image`);
    about twice the model's input side keeps full detail for the crops.
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
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [y for _, y in self.samples]

    def _report(self, index: int, reason: str) -> None:
        self._bad.add(index)
        path = self.samples[index][0]
        self.failures.append((path, reason))
        if self.on_failure is not None:
            self.on_failure(path, reason)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(index)
        index %= n
        # Walk forward from the requested sample to the first one that loads.
        for step in range(n):
            i = (index + step) % n
            if i in self._bad:
                continue
            path, label = self.samples[i]
            try:
                image = (self.cache.load(path, self.min_side) if self.cache is not None
                         else load_image(path, min_side=self.min_side))
            except DataError as exc:
                self._report(i, str(exc))
                continue
            if self.transform is not None:
                image = self.transform(image)
            return image, label, i
        raise DataError("None of the images could be loaded; check that the data folder is still there.")

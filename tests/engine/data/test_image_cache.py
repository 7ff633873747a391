"""Draft decoding sizes and the decoded-image cache: keys, damage, budget, LRU, several writers, CLI."""
from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dtl_engine.cli.main import main
from dtl_engine.data import image_cache as ic
from dtl_engine.data.decode_size import decode_side
from dtl_engine.data.disk_store import _LOCK_CONTENT
from dtl_engine.data.image_cache import (
    ImageCache,
    cache_size_bytes,
    clear_caches,
    image_cache_dir,
)
from dtl_engine.data.images import load_image
from dtl_engine.data.transforms import build_transform

VIT_CONFIG = {"input_size": (3, 224, 224), "crop_pct": 0.9, "interpolation": "bicubic",
              "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_mode": "center"}


def photo(path: Path, size=(1600, 1200), seed=0) -> Path:
    """A smooth photo-like JPEG (a coarse random field scaled up, plus fine noise)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    arr = np.asarray(coarse, dtype=np.int16) + rng.integers(-6, 7, (size[1], size[0], 3), dtype=np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=92)
    return path


class CountingDecode:
    def __init__(self, monkeypatch):
        self.calls = 0
        monkeypatch.setattr(ic, "load_image", self)

    def __call__(self, *a, **kw):
        self.calls += 1
        return load_image(*a, **kw)


def test_decode_side_follows_the_transform():
    assert decode_side(VIT_CONFIG) == 248                                  # 224 / 0.9: timm's eval resize
    assert decode_side(VIT_CONFIG, "light", train=True) == 290             # smallest light crop: sqrt(0.8*3/4)
    assert decode_side(VIT_CONFIG, "standard", train=True) == 448          # capped at twice the input
    assert decode_side(VIT_CONFIG, "none", train=True) == 248
    assert decode_side({**VIT_CONFIG, "input_size": (3, 384, 384), "crop_pct": 1.0}) == 384


def test_cached_small_decode_gives_what_the_full_decode_gives(tmp_path):
    # The point of "enough pixels": the model input barely changes against a full decode.
    path = photo(tmp_path / "data" / "p.jpg", size=(2400, 1800))
    transform = build_transform(VIT_CONFIG, "none", train=False)
    full = transform(load_image(path))
    cache = ImageCache(tmp_path / "cache", budget_bytes=2**30)
    side = decode_side(VIT_CONFIG)
    first = cache.load(path, side)
    assert min(first.size) == side
    second = cache.load(path, side)
    assert np.array_equal(np.asarray(first), np.asarray(second))
    small = transform(second)
    assert small.shape == full.shape
    assert float((small - full).abs().mean()) < 0.02                       # normalised units (range 2)


def test_second_load_skips_the_decode_and_a_changed_photo_is_decoded_again(tmp_path, monkeypatch):
    path = photo(tmp_path / "data" / "p.jpg")
    decode = CountingDecode(monkeypatch)
    cache = ImageCache(tmp_path / "cache", budget_bytes=2**30)
    a = np.asarray(cache.load(path, 100))
    np.asarray(cache.load(path, 100))
    assert decode.calls == 1
    photo(path, seed=1)                                                    # new content, same name
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    b = np.asarray(cache.load(path, 100))
    assert decode.calls == 2 and not np.array_equal(a, b)
    np.asarray(cache.load(path, 120))                                      # other preprocessing: another entry
    assert decode.calls == 3


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_damaged_entry_is_detected_and_rebuilt(tmp_path, monkeypatch, damage):
    path = photo(tmp_path / "data" / "p.jpg")
    cache = ImageCache(tmp_path / "cache", budget_bytes=2**30)
    good = np.asarray(cache.load(path, 100))
    entry = cache.entry_path(path, 100, os.stat(path))
    data = bytearray(entry.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) - 10]
    else:
        data = bytearray()
    entry.write_bytes(bytes(data))
    decode = CountingDecode(monkeypatch)
    again = np.asarray(cache.load(path, 100))
    assert decode.calls == 1 and np.array_equal(again, good)
    assert ic._decode_entry(entry.read_bytes()) is not None                # rebuilt, whole again


def test_budget_and_least_recently_used_eviction(tmp_path):
    paths = [photo(tmp_path / "data" / f"p{i}.jpg", seed=i) for i in range(4)]
    cache = ImageCache(tmp_path / "cache", budget_bytes=2**30)
    for p in paths:
        cache.load(p, 64)
    entries = [cache.entry_path(p, 64, os.stat(p)) for p in paths]
    one = entries[0].stat().st_size
    for age, e in enumerate(entries):                                      # p0 oldest ... p3 newest
        os.utime(e, (1_000_000 + age, 1_000_000 + age))
    cache.load(paths[0], 64)                                               # a hit makes p0 the newest
    small = ImageCache(tmp_path / "cache", budget_bytes=2 * one + 10)
    small.trim()
    assert [e.exists() for e in entries] == [True, False, False, True]
    assert small.info().bytes <= small.budget_bytes
    small.make_room(one)                                                   # room for one more: p3 is older than p0
    assert [e.exists() for e in entries] == [True, False, False, False]
    full = ImageCache(tmp_path / "cache", budget_bytes=one + 10)
    full.load(paths[1], 64)                                                # no room: not stored, still returned
    assert not entries[1].exists()


def test_budget_setting_and_zero_turns_storing_off(tmp_path):
    assert ImageCache().budget_bytes == ic.DEFAULT_BUDGET_MB * 2**20
    ic.set_budget_mb(0)
    assert ImageCache().budget_bytes == 0
    path = photo(tmp_path / "data" / "p.jpg")
    ImageCache().load(path, 64)
    assert ImageCache().info().entries == 0


def test_a_held_lock_means_one_writer_and_a_crashed_writers_files_are_cleaned(tmp_path):
    path = photo(tmp_path / "data" / "p.jpg")
    cache = ImageCache(tmp_path / "cache", budget_bytes=2**30)
    entry = cache.entry_path(path, 64, os.stat(path))
    entry.parent.mkdir(parents=True)
    lock = entry.with_name(entry.name + ".lock")
    lock.write_bytes(_LOCK_CONTENT)                                        # another writer is busy
    tmp = entry.with_name(f".{entry.name}.dtl-0123456789ab-x.tmp")          # a crashed writer's leftover
    tmp.write_bytes(b"half")
    assert cache.load(path, 64).size == (85, 64)
    assert not entry.exists()
    old = time.time() - 3600
    os.utime(lock, (old, old))
    os.utime(tmp, (old, old))
    assert cache.info().entries == 0                                       # the torn file is not an entry
    assert not tmp.exists()
    cache.load(path, 64)                                                   # stale lock removed ...
    cache.load(path, 64)                                                   # ... so this one writes
    assert entry.exists() and not lock.exists()


def _hammer(args):
    folder, paths = args
    cache = ImageCache(folder, budget_bytes=2**30)
    return [np.asarray(cache.load(p, 64)).sum() for p in paths for _ in range(3)]


def test_several_processes_share_the_cache(tmp_path):
    paths = [str(photo(tmp_path / "data" / f"p{i}.jpg", seed=i)) for i in range(6)]
    with multiprocessing.get_context("spawn" if os.name == "nt" else "fork").Pool(4) as pool:
        sums = pool.map(_hammer, [(str(tmp_path / "cache"), paths)] * 8)
    assert all(s == sums[0] for s in sums)
    files = [f for f in (tmp_path / "cache").rglob("*") if f.is_file()]
    assert len(files) == 6 and all(f.suffix == ".img" for f in files)      # no torn, temporary or lock files
    assert all(ic._decode_entry(f.read_bytes()) is not None for f in files)


def test_cache_lives_in_the_user_cache_folder_and_cli_info_and_clear(tmp_path, capsys):
    assert Path(os.environ["DTL_STUDIO_HOME"]) in image_cache_dir().parents
    path = photo(tmp_path / "data" / "p.jpg")
    ImageCache().load(path, 64)
    assert cache_size_bytes() > 0
    assert main(["cache", "info"]) == 0
    assert "1 images" in capsys.readouterr().out
    assert main(["cache", "budget", "12"]) == 0
    assert "of 12.00 MB budget" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert cache_size_bytes() == 0 and clear_caches() == 0

"""The prefix feature cache: same training as without it, and later epochs skip the frozen prefix."""
from __future__ import annotations

import pytest

from pathlib import Path

import torch

from dtl_engine.data import ImageDataset
from dtl_engine.model.dtl import DTLModel
from dtl_engine.training import train
from dtl_engine.training.feature_cache import FeatureCache
from run_builders import MODEL_KWARGS, Recorder, image_folder, run_weights, tiny_config


def _count(monkeypatch, cls, name) -> dict:
    counter = {"n": 0}
    original = getattr(cls, name)

    def counted(self, *args, **kwargs):
        counter["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, counted)
    return counter


@pytest.mark.slow
def test_cached_training_equals_uncached_and_skips_the_prefix_after_epoch_one(tmp_path, monkeypatch):
    data = image_folder(tmp_path)
    plain = train(tiny_config(data, cache_features="off"), model_kwargs=MODEL_KWARGS)

    prefix_calls = _count(monkeypatch, DTLModel, "forward_prefix")
    loads = _count(monkeypatch, ImageDataset, "__getitem__")
    per_epoch: list[tuple[int, int]] = []
    cache_files: list[int] = []

    def at_epoch_end(stats):
        per_epoch.append((prefix_calls["n"], loads["n"]))
        cache_files.append(len(list((tmp_path / plain.run_dir).parent.glob("*/cache/*.npy"))))

    # num_workers=0: images load in this process, where the counter sees them
    cached = train(tiny_config(data, cache_features="auto", num_workers=0), Recorder(epoch_finished=at_epoch_end),
                   model_kwargs=MODEL_KWARGS)
    # epoch 1: 3 train + 1 val batches through the prefix, 30 images loaded; later epochs: none
    assert per_epoch[0] == (4, 30)
    assert per_epoch[1] == per_epoch[2] == per_epoch[0]
    assert cache_files == [0, 0, 0]            # the default budget holds this in memory
    a, b = run_weights(plain.run_dir), run_weights(cached.run_dir)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert plain.best_val_acc == cached.best_val_acc


@pytest.mark.slow
def test_cache_spills_to_the_run_folder_beyond_its_budget_and_cleans_up(tmp_path):
    data = image_folder(tmp_path)
    in_memory = train(tiny_config(data, cache_features="on"), model_kwargs=MODEL_KWARGS)
    spill_seen = []
    rec = Recorder(epoch_finished=lambda s: spill_seen.append(
        sorted(p.name for p in Path(rec.of("run_started")[0].run_dir).glob(".cache-*/*"))))
    on_disk = train(tiny_config(data, cache_features="on", cache_budget_mb=0), rec, model_kwargs=MODEL_KWARGS)
    assert spill_seen[0] and all(name.endswith(".npy") or name == ".dtl-cache" for name in spill_seen[0])
    assert any(name.endswith(".npy") for name in spill_seen[0])
    assert not list(Path(on_disk.run_dir).glob(".cache-*"))          # deleted when the run ends
    a, b = run_weights(in_memory.run_dir), run_weights(on_disk.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)                   # bytes round-trip exactly


@pytest.mark.slow
def test_cache_is_off_with_random_augmentation_or_drop_path(tmp_path, monkeypatch):
    data = image_folder(tmp_path, per_class=4)
    prefix_calls = _count(monkeypatch, DTLModel, "forward_prefix")
    train(tiny_config(data, epochs=1, augment="light", cache_features="auto"), model_kwargs=MODEL_KWARGS)
    assert prefix_calls["n"] == 0
    rec = Recorder()
    train(tiny_config(data, epochs=1, drop_path=0.1, cache_features="on"), rec, model_kwargs=MODEL_KWARGS)
    assert prefix_calls["n"] == 0 and any("drop-path" in w for w in rec.of("warning"))


def test_feature_cache_round_trip_across_ram_and_disk(tmp_path):
    values = {"tap.0": torch.randn(10, 5, 4), "grid": torch.arange(20).reshape(10, 2),
              "half": torch.randn(10, 3).to(torch.bfloat16)}
    per_sample = 5 * 4 * 4 + 2 * 8 + 3 * 2
    users_cache = tmp_path / "cache"                 # a folder of the user's that merely has the usual name
    users_cache.mkdir()
    (users_cache / "photo.png").write_bytes(b"mine")
    cache = FeatureCache(10, budget_bytes=4 * per_sample, spill_parent=tmp_path)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    for chunk in order.split(3):
        assert not cache.complete
        cache.store(chunk, {k: v[chunk] for k, v in values.items()})
    assert cache.complete and cache.in_ram == 4 and cache.nbytes() == (4 * per_sample, 6 * per_sample)
    picks = torch.tensor([9, 0, 4, 3, 7])
    got = cache.fetch(picks)
    assert all(torch.equal(got[k], v[picks]) and got[k].dtype == v.dtype for k, v in values.items())
    assert cache.spill_dir is not None and cache.spill_dir.parent == tmp_path
    cache.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]       # only its own folder went
    assert (users_cache / "photo.png").read_bytes() == b"mine"

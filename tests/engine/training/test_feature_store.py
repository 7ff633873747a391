"""The frozen-feature store: a second linear probe on the same photos decodes no training image."""
from __future__ import annotations

from run_builders import MODEL_KWARGS, image_folder, tiny_config

from dtl_engine.data.image_cache import (
    ImageCache,
    cache_size_bytes,
    clear_caches,
    feature_cache_dir,
)
from dtl_engine.training import train
from dtl_engine.training.feature_store import FeatureStore


class Counter:
    """Counts image loads (decodes and image-cache hits alike)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = ImageCache.load

        def load(cache, *a, **kw):
            self.calls += 1
            return original(cache, *a, **kw)
        monkeypatch.setattr(ImageCache, "load", load)


def _linear(data, **kw):
    # in-process loading, so the counter sees every image load
    values = dict(method="linear", augment="none", cache_features="auto", epochs=3, num_workers=0)
    return tiny_config(data, **{**values, **kw})


def test_second_linear_probe_reads_stored_features_and_decodes_only_for_the_report(tmp_path, monkeypatch):
    data = image_folder(tmp_path, per_class=6, classes=2)
    count = Counter(monkeypatch)
    first = train(_linear(data), model_kwargs=MODEL_KWARGS)
    n = 12
    assert count.calls >= n                            # epoch 1 loads every image (the report: val again)
    entries = list(feature_cache_dir().rglob("*.img"))
    assert len(entries) == n
    assert FeatureStore().read(entries[0])[0] == 64    # fp16 vectors of the backbone width (2 bytes each)
    assert entries[0].stat().st_size == 2 * 64 + 20

    count.calls = 0
    second = train(_linear(data), model_kwargs=MODEL_KWARGS)
    val = second.report.num_images
    assert count.calls == val                          # only the final report loads images (its val images)
    assert abs(second.best_val_acc - first.best_val_acc) <= 1 / val + 1e-9

    count.calls = 0
    train(_linear(data, seed=1), model_kwargs=MODEL_KWARGS)   # another random backbone: other features
    assert count.calls > val
    assert cache_size_bytes() > 0 and clear_caches() > 0 and cache_size_bytes() == 0


def test_a_damaged_feature_entry_means_computing_again(tmp_path, monkeypatch):
    data = image_folder(tmp_path, per_class=4, classes=2)
    train(_linear(data, epochs=1), model_kwargs=MODEL_KWARGS)
    entry = next(feature_cache_dir().rglob("*.img"))
    blob = bytearray(entry.read_bytes())
    blob[-1] ^= 0xFF
    entry.write_bytes(bytes(blob))
    count = Counter(monkeypatch)
    result = train(_linear(data, epochs=1), model_kwargs=MODEL_KWARGS)
    assert count.calls > result.report.num_images     # the store was not trusted
    assert len(list(feature_cache_dir().rglob("*.img"))) == 8    # and was rebuilt


def test_features_stored_under_another_preprocessing_are_not_reused(tmp_path, monkeypatch):
    # Stored by a version whose evaluation transform differed: reusing them would validate the run on
    # other inputs than its exported file sees.
    from dtl_engine.data import model_input

    data = image_folder(tmp_path, per_class=4, classes=2)
    with monkeypatch.context() as earlier:
        earlier.setattr(model_input, "PREPROCESS_VERSION", model_input.PREPROCESS_VERSION - 1)
        train(_linear(data, epochs=1), model_kwargs=MODEL_KWARGS)
    count = Counter(monkeypatch)
    second = train(_linear(data, epochs=1), model_kwargs=MODEL_KWARGS)
    assert count.calls > second.report.num_images       # the training images were decoded again

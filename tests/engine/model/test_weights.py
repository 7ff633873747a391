"""Weights: local .safetensors / .pth files through timm's loader, clear sentences for every failure."""
from __future__ import annotations

import time

import pytest
import timm
import torch
from safetensors.torch import save_file

from dtl_engine.model import weights as weights_mod
from dtl_engine.errors import WeightsError
from dtl_engine.model.dtl import build_model
from dtl_engine.model.weights import cached_weights_path, weights_cached
from tiny_models import TINY_VIT

torch.set_num_threads(1)
NAME, KW = TINY_VIT


def _reference_backbone():
    torch.manual_seed(123)
    # a full classifier checkpoint, like a downloaded one (it carries a 1000-class head we must drop)
    return timm.create_model(NAME, pretrained=False, num_classes=1000, **KW)


def _assert_backbone_equals(model, reference) -> None:
    ref = reference.state_dict()
    own = model.backbone.state_dict()
    assert set(own) <= set(ref)
    for key, value in own.items():
        assert torch.equal(value, ref[key]), key


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_is_loaded(tmp_path, suffix):
    reference = _reference_backbone()
    path = tmp_path / f"backbone{suffix}"
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)
    model = build_model(NAME, 3, weights=str(path), model_kwargs=KW)
    _assert_backbone_equals(model, reference)
    assert model.spec.weights == str(path)
    # random weights differ: the file really was used
    other = build_model(NAME, 3, weights="random", model_kwargs=KW)
    assert not torch.equal(other.backbone.patch_embed.proj.weight, reference.patch_embed.proj.weight)


def test_missing_weights_file_is_one_sentence(tmp_path):
    with pytest.raises(WeightsError, match="does not exist") as info:
        build_model(NAME, 3, weights=str(tmp_path / "nope.safetensors"), model_kwargs=KW)
    assert "\n" not in str(info.value)


def test_corrupt_weights_file_is_a_weights_error(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"this is not a safetensors file")
    with pytest.raises(WeightsError, match="could not be loaded"):
        build_model(NAME, 3, weights=str(path), model_kwargs=KW)


def test_weights_of_another_backbone_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"something.weight": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match="does not fit") as info:
        build_model(NAME, 3, weights=str(path), model_kwargs=KW)
    assert "belongs to this backbone" in str(info.value)


def test_npz_goes_to_the_vit_npz_loader_and_is_refused_for_swin(tmp_path):
    import numpy as np

    from tiny_models import TINY_SWIN

    path = tmp_path / "jax.npz"
    np.savez(path, unrelated=np.zeros(3))
    with pytest.raises(WeightsError, match="could not be loaded into 'test_vit'"):
        build_model(NAME, 3, weights=str(path), model_kwargs=KW)
    with pytest.raises(WeightsError, match="cannot read .npz"):
        build_model(TINY_SWIN[0], 3, weights=str(path), model_kwargs=TINY_SWIN[1])


def test_unknown_weights_kind_is_refused(tmp_path):
    with pytest.raises(WeightsError, match="not a weights file"):
        build_model(NAME, 3, weights=str(tmp_path / "notes.txt"), model_kwargs=KW)


def test_offline_hub_fails_fast_with_a_sentence(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(WeightsError) as info:
        build_model(NAME, 3, weights="hub", model_kwargs=KW)
    message = str(info.value)
    assert "local weights file" in message and "random weights" in message and "offline" in message
    assert "\n" not in message
    assert time.monotonic() - start < 10


def test_unreachable_hub_fails_fast(monkeypatch):
    from huggingface_hub import constants

    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # a real attempt on a closed port
    start = time.monotonic()
    with pytest.raises(WeightsError, match="cannot be reached"):
        build_model(NAME, 3, weights="hub", model_kwargs=KW)
    assert time.monotonic() - start < 15


def test_weights_cached_finds_a_file_in_the_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert not weights_cached(NAME)
    repo = timm.models.get_pretrained_cfg(NAME).hf_hub_id
    folder = tmp_path / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / "0"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0")
    snapshot.mkdir(parents=True)
    reference = _reference_backbone()
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(snapshot / "model.safetensors"))
    assert weights_cached(NAME)
    assert cached_weights_path(NAME).endswith("model.safetensors")
    # a cached file is used without any network access, even in offline mode
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = build_model(NAME, 3, weights="hub", model_kwargs=KW)
    _assert_backbone_equals(model, reference)


def test_hub_timeouts_are_short():
    from huggingface_hub import constants

    weights_mod._limit_hub_timeouts()
    assert constants.HF_HUB_ETAG_TIMEOUT <= 10 and constants.HF_HUB_DOWNLOAD_TIMEOUT <= 10

"""build_transform: timm's transforms from a model's data config, three presets, tiny images."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from dtl_engine.data import build_transform
from dtl_engine.errors import DataError

PRESETS = [("none", False), ("none", True), ("light-noflip", True), ("light", True), ("standard", True),
           ("standard", False)]


@pytest.fixture(scope="module")
def vit_config():
    torch.set_num_threads(1)
    model = timm.create_model("test_vit", pretrained=False)
    return timm.data.resolve_model_data_config(model)


def noisy(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("augment, train", PRESETS)
@pytest.mark.parametrize("size", [(1, 1), (8, 8), (31, 9), (300, 200), (500, 3)])
def test_output_shape_for_every_preset_and_size(vit_config, augment, train, size):
    x = build_transform(vit_config, augment, train)(noisy(size))
    side = vit_config["input_size"][1:]
    assert tuple(x.shape) == (3, *side) and x.dtype == torch.float32


def test_uses_the_configs_mean_and_std():
    white = Image.new("RGB", (16, 16), (255, 255, 255))
    x = build_transform({"input_size": (3, 16, 16), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)})(white)
    assert torch.allclose(x, torch.full_like(x, 2.0))
    y = build_transform({"input_size": (3, 16, 16)})(white)  # timm fills in its ImageNet defaults
    assert torch.allclose(y[0], torch.full_like(y[0], (1 - 0.485) / 0.229), atol=1e-4)


def test_custom_input_size_is_honoured():
    x = build_transform({"input_size": (3, 48, 64)}, "light", True)(noisy((8, 8)))
    assert tuple(x.shape) == (3, 48, 64)


def test_eval_is_deterministic_and_training_presets_are_random(vit_config):
    img = noisy((40, 40))
    ev = build_transform(vit_config, "standard", train=False)
    assert torch.equal(ev(img), ev(img))
    torch.manual_seed(0)
    for augment in ("light", "standard"):
        tf = build_transform(vit_config, augment, train=True)
        outs = [tf(img) for _ in range(4)]
        assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_light_is_milder_than_standard(vit_config):
    # Mild crops keep most of the picture: the mean colour moves less than with standard.
    img = Image.new("RGB", (64, 64), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 32, 64))  # left half black
    base = build_transform(vit_config, "none", False)(img).mean().item()
    torch.manual_seed(0)
    spread = {}
    for augment in ("light", "standard"):
        tf = build_transform(vit_config, augment, True, hflip=0.0)
        spread[augment] = np.mean([abs(tf(img).mean().item() - base) for _ in range(30)])
    assert spread["light"] < spread["standard"]


def test_transforms_can_go_to_worker_processes(vit_config):
    for augment, train in PRESETS:
        tf = pickle.loads(pickle.dumps(build_transform(vit_config, augment, train)))
        assert tf(noisy((8, 8))).shape[0] == 3


def test_unknown_preset_is_refused(vit_config):
    with pytest.raises(DataError, match="none, light-noflip, light, standard"):
        build_transform(vit_config, "heavy", True)


def test_standard_survives_every_op_at_its_strongest(vit_config):
    # RandAugment draws ops and magnitudes at random; force each op at the top of the
    # magnitude range so a crash (e.g. posterize to 0 bits) cannot hide behind luck.
    tf = build_transform(vit_config, "standard", True)
    rand_aug = next(t for t in tf.transforms if type(t).__name__ == "RandAugment")
    img = noisy((40, 40))
    for op in rand_aug.ops:
        op.prob, op.magnitude, op.magnitude_std = 1.0, 100.0, 0.0   # clipped to the policy's cap
        op(img)


def test_light_noflip_crops_but_never_mirrors(vit_config):
    pixels = np.zeros((48, 48, 3), dtype=np.uint8)
    pixels[:, :24] = 255                                   # bright left half: a mirror puts it on the right
    image = Image.fromarray(pixels)
    torch.manual_seed(0)
    sides = {}
    for augment in ("light-noflip", "light"):
        tf = build_transform(vit_config, augment, True)
        outs = [tf(image) for _ in range(24)]
        w = outs[0].shape[-1]
        sides[augment] = [bool(o[..., : w // 2].mean() > o[..., w // 2:].mean()) for o in outs]
        assert len({tuple(o.shape) for o in outs}) == 1 and not all(torch.equal(outs[0], o) for o in outs[1:])
    assert all(sides["light-noflip"])                      # never mirrored
    assert not all(sides["light"])                         # 'light' does mirror some

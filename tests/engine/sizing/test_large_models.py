"""The large backbones: each builds as a DTL model (on the meta device) and its stored figures are the probe's."""
from __future__ import annotations

import pytest
import torch

from dtl_engine.sizing.large_models import LARGE_BACKBONES, format_table, measure
from dtl_engine.model.dtl import build_model


@pytest.mark.parametrize("entry", LARGE_BACKBONES, ids=lambda e: e.name)
def test_builds_as_a_dtl_model_with_the_stated_size(entry):
    with torch.device("meta"):  # no memory, no initialisation: a 1 B-parameter model in a second
        model = build_model(entry.name, 10, weights="random")
    backbone_params = sum(p.numel() for p in model.backbone.parameters())
    assert backbone_params == entry.params
    assert model.spec.depth == entry.depth and model.spec.inject_from == entry.depth // 2
    assert entry.dtl_savers_bytes < entry.dtl_default_bytes < entry.full_bytes


@pytest.mark.slow
def test_stored_estimates_are_the_probe_figures():
    entry = LARGE_BACKBONES[0]  # ViT-L/16; the others are re-measured by ``python -m dtl_engine.sizing.large_models``
    measured = measure(entry.name)
    assert (measured.params, measured.depth, measured.native_size) == (entry.params, entry.depth, entry.native_size)
    assert (measured.dtl_savers_bytes, measured.dtl_default_bytes, measured.full_bytes) == \
        (entry.dtl_savers_bytes, entry.dtl_default_bytes, entry.full_bytes)


def test_big_models_fit_small_cards_with_every_saver():
    by_name = {e.name: e for e in LARGE_BACKBONES}
    gb = 1024 ** 3
    assert by_name["vit_huge_patch14_224.orig_in21k"].dtl_savers_bytes < 3 * gb
    assert by_name["vit_giant_patch14_clip_224.laion2b"].dtl_savers_bytes < 4.5 * gb
    assert format_table().count("\n") == len(LARGE_BACKBONES) + 1

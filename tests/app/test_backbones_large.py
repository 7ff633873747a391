"""The catalog's large-backbone entries agree with the engine's measured data."""
from __future__ import annotations

from app.backbones import by_name
from dtl_engine.sizing.large_models import LARGE_BACKBONES


def test_catalog_lists_every_large_backbone_with_the_engine_figures():
    for entry in LARGE_BACKBONES:
        info = by_name(entry.name)
        assert info is not None, entry.name
        assert (info.params, info.depth, info.input_size, info.family) == \
            (entry.params, entry.depth, entry.native_size, "vit")
        assert f"~{entry.dtl_savers_bytes / 1024 ** 3:.1f} GB" in info.note

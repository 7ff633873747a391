"""The app's backbone catalog is data over the engine's registry."""
from __future__ import annotations

from app.backbones import CURATED
from dtl_engine.registry import FAMILIES, family_of


def test_every_curated_entry_is_of_the_registry_family_its_name_says():
    for info in CURATED:
        assert family_of(info.name) == info.family, info.name
        assert info.family in FAMILIES

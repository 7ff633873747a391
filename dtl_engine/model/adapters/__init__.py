"""Backbone families bound to adapters: name -> family (rules in :mod:`dtl_engine.registry`), family -> adapter."""
from __future__ import annotations

import difflib

from torch import nn
import timm
import torch

from dtl_engine.errors import BackboneError
from dtl_engine.registry import CONV_HINTS, FAMILIES, REFUSED, architecture
from dtl_engine.model.adapters.base import BackboneAdapter, FamilyDefaults
from dtl_engine.model.adapters.swin import SWIN_DEFAULTS, SwinAdapter
from dtl_engine.model.adapters.vit import VIT_DEFAULTS, VitAdapter

ADAPTERS: dict[str, type[BackboneAdapter]] = {"vit": VitAdapter, "swin": SwinAdapter}
FAMILY_DEFAULTS: dict[str, FamilyDefaults] = {"vit": VIT_DEFAULTS, "swin": SWIN_DEFAULTS}

# Name prefixes of supported families (from the registry; no two families share a prefix).
_SUPPORTED_PREFIXES = tuple((prefix, f.name) for f in FAMILIES.values() for prefix in f.prefixes)
_REFUSED_PREFIXES = REFUSED
_CONV_HINTS = CONV_HINTS


def resolve_family(name: str) -> str:
    """Map a timm model name to a supported family, or raise :class:`BackboneError` with the reason."""
    arch = architecture(name)
    known = timm.list_models()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise BackboneError(f"'{name}' is not a model timm knows.{hint}")
    for prefix, reason in _REFUSED_PREFIXES:
        if arch.startswith(prefix):
            raise BackboneError(f"'{name}' cannot be used for DTL: {reason}.")
    for prefix, family in _SUPPORTED_PREFIXES:
        if arch.startswith(prefix):
            return family
    if any(arch.startswith(h) for h in _CONV_HINTS):
        raise BackboneError(
            f"'{name}' is a convolutional network; DTL taps the token sequence between transformer blocks, "
            "so DTL Studio supports ViT / DeiT and Swin backbones only."
        )
    raise BackboneError(
        f"'{name}' belongs to a model family DTL Studio has no adapter for; "
        "choose a ViT (vit_*, deit_*) or Swin (swin_*) backbone."
    )


def make_adapter(family: str, backbone: nn.Module, name: str = "this backbone") -> BackboneAdapter:
    """Bind the family's adapter to a built backbone (refuses classes it cannot walk)."""
    try:
        return ADAPTERS[family](backbone)
    except BackboneError as exc:
        raise BackboneError(f"'{name}' {exc}.") from exc


def check_adaptable(family: str, name: str, timm_kwargs: dict) -> None:
    """Refuse an unsupported model class before any weights are downloaded (built on the meta device)."""
    with torch.device("meta"):
        skeleton = timm.create_model(name, pretrained=False, **timm_kwargs)
    make_adapter(family, skeleton, name)


__all__ = ["ADAPTERS", "FAMILY_DEFAULTS", "BackboneAdapter", "FamilyDefaults", "SwinAdapter", "VitAdapter",
           "check_adaptable", "make_adapter", "resolve_family"]

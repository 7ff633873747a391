"""The one registry of families and methods: torch-free, and the adapters and config follow it."""
from __future__ import annotations

import subprocess
import sys

import pytest

from dtl_engine import registry
from dtl_engine.config import METHODS as CONFIG_METHODS


def test_registry_imports_without_torch_or_timm():
    code = ("import sys, dtl_engine.registry, dtl_engine.formatting\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm'))\n"
            "print(heavy)\nsys.exit(1 if heavy else 0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name, family", [
    ("vit_base_patch16_224.augreg_in21k", "vit"), ("deit3_small_patch16_224", "vit"), ("test_vit", "vit"),
    ("hf-hub:timm/deit_small_patch16_224.fb_in1k", "vit"), ("swin_tiny_patch4_window7_224.ms_in1k", "swin"),
    ("swinv2_tiny_window8_256", None), ("swin_s3_tiny_224", None), ("resnet50", None), ("eva02_tiny_patch14_224", None),
])
def test_family_of_a_name(name, family):
    assert registry.family_of(name) == family
    assert (registry.refusal(name) is not None) == name.startswith(("swinv2", "swin_s3", "eva"))


def test_adapters_resolve_families_and_defaults_by_the_registry():
    from dtl_engine.model.adapters import FAMILY_DEFAULTS, resolve_family

    for name in ("deit_small_patch16_224", "vit_tiny_patch16_224", "swin_tiny_patch4_window7_224"):
        assert resolve_family(name) == registry.family_of(name)
    for key, spec in registry.FAMILIES.items():
        assert (FAMILY_DEFAULTS[key].rank, FAMILY_DEFAULTS[key].fusion_kernel) == (spec.rank, spec.fusion_kernel)


def test_default_injection_start_follows_the_family_rule():
    assert registry.FAMILIES["vit"].default_taps([12]) == (0, 6)
    assert registry.FAMILIES["swin"].default_taps([2, 2, 18, 2]) == (4, 14)     # Swin-B, the paper's
    assert registry.FAMILIES["swin"].default_taps([2, 2, 6, 2]) == (4, 8)       # Swin-T


def test_every_family_supports_known_methods_and_config_accepts_exactly_them():
    assert CONFIG_METHODS == registry.METHOD_NAMES
    for spec in registry.FAMILIES.values():
        assert set(spec.methods) <= set(registry.METHODS)
        assert spec.fusion_kernel % 2 == 1 and spec.rank >= 1


def test_the_model_the_memory_probe_and_the_benchmark_name_the_registrys_methods():
    from dtl_engine.bench.speed import BENCH_METHODS, DTL_METHODS
    from dtl_engine.model.dtl import VARIANTS
    from dtl_engine.sizing.memory_probe import METHODS as PROBED

    assert VARIANTS == registry.METHOD_NAMES
    assert set(PROBED) == set(BENCH_METHODS) == set(registry.METHOD_NAMES) | set(registry.PEER_METHODS)
    assert set(DTL_METHODS) == {k for k, m in registry.METHODS.items() if m.side_network} == {"dtl", "dtl+"}

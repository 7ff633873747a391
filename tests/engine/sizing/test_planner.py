"""The GPU-fit planner: estimates against the probe, choices on a faked card, the plan command."""
from __future__ import annotations

import json

import pytest

from dtl_engine.sizing import planner
from dtl_engine.cli.main import main
from dtl_engine.errors import RunError
from dtl_engine.sizing.memory_probe import estimate_memory
from dtl_engine.sizing.planner import GB, GpuInfo, format_plan, parse_memory, plan_fit
from tiny_models import TINY_VIT

NAME, KW = TINY_VIT
MB = 1024 ** 2


def _plan(memory: int | None = None, **kw):
    return plan_fit(NAME, memory, model_kwargs=KW, **kw)


def test_parse_memory():
    assert parse_memory("8GB") == parse_memory("8 GiB") == parse_memory(8) == 8 * GB
    assert parse_memory("7.5g") == int(7.5 * GB)
    assert parse_memory("12000MB") == 12000 * MB
    for bad in ("eight", "-1GB", "0", "8 GB of it"):
        with pytest.raises(RunError):
            parse_memory(bad)


@pytest.mark.slow
@pytest.mark.parametrize("name, kw", [(NAME, KW), ("vit_base_patch16_224", None)])
def test_estimates_within_15_percent_of_the_probe_at_batches_it_did_not_probe(name, kw):
    plan = plan_fit(name, 80 * GB, model_kwargs=kw)
    for option in plan.options:
        s = option.setting
        for batch in (8, 24, 32):
            probe = estimate_memory(name, batch, method="dtl", precision=s.precision, model_kwargs=kw,
                                    checkpoint_blocks=s.checkpoint_blocks, low_precision_taps=s.low_precision_taps,
                                    half_frozen_weights=s.half_frozen_weights).method.total_bytes
            assert abs(option.estimate(batch) - probe) <= 0.15 * probe, (s.label, batch)


def test_plenty_of_memory_keeps_the_default_setting_at_the_target_batch():
    plan = _plan(1 * GB)
    assert plan.choice is plan.options[0] and plan.choice.batch_size == 32
    assert plan.recommended() == {"precision": "bf16", "half_frozen_weights": True, "low_precision_taps": False,
                                  "checkpoint_blocks": False, "batch_size": 32}
    assert plan.smallest_card is None and "Use bf16" in plan.summary()


def test_tight_memory_turns_on_the_savers_then_lowers_the_batch():
    full = _plan(1 * GB)
    default, frugal = full.options[0], full.options[1]
    assert frugal.target_bytes < default.target_bytes
    # room for the frugal setting at batch 32 but not for the default one
    between = int((frugal.target_bytes + default.target_bytes) / 2 / (1 - planner.HEADROOM))
    plan = _plan(between)
    assert plan.choice.setting.checkpoint_blocks and plan.choice.batch_size == 32
    # room for 4 images with every saver, not 8
    small = int(frugal.estimate(5) / (1 - planner.HEADROOM))
    plan = _plan(small)
    assert plan.choice.setting.checkpoint_blocks and plan.choice.batch_size == 4
    assert plan.smallest_card == planner.CARDS[0][0] and "For batch 32" in format_plan(plan)


@pytest.mark.slow
def test_nothing_fits_names_the_smallest_card_that_would():
    plan = plan_fit("vit_huge_patch14_224", 1 * GB)
    assert plan.choice is None and plan.recommended() is None
    need = plan.frugal.target_bytes
    label, gb = next((label, gb) for label, gb in planner.CARDS if label == plan.smallest_card)
    assert gb * GB * (1 - planner.HEADROOM) >= need
    smaller = [g for _, g in planner.CARDS if g < gb]
    assert all(g * GB * (1 - planner.HEADROOM) < need for g in smaller)
    assert plan.summary().startswith("Nothing fits") and plan.smallest_card in plan.summary()


def test_faked_gpu_gives_its_free_memory_name_and_fp16_when_it_lacks_bf16(monkeypatch):
    fake = GpuInfo("Fake T4", free_bytes=3 * GB, total_bytes=4 * GB, bf16=False)
    monkeypatch.setattr(planner, "current_gpu", lambda: fake)
    plan = _plan()
    assert plan.memory_bytes == 3 * GB and plan.gpu_name == "Fake T4"
    assert plan.choice.setting.precision == "fp16" and "Fake T4" in format_plan(plan)


def test_plan_command(monkeypatch, capsys):
    monkeypatch.setattr(planner, "current_gpu", lambda: None)
    assert main(["plan", "--backbone", "test_vit"]) == 2
    err = capsys.readouterr().err
    assert "No CUDA GPU" in err and "--gpu-memory" in err and err.count("\n") == 1
    assert main(["plan", "--backbone", "test_vit", "--gpu-memory", "2GB"]) == 0
    out = capsys.readouterr().out
    assert "Use bf16" in out and "batch 32" in out
    assert main(["plan", "--backbone", "test_vit", "--gpu-memory", "2GB", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["recommended"]["batch_size"] == 32 and len(data["options"]) == 3
    assert main(["plan", "--backbone", "resnet50", "--gpu-memory", "2GB"]) == 2
    assert "convolutional" in capsys.readouterr().err

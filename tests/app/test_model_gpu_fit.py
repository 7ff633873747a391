"""Model page, "Fit to my GPU": the GPU's facts, the plan applied to the settings, nothing fitting, no GPU.

The GPU is faked through the page's ``gpu_probe``; the plans are the real planner's (the memory probe).
"""
from __future__ import annotations

import pytest

from app.pages.model_page import ModelPage
from app.widgets.gpu_fit import NO_GPU
from dtl_engine.formatting import format_bytes
from dtl_engine.sizing.planner import GB, GpuInfo

CARD_8GB = GpuInfo("Fake RTX 4060", free_bytes=int(7.5 * GB), total_bytes=8 * GB, bf16=True)
CARD_2GB = GpuInfo("Fake GT 1030", free_bytes=2 * GB, total_bytes=2 * GB, bf16=False)
HUGE = "vit_huge_patch14_224.orig_in21k"


def _page(qtbot, settings, gpu: GpuInfo | None) -> ModelPage:
    page = ModelPage(settings, gpu_probe=lambda: gpu)
    qtbot.addWidget(page)
    page.resize(1100, 760)
    page.show()
    qtbot.waitUntil(lambda: page.gpu_fit.detected, timeout=60_000)
    return page


def _fit(qtbot, page: ModelPage) -> str:
    before = page.last_plan
    page.gpu_fit.button.click()
    qtbot.waitUntil(lambda: page.gpu_fit.button.text() == "Fit to my GPU", timeout=120_000)
    assert page.last_plan is not before, page.gpu_fit.outcome.text()
    return page.gpu_fit.outcome.text()


@pytest.mark.slow
def test_an_8gb_card_gets_its_plan_applied_and_shown(qtbot, settings, themed, tmp_path, screens_dir):
    page = _page(qtbot, settings, CARD_8GB)
    assert page.gpu_fit.gpu_label.text() == "Fake RTX 4060 · 7.50 GB free of 8.00 GB"
    assert page.gpu_fit.button.isEnabled()
    page.precision.setCurrentText("fp32")           # a person's choice the plan overrides
    page.checkpoint_blocks.setChecked(True)
    text = _fit(qtbot, page)
    plan = page.last_plan
    assert (plan.gpu_name, plan.memory_bytes, plan.backbone) == ("Fake RTX 4060", CARD_8GB.free_bytes, "test_vit")
    config = page.build_config(str(tmp_path))
    # test_vit fits easily: the default setting (bf16, frozen weights in bf16, no recompute) at batch 32
    assert (config.precision, config.batch_size, config.checkpoint_blocks, config.half_frozen_weights) == (
        "bf16", 32, False, True)
    assert text.startswith("Changed: ")
    for change in ("Precision fp32 → bf16", "Batch size 4 → 32", "Recompute blocks on → off"):
        assert change in text
    assert f"~{format_bytes(plan.choice.batch_bytes)} at batch 32, of {format_bytes(plan.usable_bytes)} usable" in text
    assert page.grab().save(str(screens_dir / "model_gpu_fit.png"))
    # pressed again, nothing is left to change
    assert _fit(qtbot, page).startswith("Your settings already fit this GPU.")


def test_auto_precision_stays_auto_when_it_already_picks_the_plans(qtbot, settings, themed, tmp_path):
    page = _page(qtbot, settings, CARD_8GB)
    assert page.precision.currentText() == "auto"
    text = _fit(qtbot, page)
    assert "Precision" not in text and page.build_config(str(tmp_path)).precision == "auto"


@pytest.mark.slow
def test_a_2gb_card_turns_on_the_savers_lowers_the_batch_and_names_a_card(qtbot, settings, themed, tmp_path):
    card = [CARD_2GB]
    page = ModelPage(settings, gpu_probe=lambda: card[0])
    qtbot.addWidget(page)
    page.show()
    qtbot.waitUntil(lambda: page.gpu_fit.detected, timeout=60_000)
    assert page.picker.select(HUGE)
    page.batch_size.setValue(32)
    text = _fit(qtbot, page)
    plan = page.last_plan
    choice = plan.choice
    assert choice.setting.checkpoint_blocks and 1 <= choice.batch_size < 32
    assert choice.estimate(choice.batch_size) <= plan.usable_bytes < choice.estimate(choice.batch_size * 2)
    config = page.build_config(str(tmp_path))
    # a card without bf16: 'auto' trains in fp16 there, so the precision stays 'auto'
    assert (config.backbone, config.precision, config.checkpoint_blocks, config.batch_size) == (
        HUGE, "auto", True, choice.batch_size)
    assert f"Batch size 32 → {choice.batch_size}" in text and "Recompute blocks off → on" in text
    assert f"Batch 32 would need {plan.smallest_card}." in text and plan.smallest_card
    assert page.gpu_fit.outcome.property("role") == "warn"

    # Another program took most of the card since: the plan reads the free memory when pressed.
    card[0] = GpuInfo("Fake GT 1030", free_bytes=1 * GB, total_bytes=2 * GB, bf16=False)
    before = page.config_dict()
    text = _fit(qtbot, page)
    assert page.gpu_fit.gpu_label.text() == "Fake GT 1030 · 1.00 GB free of 2.00 GB"
    assert page.last_plan.choice is None and page.last_plan.memory_bytes == 1 * GB
    assert text.startswith("Nothing fits in ") and page.last_plan.smallest_card in text
    assert "left as they are" in text and page.gpu_fit.outcome.property("role") == "error"
    assert page.config_dict() == before


def test_without_a_gpu_the_button_is_disabled_with_the_reason(qtbot, settings, themed):
    page = _page(qtbot, settings, None)
    assert not page.gpu_fit.button.isEnabled()
    assert page.gpu_fit.gpu_label.text() == NO_GPU == "No GPU found: training runs on the CPU."
    assert page.gpu_fit.button.toolTip() == NO_GPU

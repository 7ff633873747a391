"""Model page: a valid TrainConfig from the controls, weights sources, search, memory estimate, persistence."""
from __future__ import annotations

import pytest
from PySide6.QtWidgets import QApplication

from app import jobs
from app.pages.model_page import ModelPage
from dtl_engine.config import TrainConfig
from dtl_engine.errors import WeightsError


@pytest.fixture
def page(qtbot, settings, themed):
    p = ModelPage(settings)
    qtbot.addWidget(p)
    p.resize(1100, 760)
    p.show()
    yield p


def test_builds_a_valid_config_from_the_controls(page, tmp_path):
    assert page.picker.current() == "test_vit"          # the remembered configuration was restored
    page.method_buttons["dtl+"].click()
    page.rank.setValue(4)
    page.kernel.setValue(5)
    page.inject_from.setValue(1)
    page.batch_size.setValue(8)
    page.val_percent.setValue(30)
    assert page.augment.currentText() == "Automatic" and page.lr.text() == "Automatic"   # the defaults
    assert page.recipe.currentText() == "Quick (default)"
    page.augment.setCurrentIndex(page.augment.findData("none"))
    page.checkpoint_blocks.setChecked(True)
    config = page.build_config(str(tmp_path))
    assert isinstance(config, TrainConfig)
    assert (config.data_dir, config.backbone, config.method) == (str(tmp_path), "test_vit", "dtl+")
    assert (config.rank, config.fusion_kernel, config.inject_from) == (4, 5, 1)
    assert (config.batch_size, config.val_fraction, config.augment) == (8, 0.3, "none")
    assert config.checkpoint_blocks is True and config.weights == "random"
    assert config.lr == "auto" and config.recipe == "quick"
    page.lr.setValue(0.003)                                # a number typed by the person wins
    assert page.build_config(str(tmp_path)).lr == 0.003
    page.recipe.setCurrentIndex(page.recipe.findData("paper"))   # the paper recipe brings its own values
    paper = page.build_config(str(tmp_path))
    assert (paper.recipe, paper.epochs, paper.warmup_epochs, paper.lr, paper.augment) == (
        "paper", 100, 10.0, "auto", "none")
    assert (paper.resize, paper.normalize, paper.keep, paper.drop_path) == ("squash", "0.5", "last", 0.1)
    page.recipe.setCurrentIndex(page.recipe.findData("quick"))
    # "Auto" is the lowest value of a spin box and means "family default" (None).
    page.rank.setValue(page.rank.minimum())
    page.image_size.setValue(page.image_size.minimum())
    config = page.build_config(str(tmp_path))
    assert config.rank is None and config.image_size is None
    assert page.status() == (True, "test_vit · DTL+ · rank 2 · random weights")


def test_linear_probe_disables_side_network_knobs(page):
    page.method_buttons["linear"].click()
    assert not page.rank.isEnabled() and not page.kernel.isEnabled()
    page.method_buttons["dtl"].click()
    assert page.rank.isEnabled() and not page.kernel.isEnabled()


def test_weights_sources(page, tmp_path):
    page.w_random.setChecked(True)
    assert page.random_warning.isVisible()
    page.w_hub.setChecked(True)
    assert not page.random_warning.isVisible()
    assert page.build_config(str(tmp_path)).weights == "hub"

    page.w_file.setChecked(True)
    assert page.status() == (False, "Waiting for a local weights file")
    with pytest.raises(WeightsError):
        page.build_config(str(tmp_path))
    weights = tmp_path / "backbone.safetensors"
    weights.write_bytes(b"x")
    page.weights_path.setText(str(weights))
    assert page.status()[0] is True
    assert page.build_config(str(tmp_path)).weights == str(weights)


def test_search_refuses_unsupported_models(qtbot, page):
    assert not page.picker.select("resnet50")
    assert "ViT, DeiT or Swin" in page.picker.search_message.text()
    assert page.picker.current() == "test_vit"
    assert page.picker.select("vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    assert page.picker.current() == "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    assert page.status()[1].startswith("ViT-Ti/16 · DTL")


def test_every_knob_explains_itself(page):
    for widget, field in ((page.rank, "rank"), (page.inject_from, "inject_from"), (page.beta, "beta"),
                          (page.kernel, "fusion_kernel"), (page.epochs, "epochs"), (page.lr, "lr"),
                          (page.batch_size, "batch_size"), (page.precision, "precision"),
                          (page.checkpoint_blocks, "checkpoint_blocks"), (page.image_size, "image_size")):
        assert widget.toolTip() == TrainConfig.help(field)


@pytest.mark.slow
def test_memory_estimate_appears_and_follows_the_batch_size(qtbot, page, screens_dir):
    qtbot.waitUntil(lambda: page.memory_text() != "", timeout=120_000)
    first = page.last_estimate
    assert page.memory_text().startswith("DTL: ~") and "full fine-tuning would need ~" in page.memory_text()
    assert first.method.total_bytes < first.full.total_bytes      # the point of DTL
    page.batch_size.setValue(page.batch_size.value() * 8)
    qtbot.waitUntil(lambda: page.last_estimate is not first, timeout=120_000)
    assert page.last_estimate.method.activation_bytes > first.method.activation_bytes
    # The 'Auto' labels show the engine's own defaults for this backbone once they are known.
    from dtl_engine.model.dtl import backbone_defaults

    expected = backbone_defaults("test_vit")
    qtbot.waitUntil(lambda: page.inject_from.specialValueText() == f"Auto ({expected['inject_from']})",
                    timeout=60_000)
    assert page.rank.specialValueText() == f"Auto ({expected['rank']})"
    page.advanced.set_expanded(True)
    QApplication.processEvents()
    assert page.grab().save(str(screens_dir / "model_page.png"))


def test_last_config_survives_a_restart(qtbot, settings, themed, tmp_path):
    first = ModelPage(settings)
    qtbot.addWidget(first)
    first.method_buttons["dtl+"].click()
    first.rank.setValue(3)
    first.epochs.setValue(7)
    first.lr.setValue(0.002)
    first.build_config(str(tmp_path))           # starting a run remembers the settings
    jobs.cancel_all()
    assert jobs.wait_all(120_000)
    second = ModelPage(settings)
    qtbot.addWidget(second)
    config = second.build_config(str(tmp_path))
    assert (config.method, config.rank, config.epochs, config.lr) == ("dtl+", 3, 7, 0.002)


def test_columns_stack_on_a_narrow_window(qtbot, page):
    from PySide6.QtWidgets import QBoxLayout

    page.resize(700, 600)
    qtbot.waitUntil(lambda: page._columns.direction() == QBoxLayout.Direction.TopToBottom, timeout=2000)
    page.resize(1200, 760)
    qtbot.waitUntil(lambda: page._columns.direction() == QBoxLayout.Direction.LeftToRight, timeout=2000)


def test_the_spin_boxes_end_where_the_configs_ranges_end(page, tmp_path):
    # the command line and the app agree: each spin box's largest value is a config the engine accepts,
    # and the config's own largest value can be set
    for name, widget in (("epochs", page.epochs), ("batch_size", page.batch_size), ("seed", page.seed),
                         ("image_size", page.image_size), ("early_stopping", page.early_stopping),
                         ("beta", page.beta), ("weight_decay", page.weight_decay),
                         ("rank", page.rank), ("fusion_kernel", page.kernel)):
        assert widget.maximum() == min(TrainConfig.bounds(name)[1], 2 ** 31 - 1), name
    assert TrainConfig.bounds("lr")[0] <= page.lr.maximum() <= TrainConfig.bounds("lr")[1]
    page.image_size.setValue(page.image_size.maximum())
    page.epochs.setValue(page.epochs.maximum())
    page.beta.setValue(page.beta.maximum())
    config = page.build_config(str(tmp_path))
    assert (config.image_size, config.epochs, config.beta) == tuple(
        TrainConfig.bounds(name)[1] for name in ("image_size", "epochs", "beta"))


def test_one_step_up_from_auto_goes_above_the_automatic_value(qtbot, page):
    """From "Auto (2)" the arrow goes to 3, not to 1 (below what the automatic choice already gives)."""
    page.rank.setValue(0)
    auto = page.rank.automatic_value()
    assert page.rank.specialValueText() == f"Auto ({auto})"
    page.rank.stepUp()
    assert page.rank.value() == auto + 1
    page.rank.stepDown()
    page.rank.stepDown()
    assert page.rank.value() == auto - 1               # down from there is plain stepping


def test_the_page_does_not_jump_when_the_estimate_arrives(qtbot, page):
    """The estimate's lines are held from the start: what lies below stays where the user aims at it."""
    from PySide6.QtCore import QPoint

    def advanced_y() -> int:
        QApplication.processEvents()
        return page.advanced.mapTo(page, QPoint(0, 0)).y()

    assert page.memory_text() == ""
    before = advanced_y()
    qtbot.waitUntil(lambda: page.memory_text() != "", timeout=120_000)
    assert abs(advanced_y() - before) <= 4, (before, advanced_y())

"""The README's facts a user acts on match the code (issue 23, item 17: the data folder, the epochs a
first run trains and the quick recipe's, where outputs are suggested)."""
from __future__ import annotations

from pathlib import Path

from app.pages.export_page import documents_folder
from app.pages.model_page import DEFAULT_BACKBONE, FIRST_EPOCHS
from dtl_engine.paths import APP_NAME
from dtl_engine.recipes import recipe_values

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_the_data_folder_is_named_as_the_app_names_it():
    assert f"`~/.local/share/{APP_NAME}`" in README


def test_the_epochs_are_the_recipes_and_the_apps():
    quick = recipe_values("quick", DEFAULT_BACKBONE)
    row = f"| epochs / warm-up | {quick['epochs']} / {quick['warmup_epochs']:g} "
    assert row in README, "the recipe table's epochs are not the quick recipe's"
    assert f"the app's Model step starts at {FIRST_EPOCHS} epochs" in README


def test_outputs_are_suggested_where_the_readme_says(tmp_path, monkeypatch):
    # "suggested in your Documents folder, or your home folder where there is none"
    assert "suggested in your Documents folder, or your home folder where there is" in README
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DOCUMENTS_DIR", str(tmp_path / "Documents"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert documents_folder() == tmp_path, "no Documents folder: the home folder"
    (tmp_path / "Documents").mkdir()
    assert documents_folder() == tmp_path / "Documents"

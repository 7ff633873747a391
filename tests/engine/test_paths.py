"""paths: one per-user folder, moved by DTL_STUDIO_HOME, sub-folders created on demand."""
from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from dtl_engine import paths
from dtl_engine.errors import DTLError


def test_env_override_moves_everything(tmp_path, monkeypatch):
    home = tmp_path / "studio home"
    monkeypatch.setenv("DTL_STUDIO_HOME", str(home))
    assert not home.exists()
    assert paths.user_data_dir() == home.resolve()
    for fn, name in ((paths.runs_dir, "runs"), (paths.cache_dir, "cache"), (paths.sample_data_dir, "sample_data")):
        d = fn()
        assert d == home.resolve() / name and d.is_dir()


def test_platformdirs_without_override(tmp_path, monkeypatch):
    monkeypatch.delenv("DTL_STUDIO_HOME", raising=False)
    calls = []

    def fake_data(app, appauthor=None):
        calls.append((app, appauthor))
        return tmp_path / "data" / app

    monkeypatch.setattr(platformdirs, "user_data_path", fake_data)
    monkeypatch.setattr(platformdirs, "user_cache_path", lambda app, appauthor=None: tmp_path / "cache" / app)
    assert paths.user_data_dir() == tmp_path / "data" / "DTL Studio"
    assert calls == [("DTL Studio", False)]
    assert paths.runs_dir() == tmp_path / "data" / "DTL Studio" / "runs"
    assert paths.cache_dir() == tmp_path / "cache" / "DTL Studio"
    assert paths.cache_dir().is_dir()


def test_a_file_in_the_way_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "home"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DTL_STUDIO_HOME", str(blocker))
    with pytest.raises(DTLError, match="home"):
        paths.runs_dir()


def test_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DTL_STUDIO_HOME", "~/dtl")
    assert paths.user_data_dir() == (tmp_path / "dtl").resolve()
    assert Path(tmp_path / "dtl").is_dir()

"""Shared test setup: headless Qt, a private user-data folder, small thread counts."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    # Runs, caches and settings of a test never touch the real user folders.
    monkeypatch.setenv("DTL_STUDIO_HOME", str(tmp_path / "dtl_home"))
    yield

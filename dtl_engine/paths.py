"""Where DTL Studio keeps its own files: runs, caches and the sample data.

Everything lives under one per-user folder chosen by platformdirs (for example
``~/.local/share/DTL Studio`` on Linux). Setting the environment variable
``DTL_STUDIO_HOME`` moves all of it to another folder (tests, portable installs).
Folders are created on demand, the first time they are asked for.
"""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from dtl_engine import fileio
from dtl_engine.errors import DTLError, WriteRefused

APP_NAME = "DTL Studio"
HOME_ENV = "DTL_STUDIO_HOME"


def _ensure(path: Path) -> Path:
    try:
        fileio.make_folder(path)
    except WriteRefused:
        raise WriteRefused(f"DTL Studio's own folder '{path}' is inside the image folder in use; it never writes "
                           f"into your data. Set {HOME_ENV} to a folder outside the images (or give --out).") from None
    except OSError as exc:
        raise DTLError(f"Cannot create the folder '{path}': {exc.strerror or exc}.") from exc
    if not path.is_dir():
        raise DTLError(f"'{path}' exists but is not a folder; DTL Studio needs it as a folder.")
    return path


def user_data_dir() -> Path:
    """The per-user folder for all DTL Studio data (``DTL_STUDIO_HOME`` overrides it)."""
    override = os.environ.get(HOME_ENV, "").strip()
    if override:
        return _ensure(Path(override).expanduser().resolve())
    return _ensure(platformdirs.user_data_path(APP_NAME, appauthor=False))


def runs_dir() -> Path:
    """The folder holding one sub-folder per training run."""
    return _ensure(user_data_dir() / "runs")


def cache_dir() -> Path:
    """The folder for disposable caches (feature caches, downloaded weights bookkeeping)."""
    if os.environ.get(HOME_ENV, "").strip():
        return _ensure(user_data_dir() / "cache")
    return _ensure(platformdirs.user_cache_path(APP_NAME, appauthor=False))


def sample_data_dir() -> Path:
    """The folder where the built-in sample data set is written as images."""
    return _ensure(user_data_dir() / "sample_data")


def image_cache_dir() -> Path:
    """The folder of the decoded-image cache (inside the per-user cache folder)."""
    return cache_dir() / "images"


def feature_cache_dir() -> Path:
    """The folder of the frozen-feature store (linear probe features, same rules as the image cache)."""
    return cache_dir() / "features"


# The ledger of the engine's temporaries beside users' files lives in DTL Studio's own folder.
fileio.keep_ledger_in(lambda: user_data_dir() / "leftovers")

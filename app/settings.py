"""A small wrapper over QSettings: last folder, recent folders, last config, window geometry.

Where the settings live: the platform's native store by default; an INI file when
``DTL_STUDIO_SETTINGS`` names one, or inside ``DTL_STUDIO_HOME`` when that is set
(tests and portable installs never touch the real user settings).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

ORGANISATION = "DTL Studio"
APPLICATION = "DTL Studio"
MAX_RECENT = 8


def _open_store() -> QSettings:
    explicit = os.environ.get("DTL_STUDIO_SETTINGS")
    home = os.environ.get("DTL_STUDIO_HOME")
    if explicit:
        return QSettings(explicit, QSettings.Format.IniFormat)
    if home:
        return QSettings(str(Path(home) / "settings.ini"), QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, ORGANISATION, APPLICATION)


class Settings:
    """Typed access to the few things the window remembers between sessions."""

    def __init__(self, store: QSettings | None = None) -> None:
        self.store = store if store is not None else _open_store()

    # --- folders -----------------------------------------------------------
    def last_folder(self) -> str:
        """The folder opened last, or '' when none."""
        return str(self.store.value("data/last_folder", "") or "")

    def recent_folders(self) -> list[str]:
        """Recently opened folders, newest first, only those that still exist."""
        raw = self.store.value("data/recent_folders", "[]")
        try:
            items = json.loads(raw) if isinstance(raw, str) else list(raw or [])
        except (ValueError, TypeError):
            items = []
        return [p for p in items if isinstance(p, str) and Path(p).is_dir()]

    def add_recent_folder(self, folder: str) -> None:
        """Remember ``folder`` as the last one and put it first in the recent list."""
        folder = str(Path(folder))
        items = [folder] + [p for p in self.recent_folders() if p != folder]
        self.store.setValue("data/recent_folders", json.dumps(items[:MAX_RECENT]))
        self.store.setValue("data/last_folder", folder)
        self.store.sync()

    def clear_recent_folders(self) -> None:
        """Forget the recent folder list."""
        self.store.setValue("data/recent_folders", "[]")
        self.store.sync()

    # --- training configuration ---------------------------------------------
    def last_config(self) -> dict:
        """The last model/training settings as a plain dict ({} when none or unreadable)."""
        raw = self.store.value("model/last_config", "")
        try:
            data = json.loads(raw) if raw else {}
        except (ValueError, TypeError):
            return {}
        return data if isinstance(data, dict) else {}

    def set_last_config(self, config: dict) -> None:
        """Remember the model/training settings (a JSON-able dict)."""
        self.store.setValue("model/last_config", json.dumps(config))
        self.store.sync()

    # --- window ---------------------------------------------------------------
    def geometry(self) -> QByteArray | None:
        """The saved window geometry, or None."""
        value = self.store.value("window/geometry")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_geometry(self, geometry: QByteArray) -> None:
        """Save the window geometry (QWidget.saveGeometry())."""
        self.store.setValue("window/geometry", geometry)
        self.store.sync()

    def value(self, key: str, default=None):
        """Any other remembered value."""
        return self.store.value(key, default)


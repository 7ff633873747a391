"""Look and feel: Fusion style, a light or dark palette that follows the system, a small style sheet."""
from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QPalette
from PySide6.QtWidgets import QApplication


# The charts' series colours: colour-blind friendly (Okabe-Ito), readable on white.
BLUE, ORANGE, GREEN, GREY, PURPLE = "#0072B2", "#D55E00", "#009E73", "#8a8a8a", "#CC79A7"


def resources_dir() -> Path:
    """The resources/ folder, in a source checkout or inside a frozen bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle and (Path(bundle) / "resources").is_dir():
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


# One accent per scheme; everything else derives from the palette. The status roles (ok, warn, error,
# muted, accent) and the progress fill keep text at 4.5:1 or more on every background they appear on
# (WCAG AA; tests/app/test_theme.py computes it).
COLORS = {
    "light": {"window": "#f4f5f7", "base": "#ffffff", "alt": "#f0f2f5", "text": "#1d2330",
              "muted": "#5f6b7a", "border": "#d5dae1", "accent": "#2b5fcc", "accent_text": "#ffffff",
              "ok": "#17753f", "warn": "#995000", "error": "#c0392b", "button": "#fbfbfc", "progress": "#6f97ea",
              "panel": "#e9ecf1", "card": "#ffffff", "light": "#ffffff", "dark": "#a9b0ba", "shadow": "#7d8591"},
    "dark": {"window": "#1f2227", "base": "#16181c", "alt": "#23262c", "text": "#e6e8eb",
             "muted": "#9aa3ae", "border": "#3a3f47", "accent": "#6e9bff", "accent_text": "#0f1420",
             "ok": "#4cc486", "warn": "#f0a94a", "error": "#ff7b6b", "button": "#2d3139", "progress": "#3a5ea8",
             "panel": "#191b1f", "card": "#262a31", "light": "#4a505a", "dark": "#5a616c", "shadow": "#0b0c0e"},
}


#: The colour role of each state a run, an export or a job can be in.
STATE_ROLES = {"starting": "accent", "running": "accent", "paused": "warn", "stopping": "warn",
               "finished": "ok", "verified": "ok", "stopped": "muted", "interrupted": "warn",
               "failed": "error", "damaged": "error", "not verified": "warn", "idle": "muted"}


def role_color(role: str) -> str:
    """The colour of a theme role ("ok", "warn", "error", "muted", "accent", …) in the scheme in use."""
    return colors()[role]


def state_color(state: str) -> str:
    """The colour that shows ``state`` (see :data:`STATE_ROLES`), following the light or dark palette."""
    return role_color(STATE_ROLES.get(state, "muted"))


def is_dark() -> bool:
    """True when the system asks for a dark colour scheme."""
    hints = QGuiApplication.styleHints()
    scheme = hints.colorScheme() if hasattr(hints, "colorScheme") else Qt.ColorScheme.Unknown
    if scheme == Qt.ColorScheme.Dark:
        return True
    if scheme == Qt.ColorScheme.Light:
        return False
    # Unknown: judge by the platform palette's window colour.
    return QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128


def colors() -> dict[str, str]:
    """The colour table of the scheme in use (widgets that paint themselves read it)."""
    app = QApplication.instance()
    scheme = app.property("dtl_scheme") if app is not None else None
    return COLORS[scheme if scheme in COLORS else "light"]


def _luminance(colour: QColor) -> float:
    def channel(v: float) -> float:
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
    return 0.2126 * channel(colour.redF()) + 0.7152 * channel(colour.greenF()) + 0.0722 * channel(colour.blueF())


def contrast_ratio(a: QColor, b: QColor) -> float:
    """WCAG 2 contrast ratio of two opaque colours (1 … 21)."""
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def mix(top: QColor, under: QColor, alpha: float) -> QColor:
    """``top`` painted at ``alpha`` (0 … 1) over the opaque ``under``."""
    return QColor(*(round(t * alpha + u * (1 - alpha)) for t, u in
                    ((top.red(), under.red()), (top.green(), under.green()), (top.blue(), under.blue()))))


def selection_tint(c: dict[str, str]) -> QColor:
    """The background of the selected step in the sidebar: the accent, lightly, over the panel."""
    return mix(QColor(c["accent"]), QColor(c["panel"]), 40 / 255)


def readable_on(colour: QColor, background: QColor, ratio: float = 4.5) -> QColor:
    """``colour``, darkened (on a light background) or lightened (on a dark one) until it reads at ``ratio``."""
    toward = QColor("#000000") if _luminance(background) > 0.18 else QColor("#ffffff")
    step = 0.0
    result = QColor(colour)
    while contrast_ratio(result, background) < ratio and step < 1.0:
        step += 0.05
        result = mix(toward, colour, step)
    return result


def _palette(c: dict[str, str]) -> QPalette:
    p = QPalette()
    role = QPalette.ColorRole
    for r, key in [(role.Window, "window"), (role.WindowText, "text"), (role.Base, "base"),
                   (role.AlternateBase, "alt"), (role.Text, "text"), (role.Button, "button"),
                   (role.ButtonText, "text"), (role.ToolTipBase, "base"), (role.ToolTipText, "text"),
                   (role.Highlight, "accent"), (role.HighlightedText, "accent_text"),
                   (role.Link, "accent"), (role.PlaceholderText, "muted"), (role.Mid, "border"),
                   (role.Light, "light"), (role.Midlight, "border"), (role.Dark, "dark"), (role.Shadow, "shadow")]:
        p.setColor(r, QColor(c[key]))
    disabled = QColor(c["muted"])
    for r in (role.WindowText, role.Text, role.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, r, disabled)
    return p


def style_sheet(c: dict[str, str]) -> str:
    """The application style sheet with the scheme's colours filled in."""
    template = (resources_dir() / "style" / "studio.qss").read_text(encoding="utf-8")
    for key, value in c.items():
        template = template.replace(f"@{key}@", value)
    return template


def apply_theme(app: QApplication) -> None:
    """Apply the palette + style sheet for the current system scheme, and follow later changes."""
    app.setStyle("Fusion")
    scheme = "dark" if is_dark() else "light"
    app.setProperty("dtl_scheme", scheme)
    c = COLORS[scheme]
    app.setPalette(_palette(c))
    try:
        app.setStyleSheet(style_sheet(c))
    except OSError:
        app.setStyleSheet("")           # a missing sheet is cosmetic, not fatal
    if not app.property("dtl_theme_hooked"):
        app.setProperty("dtl_theme_hooked", True)
        hints = QGuiApplication.styleHints()
        if hasattr(hints, "colorSchemeChanged"):
            hints.colorSchemeChanged.connect(lambda *_: apply_theme(app))


def app_icon() -> QIcon:
    """The application icon (empty icon when the file is missing)."""
    icon = QIcon()
    for name in ("dtl_studio_256.png", "dtl_studio_64.png"):
        path = resources_dir() / "icons" / name
        if path.exists():
            icon.addFile(str(path))
    return icon

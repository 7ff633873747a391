"""Theme roles: every status colour and the progress bar text read at WCAG AA (4.5:1) in light and dark."""
from __future__ import annotations

import pytest
from PySide6.QtGui import QColor, QPalette

from app.theme import COLORS, STATE_ROLES, _palette, state_color
from app.theme import contrast_ratio as contrast  # the app's own WCAG ratio, checked first below

AA = 4.5
STATUS_ROLES = ("ok", "warn", "error", "muted", "accent")


def test_contrast_is_computed_as_wcag_defines_it():
    assert contrast(QColor("#000000"), QColor("#ffffff")) == pytest.approx(21.0)
    assert contrast(QColor("#767676"), QColor("#ffffff")) == pytest.approx(4.54, abs=0.01)


@pytest.mark.parametrize("scheme", sorted(COLORS))
def test_status_colours_read_on_every_background(scheme):
    c = COLORS[scheme]
    palette = _palette(c)
    backgrounds = {"window": palette.color(QPalette.ColorRole.Window), "base": palette.color(QPalette.ColorRole.Base),
                   "alternate rows": palette.color(QPalette.ColorRole.AlternateBase),
                   "card": QColor(c["card"]), "sidebar": QColor(c["panel"])}
    low = [(role, where, round(contrast(QColor(c[role]), bg), 2))
           for role in STATUS_ROLES for where, bg in backgrounds.items() if contrast(QColor(c[role]), bg) < AA]
    assert low == [], f"{scheme}: below {AA}:1 — {low}"


@pytest.mark.parametrize("scheme", sorted(COLORS))
def test_progress_text_reads_on_the_fill_and_on_the_trough(scheme):
    c = COLORS[scheme]
    text = QColor(c["text"])
    assert contrast(text, QColor(c["progress"])) >= AA
    assert contrast(text, QColor(c["alt"])) >= AA
    assert contrast(QColor(c["progress"]), QColor(c["alt"])) >= 2.0     # the fill still shows against the trough


@pytest.mark.parametrize("scheme", sorted(COLORS))
def test_selected_and_checked_text_reads(scheme):
    c = COLORS[scheme]
    palette = _palette(c)
    selected = palette.color(QPalette.ColorRole.HighlightedText), palette.color(QPalette.ColorRole.Highlight)
    assert contrast(*selected) >= AA
    # The checked radio button's dot (accent) against its circle (base): non-text contrast, WCAG 3:1.
    assert contrast(QColor(c["accent"]), QColor(c["base"])) >= 3.0


def test_state_colours_follow_the_palette(qapp):
    try:
        for scheme in COLORS:
            qapp.setProperty("dtl_scheme", scheme)
            assert state_color("failed") == COLORS[scheme]["error"]
            assert state_color("finished") == COLORS[scheme]["ok"]
            assert state_color("something new") == COLORS[scheme]["muted"]
        assert set(STATE_ROLES.values()) <= set(STATUS_ROLES)
    finally:
        qapp.setProperty("dtl_scheme", None)


@pytest.mark.parametrize("scheme", sorted(COLORS))
@pytest.mark.parametrize("ready", [True, False])
def test_the_selected_steps_status_line_reads_on_its_tint(scheme, ready):
    from app.theme import selection_tint
    from app.widgets.step_bar import status_line_color

    c = COLORS[scheme]
    tint = selection_tint(c)
    assert contrast(status_line_color(c, ready, selected=True), tint) >= AA
    assert contrast(status_line_color(c, ready, selected=False), QColor(c["panel"])) >= AA
    assert contrast(QColor(c["text"]), tint) >= AA                     # the step's title too


@pytest.mark.parametrize("scheme", sorted(COLORS))
def test_the_focus_ring_shows_on_a_blue_button(qtbot, qapp, monkeypatch, scheme):
    """The focused Browse… (a primary, accent-filled button) has a ring that stands out from its fill (3:1)."""
    from PySide6.QtWidgets import QHBoxLayout, QPushButton, QWidget

    from app import theme

    monkeypatch.setattr(theme, "is_dark", lambda: scheme == "dark")
    theme.apply_theme(qapp)
    try:
        window = QWidget()
        qtbot.addWidget(window)
        row = QHBoxLayout(window)
        browse, other = QPushButton("Browse…"), QPushButton("Other")
        browse.setProperty("role", "primary")
        row.addWidget(browse)
        row.addWidget(other)
        window.show()
        window.activateWindow()
        qtbot.waitActive(window)

        def ring_and_fill():
            image = browse.grab().toImage()
            y = image.height() // 2
            return image.pixelColor(0, y), image.pixelColor(5, y)

        other.setFocus()
        qtbot.waitUntil(lambda: other.hasFocus(), timeout=2000)
        unfocused = ring_and_fill()[0]
        browse.setFocus()
        qtbot.waitUntil(lambda: browse.hasFocus(), timeout=2000)
        ring, fill = ring_and_fill()
        assert ring != unfocused
        assert contrast(ring, fill) >= 3.0, (ring.name(), fill.name())
    finally:
        monkeypatch.undo()
        theme.apply_theme(qapp)

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

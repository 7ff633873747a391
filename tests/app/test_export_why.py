"""Export step, "Try it" → "Why?": the heatmap of the tried image, worked out in the background on demand."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PIL import Image

from app.pages.export_page import ExportPage


def _qimage_array(image) -> np.ndarray:
    image = image.convertToFormat(image.Format.Format_RGB888)
    data = np.frombuffer(bytes(image.constBits()), dtype=np.uint8)
    return data.reshape(image.height(), image.bytesPerLine())[:, :3 * image.width()].reshape(
        image.height(), image.width(), 3)


@pytest.mark.slow
def test_why_shows_the_heatmap_of_the_tried_image_on_demand(qtbot, exported, tmp_path, themed, screens_dir):
    run, model = exported
    page = ExportPage()
    qtbot.addWidget(page)
    page.resize(1100, 760)
    page.show()
    page.set_run(run.run_dir)
    page.last_result = type("Exported", (), {"path": str(model), "verified": True})()
    page._update_buttons()
    import json
    data_dir = Path(json.loads(Path(run.run_dir, "config.json").read_text())["data_dir"])
    images = [str(sorted((data_dir / c).iterdir())[0]) for c in ("red", "blue")]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    with qtbot.waitSignal(page.predicted, timeout=120_000):
        page.try_images(images + [str(broken)])
    assert not page.why_panel.isVisible()                       # on demand only
    assert len(page.why_buttons) == 2                           # none for the unreadable image
    assert page.try_table.cellWidget(2, 3) is None

    with qtbot.waitSignal(page.why_panel.explained, timeout=120_000) as done:
        page.why_buttons[1].click()
    explanation = done.args[0]
    assert page.why_panel.isVisible() and page.why_panel.image_path == images[1]
    photo = np.asarray(Image.open(images[1]).convert("RGB"))
    assert explanation.heatmap.shape == photo.shape[:2] and 0 < explanation.heatmap.max() <= 1
    assert explanation.class_name in run.report.classes
    assert f"<b>{explanation.class_name}</b>" in page.why_panel.caption.text()
    shown = page.why_panel.picture.pixmap()
    assert not shown.isNull() and max(shown.width(), shown.height()) > photo.shape[0]
    # What is shown is the photo with the heatmap over it: not the plain photo.
    overlaid = _qimage_array(shown.toImage().scaled(photo.shape[1], photo.shape[0]))
    assert np.abs(overlaid.astype(int) - photo.astype(int)).mean() > 5
    qtbot.wait(100)                     # the panel's layout settles around the new picture
    assert page.grab().save(str(screens_dir / "export_why.png"))
    page.resize(770, 600)               # the page's share of a 1000x680 window
    qtbot.wait(100)
    assert page.grab().save(str(screens_dir / "export_why_small.png"))

    # Another image's "Why?" replaces it (one at a time); pressing it again hides the panel.
    with qtbot.waitSignal(page.why_panel.explained, timeout=120_000):
        page.why_buttons[0].click()
    assert not page.why_buttons[1].isChecked() and page.why_panel.image_path == images[0]
    page.why_buttons[0].click()
    assert not page.why_panel.isVisible()
    page.clear_button.click()
    assert page.why_buttons == [] and page.try_table.rowCount() == 0


def test_both_why_views_describe_a_heatmap_in_the_same_words(qtbot, themed):
    """Results' and Export's Why? said "Red: what counted most…" and "the redder, the more…" of one heatmap."""
    from types import SimpleNamespace

    from PySide6.QtGui import QImage

    from app.widgets.why_panel import WhyPanel
    from app.widgets.why_view import WhyView

    result = SimpleNamespace(class_name="7 & co", probability=0.874)
    image = QImage(16, 16, QImage.Format.Format_RGB888)
    image.fill(0)
    view, panel = WhyView(), WhyPanel()
    qtbot.addWidget(view)
    qtbot.addWidget(panel)
    view.show_heatmap({"path": "/photos/a.png", "true": "1"}, result, image)
    panel.image_path = "/photos/a.png"
    panel._show("/photos/a.png", result, image)
    on_results, on_export = view.caption.text(), panel.caption.text()
    assert on_results.startswith(on_export.rsplit(" Red:", 1)[0])          # same class, same percentage
    assert on_results.endswith(on_export.split(" sure).", 1)[1])              # same words for the colours
    assert "True class: 1." in on_results and "7 &amp; co" in on_export

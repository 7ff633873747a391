#!/usr/bin/env python3
"""Take the README screenshots of DTL Studio: the whole window at every step of one real session.

Opens the main window (1280×820, light and then dark palette), loads the built-in handwritten digits on
the Data step, picks a quick configuration (timm's tiny ``test_vit`` with random weights,
so a run takes seconds on a CPU), trains with the real engine, exports the classifier,
tries it on three sample images, and saves one picture per step:

    data.png  model.png  train.png  results.png  export.png  runs.png              (light)
    data-dark.png  model-dark.png  …                                             (dark)

plus two windows the steps open: ``export-classify.png`` (Classify a folder…, after sorting a
few digits) and ``runs-compare.png`` (Compare, with a second, shorter run at another learning rate),
and two more of the Results step: ``results-cell.png`` (a confusion-matrix cell opened,
with the "Why?" heatmap of one of its images) and ``results-doctor.png`` (the data doctor's
findings), and their ``-dark`` twins.

``--sizes 1000x680 1600x1000`` also grabs every step, Compare and Classify a folder… at those
window sizes (``data-1000x680.png``, ``runs-compare-dark-1600x1000.png``, …) to check that
nothing is cut off.

Everything the app writes goes into a throw-away demo home folder (``--home``), so the
pictures show ordinary user paths; that folder is deleted at the end.

    QT_QPA_PLATFORM=offscreen python packaging/make_screenshots.py --out resources/screenshots
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from io import BytesIO
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
WINDOW_SIZE = (1280, 820)
# timm settings of the tiny backbone: 4-pixel patches on 32-pixel images (64 tokens: seconds per epoch).
TINY_MODEL_KWARGS = dict(patch_size=4, img_size=32)
QUICK_CONFIG = dict(backbone="test_vit", weights="random", method="dtl", epochs=8, batch_size=32, lr=1e-2,
                    augment="none", precision="fp32", device="cpu", image_size=32, val_fraction=0.2, seed=0,
                    warmup_epochs=0)
TRY_DIGITS = ("0", "4", "6")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "resources" / "screenshots"), help="folder for the PNG files")
    p.add_argument("--home", default="/home/demo", help="throw-away home folder the app works in")
    p.add_argument("--width", type=int, default=1100, help="width of the saved pictures in pixels (0 = as grabbed)")
    p.add_argument("--keep-home", action="store_true", help="keep the demo home folder afterwards")
    p.add_argument("--epochs", type=int, default=QUICK_CONFIG["epochs"], help="epochs of the demo run")
    p.add_argument("--sizes", nargs="*", default=[], metavar="WxH",
                   help="more window sizes to grab every step at (besides 1280x820)")
    p.add_argument("--scheme", choices=("light", "dark", "both"), default="both",
                   help="palette of the pictures (both: one whole session in each, in its own process)")
    return p.parse_args()


def _prepare_home(home: Path) -> None:
    """Point the app (settings, runs, sample data, Documents) at a neutral, empty demo home."""
    if home.exists():
        shutil.rmtree(home)
    for sub in (".local/share/DTL Studio", ".config", ".cache", "Documents"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    os.environ["HOME"] = str(home)
    os.environ["XDG_CONFIG_HOME"] = str(home / ".config")
    os.environ["XDG_DATA_HOME"] = str(home / ".local" / "share")
    os.environ["XDG_CACHE_HOME"] = str(home / ".cache")
    os.environ["DTL_STUDIO_HOME"] = str(home / ".local" / "share" / "DTL Studio")
    os.environ.pop("DTL_STUDIO_SETTINGS", None)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _wait(what: str, done: Callable[[], bool], timeout_s: float = 300.0) -> None:
    """Let the event loop run until ``done()``; a clear error when it takes too long."""
    from PySide6.QtCore import QCoreApplication, QEventLoop

    end = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > end:
            raise SystemExit(f"Timed out waiting for {what}.")
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.02)


def _settle(seconds: float = 0.6) -> None:
    """Give layouts, charts and debounced timers a moment before a grab."""
    from PySide6.QtCore import QCoreApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QCoreApplication.processEvents()
        time.sleep(0.02)


EXTRA_SIZES: list[tuple[int, int]] = []     # from --sizes


def _save(window, step: int, name: str, out: Path, width: int) -> Path:
    """Grab ``step`` at every extra size, then at the main window size; returns the main picture."""
    window.show_step(step)
    return _save_widget(window, name, out, width, WINDOW_SIZE)


def _save_widget(widget, name: str, out: Path, width: int = 0, size: tuple[int, int] | None = None) -> Path:
    """Grab a window (the main one, Compare, Classify a folder…) at every extra size, then at ``size`` (its
    own size by default), scaled to ``width``; returns that last picture."""
    size = size or (widget.width(), widget.height())
    for extra in EXTRA_SIZES:
        widget.resize(*extra)
        _grab_widget(widget, f"{name}-{extra[0]}x{extra[1]}", out, 0)
    widget.resize(*size)
    return _grab_widget(widget, name, out, width)


def _grab(window, step: int, name: str, out: Path, width: int) -> Path:
    """Show ``step``, grab the whole window, scale it smoothly and save an optimised PNG."""
    window.show_step(step)
    return _grab_widget(window, name, out, width)


def _grab_widget(widget, name: str, out: Path, width: int) -> Path:
    """Grab a window (the main one, or a dialog of its own) at its size, scaled to ``width`` if wider."""
    from PIL import Image
    from PySide6.QtCore import QBuffer, QIODevice, Qt

    _settle()
    pixmap = widget.grab()
    if width and pixmap.width() > width:
        pixmap = pixmap.scaledToWidth(width, Qt.TransformationMode.SmoothTransformation)
    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    pixmap.save(buffer, "PNG")
    img = Image.open(BytesIO(bytes(buffer.data()))).convert("RGB")
    path = out / f"{name}.png"
    img.save(path, "PNG", optimize=True)
    print(f"{path.name}: {img.width}x{img.height}, {path.stat().st_size // 1024} KiB")
    return path


def _results_details(window, suffix: str, out: Path, width: int) -> None:
    """Results with a mistake cell opened and one image's heatmap, then the data doctor's findings."""
    from app.main_window import RESULTS

    page = window.results_page
    ev = page.evaluation
    cells = [(ev.confusion[r][c], r, c) for r in range(len(ev.classes)) for c in range(len(ev.classes)) if r != c]
    _, r, c = max(cells)                    # the most frequent confusion
    window.show_step(RESULTS)
    page.open_cell(r, c)
    page.gallery.setCurrentRow(0)
    page.explain()
    _wait("the heatmap", lambda: page.why_view.image is not None or not page.is_explaining(), 120)
    _wait("the thumbnails", lambda: page.gallery.thumbnails_loaded > 0, 60)
    _save(window, RESULTS, "results-cell" + suffix, out, width)
    page.tabs.setCurrentWidget(page.doctor)
    page.doctor.start()
    _wait("the data doctor", lambda: page.doctor.report is not None and page.doctor.thumbnails_loaded > 0, 600)
    _save(window, RESULTS, "results-doctor" + suffix, out, width)
    page.show_all_mistakes()
    page.tabs.setCurrentIndex(0)


def main() -> int:
    args = _parse()
    if args.scheme == "both":
        import subprocess

        for scheme in ("dark", "light"):
            cmd = [sys.executable, __file__, "--out", args.out, "--home", args.home, "--width", str(args.width),
                   "--epochs", str(args.epochs), "--scheme", scheme, "--sizes", *args.sizes]
            cmd += ["--keep-home"] if args.keep_home else []
            if subprocess.call(cmd) != 0:
                return 1
        return 0
    EXTRA_SIZES.extend(tuple(int(v) for v in size.lower().split("x")) for size in args.sizes)
    out = Path(args.out).resolve()
    home = Path(args.home)
    _prepare_home(home)
    sys.path.insert(0, str(ROOT))
    try:
        return _shoot(out, args.width, dark=args.scheme == "dark", epochs=args.epochs)
    finally:
        if not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)


def _shoot(out: Path, width: int, dark: bool, epochs: int) -> int:
    """Drive one session through every step and save the pictures into ``out``."""
    import functools

    import torch
    from PySide6.QtWidgets import QApplication

    from app import jobs, theme
    from app.main_window import DATA, EXPORT, MODEL, RESULTS, RUNS, TRAIN, MainWindow
    from app.settings import Settings
    from dtl_engine.training import train

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication(sys.argv)
    app.setApplicationName("DTL Studio")
    # The pictures are not about responsiveness: train at normal priority, so a busy machine
    # does not starve the run.
    jobs.lower_thread_priority = lambda: None
    # The theme follows the system; here the scheme is chosen.
    theme.is_dark = lambda: dark
    suffix = "-dark" if dark else ""
    theme.apply_theme(app)

    settings = Settings()
    config = dict(QUICK_CONFIG, epochs=epochs)
    settings.set_last_config(config)
    window = MainWindow(settings, train_fn=functools.partial(train, model_kwargs=TINY_MODEL_KWARGS))
    window.resize(*WINDOW_SIZE)
    window.show()
    _settle(1.0)

    # Data: the built-in sample (handwritten digits), prepared and scanned in the background.
    window.data_page.use_sample()
    _wait("the sample data", lambda: window.data_page.status()[0] and not window.data_page.is_scanning())
    window.model_page.load_config(config)     # the public way to show a configuration
    _wait("the memory estimate", lambda: window.model_page.last_estimate is not None, 120)
    _save(window, DATA, "data" + suffix, out, width)
    _save(window, MODEL, "model" + suffix, out, width)

    # Train with the real engine; the window moves on to Results when the run finishes.
    window.start_training()
    _wait("the training run", lambda: window.train_page.last_result is not None
          and not window.train_page.is_running(), 1800)
    result = window.train_page.last_result
    if getattr(result, "status", "") != "finished":
        raise SystemExit(f"The run did not finish: {result}")
    _wait("the results", lambda: window.results_page.status()[0], 300)
    _save(window, TRAIN, "train" + suffix, out, width)
    _save(window, RESULTS, "results" + suffix, out, width)
    _results_details(window, suffix, out, width)

    # Export (verified in a fresh process), then "Try it" on three sample digits.
    window.show_step(EXPORT)
    page = window.export_page
    page.export()
    _wait("the export", lambda: not page._busy, 300)
    if page.last_result is None:
        raise SystemExit(f"The export failed: {page.message_label.text()}")
    digits = Path(window.data_page.data_root())
    images = [str(sorted((digits / d).glob("*.png"))[5]) for d in TRY_DIGITS]
    predictions: list = []
    page.predicted.connect(predictions.append)
    page.try_images(images)
    _wait("the predictions", lambda: bool(predictions) or getattr(page, "error_dialog", None) is not None, 300)
    if not predictions:
        raise SystemExit(f"The prediction failed: {page.try_hint.text()}")
    explained: list = []                    # "Why?" on the first tried digit: its heatmap beside the table
    page.why_panel.explained.connect(explained.append)
    page.why_buttons[0].click()
    _wait("the heatmap", lambda: bool(explained) or "Why?" not in page.why_panel.title.text(), 300)
    _save(window, EXPORT, "export" + suffix, out, width)

    # Classify a folder…: a few new digits sorted into copies in Documents.
    new = Path.home() / "Pictures" / "new digits"
    new.mkdir(parents=True, exist_ok=True)
    for d in "0123456789":
        for image in sorted((digits / d).glob("*.png"))[10:13]:
            shutil.copy2(image, new / f"{d}_{image.name}")
    dialog = page.open_classify_folder()
    dialog.resize(720, 560)
    dialog.set_folder(str(new))
    dialog.sort_check.setChecked(True)
    dialog.confidence_spin.setValue(20)
    dialog.start()
    _wait("the folder's classification", lambda: not dialog.is_running(), 300)
    if dialog.result is None:
        raise SystemExit(f"Classifying the folder failed: {dialog.message_label.text()}")
    _save_widget(dialog, "export-classify" + suffix, out)
    dialog.close()

    window.show_step(RUNS)                  # lists the runs in the background
    _wait("the run list", lambda: window.runs_page.select_run(str(result.run_dir)), 120)
    _save(window, RUNS, "runs" + suffix, out, width)

    # Compare: a second, shorter run at a lower learning rate, beside the first.
    from dtl_engine.config import TrainConfig

    second = train(TrainConfig(**dict(config, data_dir=str(digits), lr=1e-3, epochs=max(2, epochs // 2))),
                   model_kwargs=TINY_MODEL_KWARGS)
    runs = window.runs_page
    runs.refresh()
    runs.select_run(str(result.run_dir))
    runs.table.selectRow(next(r for r in range(runs.table.rowCount())
                              if runs.table.item(r, 0).toolTip() == str(second.run_dir)))
    if len(runs.selected_runs()) != 2:      # selectRow replaced the selection: add the first run back
        from PySide6.QtCore import QItemSelectionModel

        row = next(r for r in range(runs.table.rowCount()) if runs.table.item(r, 0).toolTip() == str(result.run_dir))
        runs.table.selectionModel().select(runs.table.model().index(row, 0),
                                           QItemSelectionModel.SelectionFlag.Select
                                           | QItemSelectionModel.SelectionFlag.Rows)
    compare = runs.compare_selected()
    if compare is None:
        raise SystemExit("Compare did not open for the two runs.")
    _wait("the comparison", lambda: compare.comparison is not None or "Reading" not in compare.heading.text(), 120)
    _save_widget(compare, "runs-compare" + suffix, out)
    compare.close()

    names = ("data", "model", "train", "results", "export", "runs")
    total = sum((out / f"{n}{suffix}.png").stat().st_size for n in names)
    print(f"total {total / 1e6:.2f} MB in {out.name}/")
    window.close()
    jobs.cancel_all()
    jobs.wait_all(60_000)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`dtl-studio --self-test`: a headless end-to-end check of an install or a bundle.

It loads the built-in sample data, trains a few steps of a tiny random backbone,
exports TorchScript, reloads the export and predicts one image, then builds the
main window offscreen and grabs it. One line per check, then "self-test passed"
(exit code 0); the first failure of a check is one sentence and a non-zero exit.

Everything it writes goes to a temporary DTL_STUDIO_HOME that is removed at the end,
so the user's runs and settings are never touched. It works from a source checkout
and inside the PyInstaller bundle alike.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

# The tiny model that needs no download: timm's "test_vit" with random weights.
BACKBONE = "test_vit"
IMAGE_SIZE = 64
MAX_STEPS = 5
SAMPLE_CLASSES = ("0", "1", "7")  # three digits: enough for a real check, quick to validate on


def _say(text: str) -> None:
    # A windowed bundle on Windows has no console: sys.stdout is None there.
    if sys.stdout is not None:
        print(text, flush=True)


def _sentence(err: BaseException) -> str:
    """One human line for an error: the engine's errors already are sentences."""
    from dtl_engine.errors import DTLError

    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if isinstance(err, DTLError) and text:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class _Checks:
    """Runs named checks in order, printing one line each; stops at the first failure."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.failed: str | None = None

    def __call__(self, name: str, fn: Callable[[], str]) -> bool:
        if self.failed is not None:
            return False
        start = time.perf_counter()
        try:
            detail = fn()
        except Exception as err:  # every failure becomes one sentence
            self.failed = f"Self-test failed at '{name}': {_sentence(err)}"
            _say(f"FAIL {name}")
            if self.verbose:
                traceback.print_exc()
            return False
        _say(f"ok   {name}: {detail} ({time.perf_counter() - start:.1f} s)")
        return True


def _check_imports() -> str:
    import PySide6
    import timm
    import torch
    import torchvision

    from dtl_engine.devices import select_device

    _, device_name = select_device("auto")
    return (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}, "
        f"PySide6 {PySide6.__version__}; best device: {device_name}"
    )


def _import_attr(candidates: Sequence[str], name: str) -> Any:
    """`name` from the first of the modules that has it (tolerates re-export or not)."""
    import importlib

    last: Exception | None = None
    for module in candidates:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            last = err
    raise ImportError(f"cannot find {name} in {', '.join(candidates)}") from last


def _run_checks(state: dict[str, Any], checks: _Checks, work: Path) -> None:
    def sample() -> str:
        ensure = _import_attr(["dtl_engine.data.sample", "dtl_engine.data"], "ensure_sample_dataset")
        root = Path(ensure(SAMPLE_CLASSES))
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        images = sorted(p for p in root.rglob("*.png"))
        if len(classes) < 2 or not images:
            raise RuntimeError(f"the sample data in {root} has {len(classes)} classes and {len(images)} images")
        state["sample_dir"] = root
        state["one_image"] = images[0]
        return f"{len(images)} images in {len(classes)} classes"

    def train_steps() -> str:
        from dtl_engine.config import TrainConfig

        train = _import_attr(["dtl_engine.training", "dtl_engine.training.runner"], "train")
        config = TrainConfig(
            data_dir=str(state["sample_dir"]), backbone=BACKBONE, weights="random", method="dtl",
            epochs=1, warmup_epochs=0.0, batch_size=16, image_size=IMAGE_SIZE, augment="none",
            # one loader worker: proves worker processes start in the bundle (freeze support; the fork
            # server on Linux, spawn on macOS and Windows)
            device="cpu", precision="fp32", max_steps=MAX_STEPS, num_workers=1, cache_features="off",
        )
        result = _on_a_thread(lambda: train(config))   # as the app trains: its workers start the same way
        if result.status != "finished":
            raise RuntimeError(f"the run ended as '{result.status}', not 'finished'")
        state["run_dir"] = Path(result.run_dir)
        acc = result.best_val_acc
        return f"{MAX_STEPS} steps of {BACKBONE} (random weights); val acc {acc:.2f}" if acc is not None else "done"

    def export() -> str:
        export_torchscript = _import_attr(["dtl_engine.export"], "export_torchscript")
        out = work / "self-test-model.pt"
        result = export_torchscript(state["run_dir"], out, overwrite=True, verify=True)
        if not Path(result.path).is_file():
            raise RuntimeError("the export reported success but wrote no file")
        if not result.verified:
            raise RuntimeError(result.message or "the exported model does not match the trained one")
        state["export"] = Path(result.path)
        return f"TorchScript verified, max diff {result.max_abs_diff:.2e}"

    def predict_one() -> str:
        predict = _import_attr(["dtl_engine.inference.predict"], "predict")
        ranked = predict(state["export"], [state["one_image"]], top_k=3)
        if len(ranked) != 1 or not ranked[0]:
            raise RuntimeError("the reloaded export gave no prediction")
        name, prob = ranked[0][0]
        if not 0.0 <= float(prob) <= 1.0:
            raise RuntimeError(f"the top probability {prob} is not between 0 and 1")
        return f"reloaded export predicts '{name}' ({float(prob):.2f}) for {state['one_image'].name}"

    checks("imports", _check_imports)
    checks("sample data", sample)
    checks("training", train_steps)
    checks("TorchScript export", export)
    checks("prediction", predict_one)
    checks("main window", _check_window)


def _check_window() -> str:
    from PySide6.QtWidgets import QApplication

    from app import jobs

    from app.theme import app_icon, apply_theme

    app = QApplication.instance() or QApplication(sys.argv[:1])
    # The same dressing as app/main.py gives the real window; the icon and the style sheet
    # come from resources/, so this also proves they are inside a bundle.
    icon = app_icon()
    if icon.isNull():
        raise RuntimeError("the application icon is missing from resources/icons")
    app.setWindowIcon(icon)
    apply_theme(app)
    if not app.styleSheet():
        raise RuntimeError("the style sheet (resources/style) could not be loaded")
    from app.main_window import MainWindow

    start = time.perf_counter()
    window = MainWindow()
    window.show()
    app.processEvents()
    shown = time.perf_counter() - start
    pixmap = window.grab()
    # Closing cancels the window's background jobs (e.g. memory estimates) and waits for them:
    # a pool thread still running Python at exit aborts the process.
    window.close()
    deadline = time.monotonic() + 150
    while window.isVisible() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    jobs.wait_all(120_000)
    window.deleteLater()
    app.processEvents()
    if pixmap.isNull() or pixmap.width() < 100 or pixmap.height() < 100:
        raise RuntimeError(f"the window grab is empty ({pixmap.width()}x{pixmap.height()})")
    platform = QApplication.platformName()
    return f"built and shown in {shown:.2f} s, grabbed {pixmap.width()}x{pixmap.height()} ({platform})"


def _on_a_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` run on a background thread, as the app runs its training; its result or its exception."""
    import threading

    out: dict[str, Any] = {}

    def call() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # re-raised on the calling thread
            out["error"] = exc
    thread = threading.Thread(target=call, name="self-test-train")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["result"]


def run(argv: Sequence[str] | None = None) -> int:
    """Run the self-test; 0 when every check passed, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="dtl-studio --self-test", add_help=True)
    parser.add_argument("--self-test", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--verbose", action="store_true", help="print the traceback of a failure")
    parser.add_argument("--show", action="store_true", help="use the real display instead of offscreen")
    args, _unknown = parser.parse_known_args(list(argv) if argv is not None else [])

    if not args.show:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    verbose = args.verbose or bool(os.environ.get("DTL_STUDIO_DEBUG"))

    # A private, throw-away user folder: the self-test never touches real runs or settings.
    old_home = os.environ.get("DTL_STUDIO_HOME")
    work = Path(tempfile.mkdtemp(prefix="dtl-studio-self-test-"))
    os.environ["DTL_STUDIO_HOME"] = str(work / "home")
    started = time.perf_counter()
    checks = _Checks(verbose)
    try:
        _run_checks({}, checks, work)
    finally:
        if old_home is None:
            os.environ.pop("DTL_STUDIO_HOME", None)
        else:
            os.environ["DTL_STUDIO_HOME"] = old_home
        shutil.rmtree(work, ignore_errors=True)

    if checks.failed is not None:
        _say(checks.failed)
        return 1
    _say(f"self-test passed ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))

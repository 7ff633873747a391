#!/usr/bin/env python3
"""Take the README picture of the Train step following a run another program trains.

Starts a real two-process run with ``torchrun`` from the command line (gloo on the CPU,
the built-in handwritten digits, timm's tiny ``test_vit``), opens DTL Studio, opens that run
with Runs → "Open run folder…" while it trains, and grabs the Train step as it follows the run:

    train-following.png

Everything goes into a throw-away demo home folder, deleted at the end (as make_screenshots.py).

    QT_QPA_PLATFORM=offscreen python packaging/screenshot_following.py --out resources/screenshots
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "packaging"))
sys.path.insert(0, str(ROOT))

from make_screenshots import TINY_MODEL_KWARGS, WINDOW_SIZE, _grab, _prepare_home, _settle, _wait  # noqa: E402

RUN_OPTIONS = ["--backbone", "test_vit", "--weights", "random", "--epochs", "12", "--batch-size", "32",
               "--lr", "0.01", "--augment", "none", "--precision", "fp32", "--device", "cpu", "--image-size", "32",
               "--warmup-epochs", "0", "--num-workers", "0"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "resources" / "screenshots"), help="folder for the PNG file")
    p.add_argument("--home", default="/home/demo", help="throw-away home folder the app works in")
    p.add_argument("--width", type=int, default=1100, help="width of the saved picture in pixels")
    p.add_argument("--epochs-shown", type=int, default=6, help="grab once this many epochs are drawn")
    args = p.parse_args()
    home = Path(args.home)
    _prepare_home(home)
    launcher = None
    try:
        from PySide6.QtWidgets import QApplication

        from app import jobs, theme
        from app.main_window import TRAIN, MainWindow
        from app.settings import Settings
        from dtl_engine.data.sample import ensure_sample_dataset
        from dtl_engine.paths import runs_dir

        app = QApplication.instance() or QApplication(sys.argv)
        app.setApplicationName("DTL Studio")
        theme.is_dark = lambda: False
        theme.apply_theme(app)
        digits = ensure_sample_dataset()
        run_dir = runs_dir() / "digits-on-2-processes"
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        launcher = subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dtl_engine",
             "train", str(digits), "--out", str(run_dir), *RUN_OPTIONS,
             "--model-kwargs", json.dumps(TINY_MODEL_KWARGS)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

        window = MainWindow(Settings())
        window.resize(*WINDOW_SIZE)
        window.show()
        _settle(1.0)
        _wait("the run to start", lambda: (run_dir / "run.json").exists() and (run_dir / "events.jsonl").exists(),
              600)
        window.show_step(5)
        if not window.runs_page.open_run_folder(str(run_dir)):
            raise SystemExit("The run folder could not be opened.")
        page = window.train_page
        _wait("the epochs", lambda: len(page.charts.accuracy.series("validation")[0]) >= args.epochs_shown, 900)
        if not page.life.busy:
            raise SystemExit("The run ended before the picture was taken.")
        out = Path(args.out).resolve()
        out.mkdir(parents=True, exist_ok=True)
        _grab(window, TRAIN, "train-following", out, args.width)
        _wait("the run to end", lambda: not page.life.busy, 900)
        print(f"the run ended: {page.life.state.value}")
        jobs.cancel_all()           # first: a close during the ended run's evaluation would ask, and wait for a click
        jobs.wait_all(60_000)
        _wait("the jobs to end", lambda: not jobs.active_jobs(), 60)   # their ends arrive through the event loop
        window.close()
        return 0
    finally:
        if launcher is not None:
            try:
                launcher.wait(timeout=120)
            except subprocess.TimeoutExpired:
                launcher.kill()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

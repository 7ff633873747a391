"""Entry point of the desktop application: ``python -m app`` or the ``dtl-studio`` command."""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from typing import Sequence

CLI_COMMAND = "cli"
NO_DISPLAY = ("DTL Studio found no display to open its window on (neither DISPLAY nor WAYLAND_DISPLAY is set); "
              "run `dtl-studio --self-test` for a headless check instead.")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dtl-studio", description="No-code transfer learning of image "
                                     "classifiers with Disentangled Transfer Learning (DTL).",
                                     epilog="dtl-studio cli COMMAND ... runs the engine's command line (train, "
                                            "export, predict, evaluate, plan ...) without the window; "
                                            "`dtl-studio cli --help` lists its commands.")
    parser.add_argument("folder", nargs="?", help="an image folder to open at start")
    parser.add_argument("--sample", action="store_true", help="open the built-in sample data (handwritten digits)")
    parser.add_argument("--self-test", action="store_true",
                        help="run a short headless check of the whole pipeline and exit")
    parser.add_argument("--quit-after", type=float, metavar="SECONDS",
                        help="close the window after this many seconds (scripted start-up checks)")
    return parser


def has_display() -> bool:
    """False on Linux/BSD without X11 or Wayland and without an explicit Qt platform (e.g. 'offscreen')."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform.startswith(("win", "darwin")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def keep_triton_out() -> None:
    """Never load triton in the window's process: the app compiles no kernels, and triton's LLVM crashes there.

    torch imports triton when it is installed (torchvision and timm reach ``torch._dynamo``, which asks
    for it). Its ``libtriton`` carries its own LLVM; a window themed by GTK has loaded the system's
    (Mesa's) LLVM already, and the second copy's start-up code then crashed the app a few seconds
    after its window appeared. Marking the module absent makes torch take triton as not installed.
    """
    sys.modules.setdefault("triton", None)  # type: ignore[assignment]


def main(argv: Sequence[str] | None = None) -> int:
    """Open DTL Studio; returns the process exit status."""
    # In a frozen bundle a spawned helper process re-enters here; let it do its job.
    multiprocessing.freeze_support()
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == [CLI_COMMAND]:
        # The engine's command line from the same program: the bundle ships no Python to run it with.
        from dtl_engine.cli.main import main as engine_main

        return engine_main(args_list[1:], prog=f"dtl-studio {CLI_COMMAND}")
    if "--self-test" in args_list:
        from app.self_test import run
        return int(run(args_list) or 0)
    args, qt_args = _parser().parse_known_args(args_list)
    if not has_display():
        print(NO_DISPLAY)
        return 2

    keep_triton_out()
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    from app.settings import APPLICATION, ORGANISATION
    from app.theme import app_icon, apply_theme

    # Crisp on fractional-scale (high-DPI) screens.
    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "dtl-studio", *qt_args])
    app.setOrganizationName(ORGANISATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName(APPLICATION)
    app.setDesktopFileName("dtl-studio")
    app.setWindowIcon(app_icon())
    apply_theme(app)

    from app.main_window import MainWindow

    window = MainWindow()
    window.show()
    if args.sample:
        window.data_page.use_sample()
    elif args.folder:
        window.data_page.open_folder(args.folder)
    if args.quit_after is not None:
        from PySide6.QtCore import QTimer
        QTimer.singleShot(int(args.quit_after * 1000), window.close)
    return run_event_loop(app)


def run_event_loop(app) -> int:
    """Run the window until it closes, then wait (bounded) for any job still ending; the exit status."""
    from app import jobs
    from app.main_window import CLOSE_TIMEOUT_S

    status = int(app.exec())
    # The window waited for its jobs already; this covers one that outlived that wait.
    jobs.wait_all(int(CLOSE_TIMEOUT_S * 1000))
    return status


if __name__ == "__main__":
    sys.exit(main())

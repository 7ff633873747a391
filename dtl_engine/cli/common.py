"""What the commands share: exit codes, the Ctrl+C handler, progress bars, warnings, the program's name."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any, Callable

from tqdm import tqdm

from dtl_engine.config import range_problem
from dtl_engine.errors import RunError
from dtl_engine.listener import StopToken

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


# Options of the other commands (bench, plan, bench-accuracy...) that are training settings under their own
# name: the ranges of TrainConfig apply to them too, checked before the command starts anything.
SETTING_OPTIONS = {"image_size": "image_size", "batch": "batch_size", "batch_size": "batch_size", "seed": "seed",
                   "epochs": "epochs"}


def check_setting_options(args: argparse.Namespace) -> None:
    """Raise :class:`RunError` with the sentence of the first option outside its setting's range."""
    for option, setting in SETTING_OPTIONS.items():
        problem = range_problem(setting, getattr(args, option, None))
        if problem:
            raise RunError(problem)


class CtrlC:
    """First Ctrl+C asks the run to stop after the current batch; a second one aborts at once.

    Under torchrun every process gets the terminal's Ctrl+C and, a moment later, the same
    signal again from torchrun itself; SIGTERM (torchrun, Slurm) is a stop request too.
    A repeat within ``grace`` seconds is that echo, not a second Ctrl+C.
    """

    def __init__(self, token: StopToken, launched: bool = False, quiet: bool = False) -> None:
        self.token = token
        self.quiet = quiet              # under torchrun only rank 0 says it is stopping
        self.signals = (signal.SIGINT, signal.SIGTERM) if launched else (signal.SIGINT,)
        self.grace = 2.0 if launched else 0.0
        self.first: float | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "CtrlC":
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._handle) for sig in self.signals}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.token.stop_requested:
            if time.monotonic() - (self.first or 0.0) >= self.grace:
                raise KeyboardInterrupt
            return
        self.first = time.monotonic()
        self.token.stop()
        if not self.quiet:
            print("\nStopping after this batch (press Ctrl+C again to abort at once)...", file=sys.stderr, flush=True)

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)


def counting_bar(desc: str) -> tuple[Any, Callable[[int, int], None]]:
    """A tqdm bar on stderr and the progress(done, total) callback that drives it."""
    bar = tqdm(desc=desc, unit="image", dynamic_ncols=True, file=sys.stderr, leave=False, disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, progress


def notice(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def command_name() -> str:
    """How a person starts this command line here: a bundled app has no Python, only ``dtl-studio cli``."""
    return "dtl-studio cli" if getattr(sys, "frozen", False) else "python -m dtl_engine"

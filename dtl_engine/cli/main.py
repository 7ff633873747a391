"""Command line: ``python -m dtl_engine COMMAND``.

Commands (one module per family, each adding its own sub-parsers): scan, doctor, cache (``images``);
train, resume (``train``); evaluate, explain, runs (``results``); export, predict (``export``); bench,
bench-data, bench-accuracy, plan (``bench``).

Everything the desktop app shows, a terminal can print: progress bars with an ETA,
one summary line per epoch, and on bad input one readable sentence
(``error: ...`` on stderr, exit status 2) instead of a traceback.
"""
from __future__ import annotations

import argparse
import sys

from dtl_engine import __version__
from dtl_engine.cli import bench, export, images, results, train
from dtl_engine.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, check_setting_options
from dtl_engine.cli.train import train_arguments
from dtl_engine.errors import DTLError

# train_arguments: the app's launcher (app/subprocess_run.py) takes the train command's arguments from here.
__all__ = ["build_parser", "main", "train_arguments"]


def build_parser(with_bench_options: bool = False, prog: str = "python -m dtl_engine") -> argparse.ArgumentParser:
    """The argument parser; the benchmark's options are added only when ``bench`` runs (lazy import).

    ``prog`` is how the usage lines name the program (``dtl-studio cli`` in the app's bundle).
    """
    parser = argparse.ArgumentParser(prog=prog,
                                     description="DTL Studio engine: train image classifiers with Disentangled "
                                                 "Transfer Learning on a frozen timm backbone, export and predict.")
    parser.add_argument("--version", action="version", version=f"dtl_engine {__version__}")
    parser.add_argument("--traceback", action="store_true", help="Show the full traceback of unexpected errors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # in the order of the usage's list of commands
    images.add_scan(sub)
    train.add_parsers(sub)                  # train, resume
    results.add_evaluate(sub)
    export.add_parsers(sub)                 # export, predict
    results.add_explain(sub)
    images.add_doctor(sub)
    results.add_runs(sub)
    images.add_cache(sub)
    bench.add_parsers(sub, with_bench_options)      # bench-data, bench, bench-accuracy, plan
    return parser


def _printable_streams() -> None:
    """A file name that is not valid UTF-8 prints as escapes (``\\udcff``) instead of ending the command."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", "strict") == "strict":
            reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None, prog: str = "python -m dtl_engine") -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 130 stopped)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _printable_streams()
    # Import the benchmark (torch, peft) only when it is asked for.
    positional = [a for a in argv if not a.startswith("-")]
    parser = build_parser(with_bench_options=bool(positional) and positional[0] == "bench", prog=prog)
    args = parser.parse_args(argv)
    try:
        check_setting_options(args)
        return int(args.func(args) or 0)
    except DTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        if args.traceback:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}.", file=sys.stderr)
        return EXIT_BAD_INPUT

"""Command line: ``python -m dtl_engine COMMAND``.

Commands: scan, train, resume, evaluate, export, predict, explain, doctor, runs, cache, plan, bench,
bench-data, bench-accuracy.

Everything the desktop app shows, a terminal can print: progress bars with an ETA,
one summary line per epoch, and on bad input one readable sentence
(``error: ...`` on stderr, exit status 2) instead of a traceback.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from dtl_engine import __version__
from dtl_engine.config import AUGMENTS, DEVICES, METHODS, PRECISIONS, TrainConfig, range_problem
from dtl_engine.recipes import RECIPES
from dtl_engine.errors import DTLError, RunError
from dtl_engine.cli.progress import ProgressPrinter
from dtl_engine.listener import RunListener, StopToken

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

# CLI option -> TrainConfig field, for every training option (help texts come from TrainConfig).
TRAIN_OPTIONS: dict[str, dict[str, Any]] = {
    "backbone": {}, "weights": {"metavar": "hub|random|FILE"}, "method": {"choices": METHODS},
    "recipe": {"choices": RECIPES},
    "rank": {"type": int}, "epochs": {"type": int}, "batch_size": {"type": int},
    "lr": {"type": "lr", "metavar": "auto|LR"},
    "image_size": {"type": int}, "augment": {"choices": AUGMENTS}, "device": {"choices": DEVICES},
    "seed": {"type": int}, "max_steps": {"type": int}, "precision": {"choices": PRECISIONS},
    "val_fraction": {"type": float}, "inject_from": {"type": int}, "beta": {"type": float},
    "fusion_kernel": {"type": int, "flag": "--kernel", "metavar": "K"}, "warmup_epochs": {"type": float},
    "weight_decay": {"type": float}, "label_smoothing": {"type": float}, "drop_path": {"type": float},
    "early_stopping": {"type": int, "metavar": "EPOCHS"}, "cache_features": {"choices": ("auto", "on", "off")},
    "num_workers": {"type": int},
    "checkpoint_blocks": {"action": "store_true"}, "low_precision_taps": {"action": "store_true"},
    "half_frozen_weights": {"action": argparse.BooleanOptionalAction},
}


def _lr_value(text: str) -> float | str:
    """'auto' or a number (argparse names the option after this function in its error)."""
    return text if text == "auto" else float(text)


_lr_value.__name__ = "learning rate"
TRAIN_OPTIONS["lr"]["type"] = _lr_value

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


class _CtrlC:
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

    def __enter__(self) -> "_CtrlC":
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


# --- commands ------------------------------------------------------------------------------

def cmd_scan(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from dtl_engine.data import scan_folder

    bars: list[Any] = []    # created on the first report, so a folder refused at once prints no bar

    def progress(done: int, total: int | None) -> None:
        if not bars:
            bars.append(tqdm(desc="scanning", unit="file", dynamic_ncols=True, file=sys.stderr, leave=False,
                             disable=None))
        bar = bars[0]
        if total is not None and bar.total != total:
            bar.total = total
            bar.set_description("checking")
        bar.n = done
        bar.refresh()

    try:
        scan = scan_folder(args.folder, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    if args.json:
        print(json.dumps(scan.to_dict(), indent=2))
        return 0
    print(scan.summary())
    width = max(len(c) for c in scan.classes)
    for name in scan.classes:
        print(f"  {name:<{width}}  {scan.counts.get(name, 0):>6}")
    for split, items in scan.items.items():
        if scan.layout == "split":
            print(f"{split}: {len(items)} images")
    for item in scan.skipped[:10]:
        print(f"skipped {item.path}: {item.reason}")
    if len(scan.skipped) > 10:
        print(f"... and {len(scan.skipped) - 10} more skipped files")
    for message in scan.warnings:
        print(f"warning: {message}")
    return 0


def _train_config(args: argparse.Namespace) -> TrainConfig:
    # Only what was given on the command line; TrainConfig's defaults fill the rest.
    values = {name: getattr(args, name) for name in TRAIN_OPTIONS if getattr(args, name) is not None}
    return TrainConfig(data_dir=str(Path(args.folder).expanduser()), **values)


def train_arguments(config: TrainConfig) -> list[str]:
    """The ``train`` command's arguments (``DIR`` and options) that rebuild ``config`` exactly.

    The app launches ``torchrun … -m dtl_engine train`` with these. Only settings that differ from
    what the command line would fill in are given. A setting the command line has no option for
    (and that differs) raises :class:`RunError` with a sentence, so a launched run never trains
    other settings than the ones shown.
    """
    # What the command line fills in: the defaults, with the recipe's values for this backbone.
    defaults = TrainConfig()
    baseline = TrainConfig(recipe=config.recipe, backbone=config.backbone)
    argv = [str(config.data_dir)]
    for name, spec in TRAIN_OPTIONS.items():
        value = getattr(config, name)
        fill = getattr(defaults if name in ("recipe", "backbone") else baseline, name)
        if value is None or value == fill:
            continue
        flag = _flag(name, spec)
        if spec.get("action") == "store_true":
            argv.append(flag)               # only ever set to True (the default is False)
        elif spec.get("action") is argparse.BooleanOptionalAction:
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, str(value)]
    args = build_parser().parse_args(["train", *argv])
    rebuilt, wanted = _train_config(args).to_dict(), config.to_dict()
    missing = [name for name in wanted if rebuilt.get(name) != wanted[name]]
    if missing:
        raise RunError(f"The setting(s) {', '.join(missing)} cannot be given to a command-line run; "
                       "reset them to their defaults to train on several GPUs.")
    return argv


def _model_kwargs(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunError(f"--model-kwargs is not valid JSON ({exc.msg}).") from None
    if not isinstance(value, dict):
        raise RunError("--model-kwargs must be a JSON object, e.g. '{\"depth\": 2}'.")
    return value


def _run_training(start: Callable[[RunListener, StopToken], Any]) -> int:
    from dtl_engine.training.distributed import launched_rank, launched_world_size

    main_rank = launched_rank() == 0        # under torchrun only rank 0 prints progress and results
    printer = ProgressPrinter() if main_rank else RunListener()
    token = StopToken()
    with _CtrlC(token, launched=launched_world_size() > 1, quiet=not main_rank):
        result = start(printer, token)
    if not main_rank:
        return EXIT_INTERRUPTED if result.status == "stopped" else 0
    assert isinstance(printer, ProgressPrinter)     # rank 0 prints
    printer._close_bar()
    run_dir = result.run_dir
    if result.status == "stopped":
        from dtl_engine.runs.folder import RunFolder

        if result.kept_previous:
            print(f"Stopped before the first epoch was complete: nothing was trained that is kept, and the run in "
                  f"{run_dir} is kept as it was.")
            return EXIT_INTERRUPTED
        checkpoint = RunFolder(run_dir).last_weights
        if not checkpoint.exists():
            print("Stopped before the first step: nothing was trained yet.")
            print(f"Start it over with: {command_name()} resume {run_dir}")
            return EXIT_INTERRUPTED
        print(f"Stopped after {result.epochs_done} complete epoch(s); the checkpoint is {checkpoint}.")
        print(f"Continue with: {command_name()} resume {run_dir}")
        return EXIT_INTERRUPTED
    best = f"{result.best_val_acc:.1%}" if result.best_val_acc is not None else "n/a"
    epoch = f" at epoch {result.best_epoch + 1}" if result.best_epoch is not None else ""
    print(f"Finished {result.epochs_done} epoch(s); best validation accuracy {best}{epoch}.")
    if result.report is not None:
        report = result.report
        print(f"Final evaluation on {report.coverage()}: accuracy {report.accuracy:.1%}")
    print(f"Run folder: {run_dir}")
    print(f"Export with: {command_name()} export {run_dir} --out model.pt")
    return 0


BREAK_LOCK_HELP = ("Take over the run's lock left by a process on another machine (a crashed node on a shared "
                   "disk); use it only once you know that machine is down.")


def cmd_train(args: argparse.Namespace) -> int:
    from dtl_engine.training import train

    config = _train_config(args)
    kwargs = _model_kwargs(args.model_kwargs)
    return _run_training(lambda listener, token: train(config, listener, token, run_dir=args.out,
                                                       model_kwargs=kwargs, overwrite=args.overwrite,
                                                       break_lock=args.break_lock))


def cmd_resume(args: argparse.Namespace) -> int:
    from dtl_engine.training import resume

    return _run_training(lambda listener, token: resume(args.run_dir, listener, token, break_lock=args.break_lock))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from dtl_engine.inference.evaluate import evaluate_run

    report = evaluate_run(args.run_dir, device=args.device)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"Accuracy {report.accuracy:.1%} on {report.coverage()}")
    if report.left_out:
        print(f"warning: {len(report.left_out)} image(s) of the run's {report.split} split were left out; the figures "
              "cover only the others and are not saved as the run's report:", file=sys.stderr)
        for item in report.left_out[:10]:
            print(f"  {item['path']}: {item['reason']}", file=sys.stderr)
        if len(report.left_out) > 10:
            print(f"  ... and {len(report.left_out) - 10} more", file=sys.stderr)
    width = max(len(c) for c in report.classes)
    print(f"  {'class':<{width}}  precision  recall     f1  support")
    for row in report.per_class:
        print(f"  {row['name']:<{width}}  {row['precision']:>9.1%}  {row['recall']:>6.1%}  "
              f"{row['f1']:>5.2f}  {row['support']:>7}")
    print("Confusion matrix (rows = true class, columns = predicted):")
    for name, counts in zip(report.classes, report.confusion):
        print(f"  {name:<{width}}  " + " ".join(f"{n:>5}" for n in counts))
    for m in report.mistakes[:args.mistakes]:
        print(f"mistake: {m['path']}  true {m['true']}, predicted {m['predicted']} ({m['confidence']:.0%})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from dtl_engine.export import export_run

    fmt = args.format or ("onnx" if args.out.lower().endswith(".onnx") else "torchscript")
    result = export_run(args.run_dir, args.out, format=fmt, overwrite=args.overwrite, verify=not args.no_verify,
                        measure_device=args.device, latency_repeats=args.latency_runs, weights=args.weights)
    print(result.message)
    if result.verified:
        print(f"verified: yes ({result.images_checked} images, max probability difference "
              f"{result.max_abs_diff:.1e}, allowed 1e-04)")
    else:
        print("verified: no (skipped)")
    for line in result.details():
        print(line)
    return 0


def _counting_bar(desc: str) -> tuple[Any, Callable[[int, int], None]]:
    """A tqdm bar on stderr and the progress(done, total) callback that drives it."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="image", dynamic_ncols=True, file=sys.stderr, leave=False, disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, progress


def _notice(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def cmd_predict_folder(args: argparse.Namespace) -> int:
    """``predict MODEL --folder DIR --csv OUT.csv``: classify a folder, optionally sort copies."""
    from dtl_engine.inference.classify_folder import classify_folder

    if not args.csv:
        raise RunError("Give the results file with --csv OUT.csv when classifying a folder.")
    if args.images:
        raise RunError("Give either image files or --folder, not both.")
    token = StopToken()
    bar, progress = _counting_bar("classifying")
    with _CtrlC(token):
        try:
            result = classify_folder(args.model, args.folder, args.csv, sort_into=args.sort_into,
                                     min_confidence=args.min_confidence, top_k=args.top_k, progress=progress,
                                     should_stop=lambda: token.stop_requested, on_notice=_notice)
        finally:
            bar.close()
    for path, reason in result.unreadable:
        print(f"unreadable: {path}: {reason}")
    for path, reason in result.skipped:
        print(f"skipped: {path}: {reason}")
    print(result.summary())
    return EXIT_INTERRUPTED if result.cancelled else 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.folder is not None:
        return cmd_predict_folder(args)
    if not args.images:
        raise RunError("Give one or more image files, or a folder with --folder DIR --csv OUT.csv.")
    from dtl_engine.inference.predict import predict_each

    results = predict_each(args.model, args.images, top_k=args.top_k, on_notice=_notice)
    failed = [r for r in results if r.error is not None]
    if args.json:
        print(json.dumps([{"image": r.path, "top": [{"class": c, "probability": v} for c, v in r.top],
                           **({"error": r.error} if r.error else {})} for r in results], indent=2))
    else:
        for r in results:
            if r.error is None:
                print(r.path)
                for name, prob in r.top:
                    print(f"  {prob:7.2%}  {name}")
    for r in failed:
        print(f"error: {r.error}", file=sys.stderr)
    return EXIT_BAD_INPUT if failed else 0


def cmd_explain(args: argparse.Namespace) -> int:
    from dtl_engine.inference.explain import explain_run

    result = explain_run(args.run_dir, args.image, args.out, class_name=args.label, overwrite=args.overwrite,
                         device=args.device)
    print(f"Predicted {result.predicted}; heatmap for '{result.class_name}' ({result.probability:.1%}) "
          f"written to {args.out}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from dtl_engine.inference.doctor import DOCTOR_CSV, check_csv_destination, diagnose_run
    from dtl_engine.runs.folder import RunFolder

    data_dir = RunFolder(args.run_dir).data_folder()
    # the run folder's own findings file is the engine's and is replaced; a file the user names is not
    own = Path(args.run_dir) / DOCTOR_CSV
    csv_target, csv_overwrite = args.csv or own, args.overwrite or not args.csv
    check_csv_destination(csv_target, csv_overwrite, data_dir, own)     # refuse before the long image pass
    if args.moves:
        check_csv_destination(args.moves, args.overwrite, data_dir)
    token = StopToken()
    bar, progress = _counting_bar("checking images")
    with _CtrlC(token):
        try:
            report = diagnose_run(args.run_dir, device=args.device, progress=progress,
                                  should_stop=lambda: token.stop_requested)
        except RunError:
            if not token.stop_requested:
                raise
            print("Stopped; nothing was written.", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            bar.close()
    csv_path = report.write_csv(csv_target, overwrite=csv_overwrite, data_dir=data_dir, own=own)
    print(report.summary())
    for finding in report.findings[:args.show]:
        print(f"{finding.kind}: {finding.path or finding.label}  {finding.detail}")
    print(f"Findings: {csv_path}")
    if args.moves:
        moves = report.write_moves_csv(args.moves, overwrite=args.overwrite, data_dir=data_dir)
        print(f"Suggested moves (nothing was moved): {moves}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from dtl_engine.runs.folder import RunFolder
    from dtl_engine.runs.listing import list_runs

    runs = list_runs()
    if args.json:
        print(json.dumps([r.to_dict() for r in runs], indent=2))
        return 0
    if not runs:
        print(f"No runs yet. Start one with: {command_name()} train FOLDER")
        return 0
    print(f"{'run':<48} {'status':<11} {'method':<6} {'epochs':>7} {'best val':>8}  backbone")
    for r in runs:
        if r.status == "damaged":
            print(f"{r.name:<48} {'damaged':<11} {r.problem}")
            continue
        acc = f"{r.best_val_acc:.1%}" if r.best_val_acc is not None else "-"
        print(f"{r.name:<48} {r.status:<11} {r.method:<6} {f'{r.epochs_done}/{r.epochs}':>7} {acc:>8}  {r.backbone}")
    for r in runs:          # a replacement killed before its first epoch: where the earlier run is
        for aside in RunFolder(r.run_dir).set_aside_by_others():
            print(f"note: '{r.name}' holds the run it was replacing (--overwrite) in {aside}; "
                  f"'resume {r.run_dir}' puts it back.")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from dtl_engine.data.image_cache import ImageCache, set_budget_mb
    from dtl_engine.sizing.memory_probe import format_bytes

    if args.action == "clear":
        print(f"Cleared {format_bytes(ImageCache().clear())} of cached images.")
        return 0
    if args.action == "budget":
        if args.mb is None or args.mb < 0:
            raise RunError("Give the budget in MB, for example: cache budget 4096 (0 turns the cache off).")
        set_budget_mb(args.mb)
    info = ImageCache().info()
    print(f"Decoded-image cache: {info.entries} images, {format_bytes(info.bytes)} of "
          f"{format_bytes(info.budget_bytes)} budget" + (" (off)" if info.budget_bytes == 0 else ""))
    print(f"Folder: {info.folder}")
    return 0


def cmd_bench_data(args: argparse.Namespace) -> int:
    from dtl_engine.bench.data_loading import run

    return run(args)


def cmd_bench(args: argparse.Namespace) -> int:
    if getattr(args, "ddp", False):
        from dtl_engine.bench.ddp import run_ddp_bench

        return int(run_ddp_bench(args) or 0)
    from dtl_engine.bench.speed import run_bench

    return int(run_bench(args) or 0)


def cmd_bench_accuracy(args: argparse.Namespace) -> int:
    from dtl_engine.bench.accuracy import run

    return run(args)


def cmd_plan(args: argparse.Namespace) -> int:
    from dtl_engine.sizing.planner import run_plan

    return int(run_plan(args) or 0)


# --- parser ----------------------------------------------------------------------------

def _flag(name: str, spec: dict[str, Any]) -> str:
    return spec.get("flag", "--" + name.replace("_", "-"))


def command_name() -> str:
    """How a person starts this command line here: a bundled app has no Python, only ``dtl-studio cli``."""
    return "dtl-studio cli" if getattr(sys, "frozen", False) else "python -m dtl_engine"


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

    p = sub.add_parser("scan", help="Check an image folder: classes, image counts, skipped files.",
                       description="Scan an image folder (one sub-folder per class, or train/ val/ [test/]) "
                                   "and report its classes, usable images and skipped files.")
    p.add_argument("folder", metavar="DIR", help="The image folder.")
    p.add_argument("--json", action="store_true", help="Print the scan as JSON.")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("train", help="Train a classifier on an image folder.",
                       description="Train a DTL / DTL+ classifier (or a linear probe) on an image folder. "
                                   "Ctrl+C stops after the current batch and keeps the last checkpoint.")
    p.add_argument("folder", metavar="DIR", help=TrainConfig.help("data_dir"))
    for name, spec in TRAIN_OPTIONS.items():
        kwargs = {k: v for k, v in spec.items() if k != "flag"}
        p.add_argument(_flag(name, spec), dest=name, default=None, help=TrainConfig.help(name), **kwargs)
    p.add_argument("--out", metavar="RUN_DIR", default=None,
                   help="Run folder to create (default: a new folder in the user's runs folder). It must be new "
                        "or empty, and must not be inside, equal to or contain the image folder.")
    p.add_argument("--overwrite", action="store_true",
                   help="Replace the run in --out if the folder already holds one (never a run still training).")
    p.add_argument("--model-kwargs", metavar="JSON", default=None,
                   help="JSON object passed to timm.create_model (small test configurations).")
    p.add_argument("--break-lock", action="store_true", help=BREAK_LOCK_HELP)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("resume", help="Continue a stopped or interrupted run.",
                       description="Continue a stopped, failed or interrupted run from its last checkpoint.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="The run folder.")
    p.add_argument("--break-lock", action="store_true", help=BREAK_LOCK_HELP)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("evaluate", help="Evaluate a run's best weights: accuracy, per class, confusion matrix.",
                       description="Evaluate a run's best weights on its test images (or validation images).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="The run folder.")
    p.add_argument("--device", choices=DEVICES, default="auto", help="Where to run the evaluation.")
    p.add_argument("--mistakes", type=int, default=5, metavar="N", help="Show up to N misclassified images.")
    p.add_argument("--json", action="store_true", help="Print the evaluation as JSON.")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="Export a run to one TorchScript (or ONNX) file, verified.",
                       description="Export a run's best model to one file that takes uint8 images of any size "
                                   "and returns class probabilities. TorchScript needs only torch to load; ONNX "
                                   "needs onnxruntime. The file is checked in a fresh process before it is kept.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="The run folder.")
    p.add_argument("--out", metavar="FILE", required=True, help="The file to write (e.g. model.pt or model.onnx).")
    p.add_argument("--format", choices=("torchscript", "onnx"), default=None,
                   help="File format (default: onnx for a .onnx name, else torchscript).")
    p.add_argument("--overwrite", action="store_true", help="Replace FILE if it exists.")
    p.add_argument("--no-verify", action="store_true", help="Skip the check in a fresh process (faster).")
    p.add_argument("--weights", choices=("best", "last"), default="best",
                   help="Which of the run's weights: 'best' (its result) or 'last' (its last checkpoint, e.g. when "
                        "the best weights are missing).")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="Where the fresh process measures the file's latency.")
    p.add_argument("--latency-runs", type=int, default=20, metavar="N",
                   help="Single-image calls timed for the median latency.")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="Classify images with an exported file.",
                       description="Classify images with an exported TorchScript or ONNX file.")
    p.add_argument("model", metavar="FILE", help="The exported model file.")
    p.add_argument("images", metavar="IMAGE", nargs="*", help="Image files.")
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="How many classes to show per image.")
    p.add_argument("--folder", metavar="DIR", default=None,
                   help="Classify every image below DIR (only read, never changed); needs --csv.")
    p.add_argument("--csv", metavar="OUT.csv", default=None,
                   help="With --folder: write one row per image (path, top-1, confidence, top-k); never overwritten.")
    p.add_argument("--sort-into", metavar="OUT_DIR", default=None,
                   help="With --folder: COPY each image into OUT_DIR/<class>/ (never moves, never overwrites).")
    p.add_argument("--min-confidence", type=float, default=0.0, metavar="P",
                   help="With --sort-into: images whose top-1 probability is below P go to OUT_DIR/_unsure/.")
    p.add_argument("--json", action="store_true", help="Print the predictions as JSON.")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("explain", help="Show where in an image the model looked: a Grad-CAM heatmap PNG.",
                       description="Write IMAGE with a Grad-CAM heatmap of the run's best model laid over it "
                                   "(red = what drove the decision most).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="The run folder.")
    p.add_argument("image", metavar="IMAGE", help="The image to explain.")
    p.add_argument("--out", metavar="FILE", required=True, help="The PNG to write (e.g. heat.png).")
    p.add_argument("--class", dest="label", metavar="NAME", default=None,
                   help="Explain this class instead of the predicted one.")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="Where to run the model.")
    p.add_argument("--overwrite", action="store_true", help="Replace FILE if it exists.")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("doctor", help="Check a run's images: duplicates, leakage, likely mislabels, imbalance.",
                       description="Check every image of a run for exact and near duplicates (also across "
                                   "train/val/test), likely mislabeled images (judged out of sample on the frozen "
                                   "backbone's features), class imbalance and images far from their class. "
                                   "Only reads the image folder.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="The run folder.")
    p.add_argument("--csv", metavar="FILE", default=None,
                   help="Write the findings here (default: the run folder's findings file, replaced on each check).")
    p.add_argument("--moves", metavar="FILE", default=None,
                   help="Also write the suggested relabelings as a CSV of moves (nothing is moved).")
    p.add_argument("--overwrite", action="store_true", help="Replace the CSV files named above if they exist.")
    p.add_argument("--show", type=int, default=10, metavar="N", help="Print the first N findings.")
    p.add_argument("--device", choices=DEVICES, default="cpu", help="Where to compute the image features.")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("runs", help="List past runs.", description="List the runs in the user's runs folder.")
    p.add_argument("--json", action="store_true", help="Print the list as JSON.")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("cache", help="Show or clear the decoded-image cache, or set its disk budget.",
                       description="The decoded-image cache keeps every photo pre-resized in the per-user cache "
                                   "folder, so later epochs and runs skip the JPEG decode.")
    p.add_argument("action", choices=("info", "clear", "budget"), help="info, clear, or budget MB.")
    p.add_argument("mb", type=int, nargs="?", default=None, metavar="MB", help="The budget in MB (budget only).")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("bench-data", help="Measure photo loading: old path vs draft decoding, cache and workers.",
                       description="Images a second of the old data path and of epochs 1 and 2+ of the new one "
                                   "(or, with --scan, a scan of a large folder).")
    from dtl_engine.bench.data_loading import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_bench_data)

    p = sub.add_parser("bench", help="Measure training memory and speed: DTL vs. linear probe, LoRA, full.",
                       description="Benchmark training memory and speed of DTL against other methods "
                                   "on one random batch.")
    if with_bench_options:
        from dtl_engine.bench.speed import add_bench_arguments

        add_bench_arguments(p)
        from dtl_engine.bench.ddp import add_ddp_arguments

        add_ddp_arguments(p)
    p.set_defaults(func=cmd_bench)

    from dtl_engine.bench.accuracy import add_arguments as add_accuracy_arguments   # no heavy imports

    p = sub.add_parser("bench-accuracy", help="Measure accuracy at the defaults: DTL vs. old settings and the "
                                              "linear probe, trained side by side.",
                       description="Train DTL at the defaults, DTL at the old fixed settings and the linear probe "
                                   "on an image folder (default: the built-in digits) and print their accuracy "
                                   "and the automatic search's share of the run time.")
    add_accuracy_arguments(p)
    p.set_defaults(func=cmd_bench_accuracy)

    from dtl_engine.sizing.planner import add_plan_arguments  # torch-free at import

    p = sub.add_parser("plan", help="Which precision, memory savers and batch size fit a GPU's memory.",
                       description="Plan a backbone for a GPU: the memory each setting needs at the target batch, "
                                   "the largest batch that fits, and the recommended setting (or the smallest "
                                   "card that would fit).")
    add_plan_arguments(p)
    p.set_defaults(func=cmd_plan)
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

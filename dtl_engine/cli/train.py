"""``train`` and ``resume``: a run from the command line, its options from TrainConfig's fields.

The app launches ``torchrun … -m dtl_engine train`` with :func:`train_arguments`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

from dtl_engine.cli.common import EXIT_INTERRUPTED, CtrlC, command_name
from dtl_engine.cli.progress import ProgressPrinter
from dtl_engine.config import AUGMENTS, DEVICES, METHODS, PRECISIONS, TrainConfig
from dtl_engine.errors import RunError
from dtl_engine.listener import RunListener, StopToken
from dtl_engine.recipes import RECIPES
from dtl_engine.runs.folder import RunFolder

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
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *argv])
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
    with CtrlC(token, launched=launched_world_size() > 1, quiet=not main_rank):
        result = start(printer, token)
    if not main_rank:
        return EXIT_INTERRUPTED if result.status == "stopped" else 0
    assert isinstance(printer, ProgressPrinter)     # rank 0 prints
    printer._close_bar()
    run_dir = result.run_dir
    if result.status == "stopped":
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


def _flag(name: str, spec: dict[str, Any]) -> str:
    return spec.get("flag", "--" + name.replace("_", "-"))


def add_parsers(sub: Any) -> None:
    """The ``train`` and ``resume`` sub-parsers."""
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

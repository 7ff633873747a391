"""Accuracy benchmark: real training runs side by side on one image folder, at the product's defaults.

    python -m dtl_engine bench-accuracy [DIR]

Without DIR it uses the built-in handwritten digits. Rows: DTL at the defaults (automatic
learning rate and augmentation), DTL at the old fixed settings (lr 1e-3, light augmentation with
flips), the linear probe at the defaults, all on a randomly initialised ``test_vit``; then the same
on pretrained ViT-Ti/16 and ViT-S/16 where their weights are already downloaded (never fetched
here). For rows that searched, the search's share of the run's wall time is printed.

Every row also says when its first model existed (the step-0 model the search leaves, scored before
epoch 1) and how good it was, the run's best and final validation accuracy, and how often it backed
off from a divergence; the search's and the back-offs' share of the run's time are printed below.

``--grid`` instead trains the learning rate × augmentation grid (DTL and linear probe) that the
defaults were chosen from. ``--gap`` trains DTL at the defaults and at each fixed rate of
:data:`GAP_LRS` without augmentation, and prints how far the defaults are from the best of them.
``--image-size`` sets the input side of every run. ``--seeds 0,1,2`` trains the plan once per seed
and, for ``--gap``, compares the defaults' mean with the best fixed rate's mean (on a set of 40
validation images one image is 0.025, and one seed's gap is mostly noise). Runs go to a temporary
folder that is deleted afterwards.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtl_engine.config import TrainConfig
from dtl_engine.runs.folder import RunFolder
from dtl_engine.errors import RunError

RANDOM_BACKBONE = "test_vit"
PRETRAINED = ("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "vit_small_patch16_224.augreg_in21k_ft_in1k")
OLD_DEFAULTS: dict[str, Any] = {"lr": 1e-3, "augment": "light"}
GRID_LRS = (1e-3, 3e-3, 1e-2, 3e-2)
GRID_AUGMENTS = ("none", "light-noflip", "light")
GRID_LINEAR_LRS = (1e-3, 1e-2, 1e-1)
GAP_LRS = (3e-3, 1e-2, 3e-2, 1e-1)       # DTL's fixed rates the defaults are measured against


@dataclass
class Row:
    """One finished run of the benchmark."""

    name: str
    backbone: str
    method: str
    lr: float
    augment: str
    val_acc: float | None
    seconds: float
    cpu_seconds: float
    search_seconds: float | None
    search_cpu_seconds: float | None
    search_prefix_cpu_seconds: float | None = None   # of the search: the prefixes the run reused
    first_acc: float | None = None          # the first model (epoch 0): validation accuracy
    first_seconds: float | None = None      # and the seconds from the run's start until it existed
    final_acc: float | None = None          # the last epoch's validation accuracy
    backoffs: int = 0                       # epochs undone as divergences
    backoff_seconds: float = 0.0            # the time of those epochs (training that was thrown away)
    seed: int = 0
    side_budget: str = ""                   # how the trials of the whole model fitted the search's time share

    @property
    def backoff_share(self) -> float:
        """The share of the run's wall time spent in epochs that were undone."""
        return self.backoff_seconds / max(self.seconds, 1e-9)

    @property
    def search_share(self) -> float | None:
        """The search's share of the run's CPU time (wall time is noisy on a shared machine).

        The frozen prefixes the search computes go into the run's cache and spare the run's first
        epoch exactly that work (a run with a typed rate computes them there), so they are not
        counted as the search's.
        """
        if self.search_cpu_seconds is None:
            return None
        own = self.search_cpu_seconds - (self.search_prefix_cpu_seconds or 0.0)
        return max(0.0, own) / max(self.cpu_seconds, 1e-9)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``bench-accuracy`` options."""
    parser.add_argument("folder", metavar="DIR", nargs="?", default=None,
                        help="Class-per-folder images (default: the built-in handwritten digits).")
    parser.add_argument("--epochs", type=int, default=15, help="Epochs of every run.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of every run.")
    parser.add_argument("--seeds", type=_seeds, default=None, metavar="S1,S2,...",
                        help="Train the plan once per seed (instead of --seed); --gap then compares means.")
    parser.add_argument("--grid", action="store_true",
                        help="Train the learning rate x augmentation grid instead of the comparison.")
    parser.add_argument("--gap", action="store_true",
                        help="Train DTL at the defaults and at each fixed rate without augmentation; print how "
                             "far the defaults are from the best fixed rate.")
    parser.add_argument("--rates", type=_rates, default=GAP_LRS, metavar="R1,R2,...",
                        help="The fixed rates of --gap (default: %(default)s).")
    parser.add_argument("--fixed-only", action="store_true",
                        help="--gap without the row at the defaults (to train the rows in several processes).")
    parser.add_argument("--image-size", type=int, default=None,
                        help="Input side in pixels of every run (default: the backbone's own).")
    parser.add_argument("--no-pretrained", action="store_true", help="Skip the pretrained rows.")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch.")
    parser.add_argument("--json", action="store_true", help="Print the rows as JSON.")
    return parser


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of learning rates") from None
    if not rates or any(not 0 < r < 10 for r in rates):
        raise argparse.ArgumentTypeError("give one or more learning rates between 0 and 10, e.g. 1e-2,3e-2")
    return rates


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of seeds, e.g. 0,1,2") from None
    if not seeds:
        raise argparse.ArgumentTypeError("give one or more seeds, e.g. 0,1,2")
    return seeds


def _train(data: str, root: Path, name: str, backbone: str, weights: str, epochs: int, seed: int,
           **settings: Any) -> Row:
    from dtl_engine.training import train
    from dtl_engine.training.autotune import read_search

    config = TrainConfig(data_dir=data, backbone=backbone, weights=weights, epochs=epochs, seed=seed, **settings)
    run_dir = root / f"run{len(list(root.iterdir()))}"
    start, cpu = time.perf_counter(), time.process_time()
    result = train(config, run_dir=run_dir)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    search = read_search(run_dir)
    folder = RunFolder(run_dir)
    resolved = folder.read_config()          # the values the run resolved ('auto' → a number)
    metrics = folder.read_metrics()
    first = next((m for m in metrics if m.get("first_model")), None)
    trained = [m for m in metrics if not m.get("first_model")]
    undone = [m for m in trained if m.get("backed_off")]
    return Row(name=name, backbone=backbone, method=config.method, lr=float(resolved["lr"]),
               augment=resolved["augment"], val_acc=result.best_val_acc, seconds=seconds, cpu_seconds=cpu,
               search_seconds=search.seconds if search is not None else None,
               search_cpu_seconds=search.cpu_seconds if search is not None else None,
               search_prefix_cpu_seconds=search.prefix_cpu_seconds if search is not None else None,
               first_acc=first["val_acc"] if first else None, first_seconds=first["seconds"] if first else None,
               final_acc=trained[-1]["val_acc"] if trained else None, backoffs=len(undone),
               backoff_seconds=sum(float(m.get("seconds") or 0.0) for m in undone), seed=seed,
               side_budget=str((search.side_budget or {}).get("reason", "")) if search is not None else "")


def comparison_plan(pretrained: bool = True) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(row name, backbone, weights, settings) of the comparison; pretrained rows only when cached."""
    from dtl_engine.model.weights import weights_cached

    plan = [("DTL, defaults", RANDOM_BACKBONE, "random", {"method": "dtl"}),
            ("DTL, old fixed lr 1e-3 + light aug", RANDOM_BACKBONE, "random", {"method": "dtl", **OLD_DEFAULTS}),
            ("linear probe, defaults", RANDOM_BACKBONE, "random", {"method": "linear"})]
    for backbone in PRETRAINED if pretrained else ():
        if weights_cached(backbone):
            short = backbone.split("_patch")[0].replace("vit_", "ViT-").replace("tiny", "Ti").replace("small", "S")
            plan += [(f"{short} DTL, defaults", backbone, "hub", {"method": "dtl"}),
                     (f"{short} linear probe, defaults", backbone, "hub", {"method": "linear"})]
    return plan


def grid_plan() -> list[tuple[str, str, str, dict[str, Any]]]:
    """The lr x augmentation grid on the random ``test_vit``."""
    plan = [(f"DTL lr {lr:g} {aug}", RANDOM_BACKBONE, "random", {"method": "dtl", "lr": lr, "augment": aug})
            for aug in GRID_AUGMENTS for lr in GRID_LRS]
    plan += [(f"linear lr {lr:g} none", RANDOM_BACKBONE, "random", {"method": "linear", "lr": lr, "augment": "none"})
             for lr in GRID_LINEAR_LRS]
    return plan


def gap_plan(rates: tuple[float, ...] = GAP_LRS, defaults: bool = True) -> list[tuple[str, str, str, dict[str, Any]]]:
    """DTL at the defaults, then at each fixed rate (:data:`GAP_LRS`) without augmentation."""
    first = [("DTL, defaults", RANDOM_BACKBONE, "random", {"method": "dtl"})] if defaults else []
    return first + [
        (f"DTL lr {lr:g} none", RANDOM_BACKBONE, "random", {"method": "dtl", "lr": lr, "augment": "none"})
        for lr in rates]


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def format_table(rows: list[Row]) -> str:
    """The rows as a Markdown table (also readable in a terminal)."""
    lines = ["| run | backbone | learning rate | augmentation | first model | after s | best val acc | final "
             "val acc | back-offs | CPU minutes | search share | back-off share |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        share = "" if r.search_share is None else f"{r.search_share:.0%}"
        lines.append(f"| {r.name} | {r.backbone.split('.')[0]} | {r.lr:g} | {r.augment} | {_num(r.first_acc)} | "
                     f"{_num(r.first_seconds, '.0f')} | {_num(r.val_acc)} | {_num(r.final_acc)} | {r.backoffs} | "
                     f"{r.cpu_seconds / 60:.1f} | {share} | {r.backoff_share:.0%} |")
    return "\n".join(lines)


def gap_line(rows: list[Row]) -> str | None:
    """'defaults 0.912, best fixed rate 0.925 (lr 0.03): 0.013 below' for a --gap plan's rows."""
    defaults = next((r for r in rows if r.name == "DTL, defaults" and r.val_acc is not None), None)
    fixed = [r for r in rows if r.name.startswith("DTL lr ") and r.val_acc is not None]
    if defaults is None or not fixed:
        return None
    best = max(fixed, key=lambda r: r.val_acc or 0.0)
    assert defaults.val_acc is not None and best.val_acc is not None
    gap = best.val_acc - defaults.val_acc
    where = f"{gap:.3f} below" if gap > 0 else f"{-gap:.3f} above"
    return (f"defaults {defaults.val_acc:.3f} (lr {defaults.lr:g}), best fixed rate {best.val_acc:.3f} "
            f"(lr {best.lr:g}): the defaults are {where} it")


def mean_gap_line(rows: list[Row]) -> str | None:
    """The gap of the means over seeds: the defaults' mean against the fixed rate with the best mean."""
    seeds = sorted({r.seed for r in rows})
    if len(seeds) < 2:
        return None
    defaults = [r.val_acc for r in rows if r.name == "DTL, defaults" and r.val_acc is not None]
    by_rate: dict[float, list[float]] = {}
    for r in rows:
        if r.name.startswith("DTL lr ") and r.val_acc is not None:
            by_rate.setdefault(r.lr, []).append(r.val_acc)
    if not defaults or not by_rate:
        return None
    mean = sum(defaults) / len(defaults)
    best_lr = max(by_rate, key=lambda lr: sum(by_rate[lr]) / len(by_rate[lr]))
    best = sum(by_rate[best_lr]) / len(by_rate[best_lr])
    gap = best - mean
    where = f"{gap:.3f} below" if gap > 0 else f"{-gap:.3f} above"
    return (f"over seeds {','.join(map(str, seeds))}: defaults {mean:.3f} on average, best fixed rate "
            f"{best:.3f} on average (lr {best_lr:g}): the defaults are {where} it")


def _print_shares(rows: list[Row], seeds: int) -> None:
    """The search's and the back-offs' share of each searching row's time (the bound is on their sum)."""
    for r in rows:
        if r.search_share is None:
            continue
        prefixes, search_cpu = r.search_prefix_cpu_seconds or 0.0, r.search_cpu_seconds or 0.0
        which = f"{r.name} (seed {r.seed})" if seeds > 1 else r.name
        print(f"search share of run time, {which}: {r.search_share:.0%} of the CPU time "
              f"({search_cpu - prefixes:.1f} s of {r.cpu_seconds:.1f} s, not counting the "
              f"{prefixes:.1f} s of frozen prefixes it computed for the run's cache; wall "
              f"{r.search_seconds:.0f} s of {r.seconds:.0f} s); with the back-offs' "
              f"{r.backoff_share:.0%} of the wall time: {r.search_share + r.backoff_share:.0%}")
        if r.side_budget:
            print(f"  trials of the whole model: {r.side_budget}")


def run(args: argparse.Namespace) -> int:
    """Train every row of the plan and print the table."""
    import torch

    from dtl_engine.data import ensure_sample_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.epochs < 1:
        raise RunError("Train for at least one epoch.")
    if args.image_size is not None and args.image_size < 8:
        raise RunError("The image size must be at least 8 pixels.")
    data = str(Path(args.folder).expanduser()) if args.folder else str(ensure_sample_dataset())
    plan = grid_plan() if args.grid else gap_plan(args.rates, not args.fixed_only) if args.gap else \
        comparison_plan(pretrained=not args.no_pretrained)
    sized = {"image_size": args.image_size} if args.image_size else {}
    rows: list[Row] = []
    seeds = args.seeds or (args.seed,)
    with tempfile.TemporaryDirectory(prefix="dtl-bench-accuracy-") as tmp:
        for seed in seeds:
            for name, backbone, weights, settings in plan:
                print(f"training: {name} (seed {seed}) ...", flush=True)
                rows.append(_train(data, Path(tmp), name, backbone, weights, args.epochs, seed, **settings, **sized))
                acc = "-" if rows[-1].val_acc is None else f"{rows[-1].val_acc:.3f}"
                print(f"  best val acc {acc}, lr {rows[-1].lr:g}, {rows[-1].augment}", flush=True)
                print("  " + format_table(rows[-1:]).splitlines()[-1], flush=True)   # kept if a later row is cut short
    if args.json:
        print(json.dumps([{**r.__dict__, "search_share": r.search_share, "backoff_share": r.backoff_share}
                          for r in rows], indent=2))
        return 0
    size = f", {args.image_size} px" if args.image_size else ""
    print(f"\n{len(rows)} runs on {data}, {args.epochs} epochs each{size}, seed(s) {','.join(map(str, seeds))}:\n")
    print(format_table(rows))
    for seed in seeds:
        gap = gap_line([r for r in rows if r.seed == seed])
        if gap:
            print(f"\nseed {seed}: {gap}")
    mean = mean_gap_line(rows)
    if mean:
        print(f"\n{mean}")
    _print_shares(rows, len(seeds))
    return 0

"""Accuracy benchmark: real training runs side by side on one image folder, at the product's defaults.

    python -m dtl_engine bench-accuracy [DIR]

Without DIR it uses the built-in handwritten digits. Rows: DTL at the defaults (automatic
learning rate and augmentation), DTL at the old fixed settings (lr 1e-3, light augmentation with
flips), the linear probe at the defaults, all on a randomly initialised ``test_vit``; then the same
on pretrained ViT-Ti/16 and ViT-S/16 where their weights are already downloaded (never fetched
here). For rows that searched, the search's share of the run's wall time is printed.

``--grid`` instead trains the learning rate × augmentation grid (DTL and linear probe) that the
defaults were chosen from. Runs go to a temporary folder that is deleted afterwards.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RANDOM_BACKBONE = "test_vit"
PRETRAINED = ("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "vit_small_patch16_224.augreg_in21k_ft_in1k")
OLD_DEFAULTS: dict[str, Any] = {"lr": 1e-3, "augment": "light"}
GRID_LRS = (1e-3, 3e-3, 1e-2, 3e-2)
GRID_AUGMENTS = ("none", "light-noflip", "light")
GRID_LINEAR_LRS = (1e-3, 1e-2, 1e-1)


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
    parser.add_argument("--grid", action="store_true",
                        help="Train the learning rate x augmentation grid instead of the comparison.")
    parser.add_argument("--no-pretrained", action="store_true", help="Skip the pretrained rows.")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch.")
    parser.add_argument("--json", action="store_true", help="Print the rows as JSON.")
    return parser


def _train(data: str, root: Path, name: str, backbone: str, weights: str, epochs: int, seed: int,
           **settings: Any) -> Row:
    from dtl_engine.config import TrainConfig
    from dtl_engine.runs.folder import RunFolder
    from dtl_engine.training import train
    from dtl_engine.training.autotune import read_search

    config = TrainConfig(data_dir=data, backbone=backbone, weights=weights, epochs=epochs, seed=seed, **settings)
    run_dir = root / f"run{len(list(root.iterdir()))}"
    start, cpu = time.perf_counter(), time.process_time()
    result = train(config, run_dir=run_dir)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    search = read_search(run_dir)
    resolved = RunFolder(run_dir).read_config()          # the values the run resolved ('auto' → a number)
    return Row(name=name, backbone=backbone, method=config.method, lr=float(resolved["lr"]),
               augment=resolved["augment"], val_acc=result.best_val_acc, seconds=seconds, cpu_seconds=cpu,
               search_seconds=search.seconds if search is not None else None,
               search_cpu_seconds=search.cpu_seconds if search is not None else None,
               search_prefix_cpu_seconds=search.prefix_cpu_seconds if search is not None else None)


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


def format_table(rows: list[Row]) -> str:
    """The rows as a Markdown table (also readable in a terminal)."""
    lines = ["| run | backbone | learning rate | augmentation | best val acc | CPU minutes | search share |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        acc = "-" if r.val_acc is None else f"{r.val_acc:.3f}"
        share = "" if r.search_share is None else f"{r.search_share:.0%}"
        lines.append(f"| {r.name} | {r.backbone.split('.')[0]} | {r.lr:g} | {r.augment} | {acc} | "
                     f"{r.cpu_seconds / 60:.1f} | {share} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Train every row of the plan and print the table."""
    import torch

    from dtl_engine.data import ensure_sample_dataset
    from dtl_engine.errors import RunError

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.epochs < 1:
        raise RunError("Train for at least one epoch.")
    data = str(Path(args.folder).expanduser()) if args.folder else str(ensure_sample_dataset())
    plan = grid_plan() if args.grid else comparison_plan(pretrained=not args.no_pretrained)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="dtl-bench-accuracy-") as tmp:
        for name, backbone, weights, settings in plan:
            print(f"training: {name} ...", flush=True)
            rows.append(_train(data, Path(tmp), name, backbone, weights, args.epochs, args.seed, **settings))
            acc = "-" if rows[-1].val_acc is None else f"{rows[-1].val_acc:.3f}"
            print(f"  best val acc {acc}, lr {rows[-1].lr:g}, {rows[-1].augment}", flush=True)
    if args.json:
        print(json.dumps([{**r.__dict__, "search_share": r.search_share} for r in rows], indent=2))
        return 0
    print(f"\n{len(rows)} runs on {data}, {args.epochs} epochs each, seed {args.seed}:\n")
    print(format_table(rows))
    for r in rows:
        if r.search_share is not None:
            prefixes, search_cpu = r.search_prefix_cpu_seconds or 0.0, r.search_cpu_seconds or 0.0
            print(f"search share of run time, {r.name}: {r.search_share:.0%} of the CPU time "
                  f"({search_cpu - prefixes:.1f} s of {r.cpu_seconds:.1f} s, not counting the "
                  f"{prefixes:.1f} s of frozen prefixes it computed for the run's cache; wall "
                  f"{r.search_seconds:.0f} s of {r.seconds:.0f} s)")
    return 0

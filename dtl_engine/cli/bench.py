"""``bench``, ``bench-data``, ``bench-accuracy`` and ``plan``: measured speed, memory, loading and accuracy,
and the plan of what fits a GPU."""
from __future__ import annotations

import argparse
from typing import Any

from dtl_engine.bench import accuracy, data_loading
from dtl_engine.sizing.planner import add_plan_arguments, run_plan


def cmd_bench_data(args: argparse.Namespace) -> int:
    return data_loading.run(args)


def cmd_bench(args: argparse.Namespace) -> int:
    if getattr(args, "ddp", False):
        from dtl_engine.bench.ddp import run_ddp_bench

        return int(run_ddp_bench(args) or 0)
    from dtl_engine.bench.speed import run_bench

    return int(run_bench(args) or 0)


def cmd_bench_accuracy(args: argparse.Namespace) -> int:
    return accuracy.run(args)


def cmd_plan(args: argparse.Namespace) -> int:
    return int(run_plan(args) or 0)


def add_parsers(sub: Any, with_bench_options: bool) -> None:
    """The benchmarks' and the plan's sub-parsers; ``bench``'s own options (torch, peft) only when it runs."""
    p = sub.add_parser("bench-data", help="Measure photo loading: old path vs draft decoding, cache and workers.",
                       description="Images a second of the old data path and of epochs 1 and 2+ of the new one "
                                   "(or, with --scan, a scan of a large folder).")
    data_loading.add_arguments(p)
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

    p = sub.add_parser("bench-accuracy", help="Measure accuracy at the defaults: DTL vs. old settings and the "
                                              "linear probe, trained side by side.",
                       description="Train DTL at the defaults, DTL at the old fixed settings and the linear probe "
                                   "on an image folder (default: the built-in digits) and print their accuracy "
                                   "and the automatic search's share of the run time.")
    accuracy.add_arguments(p)
    p.set_defaults(func=cmd_bench_accuracy)

    p = sub.add_parser("plan", help="Which precision, memory savers and batch size fit a GPU's memory.",
                       description="Plan a backbone for a GPU: the memory each setting needs at the target batch, "
                                   "the largest batch that fits, and the recommended setting (or the smallest "
                                   "card that would fit).")
    add_plan_arguments(p)
    p.set_defaults(func=cmd_plan)

"""Benchmark: DTL against full fine-tuning, linear probing and LoRA, trained side by side in one process.

Every method trains for a few real AdamW steps on the same random batch. For each it reports the
trainable parameters, the bytes autograd saved for backward (counted in the warm-up step), the CUDA
peak (``None`` on other devices) and the median step time. DTL rows also report
``cached_step_seconds``: the step time when the frozen prefix is computed once and reused, which is
what training does from the second epoch on when augmentation is off.

    python -m dtl_engine bench --backbone vit_base_patch16_224 --batch 32 --steps 3 --savers
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Any, Callable

import torch
import torch.nn.functional as F
from .errors import DTLError, RunError
from .memory_probe import (
    SavedTensorCounter,
    autocast_context,
    build_full_model,
    build_method_model,
    format_bytes,
    input_hw,
    model_state_tensors,
)

DEFAULT_METHODS = "full,linear,lora,dtl,dtl+"
BENCH_METHODS = ("full", "linear", "lora", "dtl", "dtl+")
DTL_METHODS = ("dtl", "dtl+")
SAVERS_SUFFIX = " (savers)"


def add_bench_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``bench`` options to ``parser`` (used by the CLI's ``bench`` sub-command)."""
    parser.add_argument("--backbone", default="vit_base_patch16_224", help="timm model name (random weights).")
    parser.add_argument("--batch", type=int, default=32, help="Images per step.")
    parser.add_argument("--image-size", type=int, default=None, help="Input side in pixels (default: the model's).")
    parser.add_argument("--steps", type=int, default=3, help="Timed steps per method, after one warm-up step.")
    parser.add_argument("--methods", default=DEFAULT_METHODS,
                        help=f"Comma-separated subset of {','.join(BENCH_METHODS)}.")
    parser.add_argument("--savers", action="store_true",
                        help="Also run DTL rows with the memory savers (checkpointed blocks, bf16 tap inputs) "
                             "and bf16 autocast.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps.")
    parser.add_argument("--num-classes", type=int, default=10, help="Classes of the new head.")
    parser.add_argument("--rank", type=int, default=None, help="DTL rank (default: the family's).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random batch and weights.")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice).")
    parser.add_argument("--model-kwargs", default=None,
                        help="JSON dict passed to timm.create_model (small test configurations).")
    return parser


def parse_methods(text: str) -> list[str]:
    """'full,dtl' -> ['full', 'dtl']; raises :class:`RunError` for an unknown name."""
    methods = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in BENCH_METHODS]
    if unknown or not methods:
        raise RunError(f"Unknown benchmark method '{(unknown or [text])[0]}'; choose from {', '.join(BENCH_METHODS)}.")
    return list(dict.fromkeys(methods))


def _resolve_device(pref: str) -> torch.device:
    from .training.devices import select_device

    return select_device(pref)[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _timed(fn: Callable[[], None], device: torch.device, steps: int) -> tuple[float, float]:
    """Median wall-clock seconds and median process CPU seconds of ``steps`` calls of ``fn``.

    CPU seconds are the fairer comparison when other programs share the cores.
    """
    wall, cpu = [], []
    for _ in range(steps):
        _sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def bench_method(method: str, backbone: str, images: torch.Tensor, labels: torch.Tensor, steps: int,
                 savers: bool = False, num_classes: int = 10, rank: int | None = None,
                 image_size: int | None = None, model_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``method`` for one warm-up step plus ``steps`` timed steps; return its figures."""
    device = images.device
    rank = rank if method in DTL_METHODS else None  # --rank is DTL's; LoRA keeps its usual r = 8
    model = build_method_model(method, backbone, num_classes, image_size, rank, checkpoint_blocks=savers,
                               low_precision_taps=savers, model_kwargs=model_kwargs).to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.05)
    precision = "bf16" if savers else "fp32"
    if savers and device.type == "mps":
        precision = "fp16"  # MPS autocast has no bf16 on older macOS

    def step(forward: Callable[[], torch.Tensor], counter: Any = None) -> None:
        with counter if counter is not None else nullcontext(), autocast_context(device, precision):
            loss = F.cross_entropy(forward(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    counter = SavedTensorCounter(model_state_tensors(model))
    step(lambda: model(images), counter)  # warm-up step; also counts the saved activations
    seconds, cpu_seconds = _timed(lambda: step(lambda: model(images)), device, steps)
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    n_trainable = sum(p.numel() for p in trainable)
    result: dict[str, Any] = {"trainable_params": n_trainable, "activation_bytes": counter.bytes,
                              "peak_bytes": peak, "step_seconds": seconds, "step_cpu_seconds": cpu_seconds,
                              "total_params": sum(p.numel() for p in model.parameters())}
    if method in DTL_METHODS:
        # frozen prefix computed once and reused (training from epoch 2 when augmentation is off)
        with torch.no_grad(), autocast_context(device, precision):
            prefix = model.forward_prefix(images)
        # no extra warm-up: blocks M+1… and the side network are warm from the steps above
        result["cached_step_seconds"], result["cached_step_cpu_seconds"] = _timed(
            lambda: step(lambda: model.forward_from_prefix(prefix)), device, steps)
        del prefix
    del model, optimizer, trainable
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def run_benchmark(backbone: str = "vit_base_patch16_224", batch: int = 32, image_size: int | None = None,
                  steps: int = 3, methods: list[str] | tuple[str, ...] = BENCH_METHODS, savers: bool = False,
                  device: str = "auto", num_classes: int = 10, rank: int | None = None, seed: int = 0,
                  model_kwargs: dict[str, Any] | None = None,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Benchmark ``methods`` on one random batch; returns the JSON-ready result object.

    With ``savers`` each DTL method gets a second row, '<method> (savers)', trained with checkpointed
    blocks, bf16 tap inputs and bf16 autocast.

    Raises:
        RunError: bad batch size, step count or method name, or an unavailable device.
        BackboneError: unknown or unsupported backbone.
    """
    if batch < 1:
        raise RunError("The batch size must be at least 1.")
    if steps < 1:
        raise RunError("Time at least one step.")
    methods = parse_methods(",".join(methods))
    dev = _resolve_device(device)
    torch.manual_seed(seed)
    with torch.device("meta"):  # only to read the input size: no memory, no initialisation
        hw = input_hw(build_full_model(backbone, num_classes, image_size, model_kwargs))
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, *hw, generator=generator).to(dev)
    labels = torch.randint(0, num_classes, (batch,), generator=generator).to(dev)

    rows: list[tuple[str, str, bool]] = [(m, m, False) for m in methods]
    if savers:
        rows += [(m + SAVERS_SUFFIX, m, True) for m in methods if m in DTL_METHODS]
    results: dict[str, dict[str, Any]] = {}
    for label, method, use_savers in rows:
        if progress:
            progress(f"bench: {label} ...")
        torch.manual_seed(seed)
        row = results[label] = bench_method(method, backbone, images, labels, steps, use_savers, num_classes,
                                            rank, image_size, model_kwargs)
        if progress:
            cached = row.get("cached_step_seconds")
            progress(f"bench: {label}: {row['trainable_params']:,} trainable, activations "
                     f"{format_bytes(row['activation_bytes'])} ({row['activation_bytes']} B), step "
                     f"{row['step_seconds']:.3f} s ({row['step_cpu_seconds']:.3f} s CPU)"
                     + (f", cached step {cached:.3f} s ({row['cached_step_cpu_seconds']:.3f} s CPU)" if cached else ""))
    _add_ratios(results)
    return {"backbone": backbone, "batch": batch, "device": str(dev), "image_size": list(hw), "steps": steps,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "results": results}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _add_ratios(results: dict[str, dict[str, Any]]) -> None:
    for peer in ("full", "lora"):
        if peer not in results:
            continue
        base = results[peer]
        for row in results.values():
            row[f"activation_vs_{peer}"] = _ratio(row["activation_bytes"], base["activation_bytes"])
            row[f"step_vs_{peer}"] = _ratio(row["step_seconds"], base["step_seconds"])
            row[f"step_cpu_vs_{peer}"] = _ratio(row["step_cpu_seconds"], base["step_cpu_seconds"])
            if "cached_step_seconds" in row:
                row[f"cached_step_vs_{peer}"] = _ratio(row["cached_step_seconds"], base["step_seconds"])
                row[f"cached_step_cpu_vs_{peer}"] = _ratio(row["cached_step_cpu_seconds"], base["step_cpu_seconds"])


def format_table(report: dict[str, Any]) -> str:
    """The benchmark as a plain-text table (ratios against full fine-tuning and LoRA of the same run)."""
    def r(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    head = ["method", "trainable", "activations", "act/full", "act/lora", "peak", "step s", "step/full",
            "step/lora", "cpu s", "cpu/full", "cpu/lora", "cached step s*", "cached cpu/full*"]
    lines = [head]
    for label, row in report["results"].items():
        cached = row.get("cached_step_seconds")
        lines.append([label, f"{row['trainable_params']:,}", format_bytes(row["activation_bytes"]),
                      r(row.get("activation_vs_full")), r(row.get("activation_vs_lora")),
                      format_bytes(row["peak_bytes"]), f"{row['step_seconds']:.2f}", r(row.get("step_vs_full")),
                      r(row.get("step_vs_lora")), f"{row['step_cpu_seconds']:.2f}", r(row.get("step_cpu_vs_full")),
                      r(row.get("step_cpu_vs_lora")), "-" if cached is None else f"{cached:.2f}",
                      r(row.get("cached_step_cpu_vs_full"))])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [f"{report['backbone']}, batch {report['batch']}, {report['image_size'][0]}x{report['image_size'][1]} px, "
            f"{report['device']} ({report['threads']} threads), median of {report['steps']} steps"]
    for n, line in enumerate(lines):
        text.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
        if n == 0:
            text.append("  ".join("-" * w for w in widths))
    text.append("cpu s: process CPU seconds per step (fairer than wall-clock when other programs share the cores).")
    text.append("* cached step: frozen prefix computed once and reused (training from epoch 2 without augmentation).")
    return "\n".join(text)


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed ``args`` describe; print a table or JSON. Returns an exit code."""
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise RunError("--threads must be at least 1.")
            torch.set_num_threads(args.threads)
        kwargs = json.loads(args.model_kwargs) if args.model_kwargs else None
        if kwargs is not None and not isinstance(kwargs, dict):
            raise RunError("--model-kwargs must be a JSON object, e.g. '{\"img_size\": 32}'.")
        report = run_benchmark(args.backbone, args.batch, args.image_size, args.steps, parse_methods(args.methods),
                               args.savers, args.device, args.num_classes, args.rank, args.seed, kwargs,
                               progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except json.JSONDecodeError as exc:
        print(f"error: --model-kwargs is not valid JSON ({exc.msg}).", file=sys.stderr)
        return 2
    except DTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else format_table(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m dtl_engine.bench`` entry point."""
    parser = add_bench_arguments(argparse.ArgumentParser(prog="dtl_engine bench", description=__doc__.split("\n")[0]))
    return run_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: DTL against full fine-tuning, linear probing and LoRA, trained side by side in one process.

Every method trains real AdamW steps on the same random batch: warm-up steps first, then rounds in
which every method takes one step, the order rotating, until at least 5 rounds are done and the time
ratios are steady (standard error 1.5 %, or 40 rounds). Freed memory is kept for reuse and the garbage
collector is paused in a timed step (``step_timer``), so that two runs of the same command agree.
For each method it reports the trainable parameters, the bytes autograd saved for
backward (counted in the first warm-up step), the CUDA peak (``None`` on other devices), the median
step time, and its time ratios to full fine-tuning and LoRA as medians of the per-round ratios with
their spread. DTL rows also report ``cached_step_seconds``: the step time when the frozen prefix is
computed once and reused, which is what training does from the second epoch on when augmentation is off.

    python -m dtl_engine bench --device cpu     # ViT-S/16 at batch 8 on the CPU: about 7 minutes
    python -m dtl_engine bench --savers         # ViT-B/16 at batch 32 on a GPU, with the savers' rows
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Callable, cast

import torch
import torch.nn.functional as F
from dtl_engine.errors import DTLError, RunError
from dtl_engine.registry import SIDE_NETWORK_METHODS
from dtl_engine.model.half_weights import cast_frozen_weights
from dtl_engine.sizing.memory_probe import (
    SavedTensorCounter,
    autocast_context,
    build_full_model,
    build_method_model,
    format_bytes,
    input_hw,
    model_state_tensors,
)
from dtl_engine.bench.step_timer import keep_freed_memory, synchronize, time_step
from dtl_engine.devices import select_device

if TYPE_CHECKING:
    from dtl_engine.model.dtl import DTLModel

DEFAULT_METHODS = "full,linear,lora,dtl,dtl+"
DEFAULT_WARMUP = 2       # first steps pay for allocation and kernel selection
DEFAULT_STEPS = 5        # at least this many measured rounds: the figures are medians of them
DEFAULT_MAX_STEPS = 40   # more rounds only while a ratio is still unsteady
TARGET_ERROR = 0.015     # stop once every time ratio's standard error is 1.5 %: two runs then agree within ±5 %
BENCH_METHODS = tuple(DEFAULT_METHODS.split(","))
DTL_METHODS = SIDE_NETWORK_METHODS
SAVERS_SUFFIX = " (savers)"
# (backbone, batch) by default: the CPU default measures stably in minutes where ViT-B at 32 would take an hour
GPU_DEFAULT = ("vit_base_patch16_224", 32)
CPU_DEFAULT = ("vit_small_patch16_224", 8)


def add_bench_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``bench`` options to ``parser`` (used by the CLI's ``bench`` sub-command)."""
    parser.add_argument("--backbone", default=None,
                        help=f"timm model name (random weights; default: {GPU_DEFAULT[0]} on a GPU, "
                             f"{CPU_DEFAULT[0]} on the CPU).")
    parser.add_argument("--batch", type=int, default=None,
                        help=f"Images per step (default: {GPU_DEFAULT[1]} on a GPU, {CPU_DEFAULT[1]} on the CPU).")
    parser.add_argument("--image-size", type=int, default=None, help="Input side in pixels (default: the model's).")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help="Least number of measured rounds (each method one step per round, order rotating).")
    parser.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS,
                        help="Most rounds; rounds beyond --steps run only while a time ratio is still unsteady.")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="Untimed steps per method first.")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="Stop adding rounds after this many seconds (once --steps rounds are done).")
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
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: 1 when benchmarking on the CPU, so process CPU time "
                             "counts work rather than idle threads spinning; torch's choice on a GPU).")
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
    return select_device(pref)[0]


class _Contender:
    """One benchmark row: a model, its optimizer and the step it times (built and warmed up on creation)."""

    def __init__(self, label: str, method: str, backbone: str, images: torch.Tensor, labels: torch.Tensor,
                 savers: bool, num_classes: int, rank: int | None, image_size: int | None,
                 model_kwargs: dict[str, Any] | None, warmup: int) -> None:
        device = images.device
        self.label, self.method, self.device = label, method, device
        rank = rank if method in DTL_METHODS else None  # --rank is DTL's; LoRA keeps its usual r = 8
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        self.model = build_method_model(method, backbone, num_classes, image_size, rank, checkpoint_blocks=savers,
                                        low_precision_taps=savers, model_kwargs=model_kwargs).to(device).train()
        self.precision = "bf16" if savers else "fp32"
        if savers and device.type == "mps":
            self.precision = "fp16"  # MPS autocast has no bf16 on older macOS
        if savers:
            cast_frozen_weights(self.model, self.precision)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.05)
        self.images, self.labels = images, labels
        counter = SavedTensorCounter(model_state_tensors(self.model))
        self._step(lambda: self.model(images), counter)  # first warm-up step; counts the saved activations
        for _ in range(max(0, warmup - 1)):
            self.step()
        synchronize(device)
        self.peak = int(torch.cuda.max_memory_allocated(device)) - before if device.type == "cuda" else None
        self.figures: dict[str, Any] = {"trainable_params": sum(p.numel() for p in trainable),
                                        "activation_bytes": counter.bytes, "peak_bytes": self.peak,
                                        "total_params": sum(p.numel() for p in self.model.parameters())}
        self.prefix = None
        if method in DTL_METHODS:
            # frozen prefix computed once and reused (training from epoch 2 when augmentation is off)
            with torch.no_grad(), autocast_context(device, self.precision):
                self.prefix = cast("DTLModel", self.model).forward_prefix(images)
            self.cached_step()
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.cached_wall: list[float] = []
        self.cached_cpu: list[float] = []

    def _step(self, forward: Callable[[], torch.Tensor], counter: Any = None) -> None:
        with counter if counter is not None else nullcontext(), autocast_context(self.device, self.precision):
            loss = F.cross_entropy(forward(), self.labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        self._step(lambda: self.model(self.images))

    def cached_step(self) -> None:
        prefix, model = self.prefix, cast("DTLModel", self.model)
        assert prefix is not None           # DTL rows compute it once on creation
        self._step(lambda: model.forward_from_prefix(prefix))

    def measure(self) -> None:
        """Time one step (and one cached step for DTL rows)."""
        timed = [(self.step, self.wall, self.cpu)]
        if self.prefix is not None:
            timed.append((self.cached_step, self.cached_wall, self.cached_cpu))
        for fn, wall, cpu in timed:
            seconds, cpu_seconds = time_step(fn, lambda: synchronize(self.device))
            wall.append(seconds)
            cpu.append(cpu_seconds)

    def result(self) -> dict[str, Any]:
        row = dict(self.figures, step_seconds=statistics.median(self.wall),
                   step_cpu_seconds=statistics.median(self.cpu))
        if self.prefix is not None:
            row["cached_step_seconds"] = statistics.median(self.cached_wall)
            row["cached_step_cpu_seconds"] = statistics.median(self.cached_cpu)
        return row


def _paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Median of the per-round ratios a[r] / b[r] and their spread: half the interquartile range / median."""
    ratios = [x / y for x, y in zip(a, b) if y > 0]
    med = statistics.median(ratios)
    if len(ratios) < 2:
        return med, 0.0
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return med, (q3 - q1) / 2 / med if med else 0.0


def _median_error(ratios_spread: tuple[float, float], n: int) -> float:
    """Relative standard error of a median of ``n`` ratios whose half interquartile range is ``spread``."""
    sigma = 2 * ratios_spread[1] / 1.349          # interquartile range of a normal distribution = 1.349 σ
    return 1.2533 * sigma / max(n, 1) ** 0.5      # standard error of a median = 1.2533 σ / √n


def _largest_error(contenders: list[_Contender]) -> float:
    """The least certain of the time ratios to the first method (CPU, wall-clock and cached CPU)."""
    base = contenders[0]
    errors = [0.0]
    for c in contenders[1:]:
        for a, b in ((c.cpu, base.cpu), (c.wall, base.wall), (c.cached_cpu, base.cpu)):
            if a:
                errors.append(_median_error(_paired(a, b), len(a)))
        if c.cached_wall:
            errors.append(_median_error(_paired(c.cached_wall, base.wall), len(c.cached_wall)))
    return max(errors)


def run_benchmark(backbone: str = "vit_base_patch16_224", batch: int = 32, image_size: int | None = None,
                  steps: int = DEFAULT_STEPS, methods: list[str] | tuple[str, ...] = BENCH_METHODS,
                  savers: bool = False,
                  device: str = "auto", num_classes: int = 10, rank: int | None = None, seed: int = 0,
                  model_kwargs: dict[str, Any] | None = None,
                  progress: Callable[[str], None] | None = None, warmup: int = DEFAULT_WARMUP,
                  max_steps: int = DEFAULT_MAX_STEPS, budget_seconds: float | None = None,
                  target_error: float = TARGET_ERROR) -> dict[str, Any]:
    """Benchmark ``methods`` on one random batch; returns the JSON-ready result object.

    Every method is built and warmed up (``warmup`` steps), then the methods take turns, one step each
    per round, the order rotating, so a change in machine load hits them all alike. Rounds go on until
    at least ``steps`` are done and every time ratio to the first method (median of the per-round
    ratios, CPU and wall-clock) is known to ``target_error`` (its standard error, estimated from the
    interquartile range), or ``max_steps`` rounds, or ``budget_seconds``.
    With ``savers`` each DTL method gets a second row, '<method> (savers)', trained with checkpointed
    blocks, bf16 tap inputs, frozen weights in bf16 and bf16 autocast.

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
    contenders: list[_Contender] = []
    for label, method, use_savers in rows:
        if progress:
            progress(f"bench: building and warming up {label} ...")
        torch.manual_seed(seed)
        contenders.append(_Contender(label, method, backbone, images, labels, use_savers, num_classes, rank,
                                     image_size, model_kwargs, warmup))
    started = time.perf_counter()
    rounds = 0
    while rounds < max(steps, max_steps):
        n = len(contenders)
        for k in range(n):  # rotate the order every round
            contenders[(rounds + k) % n].measure()
        rounds += 1
        error = _largest_error(contenders)
        if progress:
            progress(f"bench: round {rounds}: least certain time ratio ±{100 * error:.1f} % (standard error)")
        if rounds >= steps and (error <= target_error or
                                (budget_seconds is not None and time.perf_counter() - started >= budget_seconds)):
            break
    results = {c.label: c.result() for c in contenders}
    _add_ratios(results, {c.label: c for c in contenders})
    del contenders
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return {"backbone": backbone, "batch": batch, "device": str(dev), "image_size": list(hw), "steps": rounds,
            "warmup": warmup, "threads": torch.get_num_threads(), "torch": torch.__version__, "results": results}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _add_ratios(results: dict[str, dict[str, Any]], contenders: dict[str, _Contender]) -> None:
    """Ratios to full fine-tuning and LoRA: bytes directly, times as the median of per-round ratios."""
    for peer in ("full", "lora"):
        if peer not in results:
            continue
        base, base_c = results[peer], contenders[peer]
        for label, row in results.items():
            c = contenders[label]
            row[f"activation_vs_{peer}"] = _ratio(row["activation_bytes"], base["activation_bytes"])
            row[f"step_vs_{peer}"], row[f"step_vs_{peer}_spread"] = _paired(c.wall, base_c.wall)
            row[f"step_cpu_vs_{peer}"], row[f"step_cpu_vs_{peer}_spread"] = _paired(c.cpu, base_c.cpu)
            if "cached_step_seconds" in row:
                row[f"cached_step_vs_{peer}"] = _paired(c.cached_wall, base_c.wall)[0]
                row[f"cached_step_cpu_vs_{peer}"] = _paired(c.cached_cpu, base_c.cpu)[0]


def format_table(report: dict[str, Any]) -> str:
    """The benchmark as a plain-text table (ratios against full fine-tuning and LoRA of the same run)."""
    def r(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    def spread(v: float | None) -> str:
        return "-" if v is None else f"±{100 * v:.1f}%"

    head = ["method", "trainable", "activations", "act/full", "act/lora", "peak", "step s", "step/full",
            "step/lora", "cpu s", "cpu/full", "spread", "cpu/lora", "spread", "cached step s*", "cached cpu/full*"]
    lines = [head]
    for label, row in report["results"].items():
        cached = row.get("cached_step_seconds")
        lines.append([label, f"{row['trainable_params']:,}", format_bytes(row["activation_bytes"]),
                      r(row.get("activation_vs_full")), r(row.get("activation_vs_lora")),
                      format_bytes(row["peak_bytes"]), f"{row['step_seconds']:.2f}", r(row.get("step_vs_full")),
                      r(row.get("step_vs_lora")), f"{row['step_cpu_seconds']:.2f}", r(row.get("step_cpu_vs_full")),
                      spread(row.get("step_cpu_vs_full_spread")), r(row.get("step_cpu_vs_lora")),
                      spread(row.get("step_cpu_vs_lora_spread")), "-" if cached is None else f"{cached:.2f}",
                      r(row.get("cached_step_cpu_vs_full"))])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [f"{report['backbone']}, batch {report['batch']}, {report['image_size'][0]}x{report['image_size'][1]} px, "
            f"{report['device']} ({report['threads']} threads), {report['warmup']} warm-up steps, "
            f"median of {report['steps']} interleaved rounds"]
    for n, line in enumerate(lines):
        text.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
        if n == 0:
            text.append("  ".join("-" * w for w in widths))
    text.append("cpu s: process CPU seconds per step (fairer than wall-clock when other programs share the cores).")
    text.append("ratios: median of the per-round ratios; spread: half their interquartile range.")
    text.append("* cached step: frozen prefix computed once and reused (training from epoch 2 without augmentation).")
    return "\n".join(text)


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed ``args`` describe; print a table or JSON. Returns an exit code."""
    try:
        if args.threads is not None and args.threads < 1:
            raise RunError("--threads must be at least 1.")
        on_cpu = _resolve_device(args.device).type == "cpu"
        default_backbone, default_batch = CPU_DEFAULT if on_cpu else GPU_DEFAULT
        if args.threads is not None:
            threads = args.threads
        else:
            threads = 1 if on_cpu else None
        if threads is not None:
            torch.set_num_threads(threads)
        keep_freed_memory()  # no page faults in the measured steps: their cost varies from run to run
        kwargs = json.loads(args.model_kwargs) if args.model_kwargs else None
        if kwargs is not None and not isinstance(kwargs, dict):
            raise RunError("--model-kwargs must be a JSON object, e.g. '{\"img_size\": 32}'.")
        batch = default_batch if args.batch is None else args.batch
        report = run_benchmark(args.backbone or default_backbone, batch, args.image_size, args.steps,
                               parse_methods(args.methods),
                               args.savers, args.device, args.num_classes, args.rank, args.seed, kwargs,
                               progress=lambda msg: print(msg, file=sys.stderr, flush=True), warmup=args.warmup,
                               max_steps=args.max_steps, budget_seconds=args.budget)
    except json.JSONDecodeError as exc:
        print(f"error: --model-kwargs is not valid JSON ({exc.msg}).", file=sys.stderr)
        return 2
    except DTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else format_table(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m dtl_engine.bench.speed`` entry point."""
    parser = add_bench_arguments(argparse.ArgumentParser(prog="dtl_engine bench", description=__doc__.split("\n")[0]))
    return run_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

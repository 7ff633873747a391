"""GPU-fit planner: which precision, memory savers and batch size let a backbone train on a given card.

Every figure comes from the memory probe (:mod:`dtl_engine.sizing.memory_probe`): for each setting the probe
runs at two batch sizes and the planner extends the line between them (activations grow linearly with
the batch; weights, gradients and optimizer state do not), so a plan costs six fake forwards whatever
the batch sizes asked about. A setting fits when its estimate stays under the card's memory less a
headroom for the CUDA context, library workspaces and allocator fragmentation, none of which
``torch.cuda.max_memory_allocated`` (and so the probe) counts.

    python -m dtl_engine plan --backbone vit_huge_patch14_224.orig_in21k --gpu-memory 8GB
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Any
import json

from dtl_engine.errors import DTLError, RunError

GB = 1024 ** 3
HEADROOM = 0.10          # share of the card kept free (context, workspaces, fragmentation)
TARGET_BATCH = 32        # the recipe's batch: more rarely helps, less is the fallback
PROBE_BATCHES = (1, 2)   # the two points of the probe's line

# Common cards by memory, smallest first (what a person can buy or rent).
CARDS: tuple[tuple[str, float], ...] = (
    ("a 4 GB card (GTX 1650)", 4), ("a 6 GB card (RTX 2060)", 6), ("an 8 GB card (RTX 4060)", 8),
    ("a 10 GB card (RTX 3080)", 10), ("a 12 GB card (RTX 4070)", 12), ("a 16 GB card (RTX 4080, T4)", 16),
    ("a 24 GB card (RTX 4090, L4)", 24), ("a 40 GB card (A100 40 GB)", 40), ("a 48 GB card (RTX 6000 Ada, L40S)", 48),
    ("an 80 GB card (A100 / H100 80 GB)", 80), ("a 141 GB card (H200)", 141),
)


@dataclass(frozen=True)
class GpuInfo:
    """The current CUDA device: its name, free and total memory in bytes, and bf16 support."""

    name: str
    free_bytes: int
    total_bytes: int
    bf16: bool = True


def current_gpu() -> GpuInfo | None:
    """The current CUDA device's name and free memory, or ``None`` on a machine without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return GpuInfo(torch.cuda.get_device_name(), int(free), int(total), bool(torch.cuda.is_bf16_supported()))


@dataclass(frozen=True)
class Setting:
    """One rung of the ladder from fastest to most frugal."""

    label: str
    precision: str
    half_frozen_weights: bool = False
    low_precision_taps: bool = False
    checkpoint_blocks: bool = False

    def train_options(self) -> dict[str, Any]:
        """The :class:`~dtl_engine.config.TrainConfig` fields this setting sets."""
        return {"precision": self.precision, "half_frozen_weights": self.half_frozen_weights,
                "low_precision_taps": self.low_precision_taps, "checkpoint_blocks": self.checkpoint_blocks}


def settings_ladder(half: str = "bf16") -> tuple[Setting, ...]:
    """The settings tried, in order of preference: the training default on a GPU (``half`` precision with
    the frozen weights in ``half``), then with checkpointed blocks (slower, far less memory), then fp32
    for comparison (it never needs less). bf16 tap inputs are not a rung: under half-precision autocast
    the taps already keep half-precision inputs, so that saver frees nothing there."""
    return (
        Setting(f"{half}, frozen weights in {half} (default)", half, True),
        Setting(f"{half}, + checkpointed blocks (every saver)", half, True, False, True),
        Setting("fp32, no savers", "fp32"),
    )


@dataclass(frozen=True)
class FitOption:
    """A setting's estimate at the target batch and the largest batch (≤ target) that fits."""

    setting: Setting
    target_bytes: int
    batch_size: int            # 0: not even one image fits
    batch_bytes: int           # the estimate at ``batch_size`` (at 1 when nothing fits)
    fixed_bytes: int           # weights, gradients and optimizer state
    per_image_bytes: int       # activations per image

    @property
    def fits_target(self) -> bool:
        return self.batch_size > 0 and self.batch_bytes == self.target_bytes

    def estimate(self, batch_size: int) -> int:
        """The planner's estimate at any batch size."""
        return self.fixed_bytes + self.per_image_bytes * int(batch_size)


@dataclass(frozen=True)
class FitPlan:
    """What fits on ``memory_bytes``: every setting, the recommended one, or the smallest card that would do."""

    backbone: str
    method: str
    image_size: tuple[int, int]
    memory_bytes: int
    usable_bytes: int
    target_batch: int
    options: list[FitOption]
    choice: FitOption | None
    smallest_card: str | None = None
    gpu_name: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def frugal(self) -> FitOption:
        """The setting that needs the least memory."""
        return min(self.options, key=lambda o: o.target_bytes)

    def recommended(self) -> dict[str, Any] | None:
        """The TrainConfig fields to apply (precision, savers, batch_size), or None when nothing fits."""
        if self.choice is None:
            return None
        return {**self.choice.setting.train_options(), "batch_size": self.choice.batch_size}

    def summary(self) -> str:
        """One sentence: the recommendation, or why nothing fits and which card would."""
        from dtl_engine.sizing.memory_probe import format_bytes

        if self.choice is None:
            card = f"; {self.smallest_card} would fit batch {self.target_batch} with every saver" \
                if self.smallest_card else "; no common card would"
            return (f"Nothing fits in {format_bytes(self.usable_bytes)}: even one image with every saver needs "
                    f"~{format_bytes(self.frugal.estimate(1))}{card}.")
        c = self.choice
        return (f"Use {c.setting.label}, batch {c.batch_size} (~{format_bytes(c.batch_bytes)} of "
                f"{format_bytes(self.usable_bytes)} usable).")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["recommended"] = self.recommended()
        data["summary"] = self.summary()
        return data


def parse_memory(text: str | int | float) -> int:
    """'8GB', '8 GiB', '7.5G', '12000MB' or a plain number of GB -> bytes (GB = 1024³, as cards are sold)."""
    if isinstance(text, (int, float)):
        value, unit = float(text), "g"
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(?:i?b)?\s*", str(text).lower())
        if not match:
            raise RunError(f"'{text}' is not an amount of memory; write it like 8GB, 7.5GB or 12000MB.")
        value, unit = float(match.group(1)), match.group(2) or "g"
    n = int(value * 1024 ** "bkmgt".index(unit if unit else "g"))
    if n <= 0:
        raise RunError("The GPU memory must be more than zero.")
    return n


def _line(backbone: str, method: str, setting: Setting, image_size: Any, num_classes: int,
          model_kwargs: dict[str, Any] | None) -> tuple[int, int, tuple[int, int]]:
    """(fixed bytes, activation bytes per image, input size) of ``setting`` from two probe points."""
    from dtl_engine.sizing.memory_probe import estimate_memory

    totals = []
    hw = (0, 0)
    for batch in PROBE_BATCHES:
        est = estimate_memory(backbone, batch, image_size=image_size, method=method,
                              checkpoint_blocks=setting.checkpoint_blocks,
                              low_precision_taps=setting.low_precision_taps, precision=setting.precision,
                              num_classes=num_classes, model_kwargs=model_kwargs,
                              half_frozen_weights=setting.half_frozen_weights)
        totals.append(est.method.total_bytes)
        hw = est.image_size
    (b1, t1), (b2, t2) = zip(PROBE_BATCHES, totals)
    per_image = max(0, (t2 - t1) // (b2 - b1))
    return t1 - per_image * b1, per_image, hw


def _batches(target: int) -> list[int]:
    out, b = [target], 1
    while b < target:
        out.append(b)
        b *= 2
    return sorted(set(out), reverse=True)


def plan_fit(backbone: str, memory_bytes: int | None = None, method: str = "dtl",
             image_size: int | tuple[int, int] | None = None, target_batch: int = TARGET_BATCH,
             num_classes: int = 10, model_kwargs: dict[str, Any] | None = None, bf16: bool | None = None,
             headroom: float = HEADROOM, gpu: GpuInfo | None = None) -> FitPlan:
    """Plan ``backbone`` for ``memory_bytes`` of GPU memory (default: the current GPU's free memory).

    Tries the settings of :func:`settings_ladder` in order; recommends the first that trains the target
    batch, else the one that trains the largest batch. ``bf16=False`` plans
    in fp16 (cards without bf16); the default asks the GPU, or assumes bf16 without one.

    Raises:
        RunError: no memory given and no CUDA GPU, or a bad batch size.
        BackboneError: unknown or unsupported backbone.
    """
    if target_batch < 1:
        raise RunError("The batch size must be at least 1.")
    gpu = gpu if gpu is not None else (current_gpu() if memory_bytes is None or bf16 is None else None)
    if memory_bytes is None:
        if gpu is None:
            raise RunError("No CUDA GPU was found; say how much memory to plan for, e.g. --gpu-memory 8GB.")
        memory_bytes = gpu.free_bytes
    if bf16 is None:
        bf16 = gpu.bf16 if gpu is not None else True
    usable = int(memory_bytes * (1.0 - headroom))
    options = []
    hw = (0, 0)
    for setting in settings_ladder("bf16" if bf16 else "fp16"):
        fixed, per_image, hw = _line(backbone, method, setting, image_size, num_classes, model_kwargs)
        fitting = [b for b in _batches(target_batch) if fixed + per_image * b <= usable]
        batch = fitting[0] if fitting else 0
        options.append(FitOption(setting, fixed + per_image * target_batch, batch,
                                 fixed + per_image * max(batch, 1), fixed, per_image))
    choice = next((o for o in options if o.fits_target), None)
    if choice is None:
        best = max(options, key=lambda o: o.batch_size)
        choice = best if best.batch_size > 0 else None
    smallest = None
    if choice is None or not choice.fits_target:
        need = min(o.target_bytes for o in options)
        smallest = next((label for label, gb in CARDS if gb * GB * (1.0 - headroom) >= need), None)
    return FitPlan(backbone, method, (hw[0], hw[1]), int(memory_bytes), usable, int(target_batch), options, choice,
                   smallest, gpu.name if gpu is not None else None)


def format_plan(plan: FitPlan) -> str:
    """The plan as a plain-text table and a closing sentence."""
    from dtl_engine.sizing.memory_probe import format_bytes

    where = f"{plan.gpu_name}, " if plan.gpu_name else ""
    lines = [f"{plan.backbone} ({plan.method.upper()}), {plan.image_size[0]}x{plan.image_size[1]} px, on "
             f"{where}{format_bytes(plan.memory_bytes)} ({format_bytes(plan.usable_bytes)} usable, "
             f"{HEADROOM:.0%} kept free)"]
    rows = [("setting", f"batch {plan.target_batch}", "largest batch that fits")]
    for o in plan.options:
        fits = f"{o.batch_size} (~{format_bytes(o.batch_bytes)})" if o.batch_size else "none"
        rows.append((o.setting.label, f"~{format_bytes(o.target_bytes)}", fits))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(plan.summary())
    if plan.choice is not None and not plan.choice.fits_target and plan.smallest_card:
        lines.append(f"For batch {plan.target_batch}: {plan.smallest_card}.")
    return "\n".join(lines)


def add_plan_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``plan`` options (used by the CLI's ``plan`` sub-command)."""
    parser.add_argument("--backbone", required=True, help="timm model name.")
    parser.add_argument("--gpu-memory", default=None, metavar="SIZE",
                        help="Memory to plan for, e.g. 8GB (default: the free memory of the current GPU).")
    parser.add_argument("--method", choices=("dtl", "dtl+", "linear"), default="dtl", help="Training method.")
    parser.add_argument("--image-size", type=int, default=None, help="Input side in pixels (default: the model's).")
    parser.add_argument("--batch-size", type=int, default=TARGET_BATCH, help="The batch size to aim for.")
    parser.add_argument("--fp16", action="store_true", help="Plan for a card without bf16 (fp16 with loss scaling).")
    parser.add_argument("--json", action="store_true", help="Print the plan as JSON.")
    return parser


def run_plan(args: argparse.Namespace) -> int:
    """Print the plan the parsed ``args`` ask for; 0, or 2 with one sentence on bad input."""
    try:
        memory = parse_memory(args.gpu_memory) if args.gpu_memory is not None else None
        plan = plan_fit(args.backbone, memory, args.method, args.image_size, args.batch_size,
                        bf16=False if args.fp16 else None)
    except DTLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(plan.to_dict()) if args.json else format_plan(plan))
    return 0


__all__ = ["CARDS", "FitOption", "FitPlan", "GpuInfo", "Setting", "current_gpu", "format_plan", "parse_memory",
           "plan_fit", "settings_ladder"]

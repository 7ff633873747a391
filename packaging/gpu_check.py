"""GPU check: what training really costs on this CUDA machine, in one run of at most 8 minutes.

Measures, with random weights and random images:

* ViT-B/16 at batch 32, 224 px: step time and peak memory (``torch.cuda.max_memory_allocated``) of
  full fine-tuning, LoRA and DTL (no savers; the defaults, i.e. frozen weights in half precision;
  every saver), each in bf16 and in fp16;
* the photo loader: images per second through the training transform (synthetic JPEGs in a
  temporary folder), with 0 and 4 worker processes;
* the GPU-fit planner: its estimate for its own recommended setting against the measured peak, for
  ViT-B/16 and ViT-L/16;
* our DTL step against the official DTL code's on the same ViT-B/16 blocks, fp32, wall-clock
  (``benchmarks/official_dtl.py``), with the floor of the frozen blocks alone.

It prints a table and writes everything to a JSON file. Without a CUDA GPU it says so and exits.

    python packaging/gpu_check.py [--out gpu_check.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import torch
import torch.nn.functional as F

TIME_LIMIT_S = 450.0        # stop starting new measurements after 7.5 minutes
BACKBONE = "vit_base_patch16_224"
PLAN_BACKBONES = ("vit_base_patch16_224", "vit_large_patch16_224")
BATCH = 32
STEPS, WARMUP = 10, 3
NO_GPU = "No CUDA GPU here: gpu_check measures GPU step times and memory peaks, so nothing was measured."

# (label, method, half_frozen_weights, checkpoint_blocks)
STEP_ROWS: tuple[tuple[str, str, bool, bool], ...] = (
    ("full fine-tuning", "full", False, False),
    ("LoRA (r=8, qkv)", "lora", False, False),
    ("DTL, no savers", "dtl", False, False),
    ("DTL, defaults (frozen weights in half)", "dtl", True, False),
    ("DTL, every saver", "dtl", True, True),
)


def measure_step(method: str, backbone: str, precision: str, *, half_frozen_weights: bool = False,
                 checkpoint_blocks: bool = False, device: str | torch.device = "cuda", batch: int = BATCH,
                 steps: int = STEPS, warmup: int = WARMUP, model_kwargs: dict[str, Any] | None = None,
                 num_classes: int = 10) -> dict[str, Any]:
    """Median step seconds and peak bytes (CUDA only, else None) of real AdamW steps on random data."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    # The model, its optimizer and the batch live only inside this call: freed before the cache is emptied.
    seconds = _timed_steps(method, backbone, precision, dev, half_frozen_weights=half_frozen_weights,
                           checkpoint_blocks=checkpoint_blocks, batch=batch, steps=steps, warmup=warmup,
                           model_kwargs=model_kwargs, num_classes=num_classes)
    peak = int(torch.cuda.max_memory_allocated(dev)) if cuda else None
    if cuda:
        torch.cuda.empty_cache()
    return {"step_seconds": statistics.median(seconds), "peak_bytes": peak}


def _timed_steps(method: str, backbone: str, precision: str, dev: torch.device, *, half_frozen_weights: bool,
                 checkpoint_blocks: bool, batch: int, steps: int, warmup: int, model_kwargs: dict[str, Any] | None,
                 num_classes: int) -> list[float]:
    """Seconds of each of ``steps`` AdamW steps on random data, after ``warmup`` untimed ones."""
    from dtl_engine.model.half_weights import cast_frozen_weights
    from dtl_engine.sizing.memory_probe import autocast_context, build_method_model, input_hw

    cuda = dev.type == "cuda"
    with dev:  # initialise the random weights where they will live
        model = build_method_model(method, backbone, num_classes, checkpoint_blocks=checkpoint_blocks,
                                   model_kwargs=model_kwargs).train()
    if half_frozen_weights:
        cast_frozen_weights(model, precision)
    images = torch.randn(batch, 3, *input_hw(model), device=dev)
    labels = torch.randint(0, num_classes, (batch,), device=dev)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16" and cuda)

    def step() -> None:
        with autocast_context(dev, precision):
            loss = F.cross_entropy(model(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    seconds = []
    for i in range(warmup + steps):
        if cuda:
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize(dev)
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return seconds


def write_photos(folder: Path, count: int, size: tuple[int, int] = (640, 480)) -> list[tuple[str, int]]:
    """``count`` random-noise JPEG photos in two class folders; returns (path, label) samples."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    samples = []
    for i in range(count):
        label = i % 2
        path = folder / str(label) / f"photo_{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, quality=90)
        samples.append((str(path), label))
    return samples


def loader_throughput(count: int = 256, workers: tuple[int, ...] = (0, 4), batch: int = BATCH,
                      backbone: str = BACKBONE, model_kwargs: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Images per second through the training transform ('light' augmentation), per worker count."""
    from dtl_engine.data import ImageDataset, build_transform
    from dtl_engine.model.dtl import build_model

    with torch.device("meta"):
        config = build_model(backbone, 2, weights="random", model_kwargs=model_kwargs).data_config
    rows = []
    with tempfile.TemporaryDirectory(prefix="dtl-gpu-check-") as tmp:  # removed afterwards, whatever happens
        samples = write_photos(Path(tmp), count)
        dataset = ImageDataset(samples, build_transform(config, "light", train=True),
                               min_side=2 * config["input_size"][-1])
        for n in workers:
            loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=n,
                                                 pin_memory=torch.cuda.is_available())
            start = time.perf_counter()
            seen = sum(len(images) for images, _, _ in loader)
            rows.append({"workers": n, "images": seen, "images_per_second": seen / (time.perf_counter() - start)})
    return rows


def planner_vs_measured(backbone: str, memory_bytes: int | None = None,
                        measure: Callable[..., dict[str, Any]] = measure_step) -> dict[str, Any]:
    """The planner's estimate for its recommended setting against the measured peak of that setting."""
    from dtl_engine.sizing.planner import plan_fit

    plan = plan_fit(backbone, memory_bytes)
    if plan.choice is None:
        return {"backbone": backbone, "summary": plan.summary()}
    s, batch = plan.choice.setting, plan.choice.batch_size
    measured = measure("dtl", backbone, s.precision, half_frozen_weights=s.half_frozen_weights,
                       checkpoint_blocks=s.checkpoint_blocks, batch=batch, steps=2, warmup=1)["peak_bytes"]
    predicted = plan.choice.batch_bytes
    return {"backbone": backbone, "setting": s.label, "batch": batch, "predicted_bytes": predicted,
            "measured_bytes": measured, "predicted_vs_measured": predicted / measured if measured else None}


def run_checks(deadline: float, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every measurement that fits before ``deadline`` (a ``time.perf_counter`` value)."""
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                              "backbone": BACKBONE, "batch": BATCH, "steps": [], "loader": [], "planner": [],
                              "official": None, "skipped": []}
    for precision in ("bf16", "fp16"):
        for label, method, half, ckpt in STEP_ROWS:
            name = f"{label}, {precision}"
            if time.perf_counter() > deadline:
                report["skipped"].append(name)
                continue
            progress(f"step: {name} ...")
            row = measure_step(method, BACKBONE, precision, half_frozen_weights=half, checkpoint_blocks=ckpt)
            report["steps"].append({"row": label, "precision": precision, **row})
    if time.perf_counter() < deadline:
        progress("photo loader ...")
        report["loader"] = loader_throughput()
    else:
        report["skipped"].append("photo loader")
    for backbone in PLAN_BACKBONES:
        if time.perf_counter() > deadline:
            report["skipped"].append(f"planner on {backbone}")
            continue
        progress(f"planner on {backbone} ...")
        report["planner"].append(planner_vs_measured(backbone))
    if time.perf_counter() < deadline:
        from benchmarks.official_dtl import compare

        progress("against the official DTL code ...")
        report["official"] = compare(BACKBONE, BATCH, repeats=20, device="cuda")
        torch.cuda.empty_cache()
    else:
        report["skipped"].append("against the official DTL code")
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as plain-text tables."""
    from dtl_engine.sizing.memory_probe import format_bytes

    lines = [f"{report['device']}, torch {report['torch']}; {report['backbone']}, batch {report['batch']}, 224 px",
             "", f"{'training step':<42} {'precision':>9} {'step ms':>8} {'peak':>10}"]
    for r in report["steps"]:
        lines.append(f"{r['row']:<42} {r['precision']:>9} {1000 * r['step_seconds']:>8.1f} "
                     f"{format_bytes(r['peak_bytes']):>10}")
    lines += ["", f"{'photo loader (light augmentation)':<42} {'images/s':>9}"]
    for r in report["loader"]:
        lines.append(f"{str(r['workers']) + ' worker processes':<42} {r['images_per_second']:>9.0f}")
    lines += ["", f"{'planner':<36} {'setting':<44} {'batch':>5} {'predicted':>10} {'measured':>10} {'ratio':>6}"]
    for r in report["planner"]:
        if "setting" not in r:
            lines.append(f"{r['backbone']:<36} {r['summary']}")
            continue
        ratio = r["predicted_vs_measured"]
        lines.append(f"{r['backbone']:<36} {r['setting']:<44} {r['batch']:>5} {format_bytes(r['predicted_bytes']):>10} "
                     f"{format_bytes(r['measured_bytes']):>10} {'-' if ratio is None else f'{ratio:.3f}':>6}")
    off = report.get("official")
    if off:
        lines += ["", f"DTL step against the official code (fp32, median of {off['repeats']}): ours / official "
                      f"{off['ratio']:.3f}, floor / official {off['floor_vs_official']:.3f}, "
                      f"saved bytes {off['saved_ratio']:.3f}"]
    if report["skipped"]:
        lines += ["", "skipped (time limit): " + ", ".join(report["skipped"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_check.json", help="JSON file to write (an existing one is kept).")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    out = Path(args.out)
    if out.exists():
        print(f"error: {out} exists; pass another --out (existing files are never overwritten).", file=sys.stderr)
        return 2
    report = run_checks(time.perf_counter() + TIME_LIMIT_S, progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_report(report))
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

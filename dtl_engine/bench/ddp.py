"""Traffic benchmark: the bytes two data-parallel processes all-reduce per step, DTL against full fine-tuning and LoRA.

Two gloo processes on the CPU train each method for a few steps under
``DistributedDataParallel`` with a communication hook that adds up the bytes of every
gradient bucket it all-reduces: the figure is measured on the wire path, not computed
from parameter counts. For DTL it also measures the engine's own path (one flat
all-reduce of the trainable gradients, :meth:`Distributed.sync_gradients`).

    python -m dtl_engine bench --ddp --backbone vit_base_patch16_224 --batch 2 --steps 3
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any
from datetime import timedelta

import torch
from torch.nn.parallel import DistributedDataParallel
import torch.distributed as dist
import torch.nn.functional as F
import torch.multiprocessing as mp

from dtl_engine import fileio
from dtl_engine.errors import RunError
from dtl_engine.sizing.memory_probe import build_method_model, format_bytes, input_hw
from dtl_engine.training.distributed import Distributed
from dtl_engine.bench.speed import CPU_DEFAULT, parse_methods

WORLD_SIZE = 2
LABELS = {"full": "full fine-tuning", "linear": "linear probe", "lora": "LoRA (peft)", "dtl": "DTL", "dtl+": "DTL+"}


def add_ddp_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--ddp`` switch of ``bench`` (the other bench options keep their meaning; --batch is the global batch)."""
    parser.add_argument("--ddp", action="store_true",
                        help="Run 2 gloo processes on the CPU and print the bytes all-reduced per step "
                             "(measured by a DDP communication hook) for each method.")


def free_port() -> int:
    """A TCP port nobody listens on right now (bind to port 0 and let the system choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _count_bytes_hook(state, bucket):  # no annotations: DDP checks them, and this module's are strings
    """DDP communication hook: count the bucket's bytes, then all-reduce it (mean), like DDP's default."""
    buffer = bucket.buffer()
    state["bytes"] += buffer.numel() * buffer.element_size()
    state["buckets"] += 1
    work = dist.all_reduce(buffer.div_(dist.get_world_size()), async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


def _ddp_traffic(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                 labels: torch.Tensor, steps: int) -> dict[str, Any]:
    """Bytes and buckets DDP all-reduces per step, and rank 0's step time, after one warm-up step.

    The DDP wrapper lives only in here: once this returns, its gradient hooks are gone from ``model``.
    """
    ddp = DistributedDataParallel(model)
    state = {"bytes": 0, "buckets": 0}
    ddp.register_comm_hook(state, _count_bytes_hook)

    def ddp_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(ddp(images), labels).backward()
        optimizer.step()

    ddp_step()                              # warm-up (DDP settles its buckets), not counted
    state.update(bytes=0, buckets=0)
    t0 = time.perf_counter()
    for _ in range(steps):
        ddp_step()
    return {"ddp_bytes_per_step": state["bytes"] // steps,
            "ddp_buckets_per_step": state["buckets"] / steps,
            "step_seconds": (time.perf_counter() - t0) / steps}     # rank 0's wall-clock, after the warm-up


def _measure(method: str, options: dict[str, Any], rank: int) -> dict[str, Any]:
    torch.manual_seed(options["seed"])
    model = build_method_model(method, options["backbone"], options["num_classes"], options["image_size"],
                               rank=options["rank"], model_kwargs=options["model_kwargs"])
    h, w = input_hw(model)
    per_rank = max(1, options["batch"] // WORLD_SIZE)
    gen = torch.Generator().manual_seed(options["seed"] + rank)
    images = torch.randn(per_rank, 3, h, w, generator=gen)
    labels = torch.randint(0, options["num_classes"], (per_rank,), generator=gen)
    params = [p for p in model.parameters() if p.requires_grad]
    row: dict[str, Any] = {"method": method, "trainable": sum(p.numel() for p in params)}

    optimizer = torch.optim.AdamW(params, lr=1e-4)
    steps = options["steps"]
    row.update(_ddp_traffic(model, optimizer, images, labels, steps))

    if method in ("dtl", "dtl+"):           # the engine's own path: one flat all-reduce of the trainable grads
        engine = Distributed(rank=rank, world_size=WORLD_SIZE, backend="gloo")
        t0 = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images), labels).backward()
            engine.sync_gradients(params, per_rank, per_rank * WORLD_SIZE)
            optimizer.step()
        row["engine_bytes_per_step"] = engine.bytes_reduced // engine.steps_reduced
        row["engine_step_seconds"] = (time.perf_counter() - t0) / steps
    dist.barrier()
    return row


def _worker(rank: int, port: int, options: dict[str, Any], out: str) -> None:
    torch.set_num_threads(1)
    # the class token's gradient comes from an expand(): DDP copies it into its bucket and warns; harmless here
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE, timeout=timedelta(seconds=options["timeout"]))
    try:
        rows = [_measure(m, options, rank) for m in options["methods"]]
        if rank == 0:
            fileio.atomic_write_json(out, rows)      # a file of the parent's temporary folder
    finally:
        dist.destroy_process_group()


def measure_traffic(methods: list[str], backbone: str, batch: int = 2, steps: int = 1, image_size: int | None = None,
                    num_classes: int = 10, rank: int | None = None, seed: int = 0,
                    model_kwargs: dict[str, Any] | None = None, timeout: float = 1800.0) -> list[dict[str, Any]]:
    """Start 2 gloo processes, train each method ``steps`` steps under DDP, return one row per method."""
    options = dict(methods=methods, backbone=backbone, batch=batch, steps=max(1, steps), image_size=image_size,
                   num_classes=num_classes, rank=rank, seed=seed, model_kwargs=model_kwargs, timeout=timeout)
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rows.json")
        context = mp.start_processes(_worker, args=(free_port(), options, out), nprocs=WORLD_SIZE, join=False,
                                     start_method="spawn")
        deadline = time.monotonic() + timeout
        while not context.join(timeout=5):
            if time.monotonic() > deadline:
                for p in context.processes:
                    p.kill()
                raise RunError(f"The traffic benchmark did not finish within {timeout:g} s.")
        return json.loads(Path(out).read_text(encoding="utf-8"))


def format_traffic(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: bytes all-reduced per step and the ratio to full fine-tuning."""
    full = next((r["ddp_bytes_per_step"] for r in rows if r["method"] == "full"), None)
    lines = ["| method | trainable | all-reduced per step (DDP hook) | / full | step s |", "|---|---|---|---|---|"]

    def line(name: str, trainable: int, measured: int, seconds: float) -> str:
        ratio = f"{measured / full:.5f}" if full else "-"
        return f"| {name} | {trainable:,} | {format_bytes(measured)} ({measured:,} B) | {ratio} | {seconds:.2f} |"

    for r in rows:
        name = LABELS.get(r["method"], r["method"])
        lines.append(line(name, r["trainable"], r["ddp_bytes_per_step"], r["step_seconds"]))
        if "engine_bytes_per_step" in r:
            lines.append(line(f"{name}, engine's flat all-reduce", r["trainable"], r["engine_bytes_per_step"],
                              r["engine_step_seconds"]))
    return "\n".join(lines)


def run_ddp_bench(args: argparse.Namespace) -> int:
    """``bench --ddp``: measure and print the traffic table (or JSON)."""
    methods = [m for m in parse_methods(args.methods)]
    kwargs = json.loads(args.model_kwargs) if args.model_kwargs else None
    backbone = args.backbone or CPU_DEFAULT[0]   # gloo on the CPU: the bench's CPU default
    batch = CPU_DEFAULT[1] if args.batch is None else args.batch
    rows = measure_traffic(methods, backbone, batch=batch, steps=args.steps, image_size=args.image_size,
                           num_classes=args.num_classes, rank=args.rank, seed=args.seed, model_kwargs=kwargs)
    if args.json:
        print(json.dumps({"world_size": WORLD_SIZE, "backend": "gloo", "rows": rows}, indent=2))
    else:
        print(f"Bytes all-reduced per step, {WORLD_SIZE} gloo processes on the CPU, {backbone}:")
        print(format_traffic(rows))
    return 0

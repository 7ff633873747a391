"""DTL Studio's DTL step against the official DTL code's ViT forward, on the same weights and inputs.

The reference re-states the official implementation's ViT forward (Fu, Zhu, Wu, AAAI 2024; the
authors' ``models/vision_transformer.py``): every block's input goes through its own low-rank map
``x @ A.T @ B.T`` and is summed into one residual, and from block M on ``x * sigmoid(β x)`` of that
residual is added to the block output, all in one autograd forward. It runs on the very timm blocks,
A/B maps and head of our model, so both compute the same logits (checked) and only the DTL wiring
differs. Both train AdamW steps interleaved in one process (the order alternates), and the figure
is the median over repeats of each step's process CPU time (wall-clock on a GPU), so other programs
on the cores cancel out.

A third contender, the floor, is the same frozen blocks with no side path at all: the prefix, then
the blocks after M with autograd (as DTL needs, to reach its injections) and the head. No wiring of
the side network can step faster than the floor; ``wiring_vs_official`` says how much of the
official wiring's own cost (its step minus the floor) ours still pays.

    python -m benchmarks.official_dtl --backbone vit_small_patch16_224 --batch 16 --repeats 60
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from dtl_engine.sizing.memory_probe import SavedTensorCounter, model_state_tensors
from dtl_engine.model.dtl import DTLModel, build_model
from dtl_engine.bench.step_timer import keep_freed_memory, synchronize, time_step


class OfficialDTL(nn.Module):
    """The official ViT DTL forward on our model's frozen backbone, side maps and head (shared tensors)."""

    def __init__(self, ours: DTLModel) -> None:
        super().__init__()
        spec = ours.spec
        self.backbone = ours.backbone
        self.beta = spec.beta
        self.num_tokens = int(getattr(ours.backbone, "num_prefix_tokens", 1))
        self.tap_blocks = set(range(spec.tap_from, spec.depth))
        self.add_blocks = set(range(spec.inject_from, spec.depth))
        taps = ours.side_network.taps
        # the official LoRALinear: lora_A (r × d), lora_B (d × r) as bare parameters
        self.lora_A = nn.ParameterList([nn.Parameter(taps[str(i)].down.weight.detach().clone())
                                        for i in range(spec.depth)])
        self.lora_B = nn.ParameterList([nn.Parameter(taps[str(i)].up.weight.detach().clone())
                                        for i in range(spec.depth)])
        self.head = nn.Linear(ours.head.in_features, ours.head.out_features)
        self.head.load_state_dict(ours.head.state_dict())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        bb = self.backbone
        x = bb.norm_pre(bb.patch_drop(bb._pos_embed(bb.patch_embed(images))))
        residuals: Any = 0.0
        for bid, block in enumerate(bb.blocks):
            if bid in self.tap_blocks:
                residuals = residuals + x @ self.lora_A[bid].T @ self.lora_B[bid].T
            x = block(x)
            if bid in self.add_blocks:
                x = x + residuals * torch.sigmoid(residuals * self.beta)
        x = x[:, self.num_tokens:].mean(dim=1)
        return self.head(bb.norm(x))


class FrozenBlocksOnly(nn.Module):
    """The floor: our model's frozen prefix, then the blocks after M under autograd, pooling and head."""

    def __init__(self, ours: DTLModel) -> None:
        super().__init__()
        self.ours = ours
        self.head = nn.Linear(ours.head.in_features, ours.head.out_features)
        self.head.load_state_dict(ours.head.state_dict())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        ours, adapter = self.ours, self.ours._adapter
        prefix = ours.forward_prefix(images)
        x = prefix["block_out"].requires_grad_()   # gradients flow back through every later block
        for i in range(ours.spec.inject_from + 1, len(adapter.blocks)):
            x = adapter.blocks[i](adapter.enter_block(i, x))
        return self.head(adapter.pool(x))

    def parameters(self, recurse: bool = True):  # type: ignore[override]
        return self.head.parameters(recurse)    # only the head trains (the backbone is ours, frozen)


def make_pair(backbone: str, num_classes: int = 10, seed: int = 0) -> tuple[DTLModel, OfficialDTL]:
    """Our DTL model (random weights, non-zero up maps so the side network matters) and the reference."""
    torch.manual_seed(seed)
    ours = build_model(backbone, num_classes, weights="random")
    with torch.no_grad():
        for tap in ours.side_network.taps.values():
            tap.up.weight.normal_(0.0, 0.02)
    return ours.train(), OfficialDTL(ours).train()


def _stepper(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.05)

    def step() -> None:
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def saved_bytes(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> int:
    """Bytes autograd saves for backward in one training forward (parameters excluded)."""
    with SavedTensorCounter(model_state_tensors(model)) as counter:
        loss = F.cross_entropy(model(images), labels)
    del loss
    return counter.bytes


def compare(backbone: str = "vit_small_patch16_224", batch: int = 16, repeats: int = 15, warmup: int = 2,
            seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Interleaved steps of ours, the reference and the floor; medians of their step seconds and saved bytes.

    Seconds are process CPU time on the CPU and wall-clock (synchronised) on a GPU.
    """
    dev = torch.device(device)
    ours, official = make_pair(backbone, seed=seed)
    ours, official = ours.to(dev), official.to(dev)
    floor = FrozenBlocksOnly(ours).to(dev)
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, *ours.spec.image_size, generator=g).to(dev)
    labels = torch.randint(0, ours.spec.num_classes, (batch,), generator=g).to(dev)
    with torch.no_grad():
        same = torch.allclose(ours(images), official(images), rtol=1e-4, atol=1e-5)
    steps = {name: _stepper(model, images, labels)
             for name, model in (("ours", ours), ("official", official), ("floor", floor))}
    for _ in range(warmup):
        for step in steps.values():
            step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for rep in range(repeats):
        for name in names[rep % 3:] + names[:rep % 3]:   # each takes each place in the order in turn
            wall, cpu = time_step(steps[name], lambda: synchronize(dev))
            seconds[name].append(wall if dev.type == "cuda" else cpu)

    def paired(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(seconds[a], seconds[b])]

    ratios = paired("ours", "official")
    med = {k: statistics.median(v) for k, v in seconds.items()}
    bytes_ = {"ours": saved_bytes(ours, images, labels), "official": saved_bytes(official, images, labels)}
    return {"backbone": backbone, "batch": batch, "repeats": repeats, "device": str(dev),
            "clock": "wall" if dev.type == "cuda" else "process CPU", "threads": torch.get_num_threads(),
            "same_logits": bool(same), "seconds": med,
            "ratio": med["ours"] / med["official"], "paired_ratio_median": statistics.median(ratios),
            "paired_ratio_quartiles": statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3,
            "floor_vs_official": statistics.median(paired("floor", "official")),
            "wiring_vs_official": (med["ours"] - med["floor"]) / (med["official"] - med["floor"])
            if med["official"] > med["floor"] else None,
            "saved_bytes": bytes_, "saved_ratio": bytes_["ours"] / bytes_["official"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="vit_small_patch16_224")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=60, help="Interleaved measured steps per implementation.")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (CUDA: wall-clock seconds).")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: CPU time without spin-waiting).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # no page faults in the measured steps: their cost varies from run to run
    r = compare(args.backbone, args.batch, args.repeats, device=args.device)
    if args.json:
        print(json.dumps(r))
        return 0
    q = r["paired_ratio_quartiles"]
    print(f"{r['backbone']}, batch {r['batch']}, {r['threads']} thread(s), {r['repeats']} interleaved steps each; "
          f"same logits: {r['same_logits']}")
    sec, wiring = r["seconds"], r["wiring_vs_official"]
    print(f"step s ({r['clock']}, median): ours {sec['ours']:.3f}, official {sec['official']:.3f}, "
          f"floor {sec['floor']:.3f}; ours / official = {r['ratio']:.3f} (paired median "
          f"{r['paired_ratio_median']:.3f}, quartiles {q[0]:.3f}–{q[2]:.3f})")
    print(f"floor (frozen blocks, no side path) / official = {r['floor_vs_official']:.3f}; ours pays "
          f"{'-' if wiring is None else f'{wiring:.2f}'} of the official wiring's cost above the floor")
    print(f"saved for backward: ours {r['saved_bytes']['ours']:,} B, official {r['saved_bytes']['official']:,} B; "
          f"ratio {r['saved_ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

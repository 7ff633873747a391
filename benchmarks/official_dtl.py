"""DTL Studio's DTL step against the official DTL code's ViT forward, on the same weights and inputs.

The reference re-states the official implementation's ViT forward (Fu, Zhu, Wu, AAAI 2024; the
authors' ``models/vision_transformer.py``): every block's input goes through its own low-rank map
``x @ A.T @ B.T`` and is summed into one residual, and from block M on ``x * sigmoid(β x)`` of that
residual is added to the block output, all in one autograd forward. It runs on the very timm blocks,
A/B maps and head of our model, so both compute the same logits (checked) and only the DTL wiring
differs. Both train AdamW steps interleaved in one process (the order alternates), and the figure
is the median over repeats of each step's process CPU time, so other programs on the cores cancel out.

    python -m benchmarks.official_dtl --backbone vit_small_patch16_224 --batch 16 --repeats 15
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

from dtl_engine.memory_probe import SavedTensorCounter, model_state_tensors
from dtl_engine.model import DTLModel, build_model
from dtl_engine.step_timer import keep_freed_memory, time_step


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
            seed: int = 0) -> dict[str, Any]:
    """Interleaved steps of ours and the reference; medians of process CPU seconds and saved bytes."""
    ours, official = make_pair(backbone, seed=seed)
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, *ours.spec.image_size, generator=g)
    labels = torch.randint(0, ours.spec.num_classes, (batch,), generator=g)
    with torch.no_grad():
        same = torch.allclose(ours(images), official(images), rtol=1e-4, atol=1e-5)
    steps = {"ours": _stepper(ours, images, labels), "official": _stepper(official, images, labels)}
    for _ in range(warmup):
        for step in steps.values():
            step()
    cpu: dict[str, list[float]] = {"ours": [], "official": []}
    for rep in range(repeats):
        order = ("ours", "official") if rep % 2 == 0 else ("official", "ours")
        for name in order:
            cpu[name].append(time_step(steps[name])[1])
    ratios = [a / b for a, b in zip(cpu["ours"], cpu["official"])]
    med = {k: statistics.median(v) for k, v in cpu.items()}
    bytes_ = {"ours": saved_bytes(ours, images, labels), "official": saved_bytes(official, images, labels)}
    return {"backbone": backbone, "batch": batch, "repeats": repeats, "threads": torch.get_num_threads(),
            "same_logits": bool(same), "cpu_seconds": med,
            "cpu_ratio": med["ours"] / med["official"], "paired_ratio_median": statistics.median(ratios),
            "paired_ratio_quartiles": statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3,
            "saved_bytes": bytes_, "saved_ratio": bytes_["ours"] / bytes_["official"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="vit_small_patch16_224")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15, help="Interleaved measured steps per implementation.")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: CPU time without spin-waiting).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # no page faults in the measured steps: their cost varies from run to run
    r = compare(args.backbone, args.batch, args.repeats)
    if args.json:
        print(json.dumps(r))
        return 0
    q = r["paired_ratio_quartiles"]
    print(f"{r['backbone']}, batch {r['batch']}, {r['threads']} thread(s), {r['repeats']} interleaved steps each; "
          f"same logits: {r['same_logits']}")
    print(f"step CPU s (median): ours {r['cpu_seconds']['ours']:.3f}, official {r['cpu_seconds']['official']:.3f}; "
          f"ours / official = {r['cpu_ratio']:.3f} (paired median {r['paired_ratio_median']:.3f}, "
          f"quartiles {q[0]:.3f}–{q[2]:.3f})")
    print(f"saved for backward: ours {r['saved_bytes']['ours']:,} B, official {r['saved_bytes']['official']:,} B; "
          f"ratio {r['saved_ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

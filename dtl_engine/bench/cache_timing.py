"""Measure what the prefix feature cache saves: epoch time with and without it.

    python -m dtl_engine.bench.cache_timing [--per-class 60] [--epochs 3] [--threads 1]

Trains the same DTL run twice on the built-in digits (a tiny random ViT,
``test_vit``, by default 32 px inputs in 4 px patches = 64 tokens, 6 blocks)
with ``cache_features`` off and on, and prints the seconds of the first epoch
and the mean of the later ones. Runs go to a temporary folder that is removed.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from statistics import mean

import torch

from dtl_engine.config import TrainConfig
from dtl_engine.runs.folder import RunFolder
from dtl_engine.data import ensure_sample_dataset
from dtl_engine.training.runner import train


def _subset(source: Path, dest: Path, per_class: int) -> Path:
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (dest / folder.name).mkdir(parents=True)
        for path in sorted(folder.glob("*.png"))[:per_class]:
            shutil.copy(path, dest / folder.name / path.name)
    return dest


def measure(per_class: int = 60, epochs: int = 3, image_size: int = 32, patch: int = 4,
            batch_size: int = 32) -> dict[str, list[float]]:
    """Per-epoch seconds of the same run without and with the feature cache."""
    seconds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = _subset(ensure_sample_dataset(), Path(tmp) / "digits", per_class)
        for cache in ("off", "on"):
            config = TrainConfig(data_dir=str(data), backbone="test_vit", weights="random", epochs=epochs,
                                 batch_size=batch_size, image_size=image_size, augment="none", cache_features=cache)
            run_dir = Path(tmp) / f"run_cache_{cache}"
            train(config, run_dir=run_dir, model_kwargs=dict(patch_size=patch, img_size=image_size))
            metrics = RunFolder(run_dir).read_metrics()
            seconds[cache] = [m["seconds"] for m in metrics if not m.get("first_model")]   # epochs only
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=60, help="digit images per class (10 classes)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--patch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = measure(args.per_class, args.epochs, args.image_size, args.patch)
    print(f"digits 10 x {args.per_class} images, test_vit {args.image_size}px / patch {args.patch}, "
          f"{args.threads} thread(s), epoch seconds (each includes validation):")
    for cache, secs in result.items():
        later = f"{mean(secs[1:]):.2f}" if len(secs) > 1 else "-"
        each = ", ".join(f"{s:.2f}" for s in secs)
        print(f"  cache {cache:3}: epoch 1 {secs[0]:.2f} s, later epochs {later} s  ({each})")
    if len(result["off"]) > 1:
        print(f"  later epochs are {mean(result['off'][1:]) / mean(result['on'][1:]):.1f}x faster with the cache")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

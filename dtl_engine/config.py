"""The training configuration: one flat dataclass, a help text per field, JSON round-trip."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from dtl_engine.errors import RunError
from dtl_engine.recipes import RECIPES, recipe_values
from dtl_engine.registry import METHOD_NAMES
from dtl_engine import fileio

METHODS = METHOD_NAMES                  # dtl, dtl+, linear (see dtl_engine.registry)
AUGMENTS = ("auto", "none", "light-noflip", "light", "standard")
RESIZES = ("backbone", "squash")
NORMALIZES = ("backbone", "0.5")
KEEPS = ("best", "last")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")


SEED_MAX = 2 ** 32 - 1                   # numpy's seeds are unsigned 32-bit numbers
# The learning rate may be absurd (training then stops with a sentence when it diverges) but not beyond what
# float32 holds: 1e39 overflows in the optimizer before any check could speak.


def _f(default: Any, help: str, *, bounds: tuple[float, float] | None = None, label: str = "", **kw: Any) -> Any:
    """A field with its help text and, for a number, the range it must lie in (inclusive) and its name in a
    sentence. The ranges live here only: the command line and the app's spin boxes read them."""
    metadata: dict[str, Any] = {"help": help}
    if bounds is not None:
        metadata.update(bounds=bounds, label=label)
    if callable(default) and not isinstance(default, type):
        return field(default_factory=default, metadata=metadata, **kw)
    return field(default=default, metadata=metadata, **kw)


@dataclass
class TrainConfig:
    data_dir: str = _f("", "Folder of images, one sub-folder per class (or train/ val/ [test/]).")
    backbone: str = _f("vit_base_patch16_224.augreg2_in21k_ft_in1k", "Any supported timm model name.")
    weights: str = _f("hub", "'hub' (download, cached), 'random', or a path to a local weights file.")
    method: str = _f("dtl", "'dtl', 'dtl+' (adds a depthwise conv on the patch grid) or 'linear' (probe baseline).")
    rank: int | None = _f(None, "Rank r of the low-rank side maps; None = the family default (ViT 2, Swin 4).",
                          bounds=(1, 256), label="rank")
    inject_from: int | None = _f(None, "First block M whose output gets side information; None = family default.",
                                 bounds=(0, 1000), label="first injection block")
    beta: float = _f(100.0, "Steepness β of the swish gate on the side network's output.",
                     bounds=(0.1, 1000.0), label="swish steepness β")
    fusion_kernel: int | None = _f(None, "DTL+ depthwise kernel size; None = family default (ViT 3, Swin 5).",
                                   bounds=(1, 31), label="DTL+ kernel size")
    recipe: str = _f("quick", "Training recipe that fills the settings left open: 'quick' (short run, automatic "
                              "learning rate and augmentation) or 'paper' (the DTL authors' official recipe).")
    epochs: int = _f(None, "Number of passes over the training images (recipe: quick 20, paper 100).",
                     bounds=(1, 10000), label="number of epochs")
    warmup_epochs: float = _f(None, "Epochs of linear learning-rate warm-up (recipe: quick 2, paper 10).",
                              bounds=(0.0, 10000.0), label="number of warm-up epochs")
    batch_size: int = _f(32, "Images per optimisation step.", bounds=(1, 65536), label="batch size")
    lr: float | str = _f(None, "Peak learning rate (AdamW), or 'auto': a short search on part of the training "
                               "images picks it.", bounds=(1e-12, 1e30), label="learning rate")
    weight_decay: float = _f(0.05, "AdamW weight decay (never applied to biases and 1-D parameters).",
                             bounds=(0.0, 10.0), label="weight decay")
    label_smoothing: float = _f(0.0, "Label smoothing of the cross-entropy loss (0 = off).",
                                bounds=(0.0, 0.99), label="label smoothing")
    augment: str = _f(None, "Augmentation: 'auto' (a short search decides, flips included), 'none', 'light-noflip', "
                            "'light' (crop and flips) or 'standard'.")
    image_size: int | None = _f(None, "Input side in pixels; None = the backbone's own size.",
                                bounds=(1, 4096), label="image size in pixels")
    precision: str = _f("auto", "'auto' (bf16/fp16 on GPUs that support it, fp32 on CPU), 'fp32', 'bf16', 'fp16'.")
    device: str = _f("auto", "'auto' (CUDA, then Apple MPS, then CPU), or force 'cuda', 'mps', 'cpu'.")
    seed: int = _f(0, "Random seed for the split, initialisation and data order.", bounds=(0, SEED_MAX), label="seed")
    val_fraction: float = _f(0.2, "Share of each class held out for validation (flat folder layout only).",
                             bounds=(0.01, 0.99), label="validation share")
    drop_path: float = _f(None, "Stochastic depth rate on the frozen backbone "
                                "(recipe: quick 0, paper 0.1 ViT / 0.3 Swin).",
                                bounds=(0.0, 0.99), label="drop-path rate")
    resize: str = _f(None, "Image resize: 'backbone' (its own resize and centre crop) or 'squash' (to the input "
                           "size, no crop; the paper recipe).")
    normalize: str = _f(None, "Pixel normalisation: 'backbone' (its own mean and std) or '0.5' (mean = std = 0.5 "
                              "for every family; the paper recipe).")
    keep: str = _f(None, "Which epoch is the result: 'best' (validation accuracy) or 'last' (the paper recipe).")
    drop_last: bool = _f(None, "Drop the last incomplete batch of each epoch (the paper recipe).")
    warmup_prefix: bool = _f(None, "Warm-up before the cosine (True) or over its start as in the official code "
                                   "(False).")
    checkpoint_blocks: bool = _f(False, "Memory saver: recompute blocks after M in backward (slower, less memory).")
    low_precision_taps: bool = _f(False, "Memory saver: keep the side network's tap inputs in bf16.")
    half_frozen_weights: bool = _f(True, "Memory saver: store the frozen backbone's weights in bf16 / fp16 when "
                                         "training in that precision (same results; no effect in fp32).")
    cache_features: str = _f("auto", "Cache the frozen prefix outputs across epochs: "
                                     "'auto' (when augment is 'none'), 'on', 'off'.")
    cache_budget_mb: int = _f(2048, "Memory budget of the prefix cache; "
                                    "beyond it the cache spills into the run folder.",
                                    bounds=(0, 16_777_216), label="feature cache budget in MB")
    early_stopping: int | None = _f(None, "Stop after this many epochs without validation improvement; None = never.",
                                    bounds=(0, 10000), label="early stopping patience")
    num_workers: int | None = _f(None, "Data-loading worker processes; None = automatic (cores - 1, at most 8), "
                                       "0 = load in the training thread.",
                                       bounds=(0, 256), label="number of loader workers")
    max_steps: int | None = _f(None, "Stop after this many optimisation steps in total (quick checks); "
                                     "None = no limit.", bounds=(1, 10 ** 12), label="step limit")

    def __post_init__(self) -> None:
        if self.recipe in RECIPES:      # an unknown recipe is reported by validate()
            for name, value in recipe_values(self.recipe, self.backbone).items():
                if getattr(self, name) is None:
                    setattr(self, name, value)
        if isinstance(self.lr, str) and self.lr != "auto":
            try:
                self.lr = float(self.lr)
            except ValueError:
                pass                    # reported by validate()
        self.validate()

    @property
    def lr_auto(self) -> bool:
        """True while the learning rate is still to be found by the search."""
        return self.lr == "auto"

    def validate(self) -> None:
        """Raise :class:`RunError` with a sentence for the first bad value."""
        if self.recipe not in RECIPES:      # first: an unknown recipe leaves its settings empty
            raise RunError(f"The recipe must be one of {', '.join(RECIPES)}, not '{self.recipe}'.")
        checks = [
            (self.method in METHODS, f"Method must be one of {', '.join(METHODS)}, not '{self.method}'."),
            (self.augment in AUGMENTS, f"Augmentation must be one of {', '.join(AUGMENTS)}, not '{self.augment}'."),
            (self.resize in RESIZES, f"Resize must be one of {', '.join(RESIZES)}, not '{self.resize}'."),
            (self.normalize in NORMALIZES, f"Normalisation must be one of {', '.join(NORMALIZES)}."),
            (self.keep in KEEPS, "The result epoch must be 'best' or 'last'."),
            (self.precision in PRECISIONS,
             f"Precision must be one of {', '.join(PRECISIONS)}, not '{self.precision}'."),
            (self.device in DEVICES, f"Device must be one of {', '.join(DEVICES)}, not '{self.device}'."),
            (self.cache_features in ("auto", "on", "off"), "Feature cache must be 'auto', 'on' or 'off'."),
            (self.epochs is None or not _is_number(self.epochs) or self.epochs >= 1, "Train for at least one epoch."),
        ]
        for ok, message in checks:
            if not ok:
                raise RunError(message)
        for f in fields(self):
            problem = range_problem(f.name, getattr(self, f.name))
            if problem:
                raise RunError(problem)
        recipe_warmup = recipe_values(self.recipe, self.backbone)["warmup_epochs"]
        if self.warmup_epochs > self.epochs and self.warmup_epochs != recipe_warmup:
            # the schedule ends a warm-up as long as the run one step early, and shortens the recipe's own
            # warm-up to fit a short run; a longer one given by hand is a mistake
            raise RunError(f"The warm-up ({_show(self.warmup_epochs)} epochs) cannot be longer than the run "
                           f"({self.epochs} epochs).")

    @staticmethod
    def bounds(name: str) -> tuple[float, float]:
        """The inclusive range of a numeric field (the app's spin boxes use it)."""
        return next(f.metadata["bounds"] for f in fields(TrainConfig) if f.name == name)

    # --- JSON round-trip -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            fileio.atomic_write_bytes(fileio.check_target(path, overwrite=True), text.encode("utf-8"))
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "TrainConfig":
        p = Path(text_or_path)
        text = p.read_text(encoding="utf-8") if p.suffix == ".json" and p.exists() else str(text_or_path)
        return cls.from_dict(json.loads(text))

    @staticmethod
    def help(name: str) -> str:
        """The plain-words help text of one field (tooltips, --help)."""
        return next(f.metadata["help"] for f in fields(TrainConfig) if f.name == name)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def range_problem(name: str, value: Any) -> str | None:
    """The sentence saying why ``value`` is outside the range of the field ``name``, or None when it fits
    (``None`` and 'auto' fit: they mean the default or the search)."""
    spec = next(f for f in fields(TrainConfig) if f.name == name)
    if "bounds" not in spec.metadata or value is None or value == "auto":
        return None
    lo, hi = spec.metadata["bounds"]
    whole = "float" not in str(spec.type)
    label = spec.metadata["label"]
    if not _is_number(value) or (whole and not isinstance(value, int)):
        kind = "a whole number" if whole else "a number"
        return f"The {label} must be {kind} between {_show(lo)} and {_show(hi)}, not {value!r}."
    if not (math.isfinite(value) and lo <= value <= hi):
        return f"The {label} must be between {_show(lo)} and {_show(hi)}, not {_show(value)}."
    return None


def _show(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value) and abs(value) < 1e15):
        return f"{int(value)}"
    return f"{value:g}"

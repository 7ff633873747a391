"""Training recipes: named sets of defaults that fill every setting a person left open.

* ``quick`` (the default): a short run that finds its own learning rate and augmentation
  (``lr="auto"``, ``augment="auto"``, see :mod:`dtl_engine.training.autotune`) and keeps the best epoch.
* ``paper``: the DTL authors' official VTAB-1k recipe, setting by setting (their training
  scripts): 100 epochs with 10 warm-up epochs inside the cosine schedule, AdamW with weight
  decay 0.05 (none on biases), batch 32 with the last partial batch dropped, drop path (ViT 0.1,
  Swin 0.3: the middle of the authors' per-task ranges), a squash resize to the input size, no
  augmentation, mean = std = 0.5 for every family, and the last epoch as the result. The learning
  rate, which the authors tuned per task between 1e-4 and 1e-2, is searched in that range.

  Deliberate differences, stated so nobody has to rediscover them: the schedule is stepped per
  update instead of per epoch; the official script's 10 extra epochs at the 1e-8 floor after the
  cosine (they change nothing) are not run; mixed precision follows ``precision`` ('auto' uses
  fp16/bf16 on GPUs, fp32 on CPUs, where fp16 autocast does not exist).

A value given explicitly (not ``None``) always wins over the recipe.
"""
from __future__ import annotations

from typing import Any

RECIPES = ("quick", "paper")

# Settings every recipe fills when they are left as None.
_QUICK: dict[str, Any] = dict(epochs=20, warmup_epochs=2.0, lr="auto", augment="auto", drop_path=0.0,
                              resize="backbone", normalize="backbone", keep="best", drop_last=False,
                              warmup_prefix=True)
# (AdamW, weight decay 0.05 without biases, batch 32 and no label smoothing are every recipe's defaults.)
_PAPER: dict[str, Any] = dict(epochs=100, warmup_epochs=10.0, lr="auto", augment="none", resize="squash",
                              normalize="0.5", keep="last", drop_last=True, warmup_prefix=False)
_PAPER_DROP_PATH = {"vit": 0.1, "swin": 0.3}
# The settings a recipe decides when they are left open (None).
RECIPE_FIELDS = tuple(sorted(set(_QUICK) | set(_PAPER) | {"drop_path"}))

# The learning rates the automatic search may choose, per recipe (the paper's: the authors' range).
# Quick reaches 3e-2: the best fixed rate on the 64 px digits and on the LFW faces; a run that diverges
# there backs off to its best weights at a third of the rate (training/backoff.py). For DTL these are the
# fallback of a run too short for trials of the whole model, which have their own ladder (side_trials.py).
LR_CANDIDATES: dict[str, tuple[float, ...]] = {
    "quick": (1e-3, 3e-3, 1e-2, 3e-2),
    "paper": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
}
# The linear probe trains one linear layer on fixed features: it takes larger steps.
LINEAR_LR_CANDIDATES: dict[str, tuple[float, ...]] = {
    "quick": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
    "paper": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
}

# The data settings a recipe may change; applied to the backbone's own data config.
NORMALIZE_05 = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
SQUASH = {"crop_mode": "squash", "crop_pct": 1.0}


def recipe_values(recipe: str, backbone: str) -> dict[str, Any]:
    """The values ``recipe`` gives to settings left open (the family decides the paper's drop path)."""
    if recipe == "paper":
        values = dict(_PAPER)
        values["drop_path"] = _PAPER_DROP_PATH.get(_family(backbone), 0.1)
        return values
    return dict(_QUICK)


def lr_candidates(recipe: str, method: str) -> tuple[float, ...]:
    """The learning rates the automatic search compares for ``recipe`` and ``method``."""
    table = LINEAR_LR_CANDIDATES if method == "linear" else LR_CANDIDATES
    return table.get(recipe, table["quick"])


def data_overrides(resize: str, normalize: str) -> dict[str, Any]:
    """Changes to the backbone's data config for the ``resize`` / ``normalize`` settings."""
    out: dict[str, Any] = {}
    if resize == "squash":
        out.update(SQUASH)
    if normalize == "0.5":
        out.update(NORMALIZE_05)
    return out


def _family(backbone: str) -> str:
    # By name only: resolving needs no model and must not fail for names checked later.
    arch = backbone.split(".", 1)[0].split("/")[-1]
    return "swin" if arch.startswith("swin") else "vit"

"""The one registry of backbone families and training methods (plain data; imports neither torch nor timm).

What each family supports and its defaults live here; the engine's adapters
(:mod:`dtl_engine.model.adapters`) bind a family to a built timm model, and the app's
backbone catalog (``app/backbones.py``) and Model step read the same entries.
A new family is one :class:`FamilySpec` here plus one adapter class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class MethodSpec:
    """One way to adapt a frozen backbone."""

    key: str                    # TrainConfig.method
    label: str                  # what a person reads
    summary: str                # one or two sentences for the Model step
    side_network: bool          # trains DTL's low-rank side network (rank, injection start, β apply)
    fusion_kernel: bool         # uses the DTL+ depthwise kernel


METHODS: dict[str, MethodSpec] = {m.key: m for m in (
    MethodSpec("dtl", "DTL", "A frozen backbone plus a tiny side network of low-rank maps added back into the "
                             "later blocks (the paper's method). Little memory, strong accuracy.", True, False),
    MethodSpec("dtl+", "DTL+", "DTL plus one small depthwise convolution over the patch grid: usually a little "
                               "more accurate for a little more memory.", True, True),
    MethodSpec("linear", "Linear probe", "Only a new classifier on the frozen features: the fastest, simplest "
                                         "baseline.", False, False),
)}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
#: The peers the benchmark and the memory probe compare with; the product never trains them.
PEER_METHODS: tuple[str, ...] = ("full", "lora")
#: Methods whose backbone weights never train (they may be stored in half precision).
FROZEN_BACKBONE_METHODS: tuple[str, ...] = METHOD_NAMES
#: Methods that train DTL's side network.
SIDE_NETWORK_METHODS: tuple[str, ...] = tuple(k for k, m in METHODS.items() if m.side_network)


@dataclass(frozen=True)
class FamilySpec:
    """One backbone family: which timm names belong to it, what it supports, its paper defaults."""

    name: str                           # "vit" | "swin"
    label: str                          # what a person reads
    prefixes: tuple[str, ...]           # timm architecture prefixes that belong to it
    methods: tuple[str, ...]            # keys of METHODS it supports
    rank: int                           # default rank r of the side network
    fusion_kernel: int                  # default DTL+ kernel size (odd)
    taps_from_stage: int                # the stage whose first block is tapped first (0 = the first block)
    injection_rule: str                 # where taps and injections start, in words
    default_input_size: int             # pixels, when the pretrained config does not say
    normalisation: str                  # where the input mean / std come from

    def default_taps(self, stage_depths: Sequence[int]) -> tuple[int, int]:
        """(first tap block, first injection block M) for a backbone with these stage depths.

        Taps start at stage ``taps_from_stage`` (when the backbone has that many stages);
        injections start halfway through the tapped blocks (the paper: ViT-B M = 6, Swin-B M = 14).
        """
        total = sum(stage_depths)
        later = len(stage_depths) > self.taps_from_stage
        tap_from = sum(stage_depths[:self.taps_from_stage]) if later else 0
        return tap_from, tap_from + (total - tap_from) // 2


_TIMM_NORMALISATION = "the mean and std of the chosen weights' timm pretrained config"

FAMILIES: dict[str, FamilySpec] = {f.name: f for f in (
    FamilySpec("vit", "ViT / DeiT", ("vit_", "deit3_", "deit_", "test_vit"), METHOD_NAMES, rank=2, fusion_kernel=3,
               taps_from_stage=0,
               injection_rule="taps on all blocks, side information added from block depth//2 on",
               default_input_size=224, normalisation=_TIMM_NORMALISATION),
    FamilySpec("swin", "Swin (V1)", ("swin_",), METHOD_NAMES, rank=4, fusion_kernel=5,
               taps_from_stage=2,
               injection_rule="taps from the third stage on, side information added halfway through the "
                              "remaining blocks; the side state restarts at every stage",
               default_input_size=224, normalisation=_TIMM_NORMALISATION),
)}

#: Known families that are refused, with the reason a person can act on (checked before FAMILIES).
REFUSED: tuple[tuple[str, str], ...] = (
    ("swinv2", "Swin V2 uses scaled cosine attention and a different block layout; pick a swin_* (V1) model"),
    ("swin_s3", "AutoFormer-searched Swin blocks are not adapted; pick a swin_* model"),
    ("eva", "EVA models use their own block type; pick a vit_* model"),
    ("beit", "BEiT uses relative position biases in its own block type; pick a vit_* model"),
    ("vitamin", "ViTamin has convolutional stages; pick a vit_* model"),
)

#: Name prefixes of convolutional networks, to say why they cannot be used.
CONV_HINTS: tuple[str, ...] = (
    "resnet", "resnext", "efficientnet", "convnext", "mobilenet", "regnet", "densenet", "vgg", "inception",
    "xception", "mixnet", "ghostnet", "rexnet", "dla", "dpn", "hrnet", "nfnet", "cspnet", "cs3", "darknet",
    "repvgg", "mnasnet", "fbnet", "tf_efficientnet", "lcnet", "hgnet", "csp", "edgenext", "res2net", "senet",
    "seresnet", "skresnet", "tresnet", "selecsls")


def architecture(name: str) -> str:
    """The architecture part of a timm name (drops a '.pretrained_tag' and a hub prefix)."""
    return name.split(".", 1)[0].split("/")[-1]


def refusal(name: str) -> str | None:
    """Why a known-but-unsupported family is refused, or None."""
    arch = architecture(name)
    return next((reason for prefix, reason in REFUSED if arch.startswith(prefix)), None)


def family_of(name: str) -> str | None:
    """The family key of a timm name from the name alone ('vit', 'swin'), or None when not supported."""
    if refusal(name) is not None:
        return None
    arch = architecture(name)
    for family in FAMILIES.values():
        if arch.startswith(family.prefixes):
            return family.name
    return None


def family_spec(name: str) -> FamilySpec | None:
    """The :class:`FamilySpec` of a timm name, or None when its family is not supported."""
    key = family_of(name)
    return FAMILIES[key] if key is not None else None

"""Getting a timm backbone with the right weights: random, from the hub (cached), or a local file.

Every failure becomes a :class:`WeightsError` whose message is one sentence a person can act on.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from .errors import BackboneError, WeightsError

LOCAL_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".npz")

# Fail fast when the hub is unreachable instead of waiting on long default timeouts.
_HUB_TIMEOUT_S = 10


def _limit_hub_timeouts() -> None:
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(_HUB_TIMEOUT_S))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(_HUB_TIMEOUT_S))
    try:  # the hub reads these once at import time; keep them short if it is already imported
        from huggingface_hub import constants

        constants.HF_HUB_ETAG_TIMEOUT = min(int(constants.HF_HUB_ETAG_TIMEOUT), _HUB_TIMEOUT_S)
        constants.HF_HUB_DOWNLOAD_TIMEOUT = min(int(constants.HF_HUB_DOWNLOAD_TIMEOUT), _HUB_TIMEOUT_S)
    except Exception:  # pragma: no cover - hub library missing or changed; timm still works without it
        pass


def is_local_weights(weights: str) -> bool:
    """True when ``weights`` names a file rather than 'hub' / 'random'."""
    return weights not in ("hub", "random")


def create_backbone(name: str, weights: str = "hub", **timm_kwargs: Any) -> nn.Module:
    """``timm.create_model(name, ...)`` with weights from 'hub', 'random' or a local file path.

    Raises:
        WeightsError: the weights cannot be downloaded, found, read or do not fit the model.
    """
    import timm

    if weights == "random":
        return timm.create_model(name, pretrained=False, **timm_kwargs)
    if weights == "hub":
        _limit_hub_timeouts()
        try:
            return timm.create_model(name, pretrained=True, **timm_kwargs)
        except (BackboneError, TypeError):
            raise
        except Exception as exc:  # network, offline mode, missing config: all mean "no weights"
            raise WeightsError(
                f"The pretrained weights of '{name}' could not be downloaded ({_short(exc)}); "
                "connect to the internet once, choose a local weights file, or use random weights."
            ) from exc
    path = Path(weights).expanduser()
    if path.suffix.lower() not in LOCAL_SUFFIXES:
        raise WeightsError(
            f"'{weights}' is not a weights file DTL Studio can read; use a {', '.join(LOCAL_SUFFIXES)} file, "
            "'hub' or 'random'."
        )
    if not path.is_file():
        raise WeightsError(f"The weights file '{path}' does not exist; choose another file or use random weights.")
    try:
        # timm's own loader: its per-model key filters, weights_only torch.load, .npz for JAX ViTs
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **timm_kwargs)
    except Exception as exc:
        raise WeightsError(
            f"The weights file '{path.name}' could not be loaded into '{name}' ({_short(exc)}); "
            "check that it belongs to this backbone, or use random weights."
        ) from exc


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def weights_cached(backbone: str) -> bool:
    """True when the pretrained weights of ``backbone`` are already in the local download cache."""
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(backbone)  # a bare architecture name resolves to its default tag
    except Exception:
        return False
    if cfg is None:
        return False
    hf_id = getattr(cfg, "hf_hub_id", None)
    if hf_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = hf_id.partition("@")
        filenames = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else [
            "open_clip_model.safetensors", "model.safetensors", "pytorch_model.bin"]
        for filename in filenames:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str) and os.path.isfile(found):
                return True
    url = getattr(cfg, "url", None)
    if url:
        import torch.hub

        return os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url)))
    return False

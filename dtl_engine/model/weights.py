"""Getting a timm backbone with the right weights: random, from the hub (cached), or a local file.

Every failure becomes a :class:`WeightsError` whose message is one sentence a person can act on.
"""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from torch import nn
import timm
import torch
from timm.models import get_pretrained_cfg

from dtl_engine.errors import BackboneError, WeightsError
from dtl_engine.fileio import NOT_REGULAR

LOCAL_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".npz")

# Fail fast when the hub is unreachable instead of waiting on long default timeouts.
_HUB_TIMEOUT_S = 10
_PROBE_TIMEOUT_S = 3.0


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
    if weights == "random":
        return timm.create_model(name, pretrained=False, **timm_kwargs)
    if weights == "hub":
        return _create_from_hub(name, timm_kwargs)
    path = Path(weights).expanduser()
    if path.suffix.lower() not in LOCAL_SUFFIXES:
        raise WeightsError(
            f"'{weights}' is not a weights file DTL Studio can read; use a {', '.join(LOCAL_SUFFIXES)} file, "
            "'hub' or 'random'."
        )
    if not path.exists():
        raise WeightsError(f"The weights file '{path}' does not exist; choose another file or use random weights.")
    if not path.is_file():      # a FIFO or device would block the read or never end
        raise WeightsError(f"The weights file '{path}' is {NOT_REGULAR}; choose another file or use random weights.")
    return _create_from_file(name, path, timm_kwargs)


def _create_from_hub(name: str, timm_kwargs: dict[str, Any]) -> nn.Module:
    cached = cached_weights_path(name)
    if cached is not None:
        # already downloaded: load the cached file directly, no network round-trip at all
        return _create_from_file(name, Path(cached), timm_kwargs)
    _limit_hub_timeouts()
    reason = _why_hub_unreachable(name)
    if reason is None:
        try:
            return timm.create_model(name, pretrained=True, **timm_kwargs)
        except (BackboneError, TypeError):
            raise
        except Exception as exc:  # network, missing files on the hub: all mean "no weights"
            reason = _short(exc)
    raise WeightsError(
        f"The pretrained weights of '{name}' could not be downloaded ({reason}); "
        "connect to the internet once, choose a local weights file, or use random weights."
    )


def _why_hub_unreachable(name: str) -> str | None:
    """A short reason when a download cannot work right now, else None (checked in seconds, not minutes)."""
    try:
        from huggingface_hub import constants
    except Exception:  # pragma: no cover - timm falls back to plain URLs
        return None
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return "offline mode is on"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # behind a proxy a direct probe says nothing; let the download try
    url = constants.ENDPOINT
    cfg = _pretrained_cfg(name)
    if cfg is not None and not getattr(cfg, "hf_hub_id", None) and getattr(cfg, "url", None):
        url = cfg.url
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S):
            return None
    except OSError:
        return f"{host} cannot be reached"


def _create_from_file(name: str, path: Path, timm_kwargs: dict[str, Any]) -> nn.Module:
    overlay: dict[str, Any] = dict(file=str(path))
    if path.suffix.lower() == ".npz":
        # JAX/big_vision checkpoints go through the model's own npz loader (timm ViTs have one)
        if not _has_npz_loader(name, timm_kwargs):
            raise WeightsError(f"'{name}' cannot read .npz weights; use a .safetensors or .pth file, "
                               "or random weights.")
        overlay["custom_load"] = True
    with _LoadReport() as report:
        try:
            # timm's own loader: per-model key filters (incl. position-embedding resampling for other
            # input sizes), weights_only torch.load, .npz for JAX ViTs
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **timm_kwargs)
        except Exception as exc:
            raise WeightsError(
                f"The weights file '{path.name}' could not be loaded into '{name}' ({_short(exc)}); "
                "check that it belongs to this backbone, or use random weights."
            ) from exc
    if report.missing:
        # timm loads non-strictly once the classifier is dropped; missing backbone keys mean a wrong file
        raise WeightsError(
            f"The weights file '{path.name}' does not fit '{name}' ({len(report.missing)} missing weights, "
            f"e.g. {report.missing[0]}); check that it belongs to this backbone, or use random weights."
        )
    return model


def _has_npz_loader(name: str, timm_kwargs: dict[str, Any]) -> bool:
    with torch.device("meta"):  # structure only: no memory, no weights
        return hasattr(timm.create_model(name, pretrained=False, **timm_kwargs), "load_pretrained")


class _LoadReport(logging.Handler):
    """Collects the keys timm reports as missing when it loads pretrained weights non-strictly."""

    _LOGGER = "timm.models._builder"

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.missing: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Missing keys ("):
            keys = message[len("Missing keys ("):].split(")", 1)[0]
            self.missing += [k.strip() for k in keys.split(",") if k.strip()]

    def __enter__(self) -> "_LoadReport":
        logger = logging.getLogger(self._LOGGER)
        self._level = logger.level
        logger.addHandler(self)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger(self._LOGGER)
        logger.removeHandler(self)
        logger.setLevel(self._level)


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pretrained_cfg(name: str) -> Any:
    try:
        return get_pretrained_cfg(name)  # a bare architecture name resolves to its default tag
    except Exception:
        return None


def cached_weights_path(backbone: str) -> str | None:
    """The local path of the downloaded pretrained weights of ``backbone``, or None when not cached."""
    cfg = _pretrained_cfg(backbone)
    if cfg is None:
        return None
    hf_id = getattr(cfg, "hf_hub_id", None)
    if hf_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except Exception:  # pragma: no cover
            return None
        repo, _, revision = hf_id.partition("@")
        names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else []
        names += ["model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin",
                  "open_clip_pytorch_model.bin"]
        for filename in names:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str) and os.path.isfile(found):
                return found
        return None
    url = getattr(cfg, "url", None)
    if url:
        candidate = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
        return candidate if os.path.isfile(candidate) else None
    return None


def weights_cached(backbone: str) -> bool:
    """True when the pretrained weights of ``backbone`` are already in the local download cache."""
    return cached_weights_path(backbone) is not None

"""One small error hierarchy: callers catch precisely, users read a sentence.

Every error raised on purpose by the engine derives from :class:`DTLError` and
carries a message written for a person (no traceback needed to understand it).
"""
from __future__ import annotations


class DTLError(Exception):
    """Base of every error the engine raises on purpose."""


class DataError(DTLError, ValueError):
    """The image folder cannot be used (empty, one class, unreadable...)."""


class BackboneError(DTLError, ValueError):
    """The backbone name is unknown or its family cannot be adapted to DTL."""


class WeightsError(DTLError, RuntimeError):
    """Pretrained weights cannot be obtained (offline, bad file...)."""


class RunError(DTLError, RuntimeError):
    """A training run cannot start, resume or continue."""


class ExportError(DTLError, RuntimeError):
    """An export cannot be written or failed its verification."""


class WriteRefused(DTLError, ValueError):
    """A write would land where the engine never writes: the image folder, another run's files, a device."""

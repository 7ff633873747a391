"""The one set of formatters for numbers people read: bytes, durations, counts (no torch import).

The CLI, the benchmark and the app all use these, so a figure reads the same everywhere.
"""
from __future__ import annotations


def format_bytes(n: int | float | None) -> str:
    """Human-readable bytes: '1.61 GB', '512.00 MB', '-' for None (binary units)."""
    if n is None:
        return "-"
    for unit, size in (("GB", 1024 ** 3), ("MB", 1024 ** 2), ("KB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def format_duration(seconds: float) -> str:
    """42 -> '0:42', 3725 -> '1:02:05'."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_span(seconds: float) -> str:
    """A duration in words: 42 -> '42 s', 191 -> '3 min 11 s', 3725 -> '1 h 02 min'."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h} h {m:02d} min"
    return f"{m} min {s:02d} s" if m else f"{s} s"


#: A range whose ends differ more than this many times says nothing yet: after the first step of a
#: five-minute run it read "under 5.9 h". Such a range is shown as ESTIMATING.
UNKNOWN_RANGE_RATIO = 40.0
ESTIMATING = "estimating"


def format_eta(seconds: float, low: float | None = None, high: float | None = None) -> str:
    """Time left: 'about 3–5 min' (or 'under 2 min') while the range is wide, then one figure ('3 min 11 s').

    ``low``/``high`` are the ends of the range: equal once the estimate settled, None in older run logs.
    A range too wide to tell anything (:data:`UNKNOWN_RANGE_RATIO`) is :data:`ESTIMATING`.
    """
    if low is None or high is None or high - low < 1:
        return format_span(seconds)
    if high > UNKNOWN_RANGE_RATIO * max(low, 1.0):
        return ESTIMATING
    if high < 90:
        lo, hi, unit = int(low // 5 * 5), int(-(-high // 5) * 5), "s"
    elif high < 90 * 60:
        lo, hi, unit = int(low // 60), int(-(-high // 60)), "min"
    else:
        lo_h, hi_h = int(low // 360) / 10, -int(-high // 360) / 10     # tenths of an hour, outward
        return f"under {hi_h:.1f} h" if lo_h < 0.1 else f"about {lo_h:.1f}–{hi_h:.1f} h"
    if lo == 0:
        return f"under {hi} {unit}"
    return f"about {hi} {unit}" if lo == hi else f"about {lo}–{hi} {unit}"


def format_time_left(seconds: float, low: float | None = None, high: float | None = None) -> str:
    """'3 min 11 s left', 'about 3–5 min left', or 'estimating the time left' while nothing can be told."""
    eta = format_eta(seconds, low, high)
    return "estimating the time left" if eta == ESTIMATING else f"{eta} left"


def format_count(n: int | None) -> str:
    """12345 -> '12.3 K', 86_000_000 -> '86.0 M', None -> '—'."""
    if n is None:
        return "—"
    if n >= 1_000_000:
        return f"{n / 1e6:.1f} M"
    if n >= 10_000:
        return f"{n / 1e3:.1f} K"
    return f"{n:,}"


def weights_text(weights: str) -> str:
    """What a run started from: 'pretrained', 'random' or the local file's name ('' when not recorded)."""
    if weights in ("hub", ""):
        return "pretrained" if weights else ""
    return "random" if weights == "random" else weights.replace("\\", "/").rsplit("/", 1)[-1]


def backbone_text(backbone: str, weights: str) -> str:
    """The backbone that ran: its pretrained tag ('.augreg_in21k_ft_in1k') only when those weights were used."""
    return backbone if weights in ("hub", "") else backbone.split(".")[0]

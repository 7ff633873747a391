"""The one set of number formatters."""
from __future__ import annotations

from dtl_engine.formatting import (format_bytes, format_count, format_duration, format_eta, format_span,
                                   format_time_left)


def test_bytes_use_binary_units_and_say_unknown():
    assert format_bytes(None) == "-"
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.50 KB"
    assert format_bytes(3 * 1024 ** 2) == "3.00 MB"
    assert format_bytes(int(1.61 * 1024 ** 3)) == "1.61 GB"


def test_durations_and_counts():
    assert (format_duration(42), format_duration(3725), format_duration(-3)) == ("0:42", "1:02:05", "0:00")
    assert (format_count(None), format_count(9_999), format_count(12_345)) == ("—", "9,999", "12.3 K")
    assert format_count(86_000_000) == "86.0 M"


def test_a_span_says_it_is_a_duration():
    assert (format_span(42), format_span(191), format_span(3725), format_span(-1)) == (
        "42 s", "3 min 11 s", "1 h 02 min", "0 s")


def test_time_left_reads_as_a_range_until_it_settles():
    assert format_eta(240, 180, 300) == "about 3–5 min"
    assert format_eta(40, 20, 80) == "about 20–80 s"
    assert format_eta(90, 20, 170) == "under 3 min"
    assert format_eta(9000, 5400, 12600) == "about 1.5–3.5 h"
    assert format_eta(2000, 200, 7000) == "under 2.0 h"
    # one step measured: the ends 160 times apart tell nothing (a 5-minute run read "under 5.9 h")
    assert format_eta(2000, 130, 21000) == "estimating"
    assert (format_time_left(191, 191, 191), format_time_left(240, 180, 300), format_time_left(2000, 130, 21000)) == (
        "3 min 11 s left", "about 3–5 min left", "estimating the time left")
    assert format_eta(191, 191, 191) == format_eta(191) == "3 min 11 s"     # settled, or an older log


def test_the_memory_probe_reexports_the_same_formatter():
    from dtl_engine.sizing import memory_probe

    assert memory_probe.format_bytes is format_bytes

"""Benchmark steps are timed without page faults and without the garbage collector."""
from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

import pytest

from dtl_engine.bench.step_timer import time_step

# Allocates and frees a 64 MB buffer ten times and prints the page faults of the last nine.
_FAULTS = textwrap.dedent("""
    import resource, sys
    from dtl_engine.bench.step_timer import keep_freed_memory
    kept = keep_freed_memory() if sys.argv[1] == "keep" else None
    def touch():
        b = bytearray(64 << 20)
        b[::4096] = b"x" * len(b[::4096])
    touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(9):
        touch()
    print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator setting is Linux-only")
def test_kept_memory_is_reused_without_page_faults():
    _, default = _faults("default")
    kept, faults = _faults("keep")
    assert kept == "True"
    assert default > 9 * 10_000          # glibc maps each 64 MB block afresh: 16k faults a time
    assert faults < default / 20         # reused memory: no new pages to fault in


def test_a_timed_step_runs_with_the_collector_paused_and_restores_it():
    seen = []
    wall, cpu = time_step(lambda: seen.append(gc.isenabled()) or sum(range(200_000)))
    assert seen == [False] and gc.isenabled()
    assert wall > 0 and cpu >= 0


def test_a_failing_step_still_restores_the_collector():
    with pytest.raises(ZeroDivisionError):
        time_step(lambda: 1 / 0)
    assert gc.isenabled()

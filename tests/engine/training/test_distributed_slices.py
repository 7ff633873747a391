"""How a global batch and a split are shared between processes (no process group needed)."""
from __future__ import annotations

import pytest

from dtl_engine.errors import RunError
from dtl_engine.training.distributed import Distributed, collective_timeout


@pytest.mark.parametrize("world, n", [(2, 7), (3, 7), (4, 4), (2, 1), (3, 0)])
def test_slices_cover_each_batch_once_in_order(world, n):
    batch = list(range(100, 100 + n))
    slices = [Distributed(rank=r, world_size=world).batch_slice(batch) for r in range(world)]
    assert sum(slices, []) == batch                                   # every image once, 1-process order
    assert max(map(len, slices)) - min(map(len, slices)) <= 1
    shards = [list(Distributed(rank=r, world_size=world).shard(n)) for r in range(world)]
    assert sum(shards, []) == list(range(n))


def test_one_process_takes_everything():
    one = Distributed()
    assert not one.enabled and one.is_main
    assert one.batch_slice([3, 1, 2]) == [3, 1, 2] and one.any(True) and one.sum([1, 2]) == [1.0, 2.0]
    assert one.describe(32) == {"world_size": 1, "per_rank_batch": 32}


def test_batch_smaller_than_the_processes_is_refused():
    ctx = Distributed(rank=0, world_size=4)
    assert ctx.describe(10) == {"world_size": 4, "per_rank_batch": 3}
    ctx.check_batch(4)
    with pytest.raises(RunError, match="batch size 3 is smaller than the number of processes"):
        ctx.check_batch(3)


def test_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DTL_COLLECTIVE_TIMEOUT", "42")
    assert collective_timeout().total_seconds() == 42
    monkeypatch.setenv("DTL_COLLECTIVE_TIMEOUT", "soon")
    with pytest.raises(RunError, match="number of seconds"):
        collective_timeout()

"""bench --ddp: two gloo processes, bytes all-reduced per step measured by a DDP communication hook."""
from __future__ import annotations

import json

import pytest

from dtl_engine.cli.main import main
from tiny_models import TINY_VIT


@pytest.mark.slow
def test_ddp_bench_measures_the_gradient_bytes_of_each_method(capsys):
    name, kwargs = TINY_VIT
    assert main(["bench", "--ddp", "--backbone", name, "--batch", "2", "--steps", "1", "--methods", "full,dtl",
                 "--model-kwargs", json.dumps(kwargs), "--json"]) == 0
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    for row in rows.values():     # fp32 gradients: 4 bytes per trainable number went through the hook
        assert row["ddp_bytes_per_step"] == 4 * row["trainable"]
    assert rows["dtl"]["engine_bytes_per_step"] == rows["dtl"]["ddp_bytes_per_step"]
    assert rows["dtl"]["ddp_bytes_per_step"] < rows["full"]["ddp_bytes_per_step"] / 50

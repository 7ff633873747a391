"""The benchmark trains every method for real on a tiny ViT and reports comparable figures."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

from dtl_engine.bench.speed import add_bench_arguments, format_table, parse_methods, run_bench, run_benchmark
from dtl_engine.errors import RunError
from tests.engine.tiny_models import TINY_VIT

torch.set_num_threads(1)

NAME, KW = TINY_VIT


@pytest.fixture(autouse=True)
def _allocator_untouched(monkeypatch):
    """The bench's allocator setting is process-wide and permanent: not in the test process."""
    import dtl_engine.bench.speed as bench

    monkeypatch.setattr(bench, "keep_freed_memory", lambda: False)


def _args(*extra: str) -> argparse.Namespace:
    parser = add_bench_arguments(argparse.ArgumentParser())
    return parser.parse_args(["--backbone", NAME, "--batch", "4", "--steps", "1", "--device", "cpu",
                              "--model-kwargs", json.dumps(KW), *extra])


@pytest.mark.slow
def test_cli_json_has_every_method_and_sensible_figures(capsys):
    assert run_bench(_args("--json")) == 0
    out = capsys.readouterr().out
    report = json.loads(out)  # exactly one JSON object on stdout (progress goes to stderr)
    assert report["backbone"] == NAME and report["batch"] == 4 and report["device"] == "cpu"
    results = report["results"]
    assert set(results) == {"full", "linear", "lora", "dtl", "dtl+"}
    for row in results.values():
        for key in ("trainable_params", "activation_bytes", "peak_bytes", "step_seconds"):
            assert key in row
        assert row["peak_bytes"] is None  # CPU: no allocator peak to report
        assert row["step_seconds"] > 0 and row["step_cpu_seconds"] > 0
    trainable = {m: r["trainable_params"] for m, r in results.items()}
    assert trainable["lora"] > trainable["dtl"] > trainable["linear"] > 0
    assert trainable["dtl+"] > trainable["dtl"]
    assert trainable["full"] == results["full"]["total_params"]
    acts = {m: r["activation_bytes"] for m, r in results.items()}
    assert acts["linear"] < acts["dtl"] < acts["lora"] < acts["full"]
    assert results["full"]["activation_vs_full"] == 1.0
    for m in ("dtl", "dtl+"):
        assert results[m]["cached_step_seconds"] > 0
    assert "cached_step_seconds" not in results["lora"]


def test_savers_rows_save_less_and_the_table_names_every_row():
    report = run_benchmark(NAME, 4, steps=1, methods=["full", "dtl", "dtl+"], savers=True, device="cpu",
                           model_kwargs=KW)
    rows = report["results"]
    assert list(rows) == ["full", "dtl", "dtl+", "dtl (savers)", "dtl+ (savers)"]
    assert rows["dtl (savers)"]["activation_bytes"] < rows["dtl"]["activation_bytes"]
    assert rows["dtl+ (savers)"]["activation_bytes"] < rows["dtl+"]["activation_bytes"]
    assert rows["dtl (savers)"]["trainable_params"] == rows["dtl"]["trainable_params"]
    table = format_table(report)
    for label in rows:
        assert f"\n{label} " in table
    assert "act/lora" in table  # column present; '-' where LoRA was not run


def test_bad_methods_and_arguments_get_a_sentence(capsys):
    with pytest.raises(RunError, match="Unknown benchmark method 'adapter'"):
        parse_methods("dtl,adapter")
    assert parse_methods(" DTL, full,dtl") == ["dtl", "full"]
    assert run_bench(_args("--methods", "dtl,prompt")) == 2
    assert "Unknown benchmark method 'prompt'" in capsys.readouterr().err
    assert run_bench(_args("--batch", "0")) == 2
    assert "batch size" in capsys.readouterr().err
    args = _args()
    args.model_kwargs = "{not json"
    assert run_bench(args) == 2
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize("device, expected", [("cpu", ("vit_small_patch16_224", 8)),
                                              ("cuda", ("vit_base_patch16_224", 32))])
def test_defaults_depend_on_the_device_and_memory_is_kept_for_reuse(monkeypatch, capsys, device, expected):
    import dtl_engine.bench.speed as bench

    calls: dict = {}
    monkeypatch.setattr(bench, "_resolve_device", lambda pref: torch.device(device))
    monkeypatch.setattr(bench, "keep_freed_memory", lambda: calls.setdefault("kept", True))
    monkeypatch.setattr(bench, "run_benchmark", lambda backbone, batch, *a, **k: calls.update(run=(backbone, batch))
                        or {"stub": True})
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.update(threads=n))
    args = add_bench_arguments(argparse.ArgumentParser()).parse_args(["--json"])
    assert run_bench(args) == 0
    assert calls["run"] == expected and calls["kept"]
    assert calls.get("threads") == (1 if device == "cpu" else None)
    args = add_bench_arguments(argparse.ArgumentParser()).parse_args(["--json", "--backbone", NAME, "--batch", "0"])
    assert run_bench(args) == 0 and calls["run"] == (NAME, 0)   # an explicit --batch is never replaced

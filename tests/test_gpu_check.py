"""packaging/gpu_check.py: what runs without a GPU (the measurements on the CPU, the skip sentence, the table)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from tests.engine.tiny_models import TINY_VIT

SCRIPT = Path(__file__).resolve().parent.parent / "packaging" / "gpu_check.py"
NAME, KW = TINY_VIT


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_so_and_writes_nothing(gpu_check, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "check.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == gpu_check.NO_GPU
    assert not out.exists()


@pytest.mark.parametrize("method, half, ckpt", [("full", False, False), ("dtl", True, True)])
def test_step_measurement_runs_on_the_cpu(gpu_check, method, half, ckpt):
    row = gpu_check.measure_step(method, NAME, "bf16", half_frozen_weights=half, checkpoint_blocks=ckpt,
                                 device="cpu", batch=2, steps=2, warmup=1, model_kwargs=KW)
    assert row["step_seconds"] > 0 and row["peak_bytes"] is None


def test_loader_throughput_counts_every_photo_and_cleans_up(gpu_check, monkeypatch):
    made = []
    real = gpu_check.write_photos
    monkeypatch.setattr(gpu_check, "write_photos", lambda folder, n: made.append(folder) or real(folder, n))
    rows = gpu_check.loader_throughput(count=6, workers=(0,), batch=4, backbone=NAME, model_kwargs=KW)
    assert rows[0]["images"] == 6 and rows[0]["images_per_second"] > 0
    assert made and not made[0].exists()


def test_planner_comparison_measures_the_recommended_setting(gpu_check):
    seen = {}

    def fake_measure(method, backbone, precision, **kw):
        seen.update(kw, precision=precision)
        return {"peak_bytes": 500 * 1024 ** 2, "step_seconds": 0.1}

    row = gpu_check.planner_vs_measured("vit_base_patch16_224", 8 * 1024 ** 3, measure=fake_measure)
    assert row["batch"] == 32 == seen["batch"] and seen["precision"] == "bf16" and seen["half_frozen_weights"]
    assert row["predicted_vs_measured"] == pytest.approx(row["predicted_bytes"] / (500 * 1024 ** 2))


def test_report_table_names_every_row(gpu_check):
    report = {"device": "Fake GPU", "torch": "x", "backbone": "vit_base_patch16_224", "batch": 32,
              "steps": [{"row": label, "precision": p, "step_seconds": 0.05, "peak_bytes": 10 ** 9}
                        for p in ("bf16", "fp16") for label, *_ in gpu_check.STEP_ROWS],
              "loader": [{"workers": 0, "images": 256, "images_per_second": 300.0}],
              "planner": [{"backbone": "vit_base_patch16_224", "setting": "bf16", "batch": 32,
                           "predicted_bytes": 9 * 10 ** 8, "measured_bytes": 10 ** 9, "predicted_vs_measured": 0.9}],
              "official": {"repeats": 20, "ratio": 0.912, "floor_vs_official": 0.871, "saved_ratio": 0.917},
              "skipped": ["planner on vit_large_patch16_224"]}
    text = gpu_check.format_report(report)
    for label, *_ in gpu_check.STEP_ROWS:
        assert text.count(label) == 2
    assert "0.900" in text and "skipped (time limit): planner on vit_large" in text
    assert "ours / official 0.912, floor / official 0.871, saved bytes 0.917" in text

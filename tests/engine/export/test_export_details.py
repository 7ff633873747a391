"""Export details: file size, latency measured in the fresh process, and the exported file's own
validation accuracy, which must equal the run's."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from image_factory import make_image_folder
from tiny_models import TINY_VIT, TINY_VIT_IMAGE_SIZE

from dtl_engine.cli import main as cli
from dtl_engine.config import TrainConfig
from dtl_engine.export import export_run
from dtl_engine.training import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("details")
    # images of another size than the model's, so the export's own resizing is part of what is compared
    data = make_image_folder(root / "images", {"a": 10, "b": 10, "c": 10}, size=(40, 28))
    config = TrainConfig(data_dir=str(data), backbone=TINY_VIT[0], weights="random", image_size=TINY_VIT_IMAGE_SIZE,
                         epochs=3)
    return train(config, run_dir=root / "run", model_kwargs=TINY_VIT[1]).run_dir


@pytest.mark.slow
def test_exported_file_has_the_runs_validation_accuracy(run_dir, tmp_path):
    out = tmp_path / "model.pt"
    result = export_run(run_dir, out, measure_device="cpu", latency_repeats=3)
    run = json.loads((Path(run_dir) / "run.json").read_text())
    split = json.loads((Path(run_dir) / "split.json").read_text())
    assert result.eval_images == len(split["val"]) == 6
    assert result.reference_accuracy == run["best_val_acc"]
    assert result.eval_accuracy == pytest.approx(run["best_val_acc"], abs=1e-9)
    assert result.size_bytes == out.stat().st_size
    assert result.latency_device == "cpu" and result.latency_error is None
    assert 0 < result.latency_single_ms and 0 < result.latency_batch_ms
    lines = result.details()
    assert lines[0].startswith("file size:") and "the same" in lines[-1]


@pytest.mark.slow
def test_cli_export_prints_size_latency_and_accuracy_onnx(run_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    assert cli.main(["export", run_dir, "--out", str(tmp_path / "m.onnx"), "--device", "cpu",
                     "--latency-runs", "3"]) == 0
    out = capsys.readouterr().out
    size = int(re.search(r"file size: [0-9.]+ MB \(([0-9,]+) bytes\)", out).group(1).replace(",", ""))
    assert size == (tmp_path / "m.onnx").stat().st_size
    assert re.search(r"latency on cpu, fresh process: [0-9.]+ ms per image \(median of 3 single-image calls\); "
                     r"[0-9.]+ ms per batch of 32", out)
    assert re.search(r"validation accuracy of the exported file: [0-9.]+% on 6 images \(run: [0-9.]+%, the same\)",
                     out)


def test_no_latency_runs_is_a_sentence_and_writes_nothing(run_dir, tmp_path, capsys):
    assert cli.main(["export", run_dir, "--out", str(tmp_path / "m.pt"), "--latency-runs", "0"]) == 2
    err = capsys.readouterr().err
    assert "--latency-runs 1 or more" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_device_that_cannot_run_the_file_is_reported_not_fatal(run_dir, tmp_path, monkeypatch):
    from dtl_engine.export import verify

    # Simulate a device the file cannot run on: the latency part fails inside the fresh process.
    monkeypatch.setattr(verify, "_TORCHSCRIPT_CHECK", verify._TORCHSCRIPT_CHECK.replace(
        'if device == "cpu":\n        return run, lambda: None', 'raise RuntimeError("no such device here")'))
    result = export_run(run_dir, tmp_path / "m.pt", measure_device="cpu", latency_repeats=3)
    assert result.verified and (tmp_path / "m.pt").exists()
    assert result.latency_single_ms is None and "no such device here" in result.latency_error
    assert result.eval_accuracy is not None
    assert any("not measured" in line for line in result.details())

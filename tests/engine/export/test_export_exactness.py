"""An export predicts exactly what its run measured: on the digits sample the exported file's validation
accuracy counts the same images correct as the run, and it predicts each image's class as the run's
evaluation does (one preprocessing for evaluation, prediction and the exported file)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_models import TINY_VIT, TINY_VIT_IMAGE_SIZE

from dtl_engine.config import TrainConfig
from dtl_engine.data.sample import ensure_sample_dataset
from dtl_engine.export import export_run
from dtl_engine.inference.evaluate import current_evaluation
from dtl_engine.inference.predict import predict_each
from dtl_engine.training import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("exact")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DTL_STUDIO_HOME", str(root / "home"))
        data = ensure_sample_dataset(classes=["0", "1", "2"])
        # The digits are 48×48 pictures, the model's input 32×32: the resize is part of what is compared.
        config = TrainConfig(data_dir=str(data), backbone=TINY_VIT[0], weights="random",
                             image_size=TINY_VIT_IMAGE_SIZE, epochs=5)
        run_dir = train(config, run_dir=root / "run", model_kwargs=TINY_VIT[1]).run_dir
        evaluation = current_evaluation(run_dir, device="cpu")
        result = export_run(run_dir, root / "model.pt", measure_device="cpu", latency_repeats=1)
        yield Path(run_dir), evaluation, result


@pytest.mark.slow
def test_exported_file_counts_the_same_images_correct_as_the_run(digits_run):
    run_dir, evaluation, result = digits_run
    run = json.loads((run_dir / "run.json").read_text())
    n = result.eval_images
    assert n == evaluation.num_images > 100
    # The figure to check is not trivial: the model tells classes apart, and makes mistakes.
    assert len({p["predicted"] for p in evaluation.predictions}) > 1
    assert 0 < round(run["best_val_acc"] * n) < n
    assert round(result.eval_accuracy * n) == round(run["best_val_acc"] * n)
    assert "the same" in result.details()[-1]


def test_exported_file_predicts_each_image_as_the_runs_evaluation(digits_run):
    # Same class and the same confidence (to float rounding) on every image: a difference in resizing,
    # rounding or normalisation moves the confidences by far more, and the class of an image near a
    # decision boundary with them.
    _run_dir, evaluation, result = digits_run
    paths = [p["path"] for p in evaluation.predictions]
    exported = {r.path: r.top[0] for r in predict_each(result.path, paths, top_k=1)}
    differ = [(Path(p["path"]).name, p["predicted"], round(p["confidence"], 6), exported[p["path"]])
              for p in evaluation.predictions
              if exported[p["path"]][0] != p["predicted"] or abs(exported[p["path"]][1] - p["confidence"]) > 1e-5]
    assert differ == []

"""The first model (epoch 0: the search's probe on the frozen backbone), kept before epoch 1 and never lost.

Covers: the first model is scored and checkpointed before epoch 1 begins and can be exported at once;
the run's best is never below it; a run forced to diverge (the one knob set: a huge rate for the model
with its side network) backs off to the best weights and ends no worse than its first model, and
resumes after a back-off exactly; tiny classes train at the defaults; the search reports its
progress in order.
"""
from __future__ import annotations

import pytest

import json
from pathlib import Path

import torch

from dtl_engine.config import TrainConfig
from dtl_engine.export.run_export import export_run
from dtl_engine.listener import StopToken
from dtl_engine.runs.folder import RunFolder
from dtl_engine.training import resume, train
from dtl_engine.training.autotune import read_search
from image_factory import make_image_folder
from run_builders import MODEL_KWARGS, Recorder, image_folder, run_weights, tiny_config

torch.set_num_threads(1)

HUGE_RATE = 1e4     # far beyond any rate the side network survives: every epoch diverges


def _defaults(data: Path, **knob) -> TrainConfig:
    # the product's defaults for what is being tested (rate, augmentation, cache all 'auto'), on the tiny model
    values = dict(lr="auto", augment="auto", cache_features="auto")
    values.update(knob)
    return tiny_config(data, **values)


@pytest.mark.slow
def test_the_first_model_exists_before_epoch_1_is_exportable_and_the_best_is_never_below_it(tmp_path):
    data = image_folder(tmp_path, per_class=10)
    run_dir = tmp_path / "run"
    seen: dict = {}

    def at_first_model(stats):
        seen["stats"] = stats
        seen["best_exists"] = (run_dir / "best.safetensors").is_file()
        seen["metrics"] = RunFolder(run_dir).read_metrics()
        token.stop()                        # stop at once: the first model alone must be usable

    token = StopToken()
    listener = Recorder(first_model=at_first_model)
    stopped = train(_defaults(data), listener, token, run_dir=run_dir, model_kwargs=MODEL_KWARGS)
    names = listener.names()
    assert names.index("search_finished") < names.index("run_started") < names.index("first_model")
    assert "epoch_finished" not in names and stopped.status == "stopped"
    assert seen["best_exists"] and seen["metrics"][0]["epoch"] == -1 and seen["metrics"][0]["first_model"]
    first = seen["stats"]
    assert seen["metrics"][0]["val_acc"] == first.val_acc and stopped.best_epoch == -1
    assert stopped.best_val_acc == first.val_acc
    # the stopped run's model is the first model, and it exports and verifies at once
    out = export_run(run_dir, tmp_path / "first.pt", measure_device=None)
    assert Path(out.path).is_file()
    # ... and resuming continues at epoch 1 from it (the probe's classifier, not a fresh one)
    done = resume(run_dir)
    assert done.status == "finished" and done.best_val_acc >= first.val_acc
    metrics = RunFolder(run_dir).read_metrics()
    assert [m["epoch"] for m in metrics] == [-1, 0, 1, 2]


@pytest.mark.slow
def test_a_finished_run_at_the_defaults_keeps_epoch_0_and_ends_no_worse(tmp_path):
    data = image_folder(tmp_path, per_class=10)
    listener = Recorder()
    result = train(_defaults(data), listener, run_dir=tmp_path / "run", model_kwargs=MODEL_KWARGS)
    (first,) = listener.of("first_model")
    metrics = RunFolder(tmp_path / "run").read_metrics()
    assert metrics[0]["epoch"] == -1 and metrics[0]["val_acc"] == first.val_acc
    assert result.best_val_acc >= first.val_acc
    assert result.report is not None and result.report.accuracy >= first.val_acc - 1e-9


@pytest.mark.slow
def test_a_run_forced_to_diverge_backs_off_and_never_ends_below_its_first_model(tmp_path):
    data = image_folder(tmp_path, per_class=10)
    listener = Recorder()
    result = train(_defaults(data, lr=HUGE_RATE, epochs=2), listener, run_dir=tmp_path / "run",
                   model_kwargs=MODEL_KWARGS)
    (first,) = listener.of("first_model")
    backed = listener.of("backed_off")
    assert result.status == "finished" and len(backed) == 2
    assert [b.epoch for b in backed] == [0, 1] and all(b.best_epoch == -1 for b in backed)
    assert backed[0].lr_after < backed[0].lr_before and backed[1].lr_before == backed[0].lr_after
    assert result.best_val_acc >= first.val_acc and result.best_epoch == -1
    assert result.report is not None and result.report.accuracy >= first.val_acc - 1e-9
    # the event log holds each back-off; the metrics mark the undone epochs
    log = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "backed_off" for e in log) == 2
    assert [m.get("backed_off", False) for m in RunFolder(tmp_path / "run").read_metrics()] == [False, True, True]
    # after a back-off the run trains on from the best weights: the last checkpoint is not the diverged one
    assert all(bool(torch.isfinite(v).all()) for v in run_weights(tmp_path / "run").values())


@pytest.mark.slow
def test_a_resume_after_a_back_off_is_bit_identical(tmp_path):
    data = image_folder(tmp_path, per_class=10)
    config = _defaults(data, lr=HUGE_RATE, epochs=2)
    whole = train(config, run_dir=tmp_path / "whole", model_kwargs=MODEL_KWARGS)
    token = StopToken()
    stopper = Recorder(backed_off=lambda _event: token.stop())
    parted = train(config, stopper, token, run_dir=tmp_path / "parted", model_kwargs=MODEL_KWARGS)
    assert parted.status == "stopped" and parted.epochs_done == 1
    again = resume(tmp_path / "parted")
    assert again.status == "finished" and whole.status == "finished"
    a, b = run_weights(tmp_path / "whole"), run_weights(tmp_path / "parted")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda ms: [{k: v for k, v in m.items() if k != "seconds"} for m in ms]  # noqa: E731
    assert strip(RunFolder(tmp_path / "whole").read_metrics()) == strip(RunFolder(tmp_path / "parted").read_metrics())


@pytest.mark.slow
def test_two_images_per_class_and_a_class_of_one_train_at_the_defaults(tmp_path):
    for name, classes in (("pairs", {"red": 2, "green": 2, "blue": 2}), ("single", {"red": 6, "green": 6, "blue": 1})):
        data = make_image_folder(tmp_path / name, classes=classes)
        result = train(_defaults(data), run_dir=tmp_path / f"run-{name}", model_kwargs=MODEL_KWARGS)
        assert result.status == "finished" and result.epochs_done == 3
        search = read_search(tmp_path / f"run-{name}")
        assert search is not None and search.lr_searched and search.trials


@pytest.mark.slow
def test_the_search_reports_its_progress_in_order_with_correct_counts(tmp_path):
    data = image_folder(tmp_path, per_class=10)
    listener = Recorder()
    train(_defaults(data), listener, run_dir=tmp_path / "run", model_kwargs=MODEL_KWARGS)
    names = listener.names()
    progress = listener.of("search_progress")
    last = max(i for i, n in enumerate(names) if n == "search_progress")
    assert progress and last < names.index("search_finished")
    search = read_search(tmp_path / "run")
    total_trials = len(search.trials)
    views = search.view_images * 2                          # an augmented copy per tried augmentation
    assert progress[-1].trial == progress[-1].trials == total_trials
    assert progress[-1].images_done == progress[-1].images_total == search.search_train + search.search_val + views
    assert progress[-1].fraction == 1.0
    for before, after in zip(progress, progress[1:]):       # in order: nothing counts backwards
        assert after.trial >= before.trial and after.images_done >= before.images_done
        assert after.fraction >= before.fraction
        assert after.elapsed_seconds >= before.elapsed_seconds
    # the images come first (the features every trial reuses), then the trials one group at a time
    assert progress[0].trial == 0 and progress[0].images_done > 0
    assert any(p.note for p in progress) and all(p.eta_seconds is None or p.eta_seconds >= 0 for p in progress)


def test_the_back_off_rule_tells_a_divergence_from_noise_and_over_fitting():
    from dtl_engine.training.backoff import diverged

    # (val loss, val acc) after a best of loss 0.50 / accuracy 0.90 on 10 classes
    assert not diverged(0.55, 0.89, 0.50, 0.90, 10)          # noise
    assert not diverged(0.70, 0.88, 0.50, 0.90, 10)          # over-fitting: the loss creeps up
    assert not diverged(2.00, 0.91, 0.50, 0.90, 10)          # better by the measure kept: never undone
    assert diverged(1.90, 0.40, 0.50, 0.90, 10)              # 26.7 % -> 10.6 % in the app's run: undone
    assert diverged(float("nan"), 0.90, 0.50, 0.90, 10)      # no number
    assert not diverged(0.04, 0.98, 0.02, 0.99, 10)          # a tiny loss doubling is not a divergence
    assert not diverged(5.0, 0.1, None, None, 10)            # nothing to go back to

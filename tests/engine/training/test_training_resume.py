"""Resuming is exact: a run stopped after epoch 2 and resumed ends with bit-identical weights."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from dtl_engine.errors import RunError
from dtl_engine.listener import StopToken
from dtl_engine.training import resume, train
from run_builders import MODEL_KWARGS, Recorder, image_folder, run_weights, tiny_config


@pytest.mark.slow
def test_stop_after_epoch_two_then_resume_equals_uninterrupted(tmp_path):
    data = image_folder(tmp_path)
    # random augmentation on purpose: its RNG must be a pure function of (seed, epoch)
    config = tiny_config(data, epochs=4, augment="light")
    whole = train(config, model_kwargs=MODEL_KWARGS)

    token = StopToken()
    stopper = Recorder(checkpoint_saved=lambda path, epoch: token.stop() if epoch == 1 else None)
    part = train(config, stopper, token, model_kwargs=MODEL_KWARGS)
    assert part.status == "stopped" and part.epochs_done == 2
    after_two = run_weights(part.run_dir)
    done = resume(part.run_dir)
    assert done.status == "finished" and done.epochs_done == 4

    a, b = run_weights(whole.run_dir), run_weights(done.run_dir)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert done.best_epoch == whole.best_epoch and done.best_val_acc == whole.best_val_acc
    # the resumed epochs did change the weights (the comparison above is not trivially true)
    assert not all(torch.equal(a[k], after_two[k]) for k in a)


@pytest.mark.parametrize("when", ["while scanning", "before the first batch"])
def test_resume_without_any_finished_epoch_starts_over(tmp_path, when):
    token = StopToken()
    if when == "while scanning":
        token.stop()
    rec = Recorder(run_started=lambda info: token.stop())
    part = train(tiny_config(image_folder(tmp_path), epochs=1), rec, token, model_kwargs=MODEL_KWARGS)
    assert part.status == "stopped" and part.epochs_done == 0
    assert "batch_finished" not in rec.names() and rec.of("run_finished") == [part]
    rec = Recorder()
    assert resume(part.run_dir, rec).status == "finished"
    assert rec.of("run_started")[0].start_epoch == 0
    assert len(rec.of("epoch_finished")) == 1


def test_resume_refuses_missing_and_live_runs(tmp_path):
    from dtl_engine.runs.listing import update_run_file

    live = tmp_path / "live"
    part = train(tiny_config(image_folder(tmp_path), epochs=1, max_steps=1), model_kwargs=MODEL_KWARGS)
    shutil.copytree(part.run_dir, live)
    update_run_file(live, status="running")            # as if this very process were training it
    rec = Recorder()
    with pytest.raises(RunError, match="still running"):
        resume(live, rec)
    assert "still running" in rec.of("run_failed")[0][0]
    assert json.loads((live / "run.json").read_text())["status"] == "running"
    with pytest.raises(RunError, match="There is no run folder"):
        resume(tmp_path / "no_such_run")
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(RunError, match="not a run folder"):
        resume(tmp_path / "empty_folder")

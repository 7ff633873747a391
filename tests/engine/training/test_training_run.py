"""A whole run on a tiny ViT: listener story, stop, pause, crash, early stopping, step budget, files."""
from __future__ import annotations

import json
import threading

import pytest
import torch

from dtl_engine.errors import RunError
from dtl_engine.listener import StopToken
from dtl_engine.model.dtl import DTLModel
from dtl_engine.runs.listing import load_run_model
from dtl_engine.training import resume, train
from dtl_engine.runs.checkpoint import load_state
from image_factory import tree_snapshot
from run_builders import MODEL_KWARGS, Recorder, image_folder, run_weights, tiny_config


@pytest.mark.slow
def test_listener_story_files_and_report(tmp_path):
    data = image_folder(tmp_path)
    before = tree_snapshot(data)
    rec = Recorder()
    result = train(tiny_config(data), rec, model_kwargs=MODEL_KWARGS)

    names = [n for n in rec.names() if n not in ("memory_sample", "warning")]
    # 24 training images, batch 8 -> 3 steps per epoch; each epoch: batches, epoch, checkpoint
    assert names == ["run_started"] + (["batch_finished"] * 3 + ["epoch_finished", "checkpoint_saved"]) * 3 \
        + ["run_finished"]
    started = rec.of("run_started")[0]
    assert (started.num_train, started.num_val, started.steps_per_epoch) == (24, 6, 3)
    assert 0 < started.trainable_params < started.total_params
    assert started.device == "cpu" and started.precision == "fp32"
    batches = rec.of("batch_finished")
    assert [b.global_step for b in batches] == list(range(1, 10))
    assert all(b.memory_bytes > 0 and b.peak_memory_bytes >= b.memory_bytes for b in batches)
    # a range at first (the later epochs and the validation not measured yet); after the last step the
    # last validation and the evaluation are still to come, so the time left is not 0
    assert batches[0].eta_low_seconds < batches[0].eta_high_seconds
    assert 0 < batches[-1].eta_seconds < batches[0].eta_high_seconds
    assert batches[0].lr < batches[3].lr   # warm-up over the first epoch

    assert result.status == "finished" and result.epochs_done == 3
    assert rec.of("run_finished")[0] is result
    run = tmp_path / "dtl_home"  # the conftest's private user folder holds the run
    assert str(run) in result.run_dir
    metrics = json.loads((tmp_path / result.run_dir / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert set(metrics[0]) >= {"train_loss", "val_loss", "train_acc", "val_acc", "lr", "seconds"}
    best = max(range(3), key=lambda e: (metrics[e]["val_acc"], -e))
    assert result.best_epoch == best
    epochs = rec.of("epoch_finished")
    assert [e.is_best for e in epochs].count(True) >= 1 and epochs[best].is_best

    report = json.loads((tmp_path / result.run_dir / "report.json").read_text())
    assert report["split"] == "val" and report["num_images"] == 6 and report["best_epoch"] == best
    assert sum(map(sum, report["confusion"])) == 6
    assert result.report.accuracy == pytest.approx(report["accuracy"])
    run_json = json.loads((tmp_path / result.run_dir / "run.json").read_text())
    assert run_json["status"] == "finished" and run_json["epochs_done"] == 3

    # the checkpoint holds only the trainable weights: kilobytes
    assert (tmp_path / result.run_dir / "checkpoint.safetensors").stat().st_size < 100_000
    model, classes = load_run_model(result.run_dir, "best")
    assert classes == ["class_0", "class_1", "class_2"]
    for k, v in run_weights(result.run_dir, "best.safetensors").items():
        assert torch.equal(model.trainable_state_dict()[k], v)
    assert tree_snapshot(data) == before   # nothing written into the data folder
    assert not (tmp_path / result.run_dir / "cache").exists()


@pytest.mark.slow
def test_stop_mid_epoch_leaves_loadable_checkpoint_and_resumes(tmp_path):
    token = StopToken()
    rec = Recorder(batch_finished=lambda b: token.stop() if (b.epoch, b.step) == (1, 1) else None)
    result = train(tiny_config(image_folder(tmp_path), epochs=4), rec, token,
                   model_kwargs=MODEL_KWARGS)
    assert result.status == "stopped" and result.epochs_done == 1 and result.report is None
    batches = rec.of("batch_finished")
    assert (batches[-1].epoch, batches[-1].step) == (1, 1)   # honoured before the next batch
    assert json.loads((tmp_path / result.run_dir / "run.json").read_text())["status"] == "stopped"
    assert load_state(result.run_dir)["epoch"] == 0            # resume point: the last whole epoch
    model, _ = load_run_model(result.run_dir, "last")
    assert all(torch.equal(model.trainable_state_dict()[k], v) for k, v in run_weights(result.run_dir).items())

    again = resume(result.run_dir, rec2 := Recorder())
    assert again.status == "finished" and again.epochs_done == 4
    assert rec2.of("run_started")[0].start_epoch == 1
    assert [e.epoch for e in rec2.of("epoch_finished")] == [1, 2, 3]


@pytest.mark.slow
def test_pause_from_another_thread_blocks_then_continues(tmp_path):
    token = StopToken()
    paused = threading.Event()
    first = threading.Event()

    def on_batch(stats):
        if stats.global_step == 1:
            first.set()
            assert paused.wait(10)        # the watcher has paused before the loop goes on

    rec = Recorder(batch_finished=on_batch)
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(result=train(
        tiny_config(image_folder(tmp_path), epochs=2), rec, token, model_kwargs=MODEL_KWARGS)))
    worker.start()
    assert first.wait(30)
    token.pause()
    paused.set()
    worker.join(0.5)
    assert worker.is_alive() and len(rec.of("batch_finished")) == 1   # held while paused
    token.resume()
    worker.join(60)
    assert out["result"].status == "finished" and len(rec.of("batch_finished")) == 6


@pytest.mark.slow
def test_crash_calls_run_failed_marks_failed_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    forward = DTLModel.forward

    def flaky(self, images):
        calls["n"] += 1
        if calls["n"] == 5:   # second epoch, after epoch 0 was checkpointed (3 train + 1 val batches)
            raise ValueError("injected failure")
        return forward(self, images)

    monkeypatch.setattr(DTLModel, "forward", flaky)
    rec = Recorder()
    with pytest.raises(ValueError, match="injected failure"):
        train(tiny_config(image_folder(tmp_path)), rec, model_kwargs=MODEL_KWARGS)
    (message, details), = rec.of("run_failed")
    assert "injected failure" in message and "Traceback" in details and "ValueError" in details
    assert "run_finished" not in rec.names()
    run_dir = rec.of("run_started")[0].run_dir
    assert json.loads((tmp_path / run_dir / "run.json").read_text())["status"] == "failed"
    assert load_state(run_dir)["epoch"] == 0
    load_run_model(run_dir, "last")

    monkeypatch.setattr(DTLModel, "forward", forward)
    assert resume(run_dir).status == "finished"


@pytest.mark.slow
def test_early_stopping_and_step_budget(tmp_path):
    data = image_folder(tmp_path)
    rec = Recorder()
    # a vanishing learning rate: validation accuracy never improves after the first epoch
    result = train(tiny_config(data, epochs=10, lr=1e-12, early_stopping=2), rec, model_kwargs=MODEL_KWARGS)
    assert result.status == "finished" and result.epochs_done == 3 and result.best_epoch == 0
    assert any("Stopped early" in w for w in rec.of("warning"))

    rec = Recorder()
    result = train(tiny_config(data, epochs=10, max_steps=2), rec, model_kwargs=MODEL_KWARGS)
    assert len(rec.of("batch_finished")) == 2 and result.epochs_done == 1 and result.status == "finished"


def test_bad_requests_fail_with_a_sentence(tmp_path, monkeypatch):
    data = image_folder(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rec = Recorder()
    with pytest.raises(RunError, match="No CUDA GPU"):
        train(tiny_config(data, device="cuda"), rec, model_kwargs=MODEL_KWARGS)
    assert "No CUDA GPU" in rec.of("run_failed")[0][0]
    with pytest.raises(RunError, match="inside the image folder"):
        train(tiny_config(data), run_dir=data / "runs", model_kwargs=MODEL_KWARGS)
    assert not (data / "runs").exists()


def test_bf16_autocast_on_cpu_when_asked(tmp_path):
    rec = Recorder()
    result = train(tiny_config(image_folder(tmp_path, per_class=4), epochs=1, precision="bf16",
                               cache_features="on"), rec, model_kwargs=MODEL_KWARGS)
    assert rec.of("run_started")[0].precision == "bf16" and result.status == "finished"
    assert all(v.dtype == torch.float32 for v in run_weights(result.run_dir).values())   # master weights fp32


def test_a_diverged_training_fails_with_a_sentence_instead_of_finishing(tmp_path):
    """Weights that became NaN classify every image alike: such a run is not 'finished' with an accuracy.

    (It first backs off to its best weights at a lower rate, twice at most; at 1e30 that cannot help.)
    """
    from dtl_engine.runs.folder import RunFolder

    data = image_folder(tmp_path, per_class=4)
    recorder = Recorder()
    with pytest.raises(RunError, match="diverged"):
        train(tiny_config(data, epochs=4, lr=1e30), recorder, run_dir=tmp_path / "run", model_kwargs=MODEL_KWARGS)
    folder = RunFolder(tmp_path / "run")
    assert folder.status() == "failed" and not folder.has_report()
    assert [name for name, _ in recorder.events if name == "run_finished"] == []

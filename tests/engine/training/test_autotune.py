"""The automatic learning rate and augmentation, the recipes, and the official model details in real runs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dtl_engine.cli import main as cli
from dtl_engine.config import TrainConfig
from dtl_engine.data import ImageDataset
from dtl_engine.errors import RunError
from dtl_engine.training import resume, train
from dtl_engine.training.autotune import SEARCH_FILE, SIDE_LR_FACTOR, read_search, side_rate, split_for_search
from dtl_engine.training import side_trials
from dtl_engine.training.side_trials import SideTrial, candidate_rates, fit_budget, pick, side_trial_steps
from run_builders import MODEL_KWARGS, Recorder, image_folder, tiny_config

torch.set_num_threads(1)


def _auto(data: Path, **overrides) -> TrainConfig:
    # the tiny model, with the learning rate and augmentation left to the search (the product's default)
    values = dict(lr="auto", augment="auto", cache_features="auto")
    values.update(overrides)
    return tiny_config(data, **values)


def _half_bright(path: Path, left: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 40, size=(24, 24, 3)).astype(np.uint8)
    pixels[:, :12 if left else 24][:, (0 if left else 12):] += 180   # one half bright
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path)


def test_search_split_is_inside_the_training_split_stratified_and_seeded():
    labels = [0] * 30 + [1] * 10 + [2] * 2
    a_train, a_val = split_for_search(labels, seed=3)
    assert split_for_search(labels, seed=3) == (a_train, a_val)          # deterministic
    assert split_for_search(labels, seed=4) != (a_train, a_val)
    assert not set(a_train) & set(a_val) and set(a_train) | set(a_val) <= set(range(len(labels)))
    for c in (0, 1, 2):                                                  # every class on both sides
        assert any(labels[i] == c for i in a_train) and any(labels[i] == c for i in a_val)


@pytest.mark.slow
def test_auto_run_records_its_choice_uses_only_training_images_and_is_deterministic(tmp_path, monkeypatch):
    data = image_folder(tmp_path, per_class=10)
    log = tmp_path / "loaded.txt"           # a file: the loader's worker processes read the images too
    original = ImageDataset.__getitem__

    def spy(self, index):
        with open(log, "a", encoding="utf-8") as out:
            out.write(self.samples[index][0] + "\n")
        return original(self, index)

    monkeypatch.setattr(ImageDataset, "__getitem__", spy)
    _slow_updates(monkeypatch, 1e-6)    # the trials of the whole model are bounded by time: none, on any machine
    seen_at_search: list[str] = []
    listener = Recorder(search_finished=lambda result: seen_at_search.extend(log.read_text().splitlines()))
    first = train(_auto(data), listener, run_dir=tmp_path / "a", model_kwargs=MODEL_KWARGS)

    split = json.loads((tmp_path / "a" / "split.json").read_text())
    val_paths = {p for p, _ in split["val"]}
    assert seen_at_search and not set(seen_at_search) & val_paths     # the search never read a validation image
    search = read_search(tmp_path / "a")
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert search.lr_searched and search.augment_searched
    assert config["lr"] == search.lr and config["augment"] == search.augment   # config.json: resolved values
    plain = [t for t in search.trials if t.augment == "none" and t.kind == "probe"]   # the probe at every rate
    assert sorted(t.lr for t in plain) == [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
    best = min(plain, key=lambda t: (t.val_loss, -t.val_acc))
    # DTL, with no time for trials of the whole model: a tenth of the probe's best
    assert not [t for t in search.trials if t.kind == "side"] and search.side_steps == 0
    assert search.lr == side_rate(best.lr, (1e-3, 3e-3, 1e-2, 3e-2))
    assert {t.augment for t in search.trials} == {"none", "light-noflip", "light"}
    assert all(t.lr == best.lr for t in search.trials if t.augment != "none")
    assert all(t.curve and 0.0 <= t.val_acc <= 1.0 for t in search.trials)
    assert "learning rate chosen automatically" in search.summary()
    assert sum(name == "search_finished" for name, _ in listener.events) == 1

    second = train(_auto(data), run_dir=tmp_path / "b", model_kwargs=MODEL_KWARGS)
    again = read_search(tmp_path / "b")
    assert [(t.lr, t.augment, t.val_acc, t.val_loss) for t in again.trials] == \
        [(t.lr, t.augment, t.val_acc, t.val_loss) for t in search.trials]
    assert second.best_val_acc == first.best_val_acc


@pytest.mark.slow
def test_a_typed_learning_rate_wins_and_resume_does_not_search_again(tmp_path):
    data = image_folder(tmp_path)
    stopper = Recorder()
    stopper.on["epoch_finished"] = lambda stats: token.stop()
    from dtl_engine.listener import StopToken

    token = StopToken()
    result = train(_auto(data, lr=5e-3, epochs=3), stopper, token, run_dir=tmp_path / "run", model_kwargs=MODEL_KWARGS)
    assert result.status == "stopped"
    search = read_search(tmp_path / "run")
    assert not search.lr_searched and search.augment_searched and search.lr == 5e-3
    assert {t.augment for t in search.trials} == {"none", "light-noflip", "light"}
    assert "augmentation chosen automatically" in search.summary()
    before = (tmp_path / "run" / SEARCH_FILE).stat().st_mtime_ns
    listener = Recorder()
    done = resume(tmp_path / "run", listener)
    assert done.status == "finished"
    assert not any(name == "search_finished" for name, _ in listener.events)     # the recorded choice is reused
    assert (tmp_path / "run" / SEARCH_FILE).stat().st_mtime_ns == before
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lr"] == 5e-3


@pytest.mark.slow
def test_the_search_refuses_flips_where_mirroring_changes_the_class(tmp_path):
    data = tmp_path / "halves"
    for i in range(24):
        _half_bright(data / "left" / f"l{i}.png", left=True, seed=i)
        _half_bright(data / "right" / f"r{i}.png", left=False, seed=100 + i)
    train(_auto(data, epochs=4, lr=1e-2), run_dir=tmp_path / "run", model_kwargs=MODEL_KWARGS)
    search = read_search(tmp_path / "run")
    scores = {t.augment: t.val_acc for t in search.trials}
    assert scores["light"] < scores["none"]          # a mirrored 'left' image is a 'right' one
    assert search.augment != "light"


def test_linear_probe_gets_the_same_search_with_its_own_rates(tmp_path):
    data = image_folder(tmp_path)
    train(_auto(data, method="linear", epochs=2), run_dir=tmp_path / "run", model_kwargs=MODEL_KWARGS)
    search = read_search(tmp_path / "run")
    plain = [t for t in search.trials if t.augment == "none"]
    assert search.lr_searched and sorted(t.lr for t in plain) == [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
    assert search.lr == min(plain, key=lambda t: (t.val_loss, -t.val_acc)).lr   # the probe's own best rate


def test_paper_recipe_resolves_every_setting_and_keeps_the_last_epoch(tmp_path):
    data = image_folder(tmp_path, per_class=6)
    code = cli.main(["train", str(data), "--recipe", "paper", "--backbone", "test_vit", "--weights", "random",
                     "--model-kwargs", json.dumps(MODEL_KWARGS), "--image-size", "32", "--device", "cpu",
                     "--max-steps", "4", "--batch-size", "4", "--out", str(tmp_path / "run")])
    assert code == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["recipe"], config["epochs"], config["warmup_epochs"]) == ("paper", 100, 10.0)
    assert (config["augment"], config["resize"], config["normalize"], config["keep"]) == (
        "none", "squash", "0.5", "last")
    assert config["drop_path"] == 0.1 and config["drop_last"] is True and config["warmup_prefix"] is False
    assert config["weight_decay"] == 0.05 and isinstance(config["lr"], float) and 1e-4 <= config["lr"] <= 1e-2
    spec = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert spec["data_overrides"]["mean"] == [0.5, 0.5, 0.5] and spec["data_overrides"]["crop_mode"] == "squash"
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert run["best_epoch"] == metrics[-1]["epoch"]              # the last epoch is the result
    assert TrainConfig(recipe="paper", epochs=7).epochs == 7     # a value given explicitly wins
    with pytest.raises(RunError, match="recipe"):
        TrainConfig(recipe="fast")


def test_dtl_plus_with_an_even_kernel_trains(tmp_path):
    data = image_folder(tmp_path, per_class=4)
    result = train(tiny_config(data, method="dtl+", fusion_kernel=4, epochs=1), run_dir=tmp_path / "run",
                   model_kwargs=MODEL_KWARGS)
    assert result.status == "finished"
    spec = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert spec["fusion_kernel"] == 4


def test_the_run_starts_its_classifier_from_the_searched_probe(tmp_path, monkeypatch):
    from dtl_engine.training import autotune, kept_weights

    probes, heads = [], []
    real_run, real_build = autotune.AutoTuner.run, kept_weights.build_optimizer

    def spy_run(self):
        result = real_run(self)
        probes.append(self.head_start)
        return result

    def spy_build(model, *args, **kwargs):          # the optimizer is built right after the search
        heads.append((model.head.weight.detach().clone(), model.head.bias.detach().clone()))
        return real_build(model, *args, **kwargs)

    monkeypatch.setattr(autotune.AutoTuner, "run", spy_run)
    monkeypatch.setattr(kept_weights, "build_optimizer", spy_build)
    train(_auto(image_folder(tmp_path), epochs=1), run_dir=tmp_path / "run", model_kwargs=MODEL_KWARGS)
    (weight, bias), = probes
    assert torch.equal(heads[0][0], weight) and torch.equal(heads[0][1], bias)
    assert bias.abs().sum() > 0                      # trained, not the official start (zero bias)


def test_the_batched_trial_optimiser_makes_torch_adamw_updates():
    from dtl_engine.training.batched_adamw import BatchedAdamW

    gen = torch.Generator().manual_seed(0)
    start = torch.randn(3, 4, 5, generator=gen)
    lrs = [1e-3, 1e-2, 1e-1]
    batched = start.clone()
    adam = BatchedAdamW([batched], decays=[0.05])
    params = [torch.nn.Parameter(start[j].clone()) for j in range(3)]
    reference = torch.optim.AdamW([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], weight_decay=0.05)
    for _ in range(5):
        grads = torch.randn(3, 4, 5, generator=gen)
        adam.step([grads], torch.tensor(lrs))
        for p, g in zip(params, grads):
            p.grad = g.clone()
        reference.step()
    assert torch.allclose(batched, torch.stack([p.detach() for p in params]), atol=1e-6)
    assert not torch.allclose(batched, start)


def _slow_updates(monkeypatch, seconds: float) -> None:
    # the trials' bound reads the time of one update of the whole model; a fixed one makes the run's
    # estimate (its updates at that speed) long or short against the search's own time so far
    monkeypatch.setattr(side_trials, "measure_step_seconds", lambda *args, **kwargs: seconds)


@pytest.mark.slow
def test_a_run_with_time_to_spare_chooses_the_side_networks_rate_from_short_runs_of_the_whole_model(
        tmp_path, monkeypatch):
    data = image_folder(tmp_path, per_class=10)
    _slow_updates(monkeypatch, 10.0)    # 240 updates of 10 s: a run long enough that every planned trial fits
    run_dir = tmp_path / "run"
    train(_auto(data, batch_size=2, epochs=20), run_dir=run_dir, model_kwargs=MODEL_KWARGS)
    search = read_search(run_dir)
    probe = min((t for t in search.trials if t.kind == "probe" and t.augment == "none"),
                key=lambda t: (t.val_loss, -t.val_acc))
    side = [t for t in search.trials if t.kind == "side"]
    # short runs of the whole model at a tenth of the probe's best and its neighbours; the best of them
    assert [t.lr for t in side] == candidate_rates(probe.lr * SIDE_LR_FACTOR) and 2 <= len(side) <= 3
    assert search.lr == pick([SideTrial(t.lr, t.val_loss, t.val_acc, t.steps, t.seconds, t.curve) for t in side]).lr
    assert search.side_steps == side_trial_steps(search.steps_per_trial) > 0
    assert all(t.steps == search.side_steps and t.curve for t in side)
    assert search.side_budget["reason"].startswith("all planned trials fit")
    assert json.loads((run_dir / "config.json").read_text())["lr"] == search.lr


@pytest.mark.slow
def test_side_trials_too_slow_for_the_runs_time_are_left_out_and_the_record_says_why(tmp_path, monkeypatch):
    data = image_folder(tmp_path, per_class=10)
    _slow_updates(monkeypatch, 1e-6)    # the run's updates cost nothing next to the search: no room for trials
    run_dir = tmp_path / "run"
    train(_auto(data, batch_size=2, epochs=20), run_dir=run_dir, model_kwargs=MODEL_KWARGS)
    search = read_search(run_dir)
    probe = min((t for t in search.trials if t.kind == "probe" and t.augment == "none"),
                key=lambda t: (t.val_loss, -t.val_acc))
    assert not [t for t in search.trials if t.kind == "side"] and search.side_steps == 0
    assert search.side_budget["rates"] == [] and "fixed factor" in search.side_budget["reason"]
    assert search.lr == side_rate(probe.lr, (1e-3, 3e-3, 1e-2, 3e-2))


def test_the_side_trials_budget_cuts_updates_then_the_largest_rate_then_everything():
    rates, wanted = [1e-3, 3e-3, 1e-2], 20

    def fit(step: float, spent: float = 10.0):
        return fit_budget(rates, wanted, step, score_images=64, batch_size=32, total_steps=1000,
                          spent_seconds=spent, reused_seconds=0.0, run_scored_images=2000)

    def cost(b) -> float:
        return len(b.rates) * (b.steps * b.step_seconds + b.score_seconds)

    def leaving(allowed: float) -> float:     # the search's time so far that leaves the trials ``allowed`` seconds
        probe = fit(0.1)
        return probe.share * probe.run_seconds / (1.0 - probe.share) - allowed

    # at 0.1 s an update, 3 trials of 20 cost 6 s (+ scoring), of 12: 3.6 s; 2 trials of 12: 2.4 s
    roomy, tight, tighter, none = fit(1.0), fit(0.1, leaving(5.0)), fit(0.1, leaving(3.2)), fit(0.1, leaving(1.0))
    assert (roomy.rates, roomy.steps) == (rates, wanted) and cost(roomy) <= roomy.allowed_seconds
    assert tight.rates == rates and side_trials.MIN_SIDE_TRIAL_STEPS <= tight.steps < wanted
    assert tighter.rates == rates[:2] and tighter.steps >= side_trials.MIN_SIDE_TRIAL_STEPS
    assert "largest" in tighter.reason and "updates per trial" in tight.reason
    for b in (tight, tighter):          # what was cut is what the search's share of the run's time allows
        assert cost(b) <= b.allowed_seconds < cost(b) + len(b.rates) * b.step_seconds + 3 * b.score_seconds
        spent_with_trials = b.spent_seconds + cost(b)
        assert spent_with_trials <= b.share * (spent_with_trials + b.run_seconds) + 1e-9
    assert none.rates == [] and none.steps == 0 and "fixed factor" in none.reason

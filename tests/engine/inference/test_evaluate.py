"""Evaluation maths against a hand-computed confusion matrix, and re-evaluating a saved run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dtl_engine.inference.evaluate import Evaluation, build_evaluation, evaluate_run
from dtl_engine.training import train
from run_builders import MODEL_KWARGS, tiny_config


def test_scores_match_a_hand_computed_confusion_matrix():
    classes = ["cat", "dog", "owl"]
    #           true: cat cat cat dog dog owl owl owl owl
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    predicted = [0, 0, 1, 1, 2, 2, 2, 0, 2]
    confidence = [0.9, 0.8, 0.7, 0.6, 0.95, 0.5, 0.6, 0.85, 0.7]
    probs = torch.zeros(9, 3)
    for i, (p, c) in enumerate(zip(predicted, confidence)):
        probs[i] = (1 - c) / 2
        probs[i, p] = c
    paths = [f"img{i}.png" for i in range(9)]
    ev = build_evaluation(probs, labels, paths, classes, best_epoch=4, split="test")

    assert ev.confusion == [[2, 1, 0],
                            [0, 1, 1],
                            [1, 0, 3]]
    assert ev.accuracy == pytest.approx(6 / 9)
    cat, dog, owl = ev.per_class
    # cat: precision 2/3 (column 2+0+1), recall 2/3; dog: 1/2, 1/2; owl: 3/4, 3/4
    assert (cat["precision"], cat["recall"], cat["support"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    assert (dog["precision"], dog["recall"], dog["f1"]) == (pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5))
    assert (owl["precision"], owl["recall"], owl["f1"]) == (
        pytest.approx(0.75), pytest.approx(0.75), pytest.approx(0.75))
    # mistakes, most confident first: dog->owl 0.95, owl->cat 0.85, cat->dog 0.7
    assert [(m["path"], m["true"], m["predicted"]) for m in ev.mistakes] == [
        ("img4.png", "dog", "owl"), ("img7.png", "owl", "cat"), ("img2.png", "cat", "dog")]
    assert ev.mistakes[0]["confidence"] == pytest.approx(0.95)
    assert (ev.best_epoch, ev.split, ev.num_images) == (4, "test", 9)
    assert Evaluation.from_dict(json.loads(json.dumps(ev.to_dict()))) == ev


def test_every_image_is_kept_so_each_matrix_cell_lists_exactly_its_images():
    classes = ["cat", "dog"]
    labels = [0, 0, 0, 1, 1]
    predicted = [0, 1, 0, 1, 0]
    probs = torch.tensor([[0.9, 0.1] if p == 0 else [0.3, 0.7] for p in predicted])
    ev = build_evaluation(probs, labels, [f"img{i}.png" for i in range(5)], classes)
    for t, true in enumerate(classes):
        for q, guess in enumerate(classes):
            cell = ev.cell(true, guess)
            assert len(cell) == ev.confusion[t][q]
            assert all((m["true"], m["predicted"]) == (true, guess) for m in cell)
    assert [m["path"] for m in ev.cell("cat", "cat")] == ["img0.png", "img2.png"]
    assert ev.cell("dog", "cat") == [{"path": "img4.png", "true": "dog", "predicted": "cat",
                                      "confidence": pytest.approx(0.9)}]


def test_a_report_saved_without_predictions_is_evaluated_again(tmp_path):
    from dtl_engine.inference.evaluate import current_evaluation
    from image_factory import make_split_folder

    data = make_split_folder(tmp_path / "images", train={"a": 6, "b": 6}, val={"a": 2, "b": 2}, size=(24, 24))
    result = train(tiny_config(data, epochs=1), model_kwargs=MODEL_KWARGS)
    report_file = tmp_path / result.run_dir / "report.json"
    old = json.loads(report_file.read_text())
    assert len(old.pop("predictions")) == 4
    report_file.write_text(json.dumps(old))                 # as an older version saved it
    again = current_evaluation(result.run_dir)
    assert len(again.predictions) == 4
    assert len(json.loads(report_file.read_text())["predictions"]) == 4


def test_undefined_scores_are_zero_not_errors():
    ev = build_evaluation(torch.tensor([[0.9, 0.1], [0.8, 0.2]]), [0, 0], ["a", "b"], ["x", "y"])
    assert ev.per_class[1] == {"name": "y", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert ev.accuracy == 1.0


@pytest.mark.slow
def test_evaluate_run_uses_the_test_split_when_present(tmp_path):
    from image_factory import make_split_folder

    data = make_split_folder(tmp_path / "images", train={"a": 8, "b": 8}, val={"a": 2, "b": 2},
                             test={"a": 3, "b": 3}, size=(24, 24))
    result = train(tiny_config(data, epochs=2), model_kwargs=MODEL_KWARGS)
    assert result.report.split == "test" and result.report.num_images == 6
    report_file = tmp_path / result.run_dir / "report.json"
    report_file.unlink()
    again = evaluate_run(result.run_dir)
    assert again == result.report                       # same best weights, same images -> same report
    assert json.loads(report_file.read_text())["split"] == "test"


@pytest.mark.slow
def test_re_evaluation_names_the_epoch_whose_weights_it_used(tmp_path):
    """With the paper's 'last epoch' rule the weights are the last epoch's, whatever the best validation was."""
    from image_factory import make_image_folder

    data = make_image_folder(tmp_path / "images", {"a": 6, "b": 6}, size=(24, 24))
    result = train(tiny_config(data, epochs=2, keep="last"), model_kwargs=MODEL_KWARGS)
    assert result.report.best_epoch == 1                # the last epoch is the result
    metrics_file = tmp_path / result.run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics[0]["val_acc"], metrics[1]["val_acc"] = 0.9, 0.5     # a curve that peaked before the end
    metrics_file.write_text(json.dumps(metrics))
    again = evaluate_run(result.run_dir)
    assert again.best_epoch == 1 and again.accuracy == result.report.accuracy
    # killed between writing the weights and recording the epoch: the weights file itself says which it is
    run_file = tmp_path / result.run_dir / "run.json"
    run_file.write_text(json.dumps({**json.loads(run_file.read_text()), "best_epoch": 0}))
    assert evaluate_run(result.run_dir).best_epoch == 1


def test_a_saved_report_of_older_weights_is_not_shown_as_current(tmp_path):
    """Evaluate a stopped run, resume it, stop again: its best weights changed, so the old report is stale."""
    from image_factory import make_image_folder

    from dtl_engine.inference.evaluate import current_evaluation
    from dtl_engine.listener import StopToken
    from dtl_engine.training import resume
    from run_builders import Recorder

    def stop_after(epoch: int) -> tuple[Recorder, StopToken]:
        token = StopToken()
        return Recorder(checkpoint_saved=lambda _path, done: token.stop() if done == epoch else None), token

    data = make_image_folder(tmp_path / "images", {"a": 6, "b": 6}, size=(24, 24))
    listener, token = stop_after(0)
    first = train(tiny_config(data, epochs=3, keep="last"), listener, token, model_kwargs=MODEL_KWARGS)
    assert first.status == "stopped" and evaluate_run(first.run_dir).best_epoch == 0     # saved as the report
    listener, token = stop_after(1)
    assert resume(first.run_dir, listener, token).status == "stopped"
    assert current_evaluation(first.run_dir).best_epoch == 1


def _flat_model_and_samples(tmp_path, n: int, broken: int = 0):
    from image_factory import make_image

    samples = [(str(make_image(tmp_path / f"{i}.png", i % 2, size=(8, 8), seed=i)), i % 2) for i in range(n)]
    for i in range(broken):
        (tmp_path / f"bad{i}.jpg").write_bytes(b"not an image")
        samples.append((str(tmp_path / f"bad{i}.jpg"), 0))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))

    def transform(image):
        pixels = np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32)
        return torch.from_numpy(pixels).permute(2, 0, 1) / 255
    return model, samples, transform


def test_predict_probs_reports_progress_per_batch_up_to_every_image(tmp_path):
    from dtl_engine.inference.evaluate import predict_probs

    model, samples, transform = _flat_model_and_samples(tmp_path, 10, broken=1)
    seen: list[tuple[int, int]] = []
    probs, indices, failed = predict_probs(model, samples, transform, torch.device("cpu"), batch_size=4,
                                           progress=lambda done, total: seen.append((done, total)))
    assert len(indices) == 10 and len(failed) == 1
    assert seen == [(0, 11), (4, 11), (8, 11), (11, 11)]     # a failed image counts as done, too


def test_predict_probs_stops_when_asked(tmp_path):
    from dtl_engine.errors import RunError
    from dtl_engine.inference.evaluate import predict_probs

    model, samples, transform = _flat_model_and_samples(tmp_path, 12)
    seen: list[int] = []
    with pytest.raises(RunError, match="cancelled"):
        predict_probs(model, samples, transform, torch.device("cpu"), batch_size=4,
                      progress=lambda done, _total: seen.append(done), should_stop=lambda: len(seen) >= 2)
    assert seen == [0, 4]            # stopped before the second batch was scored

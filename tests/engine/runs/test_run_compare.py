"""compare_runs: each run's settings, curves and final figures, and which settings differ."""
from __future__ import annotations

import pytest

from dtl_engine.errors import RunError
from dtl_engine.runs.compare import compare_runs
from dtl_engine.runs.folder import RunFolder


def _run(path, lr, epochs, accs, f1s, extra=None):
    folder = RunFolder(path)
    folder.path.mkdir(parents=True)
    folder.update_run(status="finished", epochs_done=len(accs), best_val_acc=max(accs), best_epoch=0)
    config = {"backbone": "test_vit", "lr": lr, "epochs": epochs, "augment": "none", "world_size": 1}
    folder.write_config({**config, **(extra or {})})
    folder.write_metrics([{"epoch": i, "val_acc": a, "val_loss": 1 - a, "train_loss": 1.0} for i, a in enumerate(accs)])
    folder.write_report({"accuracy": accs[-1], "split": "val",
                         "per_class": [{"name": n, "f1": f} for n, f in f1s.items()]})
    return folder.path


def test_compare_reads_curves_and_marks_the_settings_that_differ(tmp_path):
    a = _run(tmp_path / "a", 0.01, 3, [0.5, 0.6, 0.7], {"cat": 0.8, "dog": 0.6})
    b = _run(tmp_path / "b", 0.001, 3, [0.4, 0.45], {"cat": 0.7, "dog": 0.9}, extra={"seed": 1})
    result = compare_runs([a, b])
    assert [r.name for r in result.runs] == ["a", "b"]
    assert result.differing == ["lr", "seed"]                    # one run lacks "seed": that differs too
    assert "world_size" not in result.settings                   # a fact of the launch, not a choice
    xs, ys = result.runs[0].curve("val_acc")
    assert xs == [1.0, 2.0, 3.0] and ys == [0.5, 0.6, 0.7]
    assert result.runs[1].curve("val_loss")[1] == pytest.approx([0.6, 0.55])
    assert result.runs[1].per_class_f1 == {"cat": 0.7, "dog": 0.9} and result.classes() == ["cat", "dog"]
    assert result.runs[0].final_accuracy == 0.7 and result.runs[0].best_val_acc == 0.7


def test_compare_refuses_one_run_and_names_a_damaged_one(tmp_path):
    a = _run(tmp_path / "a", 0.01, 3, [0.5], {"cat": 1.0})
    with pytest.raises(RunError, match="at least two runs"):
        compare_runs([a])
    (tmp_path / "b").mkdir()
    with pytest.raises(RunError, match="'b'"):
        compare_runs([a, tmp_path / "b"])

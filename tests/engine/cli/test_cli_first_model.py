"""The command line shows the search as it works, the first model as epoch 0, and bench-accuracy's new figures."""
from __future__ import annotations

import re

import torch

from dtl_engine.bench.accuracy import Row, format_table, gap_line, mean_gap_line
from dtl_engine.cli import main as cli
from image_factory import make_image_folder

torch.set_num_threads(1)

TINY = ["--backbone", "test_vit", "--weights", "random", "--model-kwargs", '{"patch_size": 4, "img_size": 32}',
        "--batch-size", "8", "--device", "cpu", "--seed", "0"]


def test_train_prints_the_search_trials_and_the_first_model_as_epoch_0(tmp_path, capsys):
    data = make_image_folder(tmp_path / "images", {"apple": 8, "pear": 8, "plum": 8})
    assert cli.main(["train", str(data), *TINY, "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Search, trial \d+ of \d+: probe at 1e-03: validation loss", out)
    first = re.search(r"First model: (\d+\.\d) %", out)          # the app's log says the same words
    assert first and out.index("First model:") < out.index("Epoch 1/1:")
    assert "Learning rate chosen automatically" in out


def _row(name: str, lr: float, acc: float, **extra) -> Row:
    return Row(name=name, backbone="test_vit", method="dtl", lr=lr, augment="none", val_acc=acc, seconds=100.0,
               cpu_seconds=100.0, search_seconds=None, search_cpu_seconds=None, **extra)


def test_bench_accuracy_reads_the_gap_to_the_best_fixed_rate_and_the_new_columns():
    rows = [_row("DTL, defaults", 0.01, 0.912, first_acc=0.46, first_seconds=12.0, final_acc=0.91, backoffs=1,
                 backoff_seconds=10.0),
            _row("DTL lr 0.003 none", 0.003, 0.705), _row("DTL lr 0.03 none", 0.03, 0.925)]
    assert gap_line(rows) == ("defaults 0.912 (lr 0.01), best fixed rate 0.925 (lr 0.03): the defaults are "
                              "0.013 below it")
    table = format_table(rows)
    assert "| DTL, defaults | test_vit | 0.01 | none | 0.460 | 12 | 0.912 | 0.910 | 1 |" in table
    assert table.splitlines()[2].endswith("| 10% |")          # the back-offs' share of the run's time


def test_bench_accuracy_compares_means_over_seeds():
    rows = [_row("DTL, defaults", 0.03, 0.900, seed=0), _row("DTL lr 0.01 none", 0.01, 0.925, seed=0),
            _row("DTL lr 0.1 none", 0.1, 1.000, seed=0),
            _row("DTL, defaults", 0.01, 0.975, seed=1), _row("DTL lr 0.01 none", 0.01, 0.975, seed=1),
            _row("DTL lr 0.1 none", 0.1, 0.875, seed=1)]
    # seed 0 alone: 0.1 is best and the defaults are 0.100 below; over both seeds 0.01 is best on average
    assert gap_line(rows[:3]).endswith("0.100 below it")
    assert mean_gap_line(rows) == ("over seeds 0,1: defaults 0.938 on average, best fixed rate 0.950 on average "
                                   "(lr 0.01): the defaults are 0.012 below it")
    assert mean_gap_line(rows[:3]) is None                  # one seed: the single gap line says it


def test_bench_accuracy_refuses_bad_rates_with_a_sentence(capsys):
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench-accuracy", "--gap", "--rates", "fast"])
    assert exit_info.value.code == 2
    assert "is not a comma-separated list of learning rates" in capsys.readouterr().err

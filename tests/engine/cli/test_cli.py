"""The command line: help on every command, scan, one-sentence errors, train -> export -> predict, Ctrl+C."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dtl_engine.cli import main as cli
from dtl_engine.cli.progress import ProgressPrinter
from image_factory import make_image_folder

COMMANDS = ["scan", "train", "resume", "evaluate", "export", "predict", "explain", "doctor", "runs", "bench",
            "bench-accuracy"]
TINY = ["--backbone", "test_vit", "--weights", "random", "--model-kwargs", '{"patch_size": 4, "img_size": 32}',
        "--batch-size", "4", "--augment", "none", "--device", "cpu", "--seed", "0"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command, capsys):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m dtl_engine") and (command or "COMMAND") in out
    if command == "train":
        for flag in ("--backbone", "--weights", "--method", "--rank", "--epochs", "--max-steps", "--kernel",
                     "--checkpoint-blocks", "--early-stopping", "--out"):
            assert flag in out
    if command == "bench":
        assert "--batch" in out     # the benchmark's own options are wired in


def test_scan_prints_classes_and_counts(tmp_path, capsys):
    data = make_image_folder(tmp_path / "images", {"apple": 3, "pear": 5})
    (data / "pear" / "notes.txt").write_text("not an image")
    assert cli.main(["scan", str(data)]) == 0
    out = capsys.readouterr().out
    assert "8 images in 2 classes" in out
    assert re.search(r"apple\s+3", out) and re.search(r"pear\s+5", out)

    assert cli.main(["scan", str(data), "--json"]) == 0
    scan = json.loads(capsys.readouterr().out)
    assert scan["classes"] == ["apple", "pear"]


def test_bad_folder_exits_2_with_one_sentence_and_no_traceback(tmp_path):
    # The one test through a real `python -m dtl_engine` process.
    done = subprocess.run([sys.executable, "-m", "dtl_engine", "scan", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nowhere" in lines[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_train_on_one_class_is_a_sentence(tmp_path, capsys):
    data = make_image_folder(tmp_path / "images", {"only": 4})
    assert cli.main(["train", str(data), *TINY, "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1


@pytest.mark.slow
def test_train_export_predict_runs_evaluate(tmp_path, capsys):
    data = make_image_folder(tmp_path / "images", {"red": 6, "green": 6, "blue": 6})
    assert cli.main(["train", str(data), *TINY, "--epochs", "1", "--max-steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "Epoch 1/1:" in out and "Finished" in out
    run_dir = Path(re.search(r"^Run folder: (.+)$", out, re.M).group(1))
    assert (run_dir / "metrics.json").exists() and (run_dir / "report.json").exists()

    assert cli.main(["runs"]) == 0
    assert run_dir.name in capsys.readouterr().out

    model = tmp_path / "exports" / "model.pt"
    assert cli.main(["export", str(run_dir), "--out", str(model)]) == 0
    out = capsys.readouterr().out
    assert model.is_file() and "verified: yes" in out
    diff = float(re.search(r"max probability difference ([0-9.e+-]+)", out).group(1))
    assert diff <= 1e-4
    checked = int(re.search(r"verified: yes \((\d+) images", out).group(1))
    assert checked > 3      # the run's validation images on top of the synthetic batch of 3

    # a second export to the same file is refused; the file stays as it was
    before = model.read_bytes()
    assert cli.main(["export", str(run_dir), "--out", str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "already exists" in err and len(err.splitlines()) == 1
    assert model.read_bytes() == before

    image = data / "blue" / "img_0.png"
    assert cli.main(["predict", str(model), str(image), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and len(lines) == 3
    assert all(re.match(r"\s+\d+\.\d\d%\s+(red|green|blue)$", line) for line in lines[1:])

    assert cli.main(["evaluate", str(run_dir)]) == 0
    assert "Confusion matrix" in capsys.readouterr().out


def test_ctrl_c_stops_cleanly_and_says_where_the_checkpoint_is(tmp_path, capsys, monkeypatch):
    data = make_image_folder(tmp_path / "images", {"a": 6, "b": 6})
    real = ProgressPrinter.batch_finished
    handler_before = signal.getsignal(signal.SIGINT)   # SIG_IGN when the suite runs as a background job

    def press_ctrl_c_after_first_batch(self, stats):
        real(self, stats)
        if stats.global_step == 1:
            signal.raise_signal(signal.SIGINT)      # what a terminal sends on Ctrl+C

    monkeypatch.setattr(ProgressPrinter, "batch_finished", press_ctrl_c_after_first_batch)
    run_dir = tmp_path / "run"
    code = cli.main(["train", str(data), *TINY, "--epochs", "2", "--out", str(run_dir)])
    out = capsys.readouterr().out
    assert code == cli.EXIT_INTERRUPTED
    assert f"the checkpoint is {run_dir / 'checkpoint.safetensors'}" in out
    assert (run_dir / "checkpoint.safetensors").exists()
    assert f"resume {run_dir}" in out
    assert signal.getsignal(signal.SIGINT) is handler_before     # our handler is gone again
    assert json.loads((run_dir / "run.json").read_text())["status"] == "stopped"

    # and the stopped run continues from its checkpoint to the end
    monkeypatch.setattr(ProgressPrinter, "batch_finished", real)
    assert cli.main(["resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "Finished 2 epoch(s)" in out and "Epoch 2/2:" in out


@pytest.mark.slow
def test_bench_accuracy_prints_the_rows_side_by_side_and_the_search_share(tmp_path, capsys):
    data = make_image_folder(tmp_path / "images", {"apple": 8, "pear": 8}, size=(24, 24))
    assert cli.main(["bench-accuracy", str(data), "--epochs", "1", "--no-pretrained"]) == 0
    out = capsys.readouterr().out
    for row in ("DTL, defaults", "DTL, old fixed lr 1e-3 + light aug", "linear probe, defaults"):
        assert re.search(rf"\| {re.escape(row)} \| test_vit \| [0-9.e-]+ \| [a-z-]+ \| 0\.\d{{3}}|1\.000", out)
    assert "| 0.001 | light |" in out                                   # the old fixed settings, as typed
    assert re.search(r"search share of run time, DTL, defaults: \d+% of the CPU time", out)
    assert not list(data.rglob("*.json"))                               # nothing written into the data

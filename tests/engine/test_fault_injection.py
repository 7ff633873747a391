"""Fault injection: each way a hostile or unlucky user loses work, reproduced; each must end with the user's
files intact and either a correct result or a one-line refusal with a non-zero exit.

The numbers follow the list of defects found by attacking the engine and the CLI: the data set deleted (1),
existing folders overwritten (2), a silent retrain (3), a wrong accuracy reported as right (4), an export
aborting the process on a full disk (5), predict hanging on a FIFO (6), and the smaller points (7).
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
from image_factory import make_image, make_image_folder, tree_snapshot
from run_builders import MODEL_KWARGS, Recorder, image_folder, run_weights, tiny_config

from dtl_engine import fileio
from dtl_engine.cli import main as cli
from dtl_engine.cli import train as cli_train
from dtl_engine.runs import folder as run_folder
from dtl_engine.errors import DTLError, ExportError, RunError
from dtl_engine.runs.folder import RunFolder

TINY = ["--backbone", "test_vit", "--weights", "random", "--model-kwargs", json.dumps(MODEL_KWARGS),
        "--image-size", "32", "--batch-size", "8", "--augment", "none", "--device", "cpu", "--seed", "0"]


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_refusal(code: int, err: str, *words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 2-epoch run on a 3-class folder (module-wide; tests copy it before changing anything)."""
    from dtl_engine.training import train

    base = tmp_path_factory.mktemp("finished")
    data = image_folder(base, per_class=6)
    train(tiny_config(data, epochs=2), run_dir=base / "run", model_kwargs=MODEL_KWARGS)
    return base / "run"


def _copy(run: Path, tmp_path: Path, name: str = "run") -> Path:
    dest = tmp_path / name
    shutil.copytree(run, dest)
    return dest


# --- 1. the data set is deleted --------------------------------------------------------------

def test_1_out_containing_the_data_is_refused_and_the_data_survives(tmp_path, capsys):
    x = tmp_path / "X"
    data = make_image_folder(x / "cache", {"a": 4, "b": 4}, size=(24, 24))
    before = tree_snapshot(x)
    code, _, err = _cli(["train", str(data), *TINY, "--epochs", "1", "--out", str(x)], capsys)
    _one_line_refusal(code, err, "image folder")
    assert tree_snapshot(x) == before
    for out in (data, data / "run"):                    # equal to, inside
        code, _, err = _cli(["train", str(data), *TINY, "--epochs", "1", "--out", str(out)], capsys)
        _one_line_refusal(code, err, "image folder")
    assert tree_snapshot(x) == before


@pytest.mark.slow
def test_1_a_users_cache_folder_in_the_run_folder_survives_a_cached_run(finished, tmp_path, capsys):
    data = RunFolder(finished).read_config()["data_dir"]
    out = _copy(finished, tmp_path)
    users = out / "cache"
    users.mkdir(parents=True)
    (users / "keep.txt").write_text("mine")
    # the folder holds a run, so it takes --overwrite; even then only run files may go
    code, _, err = _cli(["train", data, *TINY, "--epochs", "2", "--cache-features", "on", "--out", str(out),
                         "--overwrite"], capsys)
    assert code == 0, err
    assert (users / "keep.txt").read_text() == "mine"


# --- 2. existing folders are silently overwritten ------------------------------------------------

def test_2_out_an_existing_run_or_folder_is_refused_without_overwrite(finished, tmp_path, capsys):
    data = Path(RunFolder(finished).read_config()["data_dir"])
    old = _copy(finished, tmp_path)
    before = _files(old)
    code, _, err = _cli(["train", str(data), *TINY, "--epochs", "1", "--out", str(old)], capsys)
    _one_line_refusal(code, err, "not empty", "--overwrite")
    assert _files(old) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text("my numbers")
    code, _, err = _cli(["train", str(data), *TINY, "--epochs", "1", "--out", str(mine)], capsys)
    _one_line_refusal(code, err, "not empty")
    assert (mine / "metrics.json").read_text() == "my numbers"


def test_2_overwrite_replaces_the_old_run_entirely(finished, tmp_path, capsys):
    data = Path(RunFolder(finished).read_config()["data_dir"])
    old = _copy(finished, tmp_path)
    code, _, err = _cli(["train", str(data), *TINY, "--epochs", "1", "--max-steps", "1", "--out", str(old),
                         "--overwrite"], capsys)
    assert code == 0, err
    folder = RunFolder(old)
    trained = [m for m in folder.read_metrics() if not m.get("first_model")]      # epoch 0 is the search's model
    assert folder.read_config()["epochs"] == 1 and len(trained) == 1
    assert not (old / run_folder.LOCK).exists()
    assert sorted(p.name for p in old.iterdir() if p.name.startswith(".")) == []   # nothing set aside is left


def test_2_a_refused_replacement_keeps_the_run_it_would_have_replaced(finished, tmp_path, capsys):
    """--overwrite replaces a run by a new one; input refused before the first step leaves the old run whole."""
    old = _copy(finished, tmp_path)
    before = _files(old)
    one = make_image_folder(tmp_path / "one", {"only": 3}, size=(24, 24))
    code, _, err = _cli(["train", str(one), *TINY, "--epochs", "1", "--out", str(old), "--overwrite"], capsys)
    _one_line_refusal(code, err, "one class")
    assert _files(old) == before
    assert sorted(p.name for p in old.iterdir()) == sorted(before)


class _StoppedToken(cli_train.StopToken):
    """Ctrl+C pressed before the scan is done."""

    def __init__(self) -> None:
        super().__init__()
        self.stop()


def test_2_a_stop_before_training_keeps_the_run_it_would_have_replaced(finished, tmp_path, capsys, monkeypatch):
    """Stopped during the scan, an --overwrite run has trained nothing: the old run stays whole."""
    old = _copy(finished, tmp_path)
    before = _files(old)
    data = Path(RunFolder(finished).read_config()["data_dir"])
    monkeypatch.setattr(cli_train, "StopToken", _StoppedToken)
    code, out, _ = _cli(["train", str(data), *TINY, "--epochs", "1", "--out", str(old), "--overwrite"], capsys)
    assert code == cli.EXIT_INTERRUPTED
    assert "nothing was trained" in out and "kept as it was" in out and "resume" not in out
    assert _files(old) == before
    assert sorted(p.name for p in old.iterdir()) == sorted(before)      # no event log or marker added


def test_2_a_stop_before_training_in_a_new_folder_is_not_called_a_checkpoint(tmp_path, capsys, monkeypatch):
    data = image_folder(tmp_path)
    monkeypatch.setattr(cli_train, "StopToken", _StoppedToken)
    code, out, _ = _cli(["train", str(data), *TINY, "--epochs", "1", "--out", str(tmp_path / "new")], capsys)
    assert code == cli.EXIT_INTERRUPTED
    assert "nothing was trained yet" in out and "checkpoint" not in out
    assert RunFolder(tmp_path / "new").read_run()["status"] == "stopped"


@pytest.mark.slow
def test_2_two_concurrent_writers_the_second_fails_at_once(tmp_path):
    from dtl_engine.training import train

    data = image_folder(tmp_path, per_class=6)
    out = tmp_path / "run"
    first_started, second_done = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def hold(info):
        first_started.set()
        second_done.wait(120)               # the first run stays in its first epoch until the second tried

    def first():
        outcome["first"] = train(tiny_config(data, epochs=1), Recorder(run_started=hold), run_dir=out,
                                 model_kwargs=MODEL_KWARGS)

    thread = threading.Thread(target=first)
    thread.start()
    assert first_started.wait(120)
    config_before = (out / run_folder.CONFIG).read_bytes()
    for overwrite in (False, True):         # even --overwrite never takes a folder that is being written
        t0 = time.monotonic()
        with pytest.raises(RunError, match="in use by another training process|still training|not empty"):
            train(tiny_config(data, epochs=3, seed=1), run_dir=out, model_kwargs=MODEL_KWARGS, overwrite=overwrite)
        assert time.monotonic() - t0 < 10
    second_done.set()
    thread.join(120)
    assert outcome["first"].status == "finished"
    assert (out / run_folder.CONFIG).read_bytes() == config_before
    assert json.loads(config_before)["epochs"] == 1 and len(RunFolder(out).read_metrics()) == 1


# --- 3. a silent retrain -------------------------------------------------------------------------

@pytest.mark.parametrize("missing", [run_folder.STATE, run_folder.SPEC])
def test_3_resume_never_starts_over(finished, tmp_path, capsys, missing):
    run = _copy(finished, tmp_path)
    (run / missing).unlink()
    before = _files(run)
    code, _, err = _cli(["resume", str(run)], capsys)
    _one_line_refusal(code, err, "already finished")
    assert _files(run) == before
    # the same run as if it had been stopped: resuming would have to start over, so it is refused
    RunFolder(run).update_run(status="stopped")
    before = _files(run)
    code, _, err = _cli(["resume", str(run)], capsys)
    _one_line_refusal(code, err, missing, "cannot be resumed")
    assert _files(run) == before
    if missing == run_folder.STATE:         # what still works: evaluate and export from the best weights
        assert "evaluated and exported" in err
        code, out, err = _cli(["evaluate", str(run)], capsys)
        assert code == 0 and "Accuracy" in out, err


# --- 4. a wrong accuracy, reported as right --------------------------------------------------------

@pytest.mark.slow
def test_4_evaluation_covers_n_of_m_when_files_are_gone(tmp_path, capsys):
    from dtl_engine.training import train

    data = image_folder(tmp_path, per_class=10)
    result = train(tiny_config(data, epochs=1), run_dir=tmp_path / "run", model_kwargs=MODEL_KWARGS)
    run = Path(result.run_dir)
    report_before = (run / run_folder.REPORT).read_bytes()
    total = result.report.num_images
    val = [p for p, _ in RunFolder(run).read_split()["val"]]
    removed_class = sorted({Path(p).parent for p in val})[0]
    gone = [p for p in val if Path(p).parent == removed_class]
    shutil.rmtree(removed_class)
    changed = next(p for p in val if Path(p).parent != removed_class)
    make_image(Path(changed), 99, size=(30, 30))                # rewritten with other content

    code, out, err = _cli(["evaluate", str(run)], capsys)
    assert code == 0, err
    n = total - len(gone) - 1
    assert f"on {n} of {total} val images" in out
    assert f"{len(gone) + 1} image(s)" in err and "changed since" in err and "no longer exists" in err
    code, out, _ = _cli(["evaluate", str(run), "--json"], capsys)
    report = json.loads(out)
    assert report["num_images"] == n and report["total_images"] == total
    assert sum(map(sum, report["confusion"])) == n
    assert not {m["path"] for m in report["mistakes"]} & {*gone, changed}      # never scored, never shown
    assert (run / run_folder.REPORT).read_bytes() == report_before              # the run's own report is kept

    model = tmp_path / "model.pt"
    assert _cli(["export", str(run), "--out", str(model), "--no-verify"], capsys)[0] == 0
    from dtl_engine.inference.predict import load_exported
    assert load_exported(model).metadata["val_acc"] == RunFolder(run).read_run()["best_val_acc"]


def test_4_no_image_left_is_a_refusal_not_an_accuracy_of_zero(tmp_path, capsys):
    """The image folder moved away: '0.0 % on 0 of 6 images' is no measurement; it says why instead."""
    from dtl_engine.training import train

    data = image_folder(tmp_path, per_class=4)
    result = train(tiny_config(data, epochs=1), run_dir=tmp_path / "run", model_kwargs=MODEL_KWARGS)
    report_before = (tmp_path / "run" / run_folder.REPORT).read_bytes()
    data.rename(tmp_path / "moved")
    code, _, err = _cli(["evaluate", result.run_dir], capsys)
    _one_line_refusal(code, err, "None of", "no longer exists")
    assert (tmp_path / "run" / run_folder.REPORT).read_bytes() == report_before


def test_4_predictions_are_matched_by_index(tmp_path):
    """A file that fails to load is left out; the other rows keep their own labels and paths."""
    import torch
    from tiny_models import tiny_vit

    from dtl_engine.inference.evaluate import evaluate_model

    data = make_image_folder(tmp_path / "d", {"a": 3, "b": 3}, size=(24, 24))
    samples = [(str(p), 0 if p.parent.name == "a" else 1) for p in sorted(data.rglob("*.png"))]
    Path(samples[1][0]).write_bytes(b"not an image any more")
    model = tiny_vit(2).eval()
    ev = evaluate_model(model, samples, ["a", "b"], torch.device("cpu"), model.data_config)
    assert (ev.num_images, ev.total_images) == (5, 6) and ev.coverage() == "5 of 6 val images"
    assert [d["path"] for d in ev.left_out] == [samples[1][0]]
    assert [sum(row) for row in ev.confusion] == [2, 3]       # true labels counted by the right images


# --- 5. TorchScript export on a full disk -------------------------------------------------------------

def test_5_export_on_a_full_disk_is_a_sentence_and_leaves_nothing(finished, tmp_path, monkeypatch):
    from dtl_engine.export import export_run

    out_dir = tmp_path / "exports"
    out_dir.mkdir()

    def full(fh, data):
        fh.write(bytes(data)[:1000])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio, "write_all", full)
    with pytest.raises(ExportError, match="No space left on device"):
        export_run(finished, out_dir / "model.pt", verify=False)
    assert list(out_dir.iterdir()) == []
    monkeypatch.undo()

    import shutil as shutil_module

    real = shutil_module.disk_usage
    monkeypatch.setattr(shutil_module, "disk_usage",
                        lambda p: real(p)._replace(free=1_000_000))        # 1 MB left
    with pytest.raises(ExportError, match="Not enough free disk space"):
        export_run(finished, out_dir / "model.pt", verify=False)
    assert list(out_dir.iterdir()) == []




# --- 6. non-regular files -----------------------------------------------------------------------------

def _with_deadline(fn, seconds: float, fifos: list[Path]):
    """Run ``fn`` in a thread; if it blocks (a read of a FIFO), unblock it and fail."""
    box: dict[str, object] = {}

    def call():
        try:
            box["value"] = fn()
        except BaseException as exc:    # handed to the test's thread
            box["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in fifos:              # open the other end so the blocked reader returns
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        thread.join(10)
        pytest.fail("the call blocked on a FIFO")
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.mark.slow
def test_6_predict_a_fifo_reports_it_and_prints_the_others(finished, tmp_path, capsys):
    from dtl_engine.export import export_run

    model = tmp_path / "model.pt"
    export_run(finished, model, verify=False)
    good = make_image(tmp_path / "good.png", 3, size=(24, 24))
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    bomb = tmp_path / "bomb.png"
    from PIL import Image
    Image.new("L", (12000, 12000)).save(bomb, optimize=True)       # 144 Mpx: over the pixel limit
    code = _with_deadline(lambda: cli.main(["predict", str(model), str(good), str(fifo), str(bomb)]), 60, [fifo])
    out, err = capsys.readouterr()
    assert code == 2
    assert str(good) in out and str(fifo) not in out and str(bomb) not in out
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and "not a regular file" in errors[0] and "decompression bomb" in errors[1]


def test_6_every_user_path_read_refuses_a_fifo(finished, tmp_path, capsys):
    from dtl_engine.data import check_image, load_image
    from dtl_engine.errors import DataError

    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    assert "not a regular file" in _with_deadline(lambda: check_image(fifo), 20, [fifo])
    with pytest.raises(DataError, match="not a regular file"):
        _with_deadline(lambda: load_image(fifo), 20, [fifo])
    code = _with_deadline(lambda: cli.main(["predict", str(fifo), str(fifo)]), 20, [fifo])
    _one_line_refusal(code, capsys.readouterr().err, "not a regular file")
    run = _copy(finished, tmp_path)
    (run / run_folder.CONFIG).unlink()
    os.mkfifo(run / run_folder.CONFIG)
    code = _with_deadline(lambda: cli.main(["evaluate", str(run)]), 20, [run / run_folder.CONFIG])
    _one_line_refusal(code, capsys.readouterr().err, "not a regular file")


# --- 7. the smaller points ---------------------------------------------------------------------------

@pytest.mark.parametrize("flags, words", [
    (["--image-size", "0"], "image size"),
    (["--num-workers", "-1"], "workers"),
    (["--max-steps", "0"], "step limit"),
    (["--model-kwargs", '{"patch_size": 4, "img_size": 32, "depth": -1}'], "cannot be built"),
    (["--label-smoothing", "2"], "label smoothing"),
    (["--weight-decay", "-1"], "weight decay"),
    (["--lr", "inf"], "learning rate"),
    (["--early-stopping", "-1"], "early stopping"),
])
def test_7_bad_numbers_are_sentences_and_leave_no_run(tmp_path, capsys, flags, words):
    from dtl_engine.runs.listing import list_runs

    data = make_image_folder(tmp_path / "data", {"a": 3, "b": 3}, size=(24, 24))
    code, _, err = _cli(["train", str(data), *TINY, "--epochs", "1", *flags], capsys)
    _one_line_refusal(code, err, words)
    assert list_runs() == []


@pytest.mark.parametrize("layout", ["empty", "one class"])
def test_7_refused_input_leaves_no_run_behind(tmp_path, capsys, layout):
    from dtl_engine.runs.listing import list_runs

    data = tmp_path / "data"
    data.mkdir()
    if layout == "one class":
        make_image_folder(data, {"only": 3}, size=(24, 24))
    code, _, err = _cli(["train", str(data), *TINY, "--epochs", "1"], capsys)
    _one_line_refusal(code, err)
    assert list_runs() == []
    out = tmp_path / "given"
    code, _, err = _cli(["train", str(data), *TINY, "--epochs", "1", "--out", str(out)], capsys)
    _one_line_refusal(code, err)
    assert not out.exists()


@pytest.mark.parametrize("name", [run_folder.RUN_FILE, run_folder.CONFIG])
def test_7_a_damaged_run_is_listed_as_damaged(finished, tmp_path, monkeypatch, capsys, name):
    from dtl_engine.paths import runs_dir

    run = _copy(finished, runs_dir(), "broken_run")
    (run / name).write_text((run / name).read_text()[:15])
    code, out, _ = _cli(["runs"], capsys)
    assert code == 0 and re.search(r"broken_run\s+damaged\s+.*" + re.escape(name), out), out


def test_7_hidden_class_folders_are_named(tmp_path):
    from dtl_engine.data import scan_folder

    data = make_image_folder(tmp_path / "data", {"a": 3, "b": 3, "...": 3, ".c": 2}, size=(24, 24))
    (data / ".git").mkdir()
    scan = scan_folder(data)
    assert scan.classes == ["a", "b"]
    named = [w for w in scan.warnings if "hidden folder" in w]
    assert len(named) == 2 and any("'...'" in w for w in named) and any("'.c'" in w for w in named)


def test_7_resuming_an_interrupted_run_after_its_last_epoch_only_finishes(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    RunFolder(run).update_run(status="running")         # killed after its last commit, before "finished"
    data = json.loads((run / run_folder.RUN_FILE).read_text())
    data.update(pid=2**31 - 3, pid_started=1.0)          # a process that no longer exists
    (run / run_folder.RUN_FILE).write_text(json.dumps(data))
    best = (run / run_folder.BEST_WEIGHTS).read_bytes()
    code, out, err = _cli(["resume", str(run)], capsys)
    assert code == 0, err
    assert "already trained" in out and "Resuming at epoch 3 of 2" not in out
    assert (run / run_folder.BEST_WEIGHTS).read_bytes() == best
    assert RunFolder(run).status() == "finished"


# --- injected faults during training --------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("fail_at", [9, 13])     # the resume state of epoch 1; a write of epoch 2
def test_full_disk_during_training_fails_cleanly_and_resume_is_bit_identical(tmp_path, monkeypatch, fail_at):
    """The n-th file write of a run hits a full disk: a sentence, the last commit intact, resume exact."""
    from dtl_engine.training import resume, train

    data = image_folder(tmp_path, per_class=6)
    whole = train(tiny_config(data, epochs=3), run_dir=tmp_path / "whole", model_kwargs=MODEL_KWARGS)
    real, calls = fileio.write_all, {"n": 0}

    def filling(fh, data):
        calls["n"] += 1
        if calls["n"] == fail_at:
            fh.write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, data)

    monkeypatch.setattr(fileio, "write_all", filling)
    rec = Recorder()
    with pytest.raises(OSError):
        train(tiny_config(data, epochs=3), rec, run_dir=tmp_path / "run", model_kwargs=MODEL_KWARGS)
    monkeypatch.setattr(fileio, "write_all", real)
    run = tmp_path / "run"
    assert "No space left on device" in rec.of("run_failed")[0][0]
    assert not [p for p in run.iterdir() if fileio.is_leftover_name(p.name)]       # no temporary left
    assert not (run / run_folder.LOCK).exists()
    done = resume(run)
    assert done.status == "finished" and done.epochs_done == 3
    a, b = run_weights(whole.run_dir), run_weights(run)
    assert all(a[k].equal(b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("name", run_folder.RUN_FILES)
@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_each_run_file_missing_or_truncated_gives_a_result_or_a_sentence(finished, tmp_path, name, damage):
    from dtl_engine.inference.evaluate import evaluate_run
    from dtl_engine.export import export_run
    from dtl_engine.runs.listing import list_runs, load_run_model
    from dtl_engine.training import resume

    run = _copy(finished, tmp_path / "runs")
    if damage == "missing":
        (run / name).unlink()
    else:
        content = (run / name).read_bytes()
        (run / name).write_bytes(content[: len(content) // 2])
    assert len(list_runs(tmp_path / "runs")) == (0 if name == run_folder.RUN_FILE and damage == "missing" else 1)
    for action in (lambda: evaluate_run(run), lambda: load_run_model(run),
                   lambda: export_run(run, tmp_path / "m.pt", verify=False, overwrite=True), lambda: resume(run)):
        try:
            action()
        except DTLError as exc:
            assert str(exc) and "\n" not in str(exc)
    assert not (run / run_folder.LOCK).exists()


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_is_bit_identical(tmp_path):
    """SIGKILL a training process twice at random moments (a checkpoint write may be cut anywhere)."""
    import random
    import signal
    import subprocess
    import sys

    from dtl_engine.training import resume, train

    data = image_folder(tmp_path, per_class=6)
    epochs = 6
    whole = train(tiny_config(data, epochs=epochs), run_dir=tmp_path / "whole", model_kwargs=MODEL_KWARGS)
    run = tmp_path / "run"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(Path(__file__).parent)]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    rng = random.Random(9)
    commands = [["train", str(data), *TINY, "--epochs", str(epochs), "--warmup-epochs", "1", "--lr", "5e-3",
                 "--cache-features", "off", "--out", str(run)], ["resume", str(run)]]
    for argv in commands:
        child = subprocess.Popen([sys.executable, "-c", "import torch, sys; torch.set_num_threads(1); "
                                  "from dtl_engine.cli.main import main; sys.exit(main(sys.argv[1:]))", *argv],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path, env=env)
        for line in child.stdout:                        # wait until it trains, then kill it at a random moment
            if line.startswith("Device:"):
                break
        time.sleep(rng.uniform(0.0, 1.5))
        child.send_signal(signal.SIGKILL)
        child.wait(60)
        child.stdout.close()
    if RunFolder(run).status() != "finished":
        assert resume(run).status == "finished"
    a, b = run_weights(whole.run_dir), run_weights(run)
    assert all(a[k].equal(b[k]) for k in a)
    assert RunFolder(run).read_metrics()[-1]["val_acc"] == RunFolder(whole.run_dir).read_metrics()[-1]["val_acc"]
    assert not [p for p in run.iterdir() if fileio.is_leftover_name(p.name)]


def test_7_leftovers_of_a_killed_write_are_cleaned_when_the_run_is_opened_again(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    RunFolder(run).update_run(status="stopped")          # stopped after its last epoch: resume only finishes
    killed = "dtl-0123456789ab-k1ll3d"                  # the engine's name, with a killed process's token
    dead = [run / f".state.pt.{killed}.tmp", run / f".metrics.json.{killed}.tmp"]
    for p in dead:
        p.write_bytes(b"half a file")
        os.utime(p, (time.time() - 3600,) * 2)
    fresh = run / f".best.safetensors.{killed}.tmp"     # killed a moment ago: older than the next commit only
    fresh.write_bytes(b"half a file")
    mine = run / ".my-notes.txt"
    mine.write_text("the user's")
    code, _, err = _cli(["resume", str(run)], capsys)
    assert code == 0, err
    assert not any(p.exists() for p in [*dead, fresh]) and mine.read_text() == "the user's"


def test_6_a_weights_file_that_is_a_fifo_is_refused(tmp_path, capsys):
    data = make_image_folder(tmp_path / "data", {"a": 3, "b": 3}, size=(24, 24))
    fifo = tmp_path / "weights.safetensors"
    os.mkfifo(fifo)
    argv = ["train", str(data), *[a if a != "random" else str(fifo) for a in TINY], "--epochs", "1"]
    code = _with_deadline(lambda: cli.main(argv), 60, [fifo])
    _one_line_refusal(code, capsys.readouterr().err, "not a regular file")


def test_6_the_data_check_reports_a_fifo_among_the_images(tmp_path):
    """An image replaced by a FIFO after training: the doctor names it instead of waiting for it for ever."""
    from tiny_models import tiny_vit

    from dtl_engine.inference.doctor import diagnose_samples

    data = make_image_folder(tmp_path / "data", {"a": 3, "b": 3}, size=(24, 24))
    fifo = data / "a" / "img_0.png"
    fifo.unlink()
    os.mkfifo(fifo)
    samples = [(str(p), ["a", "b"].index(p.parent.name), "train") for p in sorted(data.rglob("*.png"))]
    report = _with_deadline(lambda: diagnose_samples(tiny_vit(num_classes=2), ["a", "b"], samples), 30, [fifo])
    assert [f.path for f in report.of("unreadable")] == [str(fifo)]
    assert "not a regular file" in report.of("unreadable")[0].detail

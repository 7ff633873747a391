"""One run over two gloo processes on the CPU: same weights as one process, rank 0 alone writes,
metrics over whole splits, resume across sizes, Ctrl+C and a killed rank. Every wait is bounded."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from dtl_engine.bench.ddp import free_port
from dtl_engine.runs.event_log import EventFollower
from dtl_engine.listener import StopToken
from dtl_engine.runs.listing import effective_status
from dtl_engine.training import resume, train
from dtl_engine.runs.checkpoint import load_state, load_weights
from image_factory import make_split_folder
from run_builders import MODEL_KWARGS, Recorder, image_folder, tiny_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
LAUNCH_SECONDS = 300            # one torchrun launch on two busy cores (imports dominate)
COLLECTIVE_TIMEOUT = 20         # seconds a survivor waits for a lost process


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests" / "engine")]),
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def _torchrun(*args: str, nproc: int = 2) -> list[str]:
    # --standalone: a rendezvous on a free local port, so parallel test runs do not collide
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]


def _train_args(data: Path, out: Path, **overrides: object) -> list[str]:
    """The CLI options that reproduce ``tiny_config(data, **overrides)``."""
    config = tiny_config(data, **overrides)
    options = {"backbone": config.backbone, "weights": config.weights, "epochs": config.epochs,
               "warmup-epochs": config.warmup_epochs, "batch-size": config.batch_size, "lr": config.lr,
               "image-size": config.image_size, "augment": config.augment, "cache-features": config.cache_features,
               "seed": config.seed, "device": "cpu"}
    args = ["train", str(data), "--out", str(out), "--model-kwargs", json.dumps(MODEL_KWARGS)]
    for name, value in options.items():
        args += [f"--{name}", str(value)]
    return args


def _run(cmd: list[str], timeout: float = LAUNCH_SECONDS, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _weights(run_dir: Path, name: str = "checkpoint.safetensors") -> dict[str, torch.Tensor]:
    return load_weights(Path(run_dir) / name)


def assert_close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rel: float = 1e-3) -> None:
    """Each tensor equal within ``rel`` of its scale (its largest magnitude)."""
    assert a.keys() == b.keys()
    for key in a:
        scale = max(float(a[key].abs().max()), 1e-6)
        diff = float((a[key] - b[key]).abs().max())
        assert diff <= rel * scale, f"{key}: differs by {diff:.3g}, scale {scale:.3g}"


def _wait_for_event(run_dir: Path, name: str, proc: subprocess.Popen, timeout: float = LAUNCH_SECONDS) -> None:
    follower, deadline = EventFollower(run_dir), time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e["event"] == name for e in follower.poll()):
            return
        assert proc.poll() is None, "the run ended before the event '" + name + "'"
        time.sleep(0.2)
    raise AssertionError(f"no '{name}' event within {timeout} s")


def _kill_tree(proc: subprocess.Popen) -> None:
    """Test cleanup: kill what this test started, if it is still there."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    for p in [*children, proc]:
        try:
            p.kill()
        except (psutil.Error, ProcessLookupError):
            pass


# --- two processes against one -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_and_one(tmp_path_factory):
    """The same run trained by 2 processes under torchrun (writes audited) and by 1 process."""
    tmp = tmp_path_factory.mktemp("ddp")
    # odd counts on purpose: uneven slices (29 = 4 x 7 + 1: one rank's last slice is empty) and shards
    data = make_split_folder(tmp / "images", train={"a": 10, "b": 10, "c": 9}, val={"a": 3, "b": 2, "c": 2},
                             test={"a": 3, "b": 3, "c": 3}, size=(24, 24))
    settings = dict(epochs=2, batch_size=7)
    two, audit = tmp / "runs" / "two", tmp / "audit"
    cmd = _torchrun(str(ROOT / "tests" / "engine" / "ddp_audit_worker.py"), str(two), str(audit),
                    *_train_args(data, two, **settings))
    _run(cmd)
    one = Path(train(tiny_config(data, **settings), run_dir=tmp / "runs" / "one", model_kwargs=MODEL_KWARGS).run_dir)
    return two, one, audit


def test_two_processes_train_the_same_weights_as_one(two_and_one):
    two, one, _ = two_and_one
    assert_close_weights(_weights(one), _weights(two))
    assert_close_weights(_weights(one, "best.safetensors"), _weights(two, "best.safetensors"))
    config = json.loads((two / "config.json").read_text())
    assert config["world_size"] == 2 and config["per_rank_batch"] == 4


def test_only_rank_zero_writes_the_run_folder(two_and_one):
    two, _, audit = two_and_one
    rank0 = json.loads((audit / "rank0.json").read_text())
    rank1 = json.loads((audit / "rank1.json").read_text())
    assert any("checkpoint.safetensors" in w for w in rank0), "the audit saw rank 0's writes"
    assert rank1 == []
    assert sorted(p.name for p in two.parent.iterdir()) == ["one", "two"]   # one run folder, not one per rank


def test_metrics_cover_the_whole_split(two_and_one):
    two, one, _ = two_and_one
    m2, m1 = (json.loads((run / "metrics.json").read_text()) for run in (two, one))
    assert len(m2) == len(m1) == 2
    for a, b in zip(m1, m2):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    r2, r1 = (json.loads((run / "report.json").read_text()) for run in (two, one))
    assert r2["split"] == "test" and r2["num_images"] == 9          # every test image, not one rank's shard
    assert r2["confusion"] == r1["confusion"] and r2["accuracy"] == pytest.approx(r1["accuracy"])
    assert sum(map(sum, r2["confusion"])) == 9
    events = EventFollower(two).poll()
    assert [e["event"] for e in events if e["event"] in ("run_started", "epoch", "finished")] == \
        ["run_started", "epoch", "epoch", "finished"]


# --- resume across sizes ------------------------------------------------------------------------------

def test_ctrl_c_stops_every_rank_then_one_process_resumes(tmp_path):
    data = image_folder(tmp_path)
    settings = dict(epochs=40)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_torchrun("-m", "dtl_engine", *_train_args(data, run_dir, **settings)), cwd=ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True,       # its own process group, as in a terminal
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for_event(run_dir, "checkpoint", proc)
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert len(workers) >= 2
        os.killpg(proc.pid, signal.SIGINT)                 # what Ctrl+C in the terminal does
        t0 = time.monotonic()
        output, _ = proc.communicate(timeout=60)
        seconds = time.monotonic() - t0
    finally:
        _kill_tree(proc)
    assert seconds < 45, f"stopping took {seconds:.0f} s"
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers), output[-2000:]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "stopped", output[-3000:]
    assert 1 <= run["epochs_done"] < 40
    load_state(run_dir)                                    # the resume point is readable
    _weights(run_dir)                                      # so is the last checkpoint

    finished = resume(run_dir)                             # 2 processes -> 1
    assert finished.status == "finished" and finished.epochs_done == 40
    whole = train(tiny_config(data, **settings), run_dir=tmp_path / "whole", model_kwargs=MODEL_KWARGS)
    assert_close_weights(_weights(Path(whole.run_dir)), _weights(run_dir))
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 1


def test_one_process_run_resumes_on_two(tmp_path):
    data = image_folder(tmp_path)
    token = StopToken()
    stopper = Recorder(checkpoint_saved=lambda path, epoch: token.stop() if epoch == 0 else None)
    part = train(tiny_config(data, epochs=3), stopper, token, run_dir=tmp_path / "run", model_kwargs=MODEL_KWARGS)
    assert part.status == "stopped" and part.epochs_done == 1

    _run(_torchrun("-m", "dtl_engine", "resume", part.run_dir))   # 1 process -> 2
    run = json.loads((Path(part.run_dir) / "run.json").read_text())
    assert run["status"] == "finished" and run["epochs_done"] == 3
    assert json.loads((Path(part.run_dir) / "config.json").read_text())["world_size"] == 2
    whole = train(tiny_config(data, epochs=3), run_dir=tmp_path / "whole", model_kwargs=MODEL_KWARGS)
    assert_close_weights(_weights(Path(whole.run_dir)), _weights(Path(part.run_dir)))


# --- a rank killed -----------------------------------------------------------------------------------

def test_survivor_of_a_killed_rank_exits_within_the_timeout(tmp_path):
    """Two ranks started by hand (no torchrun to clean up): rank 1 is killed, rank 0 must notice by itself."""
    data = image_folder(tmp_path)
    run_dir = tmp_path / "run"
    port = str(free_port())
    cmd = [sys.executable, "-m", "dtl_engine", *_train_args(data, run_dir, epochs=500)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=port, DTL_COLLECTIVE_TIMEOUT=str(COLLECTIVE_TIMEOUT)))
             for r in range(2)]
    try:
        _wait_for_event(run_dir, "checkpoint", procs[0])
        procs[1].kill()                                    # kill -9
        t0 = time.monotonic()
        _, err = procs[0].communicate(timeout=COLLECTIVE_TIMEOUT + 60)
        seconds = time.monotonic() - t0
    finally:
        for p in procs:
            _kill_tree(p)
    assert seconds < COLLECTIVE_TIMEOUT + 30
    assert procs[0].returncode == 2, err[-3000:]
    assert "Another process of this run stopped" in err and "resume" in err
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "interrupted" and effective_status(run) == "interrupted"
    assert "Another process of this run stopped" in run["error"]
    load_state(run_dir)
    # resumable: a resume is accepted (and stopped at once here, to keep the test short)
    token = StopToken()
    again = resume(run_dir, Recorder(run_started=lambda info: token.stop()), token)
    assert again.status == "stopped" and again.epochs_done >= 1

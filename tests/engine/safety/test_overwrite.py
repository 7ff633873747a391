"""--overwrite replaces a run only by a run that got somewhere: until the new run has committed its
first epoch, the old run is set aside whole and comes back after a refusal, a stop, a divergence, a
crash or a kill -9 (issue 20, reproduction 2)."""
from __future__ import annotations

import pytest

import json
import signal
from pathlib import Path


import torch
from safety_helpers import checksums
from test_fault_injection import TINY, _cli, _copy, _one_line_refusal, finished  # noqa: F401  (a fixture)

from dtl_engine.cli import main as cli
from dtl_engine.cli.progress import ProgressPrinter
from dtl_engine.runs import claim as run_claim
from dtl_engine.runs import folder as run_folder
from dtl_engine.runs.folder import RunFolder


def _data(run: Path) -> str:
    return RunFolder(run).read_config()["data_dir"]


def _diverging(monkeypatch) -> None:
    """The first update leaves a weight that is no longer a number (what too high a learning rate does)."""
    from dtl_engine.training import runner

    real = runner._Run._train_step

    def step(self, *args):
        result = real(self, *args)
        with torch.no_grad():
            self._trainable[0].fill_(float("nan"))
        return result

    monkeypatch.setattr(runner._Run, "_train_step", step)


def test_2_a_replacement_that_diverges_in_its_first_epoch_gives_the_old_run_back(finished, tmp_path, capsys,
                                                                                  monkeypatch):
    old = _copy(finished, tmp_path)
    before = checksums(old)
    _diverging(monkeypatch)
    code, _, err = _cli(["train", _data(old), *TINY, "--epochs", "1", "--lr", "1e-3", "--out", str(old),
                         "--overwrite"], capsys)
    assert code == 2 and "diverged" in err, err
    assert checksums(old) == before


def test_2_ctrl_c_in_the_first_epoch_of_a_replacement_gives_the_old_run_back(finished, tmp_path, capsys,
                                                                                monkeypatch):
    old = _copy(finished, tmp_path)
    before = checksums(old)
    real = ProgressPrinter.batch_finished

    def press_ctrl_c_after_first_batch(self, stats):
        real(self, stats)
        if stats.global_step == 1:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(ProgressPrinter, "batch_finished", press_ctrl_c_after_first_batch)
    code, out, _ = _cli(["train", _data(old), *TINY, "--epochs", "2", "--out", str(old), "--overwrite"], capsys)
    assert code == cli.EXIT_INTERRUPTED
    assert "kept as it was" in out
    assert checksums(old) == before


def test_2_a_replacement_that_commits_an_epoch_stands(finished, tmp_path, capsys):
    old = _copy(finished, tmp_path)
    code, _, err = _cli(["train", _data(old), *TINY, "--epochs", "1", "--max-steps", "1", "--out", str(old),
                         "--overwrite"], capsys)
    assert code == 0, err
    assert RunFolder(old).read_config()["epochs"] == 1
    assert [p.name for p in old.iterdir() if p.name.startswith(run_folder.REPLACED_PREFIX)] == []


def _killed_replacement(old: Path) -> None:
    """What kill -9 during the set-up of a replacement leaves: the old run set aside, a new run begun."""
    claim = run_claim.claim_new(old, None, "test_vit", "dtl", overwrite=True)
    assert claim.replaced is not None
    claim.folder.update_run(status="running", epochs_done=0)
    claim.folder.update_run(pid=2**22 + 7)                  # a process that is gone
    claim.folder.write_config({"data_dir": "elsewhere"})
    run_folder._SET_ASIDE.discard(str(claim.replaced))     # the process that set it aside is gone
    (old / run_folder.LOCK).unlink()                        # and so is its lock


def test_2_after_a_kill_in_the_set_up_resume_puts_the_old_run_back_and_says_so(finished, tmp_path, capsys):
    old = _copy(finished, tmp_path)
    before = checksums(old)
    _killed_replacement(old)
    code, _, err = _cli(["resume", str(old)], capsys)
    _one_line_refusal(code, err, "earlier run is back")
    assert checksums(old) == before


def test_2_after_a_kill_in_the_set_up_a_new_overwrite_replaces_the_old_run_not_the_killed_one(finished, tmp_path,
                                                                                                 capsys, monkeypatch):
    old = _copy(finished, tmp_path)
    before = checksums(old)
    _killed_replacement(old)
    _diverging(monkeypatch)
    code, _, err = _cli(["train", _data(finished), *TINY, "--epochs", "1", "--lr", "1e-3", "--out", str(old),
                         "--overwrite"], capsys)
    assert code == 2 and "diverged" in err, err
    assert checksums(old) == before             # the run that comes back is the finished one


def test_2_overwrite_onto_a_folder_that_is_not_a_run_is_refused(finished, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text(json.dumps({"my": "settings"}))
    (mine / "notes.txt").write_text("mine")
    before = checksums(mine)
    code, _, err = _cli(["train", _data(finished), *TINY, "--epochs", "1", "--out", str(mine), "--overwrite"],
                        capsys)
    _one_line_refusal(code, err, "no run")
    assert checksums(mine) == before


def test_2_a_replacement_whose_first_commit_fails_gives_the_old_run_back(finished, tmp_path, capsys, monkeypatch):
    """A full disk (or any crash) while the first epoch is committed: the new run got nowhere."""
    import errno

    from dtl_engine.runs import checkpoint

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    old = _copy(finished, tmp_path)
    before = checksums(old)
    monkeypatch.setattr(checkpoint, "save_state", full_disk)
    code, _, err = _cli(["train", _data(old), *TINY, "--epochs", "1", "--lr", "1e-3", "--out", str(old),
                         "--overwrite"], capsys)
    assert code == 2, err
    assert checksums(old) == before


def test_2_after_a_kill_in_the_set_up_the_run_list_says_where_the_old_run_is(finished, capsys):
    from dtl_engine.paths import runs_dir

    old = _copy(finished, runs_dir(), "replaced")
    _killed_replacement(old)
    code, out, err = _cli(["runs"], capsys)
    assert code == 0, err
    aside = [p for p in old.iterdir() if p.name.startswith(run_folder.REPLACED_PREFIX)]
    assert len(aside) == 1 and f"in {aside[0]}" in out and f"resume {old}" in out


KILLED_BEFORE_THE_FIRST_EPOCH = """
import os, sys
from dtl_engine.cli.main import main
from dtl_engine.training import runner

def killed(self, state):                    # kill -9 once set up, before the first step
    os._exit(9)

runner._Run._loop = killed
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_2_a_real_kill_before_the_first_epoch_then_resume_puts_the_old_run_back(finished, tmp_path, capsys):
    import subprocess
    import sys

    old = _copy(finished, tmp_path)
    before = checksums(old)
    child = subprocess.run([sys.executable, "-c", KILLED_BEFORE_THE_FIRST_EPOCH, "train", _data(old), *TINY,
                            "--epochs", "1", "--lr", "1e-3", "--out", str(old), "--overwrite"],
                           capture_output=True, text=True)
    assert child.returncode == 9, child.stderr
    assert [p for p in old.iterdir() if p.name.startswith(run_folder.REPLACED_PREFIX)]   # set aside, not gone
    code, _, err = _cli(["resume", str(old)], capsys)
    _one_line_refusal(code, err, "earlier run is back")
    assert checksums(old) == before

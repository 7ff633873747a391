"""The run list: folders under runs_dir(), statuses, dead runs shown as interrupted, re-opening."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from dtl_engine.errors import RunError
from dtl_engine.paths import runs_dir
from dtl_engine.runs.listing import effective_status, list_runs, load_run_model, update_run_file
from dtl_engine.training import train
from run_builders import MODEL_KWARGS, image_folder, run_weights, tiny_config


@pytest.mark.slow
def test_list_runs_newest_first_and_reopen(tmp_path):
    data = image_folder(tmp_path, per_class=4)
    first = train(tiny_config(data, epochs=1), model_kwargs=MODEL_KWARGS)
    second = train(tiny_config(data, epochs=2, method="linear"), model_kwargs=MODEL_KWARGS)
    (runs_dir() / "not_a_run").mkdir()                  # stray folders are skipped

    infos = list_runs()
    assert [i.run_dir for i in infos] == [second.run_dir, first.run_dir]
    newest = infos[0]
    assert (newest.status, newest.method, newest.epochs_done, newest.epochs) == ("finished", "linear", 2, 2)
    assert newest.best_val_acc == second.best_val_acc and newest.backbone == "test_vit"
    assert newest.name.endswith("_test_vit_32px_linear")      # the name says the size it trains at

    model, classes = load_run_model(second.run_dir)
    assert model.side_network is None and len(classes) == 3
    assert torch.equal(model.head.weight, run_weights(second.run_dir, "best.safetensors")["head.weight"])
    with pytest.raises(RunError, match="'best' or the 'last'"):
        load_run_model(second.run_dir, "middle")


def test_a_running_run_whose_process_died_is_listed_as_interrupted(tmp_path):
    run = runs_dir() / "20260101-000000_test_vit_dtl"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(tiny_config(tmp_path).to_dict()))
    update_run_file(run, status="running")              # stamped with this (live) process
    assert [i.status for i in list_runs()] == ["running"]

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    data = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(dict(data, pid=child.pid)))
    assert [i.status for i in list_runs()] == ["interrupted"]
    # a live pid that belongs to another process (started at another time) is no proof of life either
    assert effective_status(dict(data, pid_started=data["pid_started"] - 3600)) == "interrupted"
    assert effective_status({"status": "finished"}) == "finished"

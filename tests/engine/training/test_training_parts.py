"""The small parts of a run: device choice, precision, optimizer groups, schedule, atomic files."""
from __future__ import annotations

import os

import pytest
import torch

from dtl_engine.errors import RunError
from dtl_engine.training import select_device
from dtl_engine.runs.checkpoint import atomic_write_bytes, load_state, save_state
from dtl_engine.devices import resolve_precision
from dtl_engine.training.memory import MemoryMeter
from dtl_engine.training.optim import LR_MIN, build_optimizer, build_scheduler, current_lr, warmup_steps_for
from tiny_models import tiny_vit

torch.set_num_threads(1)


def test_device_choice_and_forced_devices_that_are_missing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    device, name = select_device("auto")
    assert device.type == "cpu" and name.startswith("CPU (")
    assert select_device("cpu")[0].type == "cpu"
    with pytest.raises(RunError, match="No CUDA GPU"):
        select_device("cuda")
    with pytest.raises(RunError, match="MPS"):
        select_device("mps")
    with pytest.raises(RunError, match="Unknown device"):
        select_device("tpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device("auto") == (torch.device("mps"), "Apple GPU (MPS)")


def test_precision_choice():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).name == "fp32" and not resolve_precision("auto", cpu).autocast
    bf16 = resolve_precision("bf16", cpu)
    assert bf16.autocast_dtype == torch.bfloat16 and not bf16.use_grad_scaler
    assert resolve_precision("fp16", torch.device("cuda")).use_grad_scaler
    with pytest.raises(RunError):
        resolve_precision("fp8", cpu)


def test_optimizer_decays_only_trainable_matrices():
    model = tiny_vit(num_classes=3)
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    trainable = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    in_groups = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert set(in_groups) == set(trainable)                      # frozen backbone is not optimised
    for pid, decay in in_groups.items():
        name = trainable[pid]
        param = dict(model.named_parameters())[name]
        assert decay == (0.0 if param.ndim <= 1 or name.endswith(".bias") else 0.05), name


def test_cosine_schedule_with_warmup_per_update():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-2)
    total, warmup = 100, warmup_steps_for(2.0, steps_per_epoch=5, total_steps=100)
    assert warmup == 10 and warmup_steps_for(50, 5, 100) == 99      # warm-up never eats the whole run
    sched = build_scheduler(opt, total, warmup)
    lrs = []
    for step in range(total + 1):
        sched.step_update(step)
        lrs.append(current_lr(opt))
    assert lrs[0] < 1e-5 and all(a < b for a, b in zip(lrs[:10], lrs[1:11]))
    assert lrs[10] == pytest.approx(1e-2)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] == pytest.approx(LR_MIN, abs=1e-7)
    assert lrs[55] == pytest.approx(LR_MIN + 0.5 * (1e-2 - LR_MIN), rel=1e-3)   # half-way down the cosine


@pytest.mark.parametrize("prefix", [True, False])
def test_a_one_update_schedule_keeps_timm_quiet_and_trains_at_the_peak(prefix, caplog):
    # A run of one update after the warm-up: timm used to log "Cosine annealing scheduler will
    # have no effect" to stderr; the one update still gets the full learning rate.
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-2)
    with caplog.at_level("WARNING"):
        sched = build_scheduler(opt, total_steps=1, warmup_steps=0, prefix=prefix)
    assert not [r for r in caplog.records if "no effect" in r.getMessage()]
    sched.step_update(0)
    assert current_lr(opt) == pytest.approx(1e-2)


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "state.bin"
    atomic_write_bytes(target, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["state.bin"]


def test_state_round_trip_loads_without_running_code(tmp_path):
    save_state(tmp_path, {"epoch": 3, "w": torch.arange(4.0), "nested": {"a": [1, 2.5, None]}})
    state = load_state(tmp_path)
    assert state["epoch"] == 3 and torch.equal(state["w"], torch.arange(4.0))
    (tmp_path / "state.pt").write_bytes(b"garbage")
    with pytest.raises(RunError, match="cannot be read"):
        load_state(tmp_path)
    with pytest.raises(RunError, match="nothing to resume"):
        load_state(tmp_path / "elsewhere")


def test_memory_meter_on_cpu_reports_process_memory():
    meter = MemoryMeter(torch.device("cpu"))
    sample = meter.sample()
    assert sample.kind == "process" and sample.bytes_now > 10 * 2**20 and sample.bytes_peak >= sample.bytes_now

"""Content, not stamps: a result is only reported when the bytes it came from are the ones the engine made or saw.

An export carries a SHA-256 of its payload and is refused when its bytes do not match; outputs that are not
numbers are refused, never printed or sorted on; an image whose content changed at the same size with its
modification time restored is seen as changed (evaluation, resume, the decoded-image cache); and an export
without the run's best weights needs to be asked for the last checkpoint by name.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
from image_factory import make_image, make_image_folder, tree_snapshot
from test_fault_injection import TINY, _cli, _one_line_refusal
from run_builders import MODEL_KWARGS, Recorder, tiny_config

from dtl_engine.runs.folder import RunFolder


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A finished tiny run on BMP images (same size for the same dimensions) and its export, made by the CLI."""
    base = tmp_path_factory.mktemp("content")
    data = make_image_folder(base / "data", {"a": 6, "b": 6}, size=(24, 24), fmt="bmp")
    old = os.environ.get("DTL_STUDIO_HOME")
    os.environ["DTL_STUDIO_HOME"] = str(base / "home")
    try:
        from dtl_engine.cli import main as cli

        assert cli.main(["train", str(data), *TINY, "--epochs", "1", "--lr", "1e-3", "--out", str(base / "run")]) == 0
        assert cli.main(["export", str(base / "run"), "--out", str(base / "model.pt")]) == 0
    finally:
        if old is None:
            os.environ.pop("DTL_STUDIO_HOME", None)
        else:
            os.environ["DTL_STUDIO_HOME"] = old
    return base


def _photos(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "photos", {"x": 3, "y": 3}, size=(24, 24))


def _rewrite_member(src: Path, dest: Path, change) -> None:
    """Copy the archive ``src`` to ``dest`` with one tensor record changed by ``change`` (a valid zip: new CRC)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zout:
        target = max((i for i in zin.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, change(data) if info.filename == target.filename else data)


def _refused_without_results(code: int, out: str, err: str, *words: str) -> None:
    _one_line_refusal(code, err, *words)
    assert "%" not in out and "nan" not in out.lower()


# --- the export's own bytes ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_an_export_whose_bytes_were_damaged_is_refused_and_sorts_nothing(made, tmp_path, capsys):
    damaged = tmp_path / "damaged.pt"
    raw = bytearray((made / "model.pt").read_bytes())
    with zipfile.ZipFile(made / "model.pt") as archive:   # bytes inside the largest tensor record: its CRC fails
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + 64:start + 96] = b"\xff" * 32                # NaN floats, as the corruption that was reported
    damaged.write_bytes(bytes(raw))
    photos = _photos(tmp_path)
    before = tree_snapshot(photos)
    code, out, err = _cli(["predict", str(damaged), str(photos / "x" / "img_0.png")], capsys)
    _refused_without_results(code, out, err, "damaged")
    code, out, err = _cli(["predict", str(damaged), "--folder", str(photos), "--csv", str(tmp_path / "out.csv"),
                           "--sort-into", str(tmp_path / "sorted")], capsys)
    _refused_without_results(code, out, err, "damaged")
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "sorted").exists()
    assert tree_snapshot(photos) == before


def test_an_export_changed_inside_a_valid_archive_is_refused(made, tmp_path, capsys):
    changed = tmp_path / "changed.pt"
    _rewrite_member(made / "model.pt", changed, lambda data: bytes(reversed(data)))
    code, out, err = _cli(["predict", str(changed), str(_photos(tmp_path) / "x" / "img_0.png")], capsys)
    _refused_without_results(code, out, err, "damaged", "checksum")


def _onnx_available() -> bool:
    from dtl_engine.export.onnx_format import onnx_available

    return onnx_available()


@pytest.mark.slow
@pytest.mark.skipif(not _onnx_available(), reason="ONNX export needs the optional onnx and onnxruntime packages")
def test_an_onnx_export_changed_after_export_is_refused(made, tmp_path, capsys):
    import onnx

    code, _, err = _cli(["export", str(made / "run"), "--out", str(tmp_path / "m.onnx"), "--no-verify"], capsys)
    assert code == 0, err
    photo = str(_photos(tmp_path) / "x" / "img_0.png")
    assert _cli(["predict", str(tmp_path / "m.onnx"), photo], capsys)[0] == 0     # as written: accepted
    proto = onnx.load(str(tmp_path / "m.onnx"))
    weights = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    weights.raw_data = bytes(reversed(weights.raw_data))      # a valid file, other weights
    onnx.save(proto, str(tmp_path / "changed.onnx"))
    code, out, err = _cli(["predict", str(tmp_path / "changed.onnx"), photo], capsys)
    _refused_without_results(code, out, err, "damaged", "checksum")


def test_an_older_export_without_a_checksum_still_predicts_and_says_it_cannot_be_checked(made, tmp_path, capsys):
    from dtl_engine.data.preprocess import preprocess_settings
    from dtl_engine.export.common import build_metadata
    from dtl_engine.export.torchscript import _archive, build_scripted
    from dtl_engine.runs.listing import load_run_model

    model, classes = load_run_model(made / "run")
    settings = preprocess_settings(model.data_config)
    meta = build_metadata(model, classes, None, "torchscript", settings)   # as exports were written before
    older = tmp_path / "older.pt"
    older.write_bytes(_archive(build_scripted(model, settings, classes, meta), meta))
    code, out, err = _cli(["predict", str(older), str(_photos(tmp_path) / "x" / "img_0.png")], capsys)
    assert code == 0, err
    assert "%" in out and "warning:" in err and "cannot be detected" in err


def test_outputs_that_are_not_numbers_are_refused_and_never_sorted(made, tmp_path, capsys):
    import torch

    from dtl_engine.export.core import export_model
    from dtl_engine.runs.listing import load_run_model

    model, classes = load_run_model(made / "run")
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))                  # as a model that diverged
    export_model(model, classes, tmp_path / "diverged.pt", verify=False)
    photos = _photos(tmp_path)
    code, out, err = _cli(["predict", str(tmp_path / "diverged.pt"), str(photos / "x" / "img_0.png")], capsys)
    assert code == 2 and "no usable probabilities" in err and "%" not in out and "nan" not in out.lower()
    code, out, err = _cli(["predict", str(tmp_path / "diverged.pt"), "--folder", str(photos), "--csv",
                           str(tmp_path / "out.csv"), "--sort-into", str(tmp_path / "sorted")], capsys)
    assert not (tmp_path / "sorted").exists() or not any((tmp_path / "sorted").rglob("*.png"))
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text(encoding="utf-8"))))
    assert len(rows) == 6
    assert all(r["top1"] == r["confidence"] == r["top_k"] == r["copied_to"] == "" for r in rows)
    assert all("no usable probabilities" in r["error"] for r in rows)


# --- images whose content changed behind a restored time --------------------------------------------------

def _swap_keeping_time(path: Path, other: Path) -> None:
    """Give ``path`` the content of ``other`` (same size), then set its times back as they were."""
    st = path.stat()
    assert other.stat().st_size == st.st_size and other.read_bytes() != path.read_bytes()
    path.write_bytes(other.read_bytes())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size


def test_evaluation_sees_a_validation_image_swapped_behind_a_restored_time(made, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(made / "data", data)
    run = tmp_path / "run"
    code, _, err = _cli(["train", str(data), *TINY, "--epochs", "1", "--lr", "1e-3", "--out", str(run)], capsys)
    assert code == 0, err
    assert _cli(["evaluate", str(run)], capsys)[0] == 0          # the decoded-image cache now holds every image
    val = [Path(p) for p, _ in RunFolder(run).read_split()["val"]]
    other = next(p for p in sorted(data.rglob("*.bmp")) if p.parent != val[0].parent)
    _swap_keeping_time(val[0], other)
    code, out, err = _cli(["evaluate", str(run), "--json"], capsys)
    assert code == 0, err
    left_out = json.loads(out)["left_out"]
    assert [(Path(item["path"]), "changed" in item["reason"]) for item in left_out] == [(val[0], True)]


def test_the_decoded_image_cache_never_serves_the_old_pixels_of_a_swapped_image(tmp_path):
    import numpy as np

    from dtl_engine.data.image_cache import ImageCache

    photo = make_image(tmp_path / "p.bmp", 0, size=(24, 24), fmt="bmp")
    other = make_image(tmp_path / "q.bmp", 3, size=(24, 24), fmt="bmp")
    cache = ImageCache(tmp_path / "cache", budget_bytes=10 * 2**20)
    first = np.asarray(cache.load(photo, 24))
    assert np.array_equal(np.asarray(cache.load(photo, 24)), first)     # served from the cache
    _swap_keeping_time(photo, other)
    assert np.array_equal(np.asarray(cache.load(photo, 24)), np.asarray(cache.load(other, 24)))


def test_a_scan_is_not_reused_once_an_image_was_swapped_behind_a_restored_time(tmp_path):
    from dtl_engine.data.scan import scan_folder
    from dtl_engine.data.scan_check import scan_still_valid

    data = make_image_folder(tmp_path / "data", {"a": 3, "b": 3}, size=(24, 24), fmt="bmp")
    scan = scan_folder(data)
    assert scan_still_valid(scan, data)
    _swap_keeping_time(data / "a" / "img_0.bmp", data / "b" / "img_0.bmp")
    assert not scan_still_valid(scan, data)


def test_resume_warns_about_a_training_image_that_changed_behind_a_restored_time(made, tmp_path, capsys):
    from dtl_engine.listener import StopToken
    from dtl_engine.training import train

    data = tmp_path / "data"
    shutil.copytree(made / "data", data)
    token = StopToken()
    part = train(tiny_config(data, epochs=2, image_size=32), Recorder(epoch_finished=lambda s: token.stop()), token,
                 run_dir=tmp_path / "run", model_kwargs=MODEL_KWARGS)
    assert part.status == "stopped" and part.epochs_done == 1
    train_images = [Path(p) for p, _ in RunFolder(part.run_dir).read_split()["train"]]
    other = next(p for p in train_images if p.parent != train_images[0].parent)
    _swap_keeping_time(train_images[0], other)
    code, out, err = _cli(["resume", str(part.run_dir)], capsys)
    assert code == 0, err
    warned = [line for line in out.splitlines() if line.startswith("⚠ ") and "changed" in line]   # events.describe
    assert len(warned) == 1 and train_images[0].name in warned[0], out


# --- which weights an export holds -------------------------------------------------------------------------

def test_export_without_best_weights_names_the_last_checkpoint_and_needs_it_asked_for(made, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    RunFolder(run).best_weights.unlink()
    before = tree_snapshot(run)
    code, _, err = _cli(["export", str(run), "--out", str(tmp_path / "m.pt"), "--no-verify"], capsys)
    _one_line_refusal(code, err, "best.safetensors", "checkpoint.safetensors", "--weights last")
    assert not (tmp_path / "m.pt").exists() and tree_snapshot(run) == before
    code, _, err = _cli(["export", str(run), "--out", str(tmp_path / "m.pt"), "--no-verify", "--weights", "last"],
                        capsys)
    assert code == 0, err
    from dtl_engine.inference.predict import load_exported

    assert load_exported(tmp_path / "m.pt").metadata["weights"] == "last"

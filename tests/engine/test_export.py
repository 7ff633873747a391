"""TorchScript export: one torch-only file, equal to the engine's prediction, metadata inside, safe writing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dtl_engine.errors import ExportError
from dtl_engine.export import export_model
from dtl_engine.export.common import TOLERANCE
from dtl_engine.model.probabilities import engine_probabilities
from dtl_engine.inference.predict import load_exported
from image_factory import make_image_folder
from tiny_models import tiny_swin, tiny_vit

CLASSES = ["cat", "dog", "owl"]


def _beside(folder: Path) -> list[str]:
    """The names in ``folder`` besides DTL Studio's own folder (the tests' DTL_STUDIO_HOME lives there)."""
    return sorted(p.name for p in folder.iterdir() if p.name != "dtl_home")


def trained_looking_model(build=tiny_vit, **build_kwargs):
    """A tiny DTL model whose side network and head are not at their zero/initial values."""
    torch.manual_seed(0)
    model = build(len(CLASSES), **build_kwargs)
    torch.manual_seed(1)    # the draws below do not depend on how much of the generator building used
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0.0, 0.5)     # B starts at zero: make the side network actually contribute
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.set_num_threads(1)
    model = trained_looking_model()
    out = tmp_path_factory.mktemp("export") / "model.pt"
    result = export_model(model, CLASSES, out, metadata={"val_acc": 0.75, "run": "test-run"})
    return model, result


@pytest.mark.slow
def test_export_verifies_itself_in_a_fresh_process(exported):
    _, result = exported
    assert result.format == "torchscript" and result.verified
    assert result.max_abs_diff is not None and result.max_abs_diff <= TOLERANCE
    assert result.images_checked >= 3      # at least the synthetic batch of odd-sized images
    assert "fresh process" in result.message


# Loaded by a process that imports only torch; inputs of a size the model was not traced at.
_TORCH_ONLY = r"""
import json, sys
import torch
extra = {"metadata.json": ""}
m = torch.jit.load(sys.argv[1], _extra_files=extra)
x = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    torch.save(m(x), sys.argv[3])
print(json.dumps({"extra": json.loads(extra["metadata.json"]), "method": json.loads(m.metadata_json()),
                  "classes": m.class_names(), "attr": list(m.classes),
                  "foreign": [k for k in sys.modules if k.split(".")[0] in ("timm", "dtl_engine")]}))
"""


@pytest.mark.slow
def test_torch_only_process_matches_engine_on_any_size_and_reads_metadata(exported, tmp_path):
    model, result = exported
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, 45, 71), dtype=torch.uint8, generator=gen)   # model input is 32×32
    torch.save(images, tmp_path / "in.pt")
    done = subprocess.run([sys.executable, "-c", _TORCH_ONLY, result.path, str(tmp_path / "in.pt"),
                           str(tmp_path / "out.pt")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["foreign"] == []
    probs = torch.load(tmp_path / "out.pt", weights_only=True)
    reference = engine_probabilities(model, images)
    assert probs.shape == (2, 3)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2), atol=1e-5)
    assert (probs - reference).abs().max().item() <= 1e-4
    assert (reference[0] - reference[1]).abs().max() > 1e-3   # the images really get different answers

    for meta in (report["extra"], report["method"]):
        assert meta["classes"] == CLASSES
        assert meta["backbone"] == "test_vit" and meta["method"] == "dtl" and meta["rank"] == model.spec.rank
        assert meta["val_acc"] == 0.75 and meta["run"] == "test-run"
        assert meta["input_size"] == [32, 32] and meta["engine_version"] and meta["date"]
    assert report["classes"] == CLASSES and report["attr"] == CLASSES


def test_existing_file_is_never_overwritten_without_permission(exported, tmp_path):
    model, result = exported
    target = tmp_path / "taken.pt"
    target.write_bytes(b"precious")
    with pytest.raises(ExportError, match="already exists"):
        export_model(model, CLASSES, target, verify=False)
    assert target.read_bytes() == b"precious"

    done = export_model(model, CLASSES, target, overwrite=True, verify=False)
    assert not done.verified and done.max_abs_diff is None
    assert load_exported(target).classes == CLASSES
    assert _beside(tmp_path) == ["taken.pt"]                         # no temporary file left behind


def test_a_file_that_appears_during_the_export_is_not_overwritten(exported, tmp_path, monkeypatch):
    """The destination is checked before a long conversion and check; a file made meanwhile stays."""
    from dtl_engine.export import core

    model, _ = exported
    target = tmp_path / "model.pt"
    real = core._writer("torchscript")

    def writer_while_another_export_finishes(*args):
        real(*args)
        target.write_bytes(b"the other export")

    monkeypatch.setattr(core, "_writer", lambda _format: writer_while_another_export_finishes)
    with pytest.raises(ExportError, match="already exists"):
        export_model(model, CLASSES, target, verify=False)
    assert target.read_bytes() == b"the other export"
    assert _beside(tmp_path) == ["model.pt"]                         # no temporary file left behind


@pytest.mark.slow
def test_a_model_that_answers_nan_is_not_verified(tmp_path):
    """NaN probabilities equal nothing, so no difference was found: the check called such a file verified."""
    model = trained_looking_model()
    with torch.no_grad():
        model.head.bias.fill_(float("nan"))
    with pytest.raises(ExportError, match="not numbers"):
        export_model(model, CLASSES, tmp_path / "model.pt")
    assert _beside(tmp_path) == []


def test_never_writes_into_the_image_folder(exported, tmp_path):
    model, _ = exported
    data = make_image_folder(tmp_path / "photos")
    with pytest.raises(ExportError, match="image folder"):
        export_model(model, CLASSES, data / "sub" / "model.pt", verify=False, data_dir=data)
    assert not (data / "sub").exists()


def test_a_disagreeing_export_is_refused_and_not_kept(exported, tmp_path, monkeypatch):
    model, _ = exported
    import dtl_engine.export.core as core

    def fresh_process_that_disagrees(path, fmt, images):
        # What a broken export would return: the engine's answer, shifted by more than the tolerance.
        return [engine_probabilities(model, x) + 1e-3 for x in images], {"classes": CLASSES, "foreign": []}

    monkeypatch.setattr(core, "check_in_fresh_process", fresh_process_that_disagrees)
    with pytest.raises(ExportError, match="disagrees"):
        export_model(model, CLASSES, tmp_path / "bad.pt")
    assert _beside(tmp_path) == []


def test_bad_arguments_are_sentences(exported, tmp_path):
    model, _ = exported
    with pytest.raises(ExportError, match="format"):
        export_model(model, CLASSES, tmp_path / "m.x", format="pickle")
    with pytest.raises(ExportError, match="class names"):
        export_model(model, ["only", "two"], tmp_path / "m.pt")
    with pytest.raises(ExportError, match="folder"):
        export_model(model, CLASSES, tmp_path, verify=False)


@pytest.mark.slow
def test_swin_dtl_plus_exports_and_verifies(tmp_path):
    # The other backbone family (NHWC stages, per-stage depthwise convs) traces just as well.
    model = trained_looking_model(tiny_swin, variant="dtl+")
    result = export_model(model, CLASSES, tmp_path / "swin.pt")
    assert result.verified and result.max_abs_diff <= TOLERANCE
    assert load_exported(result.path).metadata["method"] == "dtl+"


@pytest.mark.slow
def test_check_also_works_inside_a_bundled_app(exported, monkeypatch):
    # A bundled app has no interpreter to call; the check then runs in a spawned child process.
    import dtl_engine.export.verify as verify

    model, result = exported
    monkeypatch.setattr(verify, "_is_frozen", lambda: True)   # sys.frozen itself would mislead multiprocessing
    monkeypatch.setattr(verify, "_run_interpreter", None)     # prove the interpreter path is not taken
    images = [torch.randint(0, 256, (1, 3, 33, 50), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))]
    probs, report = verify.check_in_fresh_process(result.path, "torchscript", images)
    assert report["classes"] == CLASSES and report["foreign"] == []
    assert (probs[0] - engine_probabilities(model, images[0])).abs().max().item() <= TOLERANCE

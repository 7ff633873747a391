"""ONNX export: verified with onnxruntime like the TorchScript one; a clear sentence when onnx is missing."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from dtl_engine.errors import ExportError
from dtl_engine.export import export_model
from dtl_engine.export.common import TOLERANCE
from dtl_engine.model.probabilities import engine_probabilities
from dtl_engine.inference.predict import load_exported
from test_export import CLASSES, trained_looking_model


def test_missing_onnx_packages_give_one_sentence(tmp_path, monkeypatch):
    import dtl_engine.export.onnx_format as onnx_format

    real = importlib.util.find_spec
    monkeypatch.setattr(onnx_format.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("onnx", "onnxruntime") else real(name, *a))
    model = trained_looking_model()
    with pytest.raises(ExportError) as info:
        export_model(model, CLASSES, tmp_path / "m.onnx", format="onnx")
    message = str(info.value)
    assert "pip install onnx onnxruntime" in message and "\n" not in message
    assert not onnx_format.onnx_available()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_onnx_export_matches_engine_on_any_size(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    torch.set_num_threads(1)
    model = trained_looking_model()
    result = export_model(model, CLASSES, tmp_path / "model.onnx", format="onnx", metadata={"val_acc": 0.5})
    assert result.format == "onnx" and result.verified and result.max_abs_diff <= TOLERANCE

    loaded = load_exported(result.path)
    assert loaded.format == "onnx" and loaded.classes == CLASSES
    assert loaded.metadata["backbone"] == "test_vit" and loaded.metadata["val_acc"] == 0.5
    images = torch.randint(0, 256, (2, 3, 50, 37), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    assert (loaded(images) - engine_probabilities(model, images)).abs().max().item() <= TOLERANCE

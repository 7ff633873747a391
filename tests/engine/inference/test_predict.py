"""predict(): top-k classes from an exported file, agreeing with the engine, on awkward image files."""
from __future__ import annotations

import pytest
import torch

from dtl_engine.errors import DataError, ExportError
from dtl_engine.export import export_model
from dtl_engine.data.model_input import input_side, load_pixels
from dtl_engine.data.preprocess import preprocess_settings
from dtl_engine.inference.predict import load_exported, predict
from dtl_engine.model.probabilities import engine_probabilities
from image_factory import make_image
from test_export import CLASSES, trained_looking_model


@pytest.fixture(scope="module")
def export_and_model(tmp_path_factory):
    torch.set_num_threads(1)
    model = trained_looking_model()
    out = tmp_path_factory.mktemp("predict") / "model.pt"
    export_model(model, CLASSES, out, verify=False)     # verification has its own tests
    return out, model


def test_top_k_per_image_agrees_with_engine(export_and_model, tmp_path):
    path, model = export_and_model
    images = [make_image(tmp_path / "a.png", 0, size=(40, 28)),
              make_image(tmp_path / "b.jpg", 1, size=(64, 64), fmt="jpeg", mode="CMYK"),   # CMYK JPEG
              make_image(tmp_path / "c.png", 2, size=(17, 90), mode="P")]                  # palette PNG
    results = predict(path, images, top_k=2)
    assert len(results) == 3
    for image, ranked in zip(images, results):
        assert len(ranked) == 2
        (first, p1), (second, p2) = ranked
        assert first in CLASSES and second in CLASSES and first != second
        assert 1.0 >= p1 >= p2 >= 0.0
        # The engine's evaluation loads an image shrunk to the side its resize needs; so does predict().
        side = input_side(preprocess_settings(model.data_config))
        reference = engine_probabilities(model, load_pixels(image, side).unsqueeze(0))[0]
        top = torch.topk(reference, 2)
        assert [CLASSES[i] for i in top.indices] == [first, second]
        assert abs(top.values[0].item() - p1) <= 1e-4 and abs(top.values[1].item() - p2) <= 1e-4


def test_top_k_is_capped_at_the_number_of_classes(export_and_model, tmp_path):
    path, _ = export_and_model
    ranked = predict(path, [make_image(tmp_path / "x.png", 1)], top_k=10)[0]
    assert sorted(name for name, _ in ranked) == sorted(CLASSES)
    assert sum(p for _, p in ranked) == pytest.approx(1.0, abs=1e-5)


def test_load_exported_exposes_classes_and_metadata(export_and_model):
    path, _ = export_and_model
    loaded = load_exported(path)
    assert loaded.format == "torchscript" and loaded.classes == CLASSES
    assert loaded.metadata["backbone"] == "test_vit" and loaded.metadata["preprocess"]["size"] == [32, 32]
    probs = loaded(torch.zeros(1, 3, 10, 300, dtype=torch.uint8))
    assert probs.shape == (1, 3)


def test_bad_inputs_are_sentences(export_and_model, tmp_path):
    path, _ = export_and_model
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(DataError):
        predict(path, [broken])
    with pytest.raises(ExportError, match="no exported model"):
        predict(tmp_path / "missing.pt", [broken])
    with pytest.raises(ExportError, match="not a model exported"):
        predict(broken, [broken])
    with pytest.raises(ExportError, match="top_k"):
        predict(path, [broken], top_k=0)

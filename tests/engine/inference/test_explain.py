"""Why-heatmaps: Grad-CAM must look where the evidence is, and `explain` writes a PNG without overwriting."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from square_factory import COLOURS, SIDE, SQUARE, make_square_folder, square_image
from tiny_models import TINY_SWIN, TINY_VIT

from dtl_engine.cli import main as cli
from dtl_engine.config import TrainConfig
from dtl_engine.inference.explain import explain_image, explain_run
from dtl_engine.runs.listing import load_run_model
from dtl_engine.training import train

torch.set_num_threads(1)


def _train_squares(root, family):
    """A tiny model trained with the engine's defaults, except the tiny random backbone, its size and (ViT,
    for speed) the epochs."""
    name, kwargs = {"vit": TINY_VIT, "swin": TINY_SWIN}[family]
    make_square_folder(root / "images", per_class=40, seed=0)
    extra = {"epochs": 10} if family == "vit" else {}
    config = TrainConfig(data_dir=str(root / "images"), backbone=name, weights="random", image_size=SIDE, **extra)
    return train(config, run_dir=root / "run", model_kwargs=kwargs)


@pytest.fixture(scope="module")
def square_run(tmp_path_factory):
    return _train_squares(tmp_path_factory.mktemp("squares"), "vit")


def mass_ratio(model, classes, folder, layer=None):
    """Mean heatmap mass inside the square over fresh images, as a multiple of the square's area share."""
    rng = np.random.default_rng(123)           # fresh images the model never saw
    shares = []
    for i in range(24):
        name = list(COLOURS)[i % len(COLOURS)]
        img, box = square_image(COLOURS[name], rng)
        path = folder / f"new_{i}.png"
        img.save(path)
        explanation = explain_image(model, classes, path, layer=layer)
        assert explanation.heatmap.shape == (SIDE, SIDE)
        shares.append(explanation.mass_inside(box))
    return float(np.mean(shares)) / (SQUARE * SQUARE / (SIDE * SIDE))


@pytest.mark.slow
def test_vit_heatmap_mass_sits_on_the_square(square_run, tmp_path):
    model, classes = load_run_model(square_run.run_dir)
    ratio = mass_ratio(model, classes, tmp_path)
    print(f"\nViT: heatmap mass inside the square = {ratio:.1f}x its area share "
          f"(block M instead: {mass_ratio(model, classes, tmp_path, 'inject'):.1f}x)")
    assert ratio >= 3.0


@pytest.mark.slow
def test_swin_heatmap_mass_sits_on_the_square(tmp_path):
    run = _train_squares(tmp_path, "swin")
    model, classes = load_run_model(run.run_dir)
    ratio = mass_ratio(model, classes, tmp_path)
    print(f"\nSwin: heatmap mass inside the square = {ratio:.1f}x its area share "
          f"(last block instead: {mass_ratio(model, classes, tmp_path, 'last'):.1f}x)")
    assert ratio >= 3.0


def test_explain_a_chosen_class_and_an_unknown_one(square_run, tmp_path):
    model, classes = load_run_model(square_run.run_dir)
    img, _ = square_image(COLOURS["red"], np.random.default_rng(5))
    img.save(tmp_path / "red.png")
    chosen = explain_image(model, classes, tmp_path / "red.png", class_name="blue")
    assert chosen.class_name == "blue" and 0.0 <= chosen.probability <= 1.0
    with pytest.raises(Exception, match="not one of the model's classes"):
        explain_image(model, classes, tmp_path / "red.png", class_name="purple")


def test_swin_heatmap_covers_the_image_of_any_size(tmp_path):
    from dtl_engine.model.dtl import build_model

    torch.manual_seed(0)
    model = build_model(TINY_SWIN[0], 2, weights="random", model_kwargs=TINY_SWIN[1])
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    explanation = explain_image(model, ["a", "b"], tmp_path / "x.png")
    assert explanation.heatmap.shape == (50, 70)
    assert explanation.heatmap.max() > 0 and np.isfinite(explanation.heatmap).all()


def test_cli_explain_writes_png_and_never_overwrites(square_run, tmp_path, capsys):
    image = tmp_path / "red.png"
    square_image(COLOURS["red"], np.random.default_rng(1))[0].save(image)
    out = tmp_path / "heat.png"
    assert cli.main(["explain", square_run.run_dir, str(image), "--out", str(out)]) == 0
    picture = Image.open(out)
    assert picture.format == "PNG" and picture.size == Image.open(image).size
    assert "heatmap" in capsys.readouterr().out

    before = out.read_bytes()
    assert cli.main(["explain", square_run.run_dir, str(image), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert cli.main(["explain", square_run.run_dir, str(image), "--out", str(out), "--overwrite"]) == 0


def test_explain_refuses_to_write_into_the_image_folder(square_run):
    config_dir = TrainConfig.from_json(f"{square_run.run_dir}/config.json").data_dir
    image = f"{config_dir}/red/sq_0.png"
    with pytest.raises(Exception, match="image folder"):
        explain_run(square_run.run_dir, image, f"{config_dir}/heat.png")


def test_a_full_disk_while_writing_the_heatmap_is_a_sentence_and_leaves_nothing(square_run, tmp_path, monkeypatch,
                                                                                capsys):
    import errno

    image = tmp_path / "photos" / "red.png"
    image.parent.mkdir()
    square_image(COLOURS["red"], np.random.default_rng(1))[0].save(image)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    real_save = Image.Image.save

    def save_until_the_disk_is_full(self, fp, *args, **kwargs):
        if str(fp).startswith(str(out_dir)):
            with open(fp, "wb") as fh:
                fh.write(b"\x89PNG half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_until_the_disk_is_full)
    assert cli.main(["explain", square_run.run_dir, str(image), "--out", str(out_dir / "heat.png")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "No space left" in err[0]
    assert list(out_dir.iterdir()) == []

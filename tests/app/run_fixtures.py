"""Shared pieces of the app's run tests: a tiny image folder and a tiny real-engine configuration.

The fixtures built from these (``tiny_dataset``, ``finished_run``, ``exported``) are in ``conftest.py``.
The engine runs for real on timm's ``test_vit`` with random weights, a 4-pixel
patch on 32x32 images, so an epoch over a few dozen images takes a fraction of
a second on one CPU thread.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY_MODEL_KWARGS = dict(patch_size=4, img_size=32)


def _one_torch_thread() -> None:
    # The test machine is shared: one intra-op thread avoids OpenMP threads waiting on each other.
    import torch

    torch.set_num_threads(1)
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220)}


def make_image_folder(root: Path, per_class: int = 8, classes: dict[str, tuple[int, int, int]] | None = None,
                      jitter: int = 0) -> Path:
    """``root/<class>/<i>.png``: each class a colour plus seeded noise, 32x32 pixels.

    ``jitter`` shifts each image's brightness at random, so close colours overlap (mistakes happen).
    """
    rng = np.random.default_rng(0)
    for name, rgb in (classes or COLOURS).items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-60, 61, size=(32, 32, 3)) + rng.integers(-jitter, jitter + 1)
            pixels = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(folder / f"{name}_{i}.png")
    return root


def tiny_config(data_dir: Path | str, **changes):
    """A TrainConfig for the tiny model: CPU, fp32, no augmentation, no warm-up."""
    from dtl_engine.config import TrainConfig

    settings = dict(data_dir=str(data_dir), backbone="test_vit", weights="random", epochs=2, batch_size=4,
                    augment="none", precision="fp32", device="cpu", warmup_epochs=0, lr=3e-3)
    settings.update(changes)
    return TrainConfig(**settings)


def tiny_train():
    """The real ``dtl_engine.training.train`` with the tiny backbone's timm settings."""
    from dtl_engine.training import train

    _one_torch_thread()
    return functools.partial(train, model_kwargs=TINY_MODEL_KWARGS)


def train_now(data_dir: Path | str, **changes):
    """Run a tiny training to the end on the calling thread; returns the RunResult."""
    return tiny_train()(tiny_config(data_dir, **changes))


def stopped_run(data_dir: Path | str, stop_after_epoch: int = 0, **changes):
    """A real run stopped (as the Stop button does) right after epoch ``stop_after_epoch``."""
    from dtl_engine.listener import RunListener, StopToken

    token = StopToken()

    class StopAfter(RunListener):
        def epoch_finished(self, stats) -> None:
            if stats.epoch >= stop_after_epoch:
                token.stop()

    changes.setdefault("epochs", 3)
    return tiny_train()(tiny_config(data_dir, **changes), listener=StopAfter(), token=token)


class ReplaceAnswers:
    """Answers the app's one "Replace the file?" question (``error_dialog.ask_to_replace``) and keeps each text."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.asked: list[str] = []
        self._monkeypatch = monkeypatch

    def answer(self, choice) -> None:
        """From now on the question gets ``choice`` (a ``QMessageBox.StandardButton``)."""
        from PySide6.QtWidgets import QMessageBox

        def question(*args, **kwargs):
            self.asked.append(args[2])
            return choice
        self._monkeypatch.setattr(QMessageBox, "question", question)


def relayed_run_page(qtbot):
    """A Train page whose run is under way as far as the page knows (10 epochs of 10 steps), fed by the test
    through ``page.session._relay``; nothing trains."""
    from app.pages.train_page import TrainPage
    from app.run_life import RunState
    from dtl_engine.events import make
    from dtl_engine.listener import RunStarted

    page = TrainPage(lambda: None)
    qtbot.addWidget(page)
    page.life.move(RunState.STARTING)
    page._begin("Starting…")
    page.session._relay(make("run_started", RunStarted("run-x", "cpu", "CPU", "fp32", 10, 1000, 0, ["a", "b"],
                                                       80, 20, 10, 2)))
    return page

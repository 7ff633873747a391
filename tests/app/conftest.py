"""Shared fixtures of the app tests: private settings, a tiny image folder, themed pages, screenshots."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from run_fixtures import COLOURS, make_image_folder, train_now

# A small tiny-model configuration so the Model page's background work stays cheap in tests.
TINY_CONFIG = {"backbone": "test_vit", "weights": "random", "epochs": 1, "batch_size": 4}


@pytest.fixture(autouse=True)
def private_settings(tmp_path, monkeypatch):
    """Every test gets its own INI settings file; the real user settings are never touched."""
    path = tmp_path / "settings" / "dtl_studio.ini"
    path.parent.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("DTL_STUDIO_SETTINGS", str(path))
    return path


@pytest.fixture(autouse=True)
def no_question_blocks_the_suite(monkeypatch):
    """A modal question that a test did not answer must never wait for a click that cannot come.

    It happens when a window is closed at a test's end while a job that would lose work (an
    evaluation, a classification) is still running: the close asks. Unanswered, a box takes its
    "stop" button when it has one (the test is over: stop the work and let the window go), else its
    escape button. A test that expects a question patches ``QMessageBox.exec`` itself, which wins.
    """
    from PySide6.QtWidgets import QMessageBox

    def answer_unasked(box):
        stop = next((b for b in box.buttons() if box.buttonRole(b) == QMessageBox.ButtonRole.DestructiveRole), None)
        chosen = stop or box.escapeButton() or box.defaultButton()
        box.clickedButton = lambda: chosen      # this box only
        return 0

    monkeypatch.setattr(QMessageBox, "exec", answer_unasked)


@pytest.fixture
def settings(private_settings):
    """A Settings object on the private INI file, pre-seeded with a tiny-model configuration."""
    from app.settings import Settings

    s = Settings()
    s.set_last_config(dict(TINY_CONFIG))
    return s


@pytest.fixture
def themed(qapp):
    """The application palette and style sheet, as the real app applies them."""
    from app.theme import apply_theme

    apply_theme(qapp)
    return qapp


def _image(path: Path, colour: tuple[int, int, int], size: int = 24) -> None:
    img = Image.new("RGB", (size, size), colour)
    for i in range(size):               # a diagonal so thumbnails are not flat squares
        img.putpixel((i, i), (255 - colour[0], 255 - colour[1], 255 - colour[2]))
    img.save(path)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """cats (8 images), dogs (8), birds (2, imbalanced), plus one broken image and one text file."""
    root = tmp_path / "pets"
    spec = {"cats": ((200, 80, 40), 8), "dogs": ((40, 120, 200), 8), "birds": ((60, 170, 60), 2)}
    for name, (colour, n) in spec.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(n):
            _image(folder / f"{name}_{i}.png", colour)
    (root / "cats" / "broken.jpg").write_bytes(b"this is not a jpeg")
    (root / "dogs" / "notes.txt").write_text("not an image", encoding="utf-8")
    return root


@pytest.fixture
def one_class_folder(tmp_path) -> Path:
    """A folder with a single class: a DataError sentence, not a crash."""
    root = tmp_path / "lonely"
    (root / "only").mkdir(parents=True)
    for i in range(3):
        _image(root / "only" / f"{i}.png", (120, 120, 120))
    return root


@pytest.fixture
def screens_dir(tmp_path) -> Path:
    """Where page screenshots go: DTL_SCREENS_DIR when set (README images), else a temp folder."""
    target = Path(os.environ.get("DTL_SCREENS_DIR") or tmp_path / "screens")
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
def wait_scan(qtbot):
    """``wait_scan(page)``: wait until the data page's background scan has ended (either way)."""
    def wait(page, timeout: int = 90_000) -> None:
        qtbot.waitUntil(lambda: not page.is_scanning(), timeout=timeout)
    return wait


@pytest.fixture
def folder_mime():
    """``folder_mime(*paths)``: drag data as a file manager sends it (file:// URLs)."""
    from PySide6.QtCore import QMimeData, QUrl

    def make(*paths: Path) -> QMimeData:
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
        return mime
    return make


@pytest.fixture(autouse=True)
def no_job_outlives_its_test(qapp):
    """Every background job a test started is cancelled and awaited before the next test."""
    yield
    from app import jobs

    jobs.cancel_all()
    assert jobs.wait_all(120_000), "a background job did not end within two minutes"
    qapp.processEvents()        # deliver the jobs' last signals while their widgets still exist


# --- a tiny real run, shared by the run tests --------------------------------------------
@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished tiny run shared by a test module: 4 classes, two of them hard to tell apart."""
    root = tmp_path_factory.mktemp("shared_run")
    data = make_image_folder(root / "images", per_class=10,
                             classes={"red": COLOURS["red"], "blue": COLOURS["blue"],
                                      "grey": (120, 120, 120), "silver": (135, 135, 135)}, jitter=30)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DTL_STUDIO_HOME", str(root / "home"))
        return train_now(data, epochs=3)


@pytest.fixture(scope="module")
def exported(finished_run, tmp_path_factory):
    """The shared run and its TorchScript file, exported once without the slow verification."""
    from dtl_engine.export import export_torchscript

    out = tmp_path_factory.mktemp("export") / "model.pt"
    export_torchscript(finished_run.run_dir, out, verify=False)
    return finished_run, out

"""Show in folder / Open the runs folder: the folder opens, or the user is told where it is."""
from __future__ import annotations

from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QMessageBox

from app.widgets import open_folder as module


def test_the_folder_opens_in_the_file_manager(tmp_path, monkeypatch):
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()) or True)
    assert module.open_folder(tmp_path, None)
    assert opened == [str(tmp_path)]


def test_without_a_file_manager_the_path_is_shown_and_can_be_copied(qapp, tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: False)

    def exec_(box):
        shown.append(box.text())
        next(b for b in box.buttons() if b.text() == "Copy the path").click()
        return 0

    monkeypatch.setattr(QMessageBox, "exec", exec_)
    assert not module.open_folder(tmp_path, None, "The runs folder")
    assert shown and "No file manager" in shown[0] and str(tmp_path) in shown[0]
    assert qapp.clipboard().text() == str(tmp_path)


def test_a_folder_that_is_gone_is_named(tmp_path, monkeypatch):
    said = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: said.append("opened") or True)
    monkeypatch.setattr(QMessageBox, "information", lambda parent, title, text: said.append(text))
    assert not module.open_folder(tmp_path / "gone", None, "The folder of a.png")
    assert said == [f"The folder of a.png no longer exists:\n{tmp_path / 'gone'}"]

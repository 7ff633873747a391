"""The layer check that `dev.py test` runs: the import-linter contracts hold, and no module loop exists."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def check_layers():
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "packaging" / "check_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tree_keeps_its_layers_and_has_no_import_cycle(check_layers, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert check_layers.main() == 0, capsys.readouterr().out
    assert "BROKEN" not in capsys.readouterr().out


def test_a_loop_through_a_function_local_import_is_found(check_layers, tmp_path, monkeypatch):
    pkg = tmp_path / "loopy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from loopy import b\n")
    (pkg / "b.py").write_text("def later():\n    from loopy import c\n")
    (pkg / "c.py").write_text("def later():\n    import loopy.a\n")
    (pkg / "d.py").write_text("from loopy import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert check_layers.import_cycles(["loopy"]) == [["loopy.a", "loopy.b", "loopy.c"]]
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "loopy"]:
            del sys.modules[name]

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


def _tree(root, files):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_function_local_import_is_refused_unless_it_defers_torch_from_a_torch_free_module(check_layers, tmp_path):
    _tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/light.py": "import json\n",                          # torch-free
        "pkg/heavy.py": "import torch\n",                         # loads torch
        "pkg/heavier.py": "from pkg import heavy\n",              # loads torch through the project
        "pkg/good.py": "def later():\n    from pkg import heavier\n    import numpy\n",
        "pkg/needless.py": "def later():\n    from pkg.light import json\n",
        "pkg/loaded.py": "import torch\n\ndef later():\n    from pkg import heavy\n",
        "pkg/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n\n"
                        "def later():\n    import PIL\n",          # only the type checker sees torch here
    })
    problems = check_layers.local_import_problems(["pkg"], tmp_path)
    assert problems == [
        "pkg/loaded.py:4: pkg.loaded loads torch already; import pkg.heavy at its top",
        "pkg/needless.py:2: pkg.light does not load torch; import it at the top of pkg.needless",
    ]


def test_the_allow_list_lets_an_optional_dependency_stay_local(check_layers, tmp_path, monkeypatch):
    _tree(tmp_path, {"pkg/__init__.py": "", "pkg/export.py": "import torch\n\ndef onnx_file():\n    import onnx\n"})
    assert check_layers.local_import_problems(["pkg"], tmp_path) == []       # onnx: listed, with its reason
    monkeypatch.setattr(check_layers, "ALLOWED_LOCAL_IMPORTS", {})
    assert check_layers.local_import_problems(["pkg"], tmp_path) == [
        "pkg/export.py:4: pkg.export loads torch already; import onnx at its top"]


def test_every_allowed_local_import_has_a_reason(check_layers):
    assert all(why.strip() for why in check_layers.ALLOWED_LOCAL_IMPORTS.values())

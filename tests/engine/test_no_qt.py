"""The engine must stay usable without Qt: importing all of it pulls in no Qt binding."""
from __future__ import annotations

import pytest

import pkgutil
import subprocess
import sys

import dtl_engine


@pytest.mark.slow
def test_engine_imports_no_qt():
    modules = [m.name for m in pkgutil.walk_packages(dtl_engine.__path__, "dtl_engine.")]
    assert len(modules) >= 3, modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    if name.endswith('__main__'): continue\n"
        "    importlib.import_module(name)\n"
        "qt = sorted(m for m in sys.modules\n"
        "            if m.split('.')[0] in ('PySide6', 'PyQt5', 'PyQt6', 'shiboken6', 'pyqtgraph'))\n"
        "print(qt)\n"
        "sys.exit(1 if qt else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

"""The safety tests share the engine tests' helpers (image factory, tiny models, CLI checks) one folder up."""
from __future__ import annotations

import sys
from pathlib import Path

_ENGINE_TESTS = str(Path(__file__).resolve().parent.parent)
if _ENGINE_TESTS not in sys.path:
    sys.path.insert(0, _ENGINE_TESTS)

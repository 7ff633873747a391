"""The safety tests share the engine tests' fixtures and factories (tests/engine on the import path)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

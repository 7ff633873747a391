"""``python -m dtl_engine ...``: the engine's command line (see :mod:`dtl_engine.cli`)."""
from __future__ import annotations

from .cli import main

raise SystemExit(main())

"""``python -m dtl_engine ...``: the engine's command line (see :mod:`dtl_engine.cli.main`)."""
from __future__ import annotations

from dtl_engine.cli.main import main

raise SystemExit(main())

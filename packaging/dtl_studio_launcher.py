"""Entry point of the frozen DTL Studio program (the PyInstaller bundle starts here)."""
from __future__ import annotations

import multiprocessing
import sys

if __name__ == "__main__":
    # Data-loader worker processes re-run this file in a frozen program; let them through.
    multiprocessing.freeze_support()
    from app.main import main

    sys.exit(main())

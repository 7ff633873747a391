"""Entry point of the frozen DTL Studio program (the PyInstaller bundle starts here)."""
from __future__ import annotations

import multiprocessing
import sys


def _run_python_code(argv: list[str]) -> int:
    """Behave like `python -c CODE ARGS...` (sys.argv becomes ['-c', *ARGS]).

    In a bundle sys.executable is this program, not a Python interpreter, yet code such as
    the export check runs `sys.executable -c ...` to get a fresh process that imports only
    torch. This keeps that working without shipping a separate interpreter.
    """
    code = argv[2]
    sys.argv = ["-c", *argv[3:]]
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(compile(code, "<string>", "exec"), namespace)  # same trust as `python -c`
    return 0


if __name__ == "__main__":
    # Data-loader worker processes re-run this file in a frozen program; let them through.
    multiprocessing.freeze_support()
    if getattr(sys, "frozen", False) and len(sys.argv) >= 3 and sys.argv[1] == "-c":
        sys.exit(_run_python_code(sys.argv))
    from app.main import main

    sys.exit(main())

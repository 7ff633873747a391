"""A torchrun entry point for tests: the engine's CLI, plus a record of every write into one folder.

    torchrun ... ddp_audit_worker.py WATCH_DIR AUDIT_DIR train DATA --out WATCH_DIR ...

Python's audit hooks see every file opened for writing, created, renamed or removed; the
paths under WATCH_DIR go to AUDIT_DIR/rank<RANK>.json when the process ends.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def main() -> int:
    watch, audit_dir, argv = os.path.realpath(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    seen: list[str] = []

    def under_watch(path: object) -> str | None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str):
            return None
        full = os.path.realpath(path)
        return full if full == watch or full.startswith(watch + os.sep) else None

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (isinstance(flags, int) and flags & WRITE_FLAGS)
            if writing and (p := under_watch(path)):
                seen.append(f"open {p}")
        elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "os.truncate"):
            for arg in args[:2]:
                if p := under_watch(arg):
                    seen.append(f"{event} {p}")

    sys.addaudithook(hook)
    from dtl_engine.cli.main import main as cli_main

    try:
        return cli_main(argv)
    finally:
        audit_dir.mkdir(parents=True, exist_ok=True)
        (audit_dir / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    sys.exit(main())

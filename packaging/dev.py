#!/usr/bin/env python3
"""Set up DTL Studio from a clean clone, then run it or its tests.

    python3 packaging/dev.py run     # set up, then open DTL Studio on its sample data
    python3 packaging/dev.py test    # set up, then run the test suite, ruff, mypy and the layer check
    python3 packaging/dev.py test --fast   # the same without the tests marked slow (the inner loop)
    python3 packaging/dev.py setup   # only set up

Setting up means: a virtual environment `.venv` in the repository root, the project
installed into it in editable mode (`test` adds its test extras; skipped when pyproject.toml
has not changed since the last successful install), and on Linux the system libraries
that Qt needs (installed with apt-get when running as root, else the command is shown).

Only the Python standard library is used here, so this runs on a bare Python >= 3.10.
Arguments after the command are passed on: `dev.py test -k export`, `dev.py run --self-test`.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP_NAME = ".dtl-studio-install.json"
EXTRAS = "test"
# `dev.py test --fast`: the inner loop, the suite less the tests marked slow (end to end runs,
# several processes, benchmarks' checks); the whole suite is what CI runs.
FAST_FLAG = "--fast"
FAST_PYTEST_ARGS = ("-m", "not slow")
# Most tests wait on one core (a run's thread, a subprocess, the event loop): pytest-xdist runs the
# test files on up to this many processes, each file whole in one (its shared fixtures built once).
MAX_TEST_PROCESSES = 4


def parallel_args(args: Sequence[str], cores: int | None = None) -> list[str]:
    """pytest-xdist's arguments for this machine, unless the caller chose (``-n``/``-p no:xdist``) or has one core."""
    cores = (os.cpu_count() or 1) if cores is None else cores
    chosen = any(a.startswith(("-n", "--numprocesses", "--dist")) or a == "no:xdist" for a in args)
    if chosen or cores < 2:
        return []
    return ["-n", str(min(MAX_TEST_PROCESSES, cores)), "--dist", "loadfile"]


# Run after the tests by `dev.py test` (installed by the test extra): the interpreter's arguments.
STATIC_CHECKS: tuple[tuple[str, ...], ...] = (("-m", "ruff", "check", "."), ("-m", "mypy", "dtl_engine"),
                                              ("packaging/check_layers.py",))
MIN_PYTHON = (3, 10)

# Shared libraries Qt (PySide6 wheels) loads from the system on Linux, with the
# Debian/Ubuntu package that provides each. "core" is enough for the headless
# (offscreen) platform used by the tests; "xcb" is what a window on X11 needs on top.
QT_CORE_LIBS: dict[str, str] = {
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libX11.so.6": "libx11-6",
    "libxcb.so.1": "libxcb1",
}
# The tests also start the window on a private X server under a GTK theme (tests/app/test_launch_loop.py).
TEST_LIBS: dict[str, str] = {"libgtk-3.so.0": "libgtk-3-0"}
TEST_PROGRAMS: dict[str, str] = {"Xvfb": "xvfb"}
QT_XCB_LIBS: dict[str, str] = {
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
}


class SetupError(Exception):
    """A set-up step failed; the message is one sentence for the user (plus a command)."""


def say(message: str) -> None:
    print(f"[dev.py] {message}", flush=True)


# --------------------------------------------------------------------------- venv
def venv_python(venv: Path = VENV) -> Path:
    """The interpreter inside the virtual environment (Windows and POSIX layouts)."""
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def _venv_package_hint() -> str:
    v = f"{sys.version_info.major}.{sys.version_info.minor}"
    return f"sudo apt-get install -y python{v}-venv"


def ensure_venv(venv: Path = VENV) -> Path:
    """Create `.venv` (or reuse a working one) and return its python."""
    py = venv_python(venv)
    if py.exists():
        probe = subprocess.run([str(py), "-c", "import pip"], capture_output=True)
        if probe.returncode == 0:
            return py
        if (venv / "pyvenv.cfg").exists():
            # A half-made or broken environment (e.g. an interrupted first run): rebuild it.
            say(f"The virtual environment in {venv.name} is incomplete; creating it again.")
            shutil.rmtree(venv)
        else:
            raise SetupError(f"{venv} exists but is not a virtual environment; move it away and run again.")
    if importlib.util.find_spec("venv") is None or importlib.util.find_spec("ensurepip") is None:
        raise SetupError(
            "This Python lacks the venv/ensurepip modules needed to create a virtual environment. "
            f"Install them with:\n    {_venv_package_hint()}"
        )
    say(f"Creating the virtual environment {venv.name} ...")
    result = subprocess.run([sys.executable, "-m", "venv", str(venv)])
    if result.returncode != 0 or not py.exists():
        if (venv / "pyvenv.cfg").exists():
            shutil.rmtree(venv, ignore_errors=True)
        raise SetupError(
            "Creating the virtual environment failed (usually the venv/ensurepip package is missing). "
            f"On Debian/Ubuntu install it with:\n    {_venv_package_hint()}"
        )
    # Keep the environment out of git status (as Python 3.13's venv does by itself).
    (venv / ".gitignore").write_text("*\n", encoding="utf-8")
    return py


def install_fingerprint(root: Path = ROOT, extras: str = EXTRAS) -> str:
    """Hash of what decides the install: pyproject.toml, the extras and the Python version."""
    h = hashlib.sha256()
    h.update((root / "pyproject.toml").read_bytes())
    h.update(f"|extras={extras}|py={sys.version_info[:2]}".encode())
    return h.hexdigest()


def install_is_current(venv: Path, fingerprint: str) -> bool:
    """True when the stamp of the last successful install matches `fingerprint`."""
    stamp = venv / STAMP_NAME
    try:
        return json.loads(stamp.read_text(encoding="utf-8")).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def ensure_installed(py: Path, venv: Path = VENV, root: Path = ROOT, extras: str = EXTRAS) -> None:
    """pip install -e ".[extras]" unless pyproject.toml is unchanged since the last success.

    ``extras`` "" is the app alone (`run`); an install with the test extras serves the app too.
    """
    fingerprint = install_fingerprint(root, extras)
    covering = [fingerprint] + ([install_fingerprint(root, EXTRAS)] if not extras else [])
    if any(install_is_current(venv, f) for f in covering):
        return
    target = f".[{extras}]" if extras else "."
    say(f'Installing DTL Studio and its dependencies into {venv.name} (pip install -e "{target}") ...')
    stamp = venv / STAMP_NAME
    stamp.unlink(missing_ok=True)  # never leave a stamp that claims a failed install succeeded
    cmd = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-e", target]
    result = subprocess.run(cmd, cwd=root)
    if result.returncode != 0:
        raise SetupError(
            f"Installing the dependencies failed (pip exit code {result.returncode}); the messages above say why."
        )
    stamp.write_text(json.dumps({"fingerprint": fingerprint}), encoding="utf-8")


# ------------------------------------------------------------------ Qt system libs
def _ldconfig_sonames() -> set[str] | None:
    """Sonames in the dynamic linker cache, or None when ldconfig is not available."""
    exe = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None
    )
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-p"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = set()
    for line in out.splitlines()[1:]:
        part = line.strip().split(" ", 1)[0]
        if part:
            names.add(part)
    return names


def system_library_finder() -> Callable[[str], bool]:
    """A predicate `soname -> present?` backed by the linker cache and LD_LIBRARY_PATH."""
    cache = _ldconfig_sonames()
    extra_dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]

    def present(soname: str) -> bool:
        if cache is not None and soname in cache:
            return True
        if any(Path(d, soname).exists() for d in extra_dirs):
            return True
        if cache is None:
            # No linker cache to read: ask ctypes (it knows the usual library folders).
            import ctypes.util

            stem = soname[3:].split(".so", 1)[0]
            return ctypes.util.find_library(stem) is not None
        return False

    return present


def missing_qt_libraries(
    is_present: Callable[[str], bool], need_window: bool = True, for_tests: bool = False
) -> dict[str, str]:
    """The Qt system libraries (and, `for_tests`, the X server) not present, as {soname or program: package}.

    `need_window` adds the X11 (xcb) platform's libraries to the headless core set; `for_tests` adds
    what the launch test needs on top: the window's libraries, GTK and Xvfb.
    """
    wanted = dict(QT_CORE_LIBS)
    if need_window or for_tests:
        wanted.update(QT_XCB_LIBS)
    if for_tests:
        wanted.update(TEST_LIBS)
    missing = {soname: pkg for soname, pkg in wanted.items() if not is_present(soname)}
    if for_tests:
        missing.update({prog: pkg for prog, pkg in TEST_PROGRAMS.items() if shutil.which(prog) is None})
    return missing


def apt_install_command(packages: Iterable[str], sudo: bool = True) -> str:
    """The one-line apt-get command that installs `packages`."""
    prefix = "sudo " if sudo else ""
    return f"{prefix}apt-get install -y {' '.join(sorted(set(packages)))}"


def ensure_qt_libraries(need_window: bool, finder: Callable[[str], bool] | None = None,
                        for_tests: bool = False) -> None:
    """On Linux, make sure Qt's system libraries are there (apt-get when root), else explain."""
    if not sys.platform.startswith("linux"):
        return
    missing = missing_qt_libraries(finder or system_library_finder(), need_window, for_tests)
    if not missing:
        return
    packages = sorted(set(missing.values()))
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if is_root and shutil.which("apt-get"):
        say(f"Installing the system libraries Qt needs: {' '.join(packages)} ...")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env)
        result = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env=env
        )
        if result.returncode == 0:
            return
    raise SetupError(
        "Qt needs system libraries that are missing here ("
        + ", ".join(sorted(missing))
        + "). On Debian/Ubuntu install them with:\n    "
        + apt_install_command(packages, sudo=not is_root)
    )


# ----------------------------------------------------------------------- commands
def has_display(env: dict[str, str] | None = None) -> bool:
    """Whether a window can be shown: always off Linux; on Linux a display or a chosen Qt platform."""
    env = os.environ if env is None else env
    if not sys.platform.startswith("linux"):
        return True
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY") or env.get("QT_QPA_PLATFORM"))


@contextlib.contextmanager
def setup_lock(root: Path = ROOT) -> Iterator[None]:
    """One set-up at a time per checkout (say `dev.py run` and `dev.py test` started together).

    The lock file lives in the temp folder, keyed by the checkout's path, so that it never
    shows up in the repository.
    """
    key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"dtl-studio-setup-{key}.lock"
    with open(path, "a+b") as handle:
        if os.name == "nt":
            import msvcrt

            handle.seek(0)
            while True:
                try:
                    msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after ~10 s; keep waiting
                    continue
        else:
            import fcntl

            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                say("Another dev.py is setting up this checkout; waiting for it to finish ...")
                fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # released when the file closes


def setup(need_window: bool, for_tests: bool = False) -> Path:
    """Every set-up step; returns the virtual environment's python."""
    if sys.version_info < MIN_PYTHON:
        raise SetupError(
            f"DTL Studio needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer; this is {platform.python_version()}."
        )
    with setup_lock():
        py = ensure_venv()
        ensure_installed(py, extras=EXTRAS if for_tests else "")
        ensure_qt_libraries(need_window, for_tests=for_tests)
    return py


def cmd_run(extra: Sequence[str]) -> int:
    """Open DTL Studio on the sample data (or pass e.g. --self-test on to the app)."""
    headless = "--self-test" in extra
    if not headless and not has_display():
        say(
            "No display was found (DISPLAY and WAYLAND_DISPLAY are not set), so the window cannot open; "
            "run `python3 packaging/dev.py run --self-test` for a headless check instead."
        )
        return 2
    py = setup(need_window=not headless)
    env = dict(os.environ)
    if headless:
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
        args = list(extra)
    else:
        args = ["--sample", *extra]
    say("Starting DTL Studio ...")
    return subprocess.run([str(py), "-m", "app", *args], cwd=ROOT, env=env).returncode


def cmd_test(extra: Sequence[str]) -> int:
    """Run the test suite headless, then the static checks (ruff, mypy; configured in pyproject.toml).

    The exit code is pytest's ('no tests collected' counts as a failure), else 1 when a check fails.
    The checks run even after failed tests, so that one run reports everything.
    """
    py = setup(need_window=False, for_tests=True)
    env = dict(os.environ)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    args = list(extra)
    if FAST_FLAG in args:
        args.remove(FAST_FLAG)
        args = [*FAST_PYTEST_ARGS, *args]
        say("The fast subset: the suite without the tests marked slow (the whole suite is `dev.py test`).")
    args = [*parallel_args(args), *args]
    code = subprocess.run([str(py), "-m", "pytest", *args], cwd=ROOT, env=env).returncode
    if code == 5:
        say("pytest collected no tests; counting that as a failure.")
        code = 1
    for check in STATIC_CHECKS:
        name = " ".join(check).removeprefix("-m ")
        say(f"Running {name} ...")
        result = subprocess.run([str(py), *check], cwd=ROOT, env=env).returncode
        if result != 0:
            say(f"`{name}` failed (exit code {result}); the messages above say where.")
            code = code or 1
    return code


def cmd_setup(extra: Sequence[str]) -> int:
    setup(need_window=has_display())
    say(f"Ready: {venv_python()}")
    return 0


COMMANDS: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "run": (cmd_run, "set up, then open DTL Studio on its built-in sample data"),
    "test": (cmd_test, "set up, then run the test suite (headless), ruff, mypy and the layer check; "
                       "--fast leaves out the tests marked slow"),
    "setup": (cmd_setup, "only set up the virtual environment"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 packaging/dev.py",
        description="Set up DTL Studio in .venv, then run it or its tests.",
        epilog="Arguments after the command go to the app (run) or to pytest (test).",
    )
    parser.add_argument(
        "command",
        choices=sorted(COMMANDS),
        help="; ".join(f"{name}: {text}" for name, (_, text) in COMMANDS.items()),
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: `dev.py COMMAND [passed-on args...]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Split off the command first so that flags meant for pytest/the app are not parsed here.
    if argv and argv[0] in COMMANDS:
        command, extra = argv[0], argv[1:]
    else:
        build_parser().parse_args(argv)  # prints help / a usage error and exits
        return 2
    try:
        return COMMANDS[command][0](extra)
    except SetupError as err:
        say(str(err))
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

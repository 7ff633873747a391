"""Fast checks of the packaging files: dev.py's logic, the PyInstaller spec, the desktop entry."""
from __future__ import annotations

import configparser
import importlib.util
import subprocess
import sys
import types
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"


@pytest.fixture(scope="module")
def dev() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("dtl_dev_script", PACKAGING / "dev.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------ dev.py
def test_missing_qt_libraries_reports_only_absent_ones(dev):
    present = set(dev.QT_CORE_LIBS) | set(dev.QT_XCB_LIBS)
    present -= {"libEGL.so.1", "libxcb-cursor.so.0"}
    finder = present.__contains__

    assert dev.missing_qt_libraries(finder, need_window=True) == {
        "libEGL.so.1": "libegl1",
        "libxcb-cursor.so.0": "libxcb-cursor0",
    }
    # Headless (tests, offscreen) does not need the X11 platform's libraries.
    assert dev.missing_qt_libraries(finder, need_window=False) == {"libEGL.so.1": "libegl1"}
    assert dev.missing_qt_libraries(lambda _name: True) == {}


def test_missing_qt_libraries_without_root_names_the_apt_command(dev, monkeypatch):
    monkeypatch.setattr(dev.sys, "platform", "linux")
    monkeypatch.setattr(dev.os, "geteuid", lambda: 1000, raising=False)
    finder = lambda name: name not in {"libGL.so.1", "libfontconfig.so.1"}  # noqa: E731
    with pytest.raises(dev.SetupError) as info:
        dev.ensure_qt_libraries(need_window=False, finder=finder)
    message = str(info.value)
    assert "sudo apt-get install -y libfontconfig1 libgl1" in message
    assert "libGL.so.1" in message


def test_qt_check_passes_when_everything_is_there(dev, monkeypatch):
    monkeypatch.setattr(dev.sys, "platform", "linux")
    dev.ensure_qt_libraries(need_window=True, finder=lambda _name: True)  # no error, no apt-get


def test_install_stamp_tracks_pyproject(dev, tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    venv = tmp_path / "venv"
    venv.mkdir()
    first = dev.install_fingerprint(tmp_path)
    assert not dev.install_is_current(venv, first)
    (venv / dev.STAMP_NAME).write_text(f'{{"fingerprint": "{first}"}}')
    assert dev.install_is_current(venv, first)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\ndependencies = ['y']\n")
    assert not dev.install_is_current(venv, dev.install_fingerprint(tmp_path))
    (venv / dev.STAMP_NAME).write_text("not json")
    assert not dev.install_is_current(venv, first)


def test_run_without_display_explains_and_suggests_self_test(dev, monkeypatch, capsys):
    monkeypatch.setattr(dev.sys, "platform", "linux")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)

    def no_setup(**_kw):
        raise AssertionError("setup must not start when there is no display")

    monkeypatch.setattr(dev, "setup", no_setup)
    assert dev.main(["run"]) == 2
    out = capsys.readouterr().out
    assert "No display" in out and "--self-test" in out


def test_test_command_counts_no_tests_as_failure(dev, monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(dev, "setup", lambda need_window, for_tests=False: Path("venv-python"))

    def fake_run(cmd, cwd=None, env=None):
        seen.append((cmd, env))
        return subprocess.CompletedProcess(cmd, fake_run.code if "pytest" in cmd else 0)

    monkeypatch.setattr(dev.subprocess, "run", fake_run)
    fake_run.code = 5
    assert dev.main(["test", "-k", "export"]) == 1
    assert seen[0][0] == ["venv-python", "-m", "pytest", *dev.parallel_args([]), "-k", "export"]
    assert seen[0][1]["QT_QPA_PLATFORM"]
    fake_run.code = 0
    assert dev.main(["test"]) == 0
    fake_run.code = 1
    assert dev.main(["test"]) == 1


@pytest.mark.parametrize("failing", ["ruff", "mypy", "packaging/check_layers.py"])
def test_test_command_runs_ruff_mypy_and_the_layer_check_after_the_tests(dev, monkeypatch, failing):
    ran = []
    monkeypatch.setattr(dev, "setup", lambda need_window, for_tests=False: Path("venv-python"))

    def fake_run(cmd, cwd=None, env=None):
        ran.append([a for a in cmd[1:] if a != "-m"])
        return subprocess.CompletedProcess(cmd, 1 if failing in cmd else 0)

    monkeypatch.setattr(dev.subprocess, "run", fake_run)
    assert dev.main(["test"]) == 1
    assert ran[1:] == [["ruff", "check", "."], ["mypy", "dtl_engine"], ["packaging/check_layers.py"]]
    assert ran[0][0] == "pytest"


def test_setup_error_becomes_exit_code_one(dev, monkeypatch, capsys):
    def failing(need_window, for_tests=False):
        raise dev.SetupError("Installing the dependencies failed (pip exit code 1).")

    monkeypatch.setattr(dev, "setup", failing)
    assert dev.main(["test"]) == 1
    assert "Installing the dependencies failed" in capsys.readouterr().out


def test_dev_help_runs_on_the_standard_library():
    # -S: no site-packages, so dev.py must work on a bare Python.
    result = subprocess.run(
        [sys.executable, "-S", str(PACKAGING / "dev.py"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout and "test" in result.stdout
    bad = subprocess.run([sys.executable, "-S", str(PACKAGING / "dev.py"), "fly"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


# ------------------------------------------------------------------- the spec
class _Recorder:
    """Stands in for PyInstaller's Analysis/PYZ/EXE/COLLECT/BUNDLE and keeps their arguments."""

    calls: dict[str, list[tuple[tuple, dict]]] = {}

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        self.pure = self.scripts = self.binaries = self.datas = []
        _Recorder.calls.setdefault(type(self).__name__, []).append((args, kwargs))


def _exec_spec(monkeypatch, platform: str) -> dict[str, list[tuple[tuple, dict]]]:
    """Run the spec with PyInstaller's names replaced by recorders (no build happens)."""
    hooks = types.ModuleType("PyInstaller.utils.hooks")
    hooks.collect_all = lambda name: ([(f"{name}-data", name)], [], [f"{name}.hidden"])
    hooks.collect_submodules = lambda name: [f"{name}.sub"]
    for mod in ("PyInstaller", "PyInstaller.utils"):
        monkeypatch.setitem(sys.modules, mod, types.ModuleType(mod))
    monkeypatch.setitem(sys.modules, "PyInstaller.utils.hooks", hooks)
    monkeypatch.setattr(sys, "platform", platform)
    _Recorder.calls = {}
    names = {n: type(n, (_Recorder,), {}) for n in ("Analysis", "PYZ", "EXE", "COLLECT", "BUNDLE")}
    spec_file = PACKAGING / "dtl_studio.spec"
    code = compile(spec_file.read_text(encoding="utf-8"), str(spec_file), "exec")
    exec(code, {"SPECPATH": str(PACKAGING), "__name__": "__main__", **names})
    return _Recorder.calls


def test_spec_declares_torchvision_extensions_timm_and_resources(monkeypatch):
    calls = _exec_spec(monkeypatch, "linux")
    (args, kw), = calls["Analysis"]
    assert Path(args[0][0]).is_file()  # the launcher exists
    # Every compiled top-level module of the installed torchvision is a hidden import
    # (the stock hook misses torchvision 0.29's _C_stable / image_stable).
    tv_dir = Path(importlib.util.find_spec("torchvision").origin).parent
    compiled = {
        "torchvision." + f.name[: -len(suffix)]
        for f in tv_dir.iterdir()
        for suffix in EXTENSION_SUFFIXES
        if f.name.endswith(suffix) and "." not in f.name[: -len(suffix)]
    }
    assert compiled, "torchvision has no compiled modules?"
    assert compiled <= set(kw["hiddenimports"])
    assert "timm.hidden" in kw["hiddenimports"] and ("timm-data", "timm") in kw["datas"]
    assert kw["module_collection_mode"]["timm"] == "pyz+py"
    assert (str(ROOT / "resources"), "resources") in kw["datas"]
    assert "triton" in kw["excludes"]
    (_, exe_kw), = calls["EXE"]
    assert exe_kw["name"] == "dtl-studio" and exe_kw["console"] is True
    assert "BUNDLE" not in calls


@pytest.mark.parametrize("platform, icon_suffix", [("win32", ".ico"), ("darwin", ".icns")])
def test_spec_is_windowed_with_an_existing_icon_on_windows_and_macos(monkeypatch, platform, icon_suffix):
    calls = _exec_spec(monkeypatch, platform)
    (_, exe_kw), = calls["EXE"]
    assert exe_kw["console"] is False
    assert exe_kw["icon"].endswith(icon_suffix) and Path(exe_kw["icon"]).is_file()
    assert ("BUNDLE" in calls) == (platform == "darwin")


def test_desktop_entry_is_valid_and_its_icon_exists():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str
    entry.read(PACKAGING / "linux" / "dtl-studio.desktop", encoding="utf-8")
    section = entry["Desktop Entry"]
    assert section["Type"] == "Application" and section["Exec"].split()[0] == "dtl-studio"
    assert section["Terminal"] == "false"
    assert (ROOT / "resources" / "icons" / "dtl_studio_256.png").is_file()


def test_setup_lock_serialises_two_set_ups(dev, tmp_path):
    import threading

    order: list[str] = []

    def second() -> None:
        with dev.setup_lock(tmp_path):
            order.append("second")

    with dev.setup_lock(tmp_path):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=0.5)
        assert thread.is_alive(), "a second set-up must wait for the first"
        order.append("first")
    thread.join(timeout=10)
    assert order == ["first", "second"]


def test_bundle_launcher_acts_as_python_dash_c(capsys, monkeypatch):
    """In the bundle sys.executable is dtl-studio; `dtl-studio -c CODE ARGS` must run CODE like python."""
    spec = importlib.util.spec_from_file_location("dtl_launcher", PACKAGING / "dtl_studio_launcher.py")
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    code = "import sys; print(sys.argv[1:], __name__); sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)"
    assert launcher._run_python_code(["dtl-studio", "-c", "print('hi', __name__)"]) == 0
    assert capsys.readouterr().out == "hi __main__\n"
    with pytest.raises(SystemExit) as info:
        launcher._run_python_code(["dtl-studio", "-c", code, "3", "x"])
    assert info.value.code == 3
    assert capsys.readouterr().out == "['3', 'x'] __main__\n"


def test_the_tests_need_the_window_libraries_gtk_and_an_x_server(dev, monkeypatch):
    monkeypatch.setattr(dev.shutil, "which", lambda prog: None)
    missing = dev.missing_qt_libraries(lambda name: name != "libgtk-3.so.0", need_window=False, for_tests=True)
    assert missing == {"libgtk-3.so.0": "libgtk-3-0", "Xvfb": "xvfb"}
    monkeypatch.setattr(dev.shutil, "which", lambda prog: "/bin/" + prog)
    assert dev.missing_qt_libraries(lambda name: name not in dev.QT_XCB_LIBS, need_window=False,
                                    for_tests=True) == dev.QT_XCB_LIBS


def test_run_installs_the_app_alone_and_test_adds_the_test_extras(dev, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    venv = tmp_path / "venv"
    venv.mkdir()
    installed = []
    monkeypatch.setattr(dev.subprocess, "run",
                        lambda cmd, cwd=None: installed.append(cmd[-1]) or subprocess.CompletedProcess(cmd, 0))
    dev.ensure_installed(Path("py"), venv, tmp_path, extras="")
    dev.ensure_installed(Path("py"), venv, tmp_path, extras="")       # current: nothing again
    dev.ensure_installed(Path("py"), venv, tmp_path, extras="test")   # the tests need more
    dev.ensure_installed(Path("py"), venv, tmp_path, extras="")       # a test install serves the app too
    assert installed == [".", ".[test]"]


def test_fast_runs_the_suite_without_the_slow_tests(dev, monkeypatch):
    seen = []
    monkeypatch.setattr(dev, "setup", lambda need_window, for_tests=False: Path("venv-python"))
    monkeypatch.setattr(dev.subprocess, "run", lambda cmd, cwd=None, env=None: seen.append(cmd) or
                        subprocess.CompletedProcess(cmd, 0))
    assert dev.main(["test", "--fast", "-k", "export"]) == 0
    assert seen[0] == ["venv-python", "-m", "pytest", *dev.parallel_args([]), "-m", "not slow", "-k", "export"]


def test_the_suite_runs_on_several_processes_unless_told_otherwise(dev):
    assert dev.parallel_args([], cores=2) == ["-n", "2", "--dist", "loadfile"]
    assert dev.parallel_args([], cores=16) == ["-n", str(dev.MAX_TEST_PROCESSES), "--dist", "loadfile"]
    assert dev.parallel_args([], cores=1) == []
    assert dev.parallel_args(["-n", "0"], cores=8) == [] and dev.parallel_args(["-p", "no:xdist"], cores=8) == []

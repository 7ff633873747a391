"""The window starts and quits cleanly, launch after launch, under a dark GTK theme on a real X server.

The app used to die a few seconds after its window appeared, once the background jobs imported
torch: torch loads triton when it is installed, whose own LLVM crashed beside the one GTK had
loaded (see ``app.main.keep_triton_out``). Each launch here waits for those imports and for the
start-up jobs to end, then closes the window, so a launch reaches the moment of that crash.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11 and GTK themes are Linux's")]

LAUNCHES = 20
ROOT = Path(__file__).resolve().parents[2]
DRIVER = r"""
import sys
import app.main as entry
from app import jobs

run_event_loop = entry.run_event_loop

def run(qapp):
    from PySide6.QtCore import QTimer
    def started():
        if "timm" in sys.modules and not jobs.active_jobs():
            for widget in qapp.topLevelWidgets():
                widget.close()
    timer = QTimer()
    timer.timeout.connect(started)
    timer.start(250)
    return run_event_loop(qapp)

entry.run_event_loop = run
code = entry.main(["--sample", "--quit-after", "90"])
print("STARTED", "timm" in sys.modules, sys.modules.get("triton") is not None, flush=True)
sys.exit(code)
"""


@pytest.fixture
def x_server():
    """A private X server (Xvfb) for the launches; its display name."""
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        display = pipe.readline().strip()
    assert display, "Xvfb did not start (python3 packaging/dev.py test installs it)"
    yield f":{display}"
    server.terminate()
    server.wait(timeout=30)


def test_twenty_launches_under_a_dark_gtk_theme_start_and_quit_cleanly(x_server, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    env.update(DISPLAY=x_server, QT_QPA_PLATFORM="xcb", QT_QPA_PLATFORMTHEME="gtk3", GTK_THEME="Adwaita:dark",
               PYTHONFAULTHANDLER="1", DTL_STUDIO_HOME=str(tmp_path / "home"),
               DTL_STUDIO_SETTINGS=str(tmp_path / "settings.ini"))
    failures = []
    for launch in range(1, LAUNCHES + 1):
        done = subprocess.run([sys.executable, "-c", DRIVER], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=180)
        if done.returncode != 0 or "STARTED True False" not in done.stdout:
            failures.append(f"launch {launch}: exit {done.returncode}\n{done.stdout[-500:]}{done.stderr[-3000:]}")
    assert not failures, f"{len(failures)} of {LAUNCHES} launches failed:\n" + "\n".join(failures[:2])


def test_the_windows_process_never_loads_triton():
    code = ("import sys\nfrom app.main import keep_triton_out\nkeep_triton_out()\nimport timm, torchvision.ops\n"
            "print(sys.modules.get('triton') is not None)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stdout + done.stderr

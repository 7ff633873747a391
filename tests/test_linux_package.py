"""The Linux packages (packaging/package.py), made from a small stand-in bundle: the glibc the bundle
needs, the start-up check of it, the .deb's tree and control file, and install.sh --user."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb exists only on Debian-like systems")
needs_validator = pytest.mark.skipif(shutil.which("desktop-file-validate") is None,
                                     reason="desktop-file-validate is missing (apt-get install desktop-file-utils)")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux packages")


@pytest.fixture(scope="module")
def package() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("dtl_package_script", ROOT / "packaging" / "package.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def fake_elf(path: Path, *versions: str) -> None:
    """A file that starts like an ELF object and names the given GLIBC symbol versions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF" + b"\0" * 60 + b"".join(f"GLIBC_{v}\0".encode() for v in versions))


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A stand-in for dist/DTL Studio: a program that says how it was called, and a library."""
    folder = tmp_path / "DTL Studio"
    program = folder / "dtl-studio"
    program.parent.mkdir(parents=True)
    program.write_text('#!/bin/sh\necho "program started: $*"\n')
    program.chmod(0o755)
    fake_elf(folder / "_internal" / "libstdc++.so.6", "2.4", "2.36", "2.17")
    fake_elf(folder / "_internal" / "libexpat.so.1", "2.25")
    (folder / "_internal" / "notes.txt").write_text("GLIBC_2.99\0 in a file that is not a library")
    os.symlink("libexpat.so.1", folder / "_internal" / "libexpat.so")
    return folder


def fake_getconf(tmp_path: Path, answer: str) -> dict[str, str]:
    """An environment whose `getconf GNU_LIBC_VERSION` answers ``answer`` (the faked glibc)."""
    bin_dir = tmp_path / f"fake-bin-{answer.replace(' ', '_') or 'none'}"
    bin_dir.mkdir()
    script = bin_dir / "getconf"
    script.write_text(f'#!/bin/sh\n[ "$1" = GNU_LIBC_VERSION ] && [ -n "{answer}" ] && echo "{answer}" && exit 0\n'
                      'exit 1\n')
    script.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return {**env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_glibc_needed_is_the_newest_version_the_libraries_ask_for(package, bundle):
    assert package.glibc_needed(bundle) == "2.36"
    fake_elf(bundle / "_internal" / "torch" / "lib" / "libnew.so", "2.38", "2.3.4")
    assert package.glibc_needed(bundle) == "2.38"


@pytest.mark.parametrize("system, starts", [("glibc 2.35", False), ("glibc 2.9", False), ("", False),
                                            ("glibc 2.36", True), ("glibc 2.40", True)])
def test_launcher_refuses_an_older_glibc_with_a_sentence(package, bundle, tmp_path, system, starts):
    launcher = bundle / package.LAUNCHER
    launcher.write_text(package.launcher_script("2.36"))
    launcher.chmod(0o755)
    done = subprocess.run([str(launcher), "cli", "--help"], env=fake_getconf(tmp_path, system),
                          capture_output=True, text=True, timeout=30)
    if starts:
        assert done.returncode == 0 and done.stdout == "program started: cli --help\n" and done.stderr == ""
    else:
        assert done.returncode == 3 and done.stdout == ""
        assert "DTL Studio needs" in done.stderr and "glibc 2.36 or newer" in done.stderr
        if system:
            assert f"this system has {system}." in done.stderr


def test_control_file_declares_the_glibc_and_the_system_libraries(package):
    control = package.control_file("0.1.0", "amd64", 4_200_000, "2.36")
    assert "\nDepends: libc6 (>= 2.36), libgl1, libegl1, libxcb1\n" in control
    assert control.startswith("Package: dtl-studio\nVersion: 0.1.0\n") and "Installed-Size: 4200000\n" in control


@needs_dpkg
@needs_validator
def test_deb_installs_program_menu_entry_icon_and_command(package, bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(package, "STAGING", tmp_path / "staging")
    deb, tarball, glibc = package.make_packages(bundle, tmp_path / "out")
    assert glibc == "2.36" and deb.name.startswith("dtl-studio_") and tarball.name.endswith(".tar.gz")
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    info = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], check=True, capture_output=True, text=True)
    assert info.stdout.strip() == "libc6 (>= 2.36), libgl1, libegl1, libxcb1"
    program = root / "opt" / "dtl-studio"
    assert (program / "dtl-studio").is_file() and os.readlink(program / "_internal" / "libexpat.so") == "libexpat.so.1"
    assert os.readlink(root / "usr" / "bin" / "dtl-studio") == "/opt/dtl-studio/dtl-studio-launch"
    entry = root / "usr" / "share" / "applications" / "dtl-studio.desktop"
    subprocess.run(["desktop-file-validate", str(entry)], check=True)
    assert "\nExec=dtl-studio\n" in entry.read_text() and " " not in "/opt/dtl-studio/dtl-studio-launch"
    for size in package.ICON_SIZES:
        assert (root / f"usr/share/icons/hicolor/{size}x{size}/apps/dtl-studio.png").is_file()
    started = subprocess.run([str(program / "dtl-studio-launch"), "--self-test"], capture_output=True, text=True,
                             env=fake_getconf(tmp_path, "glibc 2.36"))
    assert started.stdout == "program started: --self-test\n"
    assert not package.STAGING.exists()       # its own staging folder is cleaned up


@needs_dpkg
@needs_validator
def test_install_sh_user_installs_into_dot_local_and_replaces_only_its_own(package, bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(package, "STAGING", tmp_path / "staging")
    _deb, tarball, _ = package.make_packages(bundle, tmp_path / "out")
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(unpacked)], check=True)
    (folder,) = unpacked.iterdir()
    home = tmp_path / "home with space"
    env = {**fake_getconf(tmp_path, "glibc 2.36"), "HOME": str(home)}
    env.pop("XDG_DATA_HOME", None)

    def install(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(folder / "install.sh"), *args], env=env, capture_output=True, text=True, timeout=60)

    done = install("--user")
    assert done.returncode == 0, done.stderr
    command = home / ".local" / "bin" / "dtl-studio"
    entry = home / ".local" / "share" / "applications" / "dtl-studio.desktop"
    subprocess.run(["desktop-file-validate", str(entry)], check=True)
    assert f'\nExec="{command}"\n' in entry.read_text()
    assert (home / ".local/share/icons/hicolor/256x256/apps/dtl-studio.png").is_file()
    assert subprocess.run([str(command), "cli", "x"], env=env, capture_output=True, text=True).stdout == \
        "program started: cli x\n"

    # Again: the earlier install is replaced. A file that is not ours stays, and the install stops.
    assert install("--user").returncode == 0
    entry.unlink()
    entry.write_text("[Desktop Entry]\nName=Someone else's\n")
    refused = install("--user")
    assert refused.returncode == 1 and str(entry) in refused.stderr and "left as it is" in refused.stderr
    assert entry.read_text() == "[Desktop Entry]\nName=Someone else's\n"
    entry.unlink()

    assert install("--user", "--uninstall").returncode == 0
    assert not (home / ".local" / "opt" / "dtl-studio").exists() and not command.exists()
    assert install("--bogus").returncode == 2

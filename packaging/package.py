#!/usr/bin/env python3
"""Make DTL Studio's Linux packages: a .deb and a .tar.gz with install.sh, from the bundle.

    python3 packaging/package.py              # build the bundle (build.sh), then both packages into dist/
    python3 packaging/package.py --no-build   # package the bundle already in "dist/DTL Studio"
    python3 packaging/package.py --check      # ... and then install the .deb into a scratch root and try it

The .deb installs to /opt/dtl-studio with the menu entry, the icon in the hicolor theme and the
`dtl-studio` command in /usr/bin; it depends on the glibc the bundled libraries need (read from
them here, not assumed) and on the few libraries taken from the system (OpenGL, EGL, xcb).
The .tar.gz holds the same program and an `install.sh` (`--user`: into ~/.local, no root).
`--check` extracts the .deb into a scratch folder and checks that the menu entry validates
(desktop-file-validate), that the icon is there, that the installed program passes
`--self-test`, and that its window opens and closes headless; it fails if any of that fails.

Standard library only: it runs before and outside the build environment. It writes only
dist/ and build/package/ (its own staging folder, emptied at each run).
"""
from __future__ import annotations

import argparse
import mmap
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINUX = ROOT / "packaging" / "linux"
BUNDLE = ROOT / "dist" / "DTL Studio"
STAGING = ROOT / "build" / "package"
NAME = "dtl-studio"
PREFIX = "/opt/dtl-studio"
LAUNCHER = "dtl-studio-launch"          # the checked start (packaging/linux/launcher.sh), next to the program
ICON_SIZES = (64, 256, 512)
# What the bundle takes from the system besides glibc (the bundle carries Qt, xcb plugins, fonts' config...).
SYSTEM_DEPENDS = ("libgl1", "libegl1", "libxcb1")
MAINTAINER = "DTL Studio maintainers <dtl-studio@users.noreply.github.com>"
SUMMARY = "No-code transfer learning of image classifiers (DTL)"
DESCRIPTION = ("Pick a pretrained vision backbone, drop a folder of images on the window, train with\n"
               "Disentangled Transfer Learning, inspect the results and export a TorchScript or ONNX\n"
               "classifier. Includes the engine's command line: dtl-studio cli --help.")
_GLIBC = re.compile(rb"GLIBC_(\d+)\.(\d+)(?:\.(\d+))?\x00")


class PackageError(Exception):
    """A problem with a sentence for the person packaging; exit status 1."""


def version() -> str:
    """The project's version, from pyproject.toml."""
    match = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    if not match:
        raise PackageError("pyproject.toml has no version.")
    return match.group(1)


def glibc_needs(folder: Path) -> dict[Path, tuple[int, ...]]:
    """The newest GLIBC_x.y symbol version each ELF file under ``folder`` asks for."""
    needs: dict[Path, tuple[int, ...]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_file() or path.stat().st_size < 64:
            continue
        with open(path, "rb") as fh:
            if fh.read(4) != b"\x7fELF":
                continue
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                found = [tuple(int(g) for g in m.groups() if g is not None) for m in _GLIBC.finditer(data)]
        if found:
            needs[path] = max(found)
    return needs


def glibc_needed(folder: Path, needs: dict[Path, tuple[int, ...]] | None = None) -> str:
    """The newest GLIBC_x.y any ELF file under ``folder`` asks for ("2.36"); at least 2.17."""
    newest = max([(2, 17), *(glibc_needs(folder) if needs is None else needs).values()])
    return ".".join(str(v) for v in newest)


def launcher_script(glibc: str) -> str:
    """packaging/linux/launcher.sh with the needed glibc filled in."""
    return (LINUX / "launcher.sh").read_text(encoding="utf-8").replace("@GLIBC_NEEDED@", glibc)


def control_file(pkg_version: str, arch: str, installed_kib: int, glibc: str) -> str:
    depends = ", ".join([f"libc6 (>= {glibc})", *SYSTEM_DEPENDS])
    body = "\n".join(" " + line for line in DESCRIPTION.splitlines())
    return (f"Package: {NAME}\nVersion: {pkg_version}\nSection: science\nPriority: optional\n"
            f"Architecture: {arch}\nInstalled-Size: {installed_kib}\nDepends: {depends}\n"
            f"Maintainer: {MAINTAINER}\nDescription: {SUMMARY}\n{body}\n")


def _copy_program(bundle: Path, dest: Path, glibc: str) -> None:
    # Hard links where the file system allows: the bundle is gigabytes, staging must not double it.
    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(bundle, dest, symlinks=True, copy_function=link_or_copy)
    launcher = dest / LAUNCHER
    launcher.write_text(launcher_script(glibc), encoding="utf-8")
    launcher.chmod(0o755)


def _icons(share: Path) -> None:
    for size in ICON_SIZES:
        target = share / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{NAME}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / "resources" / "icons" / f"dtl_studio_{size}.png", target)


def stage_deb(bundle: Path, root: Path, glibc: str, pkg_version: str, arch: str) -> None:
    """The .deb's file tree under ``root``: /opt/dtl-studio, /usr/bin/dtl-studio, menu entry, icons, DEBIAN/."""
    program = root / PREFIX.lstrip("/")
    program.parent.mkdir(parents=True)
    _copy_program(bundle, program, glibc)
    (root / "usr" / "bin").mkdir(parents=True)
    os.symlink(f"{PREFIX}/{LAUNCHER}", root / "usr" / "bin" / NAME)
    share = root / "usr" / "share"
    (share / "applications").mkdir(parents=True)
    shutil.copy2(LINUX / f"{NAME}.desktop", share / "applications" / f"{NAME}.desktop")
    _icons(share)
    size = sum(p.lstat().st_size for p in root.rglob("*") if not p.is_dir())
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(control_file(pkg_version, arch, -(-size // 1024), glibc),
                                             encoding="utf-8")


def stage_tarball(bundle: Path, top: Path, glibc: str) -> None:
    """The .tar.gz's folder: dtl-studio/ (the program), the menu entry, icons and install.sh."""
    top.mkdir(parents=True)
    _copy_program(bundle, top / NAME, glibc)
    shutil.copy2(LINUX / f"{NAME}.desktop", top / f"{NAME}.desktop")
    (top / "icons").mkdir()
    for size in ICON_SIZES:
        shutil.copy2(ROOT / "resources" / "icons" / f"dtl_studio_{size}.png", top / "icons" / f"{NAME}-{size}.png")
    shutil.copy2(LINUX / "install.sh", top / "install.sh")
    (top / "install.sh").chmod(0o755)


def _run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(cmd, **kwargs)
    except FileNotFoundError:
        raise PackageError(f"{what} needs '{cmd[0]}', which is not installed.") from None
    if done.returncode != 0:
        raise PackageError(f"{what} failed (exit status {done.returncode}).")
    return done


def make_packages(bundle: Path, out: Path) -> tuple[Path, Path, str]:
    """Write the .deb and the .tar.gz into ``out``; returns their paths and the glibc they need."""
    if not (bundle / NAME).is_file():
        raise PackageError(f"There is no bundle at '{bundle}'; build it first (bash packaging/build.sh).")
    pkg_version = version()
    arch = _run(["dpkg", "--print-architecture"], "Finding the architecture", capture_output=True,
                text=True).stdout.strip()
    print("== reading the glibc the bundled libraries need")
    needs = glibc_needs(bundle)
    glibc = glibc_needed(bundle, needs)
    newest = sorted(str(p.relative_to(bundle)) for p, v in needs.items() if ".".join(map(str, v)) == glibc)
    print(f"   glibc {glibc}, for {', '.join(newest) or 'no bundled library'}")
    shutil.rmtree(STAGING, ignore_errors=True)
    STAGING.mkdir(parents=True)
    (STAGING.parent / ".gitignore").write_text("*\n", encoding="utf-8")
    out.mkdir(parents=True, exist_ok=True)

    deb = out / f"{NAME}_{pkg_version}_{arch}.deb"
    stage_deb(bundle, STAGING / "deb", glibc, pkg_version, arch)
    print(f"== making {deb.name}")
    start = time.monotonic()
    # zstd: several times faster than the default xz on gigabytes, and read by every dpkg that has glibc 2.36.
    _run(["dpkg-deb", "--root-owner-group", "-Zzstd", "-z6", "--build", str(STAGING / "deb"), str(deb)],
         "dpkg-deb", stdout=subprocess.DEVNULL)
    print(f"   {deb.stat().st_size / 1e9:.2f} GB in {time.monotonic() - start:.0f} s")

    folder = f"{NAME}-{pkg_version}-linux-{arch}"
    tarball = out / f"{folder}.tar.gz"
    stage_tarball(bundle, STAGING / "tar" / folder, glibc)
    print(f"== making {tarball.name}")
    start = time.monotonic()
    gzip = "pigz -1" if shutil.which("pigz") else "gzip -1"
    _run(["tar", "-C", str(STAGING / "tar"), "--owner=0", "--group=0", "-I", gzip, "-cf", str(tarball), folder],
         "tar")
    print(f"   {tarball.stat().st_size / 1e9:.2f} GB in {time.monotonic() - start:.0f} s")
    shutil.rmtree(STAGING, ignore_errors=True)
    return deb, tarball, glibc


def check_deb(deb: Path) -> None:
    """Install ``deb`` into a scratch root and try it; PackageError when any check fails."""
    with tempfile.TemporaryDirectory(prefix="dtl-studio-deb-check-", dir=ROOT / "build") as tmp:
        root = Path(tmp) / "root"
        print(f"== installing {deb.name} into a scratch root")
        _run(["dpkg-deb", "-x", str(deb), str(root)], "Extracting the .deb")
        program = root / PREFIX.lstrip("/")
        entry = root / "usr" / "share" / "applications" / f"{NAME}.desktop"
        for needed in (program / NAME, program / LAUNCHER, entry,
                       root / "usr" / "share" / "icons" / "hicolor" / "256x256" / "apps" / f"{NAME}.png"):
            if not needed.is_file():
                raise PackageError(f"The installed package lacks {needed.relative_to(root)}.")
        if os.readlink(root / "usr" / "bin" / NAME) != f"{PREFIX}/{LAUNCHER}":
            raise PackageError(f"/usr/bin/{NAME} does not point at {PREFIX}/{LAUNCHER}.")
        _run(["desktop-file-validate", str(entry)], "Validating the menu entry")
        print("   menu entry valid, icon in place")
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "DTL_STUDIO_HOME": str(Path(tmp) / "home")}
        print("== self-test of the installed program")
        start = time.monotonic()
        _run([str(program / LAUNCHER), "--self-test"], "The installed program's self-test", env=env)
        print(f"   passed in {time.monotonic() - start:.0f} s")
        print("== opening the installed program's window (headless, closes after 3 s)")
        _run([str(program / LAUNCHER), "--sample", "--quit-after", "3"], "Opening the window", env=env,
             timeout=600)
        _run([str(program / LAUNCHER), "cli", "--version"], "The installed command line", env=env,
             stdout=subprocess.DEVNULL)
        print("   window opened and closed; `dtl-studio cli` answers")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="package.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-build", action="store_true", help="package the bundle already in 'dist/DTL Studio'")
    parser.add_argument("--check", action="store_true",
                        help="then install the .deb into a scratch root and check it (menu entry, icon, self-test)")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("package.py makes Linux packages; on Windows and macOS see packaging/README.md.", file=sys.stderr)
        return 2
    try:
        if not args.no_build:
            _run(["bash", str(ROOT / "packaging" / "build.sh")], "Building the bundle")
        deb, tarball, glibc = make_packages(BUNDLE, ROOT / "dist")
        if args.check:
            check_deb(deb)
    except PackageError as exc:
        print(f"package.py: {exc}", file=sys.stderr)
        return 1
    print(f"== done: {deb} and {tarball} (they need glibc {glibc} or newer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

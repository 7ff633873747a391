#!/usr/bin/env bash
# Build the one-folder DTL Studio bundle (dist/DTL Studio/) with PyInstaller, then run the
# bundle's own self-test and fail if it fails. Prints build time and bundle size.
#
#     bash packaging/build.sh
#
# By default it builds from the project's .venv (created by `packaging/dev.py setup`).
# BUILD_VENV=/path/to/venv builds from another environment instead, e.g. one where a
# CPU-only torch was installed first for a much smaller bundle (see packaging/README.md).
# CLEAN=1 drops PyInstaller's cache (build/pyinstaller) for a from-scratch build.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"

if [[ -n "${BUILD_VENV:-}" ]]; then
    VENV="$BUILD_VENV"
    [[ -x "$VENV/bin/python" ]] || { echo "build.sh: BUILD_VENV=$VENV has no bin/python." >&2; exit 1; }
    echo "== installing DTL Studio into $VENV (keeping the torch already there)"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q -e .
else
    VENV="$ROOT/.venv"
    echo "== setting up $VENV"
    "$PYTHON" packaging/dev.py setup
fi
VPY="$VENV/bin/python"

if ! "$VPY" -c "import PyInstaller" 2>/dev/null; then
    echo "== installing PyInstaller into the build environment"
    "$VPY" -m pip install --disable-pip-version-check -q "pyinstaller>=6.10"
fi

echo "== building (PyInstaller, one-folder)"
start=$(date +%s)
"$VPY" -m PyInstaller --noconfirm ${CLEAN:+--clean} --log-level WARN \
    --distpath dist --workpath build/pyinstaller packaging/dtl_studio.spec
end=$(date +%s)
# Build outputs stay out of git status.
printf '*\n' > dist/.gitignore
printf '*\n' > build/.gitignore

BUNDLE="dist/DTL Studio"
PROGRAM="$BUNDLE/dtl-studio"
[[ -x "$PROGRAM" ]] || { echo "build.sh: the build produced no $PROGRAM." >&2; exit 1; }
echo "== build time: $((end - start)) s"
echo "== bundle size: $(du -sh "$BUNDLE" | cut -f1) ($BUNDLE)"

echo "== running the bundle's self-test"
st_start=$(date +%s)
if ! QT_QPA_PLATFORM=offscreen "$PROGRAM" --self-test; then
    echo "build.sh: the bundle's self-test FAILED; the bundle is not usable." >&2
    exit 1
fi
echo "== self-test passed in $(( $(date +%s) - st_start )) s; the bundle is $BUNDLE"

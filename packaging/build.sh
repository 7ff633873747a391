#!/usr/bin/env bash
# Build the one-folder DTL Studio bundle (dist/DTL Studio/) with PyInstaller, then run the
# bundle's own self-test and fail if it fails. Prints build time and bundle size.
#
#     bash packaging/build.sh
#
# What goes into the bundle is chosen on purpose: it is built from its own environment,
# build/bundle-venv, holding exactly the pinned packages of packaging/bundle-requirements.txt
# (onnx and onnxruntime in, test tools out), never from the development .venv. The environment
# is made once and reused while that file and pyproject.toml are unchanged.
# BUILD_VENV=/path/to/venv builds from another environment instead, e.g. one where a CPU-only
# torch was installed first for a much smaller bundle (see packaging/README.md): the pinned
# packages other than torch, torchvision and the CUDA libraries are added to it.
# CLEAN=1 drops PyInstaller's cache (build/pyinstaller) for a from-scratch build.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
REQS="packaging/bundle-requirements.txt"
fail() { echo "build.sh: $*" >&2; exit 1; }

mkdir -p build dist
# Build outputs stay out of git status.
printf '*\n' > dist/.gitignore
printf '*\n' > build/.gitignore

pip_install() {     # pip_install VENV ARGS...: quiet pip, with the reason on failure
    local venv="$1"; shift
    "$venv/bin/python" -m pip install --disable-pip-version-check -q "$@" \
        || fail "installing into $venv failed (pip's message above); the bundle was not built."
}

if [[ -n "${BUILD_VENV:-}" ]]; then
    VENV="$BUILD_VENV"
    [[ -x "$VENV/bin/python" ]] || fail "BUILD_VENV=$VENV has no bin/python."
    echo "== adding the pinned packages to $VENV (keeping the torch already there)"
    grep -viE '^(torch|torchvision|triton|nvidia-[a-z0-9-]+)==' "$REQS" > build/bundle-requirements-no-torch.txt
    pip_install "$VENV" --no-deps -r build/bundle-requirements-no-torch.txt
    pip_install "$VENV" --no-deps -e .
else
    VENV="$ROOT/build/bundle-venv"
    stamp="$(cat "$REQS" pyproject.toml | sha256sum | cut -d' ' -f1)"
    if [[ "$(cat "$VENV/.bundle-stamp" 2>/dev/null)" != "$stamp" ]]; then
        echo "== making the build environment $VENV from $REQS (a few minutes: PyTorch is large)"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV" || fail "'$PYTHON -m venv' failed; on Debian/Ubuntu install python3-venv."
        # --no-deps: the file pins every package, so the environment holds exactly those.
        pip_install "$VENV" --no-deps -r "$REQS"
        pip_install "$VENV" --no-deps -e .
        echo "$stamp" > "$VENV/.bundle-stamp"
    else
        echo "== reusing the build environment $VENV (unchanged $REQS)"
    fi
fi
VPY="$VENV/bin/python"
if ! problems="$("$VPY" -m pip check --disable-pip-version-check 2>&1)"; then
    echo "$problems" >&2
    fail "the build environment's packages do not fit together (pip check, above); fix $REQS."
fi
"$VPY" -c "import PyInstaller" 2>/dev/null || fail "PyInstaller is missing from $VENV; it belongs in $REQS."

echo "== building (PyInstaller, one-folder)"
start=$(date +%s)
"$VPY" -m PyInstaller --noconfirm ${CLEAN:+--clean} --log-level WARN \
    --distpath dist --workpath build/pyinstaller packaging/dtl_studio.spec \
    || fail "PyInstaller failed (its message above); dist/DTL Studio is incomplete."
end=$(date +%s)

BUNDLE="dist/DTL Studio"
PROGRAM="$BUNDLE/dtl-studio"
[[ -x "$PROGRAM" ]] || fail "the build produced no $PROGRAM."
echo "== build time: $((end - start)) s"
echo "== bundle size: $(du -sh "$BUNDLE" | cut -f1) ($BUNDLE)"

echo "== running the bundle's self-test"
st_start=$(date +%s)
if ! QT_QPA_PLATFORM=offscreen "$PROGRAM" --self-test; then
    fail "the bundle's self-test FAILED; the bundle is not usable."
fi
echo "== self-test passed in $(( $(date +%s) - st_start )) s; the bundle is $BUNDLE"

#!/usr/bin/env bash
# Does the README's promise hold? Clone this checkout's HEAD into a temporary folder and run
# the two README commands there, exactly as a new user would:
#   python3 packaging/dev.py test         (the full test suite)
#   python3 packaging/dev.py run ...      (headless, so that it exits by itself)
# Prints a summary with timings; exits non-zero when either fails.
#
#     bash packaging/check_fresh_clone.sh          # KEEP=1 keeps the clone for a look afterwards
#
# Only committed work is checked (a clone sees HEAD, not the working tree).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dtl-studio-fresh-clone.XXXXXX")"
if [[ "${KEEP:-0}" == "1" ]]; then
    echo "== keeping the clone in $WORK"
else
    trap 'rm -rf "$WORK"' EXIT
fi

if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]]; then
    echo "== note: uncommitted changes in $ROOT are not part of this check"
fi
echo "== cloning $(git -C "$ROOT" rev-parse --short HEAD) into a temporary folder"
git clone -q "$ROOT" "$WORK/dtl-studio" || { echo "git clone failed"; exit 1; }
cd "$WORK/dtl-studio"

# The README's run command, headless: the window opens on the sample data, then closes itself.
RUN_ARGS=(--quit-after 20)

t0=$(date +%s)
"$PYTHON" packaging/dev.py test
test_rc=$?
t1=$(date +%s)
env -u DISPLAY -u WAYLAND_DISPLAY QT_QPA_PLATFORM=offscreen "$PYTHON" packaging/dev.py run "${RUN_ARGS[@]}"
run_rc=$?
t2=$(date +%s)

verdict() { [[ "$1" == 0 ]] && echo "PASS" || echo "FAIL (exit $1)"; }
echo
echo "== fresh-clone summary"
echo "   dev.py test (set-up included):   $(verdict $test_rc)  $((t1 - t0)) s"
echo "   dev.py run ${RUN_ARGS[*]}:        $(verdict $run_rc)  $((t2 - t1)) s"
[[ $test_rc == 0 && $run_rc == 0 ]]

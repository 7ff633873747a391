#!/usr/bin/env bash
# Time from launching DTL Studio to its main window being visible (Linux, X11).
# Starts a virtual X server (Xvfb) when there is no display. Needs: xvfb xdotool.
#
#     bash packaging/measure_startup.sh                       # the bundle, with --sample
#     bash packaging/measure_startup.sh .venv/bin/python -m app --sample   # from source
#
# Prints "window visible after N s" and exits 0; non-zero when no window appears in time.
set -euo pipefail
cd "$(dirname "$0")/.."

cmd=("$@")
[[ ${#cmd[@]} -gt 0 ]] || cmd=("dist/DTL Studio/dtl-studio" --sample)
TIMEOUT="${STARTUP_TIMEOUT:-180}"

for tool in xdotool; do
    command -v "$tool" >/dev/null || { echo "measure_startup.sh needs $tool: apt-get install -y xvfb xdotool" >&2; exit 1; }
done

XVFB_PID=""
APP_PID=""
LOG="$(mktemp)"
DISPLAY_FILE="$(mktemp)"
cleanup() {
    [[ -n "$APP_PID" ]] && kill "$APP_PID" 2>/dev/null || true
    [[ -n "$XVFB_PID" ]] && { kill "$XVFB_PID" 2>/dev/null; wait "$XVFB_PID" 2>/dev/null; } || true
    rm -f "$LOG" "$DISPLAY_FILE"
}
trap cleanup EXIT

if [[ -z "${DISPLAY:-}" ]]; then
    command -v Xvfb >/dev/null || { echo "No display and no Xvfb: apt-get install -y xvfb" >&2; exit 1; }
    # -displayfd: Xvfb picks a free display number and writes it once it accepts clients.
    Xvfb -displayfd 1 -screen 0 1600x1000x24 -nolisten tcp >"$DISPLAY_FILE" 2>/dev/null &
    XVFB_PID=$!
    for _ in $(seq 200); do [[ -s "$DISPLAY_FILE" ]] && break; sleep 0.05; done
    [[ -s "$DISPLAY_FILE" ]] || { echo "Xvfb did not start." >&2; exit 1; }
    export DISPLAY=":$(head -n1 "$DISPLAY_FILE")"
fi
unset QT_QPA_PLATFORM  # a real (virtual) window, not offscreen

start=$(date +%s.%N)
"${cmd[@]}" >"$LOG" 2>&1 &
APP_PID=$!
deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
    if xdotool search --onlyvisible --pid "$APP_PID" >/dev/null 2>&1; then
        end=$(date +%s.%N)
        break
    fi
    if ! kill -0 "$APP_PID" 2>/dev/null; then
        echo "The program exited before showing a window; its output:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    if (( $(date +%s) > deadline )); then
        echo "No window after ${TIMEOUT} s." >&2
        exit 1
    fi
    sleep 0.05
done
wid="$(xdotool search --onlyvisible --pid "$APP_PID" 2>/dev/null | head -n1)"
title="$(xdotool getwindowname "$wid" 2>/dev/null || true)"
printf 'window visible after %.1f s (%s)\n' "$(echo "$end - $start" | bc -l 2>/dev/null || python3 -c "print($end - $start)")" "$title"

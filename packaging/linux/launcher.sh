#!/bin/sh
# The `dtl-studio` command of an installed DTL Studio (the .deb and install.sh link it onto PATH).
#
# It checks what the bundle needs from the system before starting it, so that a too old
# system gets a sentence (and a dialog when started from a menu) instead of a loader error
# about a missing GLIBC_2.xx symbol. The needed glibc is written into this file when the
# package is made (packaging/package.py reads it from the bundled libraries).
# Everything else (`dtl-studio cli ...`, `--self-test`, a folder) goes on to the program.
GLIBC_NEEDED="@GLIBC_NEEDED@"

here=$(dirname "$(readlink -f "$0")")
program="$here/dtl-studio"

tell() {
    echo "dtl-studio: $1" >&2
    # Started from a menu there is no terminal to read the sentence in: show it in a dialog.
    if [ ! -t 2 ] && { [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; }; then
        if command -v zenity >/dev/null 2>&1; then
            zenity --error --title="DTL Studio" --text="$1" 2>/dev/null
        elif command -v kdialog >/dev/null 2>&1; then
            kdialog --title "DTL Studio" --error "$1" 2>/dev/null
        elif command -v xmessage >/dev/null 2>&1; then
            xmessage -center "DTL Studio: $1" 2>/dev/null
        fi
    fi
}

# "glibc 2.35" -> 2.35; empty on a system without glibc (musl), which cannot run the bundle either.
found=$(getconf GNU_LIBC_VERSION 2>/dev/null | sed -n 's/^glibc //p')
older() {   # older A B: version A is lower than B
    [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n 1)" = "$1" ]
}
if [ -z "$found" ]; then
    tell "DTL Studio needs a Linux system with the GNU C library (glibc $GLIBC_NEEDED or newer); this system has none (Alpine and other musl-based systems cannot run it)."
    exit 3
fi
if older "$found" "$GLIBC_NEEDED"; then
    tell "DTL Studio needs glibc $GLIBC_NEEDED or newer; this system has glibc $found. Please update the system, or run DTL Studio from source (see its README)."
    exit 3
fi
if [ ! -x "$program" ]; then
    tell "the program $program is missing; please install DTL Studio again."
    exit 3
fi
exec "$program" "$@"

#!/bin/sh
# Install DTL Studio from this unpacked folder.
#
#     ./install.sh --user     into ~/.local (no root needed): ~/.local/opt/dtl-studio, the
#                             `dtl-studio` command in ~/.local/bin, the menu entry and the icon
#     sudo ./install.sh       for everyone: /opt/dtl-studio, /usr/local/bin, /usr/local/share
#     ./install.sh --user --uninstall    (or sudo ./install.sh --uninstall) removes it again
#
# An earlier DTL Studio installed by this script is replaced; any other file in the way is left
# alone and named.
set -eu

src=$(cd "$(dirname "$0")" && pwd)
mode=system
action=install
for arg in "$@"; do
    case "$arg" in
        --user) mode=user ;;
        --uninstall) action=uninstall ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown option '$arg'; use --user, --uninstall or --help." >&2; exit 2 ;;
    esac
done

if [ "$mode" = user ]; then
    prefix="$HOME/.local/opt/dtl-studio"
    bindir="$HOME/.local/bin"
    share="${XDG_DATA_HOME:-$HOME/.local/share}"
else
    if [ "$(id -u)" != 0 ]; then
        echo "install.sh: installing for everyone needs root: run 'sudo $0', or '$0 --user' to install for yourself only." >&2
        exit 2
    fi
    prefix=/opt/dtl-studio
    bindir=/usr/local/bin
    share=/usr/local/share
fi
marker=".dtl-studio-install"
desktop="$share/applications/dtl-studio.desktop"
sizes="64 256 512"

ours() {    # ours PATH: PATH is absent, or was written by this script
    [ ! -e "$1" ] && [ ! -L "$1" ] && return 0
    case "$1" in
        "$prefix") [ -e "$1/$marker" ] ;;
        "$bindir/dtl-studio") [ "$(readlink "$1" 2>/dev/null)" = "$prefix/dtl-studio-launch" ] ;;
        *.desktop) grep -q "^X-DTL-Studio-Installer=install.sh" "$1" 2>/dev/null ;;
        *.png) [ -e "$prefix/$marker" ] ;;    # an icon of an earlier install (or of another version)
    esac
}

each_target() {    # each_target CMD: CMD PATH for every path an install writes (paths may hold spaces)
    "$1" "$prefix" && "$1" "$bindir/dtl-studio" && "$1" "$desktop" || return 1
    for size in $sizes; do
        "$1" "$share/icons/hicolor/${size}x${size}/apps/dtl-studio.png" || return 1
    done
}
may_replace() {
    ours "$1" && return 0
    echo "install.sh: '$1' exists and was not installed by DTL Studio; it is left as it is. Move it away and run install.sh again." >&2
    exit 1
}
remove() { rm -rf "$1"; }
each_target may_replace

refresh_menus() {
    command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$share/applications" 2>/dev/null
    command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t "$share/icons/hicolor" 2>/dev/null
    return 0
}

if [ "$action" = uninstall ]; then
    each_target remove
    refresh_menus
    echo "DTL Studio was removed from $prefix (runs and settings in your data folder are kept)."
    exit 0
fi

if [ ! -x "$src/dtl-studio/dtl-studio-launch" ]; then
    echo "install.sh: '$src/dtl-studio' is not a complete DTL Studio; unpack the whole archive again." >&2
    exit 1
fi

# Copy beside the target first, then swap: an interrupted copy never leaves half a program in place.
mkdir -p "$(dirname "$prefix")" "$bindir" "$share/applications"
rm -rf "$prefix.partial"
cp -a "$src/dtl-studio" "$prefix.partial"
: > "$prefix.partial/$marker"
rm -rf "$prefix"
mv "$prefix.partial" "$prefix"

ln -sfn "$prefix/dtl-studio-launch" "$bindir/dtl-studio"
# The menu entry starts the program by its full path: ~/.local/bin is not on every desktop's PATH.
sed -e "s|^Exec=.*|Exec=\"$bindir/dtl-studio\"|" -e "s|^TryExec=.*|TryExec=$bindir/dtl-studio|" \
    "$src/dtl-studio.desktop" > "$desktop.partial"
echo "X-DTL-Studio-Installer=install.sh" >> "$desktop.partial"
mv "$desktop.partial" "$desktop"
for size in $sizes; do
    mkdir -p "$share/icons/hicolor/${size}x${size}/apps"
    cp "$src/icons/dtl-studio-$size.png" "$share/icons/hicolor/${size}x${size}/apps/dtl-studio.png"
done
refresh_menus

echo "DTL Studio is installed in $prefix."
echo "Start it from the applications menu, or with: $bindir/dtl-studio"
case ":$PATH:" in
    *":$bindir:"*) ;;
    *) echo "($bindir is not on your PATH; add it to use the short command 'dtl-studio'.)" ;;
esac

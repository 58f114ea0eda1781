#!/usr/bin/env bash
# A real `pulseaudio` daemon for the lab, without installing the package.
#
# Why not `apt-get install pulseaudio`: on Debian 12 it co-installs with
# pipewire-pulse (no Conflicts), but it enables pulseaudio.service and
# pulseaudio.socket for every user session (/etc/systemd/user/*.wants),
# where they fight pipewire-pulse for the user's sound at the next login.
# The lab only needs the binary: this script downloads the Debian package
# (`apt-get download`), unpacks it with `dpkg-deb -x` into a private
# directory, installs its library dependencies (plain libraries, no
# services), and writes a wrapper that runs the unpacked daemon with its
# private libpulsecore and module directory.
#
#   lab/pa-fetch.sh [DIR]     (default: target/pulseaudio)
# Prints the path of the daemon to use (the wrapper, or /usr/bin/pulseaudio
# if the package is installed anyway). Idempotent; needs root (or sudo)
# only to install missing libraries.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
dir=${1:-$repo/target/pulseaudio}
log() { printf '[pa-fetch] %s\n' "$*" >&2; }

if [[ -n ${BARK_LAB_PULSEAUDIO:-} && -x $BARK_LAB_PULSEAUDIO ]]; then
	printf '%s\n' "$BARK_LAB_PULSEAUDIO"
	exit 0
fi
if [[ -x $dir/pulseaudio ]] && "$dir/pulseaudio" --version >/dev/null 2>&1; then
	printf '%s\n' "$dir/pulseaudio"
	exit 0
fi
if dpkg-query -W -f='${Status}\n' pulseaudio 2>/dev/null | grep -q 'install ok installed'; then
	command -v pulseaudio
	exit 0
fi

sudo=""
[[ $(id -u) -eq 0 ]] || sudo=sudo
apt-cache show --no-all-versions pulseaudio >/dev/null 2>&1 || {
	log "apt knows no pulseaudio package yet: apt-get update"
	$sudo apt-get update -qq >&2
}
# The package's library dependencies (alternatives: the first one).
mapfile -t deps < <(apt-cache show --no-all-versions pulseaudio |
	awk -F': ' '/^Depends:/ { print $2 }' | tr ',' '\n' |
	sed -e 's/|.*//' -e 's/(.*)//' -e 's/[[:space:]]//g' | grep -E '^lib' | grep -v '^libasound2-plugins$')
((${#deps[@]})) || { log "apt knows no pulseaudio package (apt-get update?)"; exit 1; }
missing=()
for p in "${deps[@]}"; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	log "installing libraries: ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

mkdir -p "$dir"
rm -rf -- "$dir/root" "$dir"/pulseaudio_*.deb
log "downloading the pulseaudio package into $dir"
(cd "$dir" && apt-get download -qq pulseaudio >&2)
deb=$(ls "$dir"/pulseaudio_*.deb)
dpkg-deb -x "$deb" "$dir/root"
libdir=$(dirname "$(find "$dir/root" -name 'libpulsecore-*.so' | head -1)")
moddir=$(dirname "$(find "$dir/root" -name 'module-null-sink.so' | head -1)")
[[ -x $dir/root/usr/bin/pulseaudio && -d $libdir && -d $moddir ]] || {
	log "unexpected package layout in $deb"
	exit 1
}
cat >"$dir/pulseaudio" <<EOF
#!/bin/sh
# Written by lab/pa-fetch.sh: the unpacked Debian pulseaudio, private libs
# and modules (the system has no pulseaudio package installed).
LD_LIBRARY_PATH="$libdir:$moddir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dir/root/usr/bin/pulseaudio" --dl-search-path="$moddir" "\$@"
EOF
chmod +x "$dir/pulseaudio"
"$dir/pulseaudio" --version >&2
printf '%s\n' "$dir/pulseaudio"

#!/usr/bin/env bash
# A Debian 13 (trixie) root with PipeWire 1.x, for running the lab's hosts
# on the PipeWire that users run today (Debian 12's is 0.3.65). Root only.
#
#   lab/pw1-root.sh [DIR]     build DIR (default $BARK_PW1_ROOT or
#                             /var/cache/bark-lab/trixie) unless it is
#                             already complete; print DIR
#
# The Debian mirror is the one this machine's apt sources name (read here at
# run time: no host name is written into the repository). Built with
# `debootstrap --variant=minbase`, then the audio stack is installed inside
# it with apt-get (installing it in the debootstrap call fails on the D-Bus
# session-bus dependency). A stamp file records the package list: a root
# built for another list is rebuilt. Nothing is mounted here; the lab binds
# /proc, /dev, /sys and its own directories while a run uses the root and
# unmounts them at teardown (lanlib.sh, "Hosts in another root"); the
# headless tests run in it through lab/in-root.sh.
set -euo pipefail

suite=trixie
# What the lab's hosts run inside the root: the daemons, their clients
# (pw-play, paplay, pactl, gst-launch-1.0 with pulsesink) and D-Bus for
# WirePlumber; sox for the headless module tests (make test-pw1), which
# make their test tone with it.
packages=(dbus dbus-x11 pipewire pipewire-bin wireplumber pipewire-pulse
	pulseaudio-utils gstreamer1.0-tools gstreamer1.0-plugins-base
	gstreamer1.0-plugins-good procps sox python3-gi python3-gst-1.0
	gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 libopus0)

dir=${1:-${BARK_PW1_ROOT:-/var/cache/bark-lab/trixie}}
# Canonical: lab runs record the roots they use by their real path.
dir=$(realpath -m -- "$dir")
stamp_want="suite=$suite packages=${packages[*]}"

log() { printf '[pw1-root] %s\n' "$*" >&2; }

[[ $EUID -eq 0 ]] || { log "needs root (debootstrap, chroot)"; exit 1; }

if [[ -f $dir/.bark-root-stamp && $(cat "$dir/.bark-root-stamp") == "$stamp_want" ]]; then
	printf '%s\n' "$dir"
	exit 0
fi

# The first deb URI of the configured Debian archive (deb822 or one-line
# sources), skipping security and third-party repositories.
mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -f $f ]] || continue
		awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' "$f"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -f $f ]] || continue
		awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' "$f"
	done
}
url=$(mirror | grep -E '/debian/?$' | grep -v security | head -1 || true)
[[ -n $url ]] || { log "no Debian mirror in /etc/apt/sources*"; exit 1; }

command -v debootstrap >/dev/null || {
	log "installing debootstrap"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

# Never build over a root in use: mounts in it, or a lab run with a view of
# it (lanlib.sh binds the root elsewhere, $BARK_LAB_ROOT/.roots/, and lists
# it in its run's "roots" file).
if grep -q " $dir/" /proc/self/mounts; then
	log "$dir has mounts (a lab run using it?); not rebuilding"
	exit 1
fi
for f in "${BARK_LAB_ROOT:-/tmp/bark-lab}"/*/roots; do
	[[ -f $f ]] || continue
	if awk -v d="$dir" '$1 == d { f = 1 } END { exit !f }' "$f"; then
		log "lab run $(basename "$(dirname "$f")") uses $dir; not rebuilding"
		exit 1
	fi
done
log "building $suite root in $dir from $url (a few minutes, once)"
rm -rf -- "$dir.tmp"
mkdir -p "$(dirname "$dir")"
debootstrap --variant=minbase "$suite" "$dir.tmp" "$url" >"$dir.tmp.log" 2>&1 || {
	tail -20 "$dir.tmp.log" >&2
	exit 1
}
# apt inside the root needs /proc and /dev; bound only for the install, in
# a private mount namespace so that nothing outlives this script.
# shellcheck disable=SC2016 # the inner script expands its own arguments
unshare -m --propagation private bash -euo pipefail -c '
	r=$1; shift
	mount --bind /proc "$r/proc"
	mount --bind /dev "$r/dev"
	cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
	chroot "$r" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	chroot "$r" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
	chroot "$r" apt-get clean
' _ "$dir.tmp" "${packages[@]}" >>"$dir.tmp.log" 2>&1 || {
	tail -20 "$dir.tmp.log" >&2
	exit 1
}
printf '%s\n' "$stamp_want" >"$dir.tmp/.bark-root-stamp"
rm -rf -- "$dir"
mv "$dir.tmp" "$dir"
mv "$dir.tmp.log" "$dir.log"
log "$suite root ready: $(chroot "$dir" pipewire --version | tail -1)"
printf '%s\n' "$dir"

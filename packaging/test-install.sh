#!/usr/bin/env bash
# packaging/test-install.sh DEB_DIR: install the .debs built by `make deb`
# with apt, then check them the way a user would use them (root).
#
# - apt-get installs pipewire-module-bark, bark-pulse and bark-tools from
#   DEB_DIR (their dependencies from the archive);
# - the files land where PipeWire, systemd and man look, `bark` and
#   `bark-pulse` run and report the packaged version;
# - a fresh, private PipeWire (pipewire, wireplumber under dbus-run-session,
#   pipewire-pulse; its own XDG_RUNTIME_DIR and XDG_CONFIG_HOME) with the
#   drop-ins copied from the *installed* pipewire.conf.avail into
#   $XDG_CONFIG_HOME/pipewire/pipewire.conf.d/, as the README tells users,
#   loads both modules from the system module directory (no
#   PIPEWIRE_MODULE_DIR) and `pactl list sinks` lists "Bark Network".
#
# The daemons run in a network namespace of their own with only lo (the
# drop-ins' default multicast group is routed there), so nothing leaves the
# host. They are stopped by their own process groups, and packages that
# were not installed before are purged again, pass or fail.
set -euo pipefail

PKGS=(pipewire-module-bark bark-pulse bark-tools)
WAIT_S=20

die() { echo "test-install: FAIL: $*" >&2; exit 1; }
log() { echo "test-install: $*"; }

# --- inside the namespace: the private audio stack -------------------------
if [[ ${1:-} == --inner ]]; then
	tmp=$2
	ip link set lo up
	# The drop-ins send to / join 239.255.66.66 by route: route it to lo.
	ip route add default dev lo
	pids=()
	stop_all() {
		local i pg n
		for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
			pg=${pids[i]}
			kill -TERM -- "-$pg" 2>/dev/null || continue
			for ((n = 0; n < 50; n++)); do
				kill -0 -- "-$pg" 2>/dev/null || break
				sleep 0.1
			done
			kill -KILL -- "-$pg" 2>/dev/null || true
		done
	}
	trap stop_all EXIT
	export XDG_RUNTIME_DIR=$tmp/run XDG_CONFIG_HOME=$tmp/config XDG_STATE_HOME=$tmp/state HOME=$tmp/home
	unset DBUS_SESSION_BUS_ADDRESS DISPLAY WAYLAND_DISPLAY PIPEWIRE_REMOTE PULSE_SERVER \
		PULSE_RUNTIME_PATH PIPEWIRE_MODULE_DIR
	mkdir -p "$tmp"/{run,state,home,logs} "$XDG_CONFIG_HOME/pipewire/pipewire.conf.d" \
		"$XDG_CONFIG_HOME/wireplumber/main.lua.d" "$XDG_CONFIG_HOME/wireplumber/bluetooth.lua.d"
	chmod 700 "$tmp/run"
	# As the README says, from the installed files.
	avail=/usr/share/pipewire/pipewire.conf.avail
	cp "$avail/bark-sink.conf" "$avail/bark-source.conf" "$XDG_CONFIG_HOME/pipewire/pipewire.conf.d/"
	# No hardware: this machine's sound cards belong to its real user.
	printf '%s\n' 'alsa_monitor.enabled = false' 'v4l2_monitor.enabled = false' \
		'libcamera_monitor.enabled = false' >"$XDG_CONFIG_HOME/wireplumber/main.lua.d/51-bark-test.lua"
	echo 'bluez_monitor.enabled = false' >"$XDG_CONFIG_HOME/wireplumber/bluetooth.lua.d/51-bark-test.lua"
	spawn() { # NAME CMD...: in its own process group, logging to logs/NAME.log
		local name=$1
		shift
		setsid "$@" </dev/null >"$tmp/logs/$name.log" 2>&1 &
		pids+=("$!")
	}
	wait_for() { # WHAT CMD...: poll up to WAIT_S seconds
		local what=$1 n
		shift
		for ((n = 0; n < WAIT_S * 5; n++)); do
			"$@" >/dev/null 2>&1 && return 0
			sleep 0.2
		done
		echo "--- pipewire.log (tail)" >&2
		tail -30 "$tmp/logs/pipewire.log" >&2 || true
		die "timed out waiting for $what"
	}
	spawn pipewire pipewire
	wait_for "the pipewire socket" test -S "$XDG_RUNTIME_DIR/pipewire-0"
	spawn wireplumber dbus-run-session -- wireplumber
	wait_for "wireplumber" sh -c 'pw-cli ls Client | grep -qi wireplumber'
	spawn pipewire-pulse pipewire-pulse
	wait_for "the pulse socket" test -S "$XDG_RUNTIME_DIR/pulse/native"
	wait_for '"Bark Network" in pactl list sinks' sh -c 'pactl list sinks | grep -q "Description: Bark Network"'
	log "pactl list sinks: $(pactl list sinks | grep -E 'Name: bark|Description: Bark')"
	mods=$(pw-cli ls Module)
	for m in libpipewire-module-bark-sink libpipewire-module-bark-source; do
		grep -q "module.name = \"$m\"" <<<"$mods" || die "$m is not loaded: $(grep -i bark "$tmp/logs/pipewire.log" | tail -5)"
	done
	moddir=$(pkg-config --variable=moduledir libpipewire-0.3 2>/dev/null || echo /usr/lib/x86_64-linux-gnu/pipewire-0.3)
	grep -q "$moddir/libpipewire-module-bark-sink.so" "/proc/${pids[0]}/maps" ||
		die "the daemon did not map the installed module from $moddir"
	log "both modules loaded from $moddir"
	exit 0
fi

# --- outside: install, check files, run the stack, remove -------------------
dir=${1:?usage: test-install.sh DEB_DIR}
[[ $(id -u) == 0 ]] || die "needs root (apt-get install, network namespace)"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$(dirname "$0")/../Cargo.toml" | head -1)
debs=()
for p in "${PKGS[@]}"; do
	found=("$dir/${p}_${version}_"*.deb)
	[[ -e ${found[0]} ]] || die "no ${p}_${version}_*.deb in $dir (make deb)"
	debs+=("$(realpath "${found[0]}")")
done

fresh=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || fresh+=("$p")
done
tmp=$(mktemp -d /tmp/bark-pkg-test.XXXXXX)
cleanup() {
	local rc=$?
	if ((${#fresh[@]})); then
		log "purging ${fresh[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "${fresh[@]}" >/dev/null || true
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT

log "installing ${debs[*]##*/}"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-downgrades "${debs[@]}" >"$tmp/apt.log" 2>&1 ||
	{ cat "$tmp/apt.log" >&2; die "apt-get install failed"; }

moddir=$(pkg-config --variable=moduledir libpipewire-0.3 2>/dev/null || echo /usr/lib/x86_64-linux-gnu/pipewire-0.3)
for f in "$moddir/libpipewire-module-bark-sink.so" "$moddir/libpipewire-module-bark-source.so" \
	/usr/share/pipewire/pipewire.conf.avail/bark-sink.conf \
	/usr/share/pipewire/pipewire.conf.avail/bark-source.conf \
	/usr/lib/systemd/user/bark-pulse-sink.service /usr/lib/systemd/user/bark-pulse-source.service \
	/usr/share/man/man1/bark.1.gz /usr/share/man/man1/bark-pulse.1.gz \
	/usr/share/doc/pipewire-module-bark/examples/bark-sink.conf /usr/share/doc/bark-pulse/examples/bark-pulse.toml; do
	[[ -e $f ]] || die "$f is missing after install"
done
[[ $(readlink "$moddir/libpipewire-module-bark-source.so") == libpipewire-module-bark-sink.so ]] ||
	die "libpipewire-module-bark-source.so is not a link to the sink module"
# Installed, not enabled: no drop-in in the system's pipewire.conf.d.
for d in /etc/pipewire/pipewire.conf.d /usr/share/pipewire/pipewire.conf.d; do
	! ls "$d"/bark-*.conf >/dev/null 2>&1 || die "a Bark drop-in is enabled in $d"
done
[[ $(bark --version) == "bark $version" ]] || die "bark --version: $(bark --version)"
[[ $(bark-pulse --version) == "bark-pulse $version" ]] || die "bark-pulse --version: $(bark-pulse --version)"
bark-pulse --no-config --dry-run sink >/dev/null || die "bark-pulse --dry-run sink failed"
log "files in place; bark and bark-pulse $version run"

unshare --net -- "$0" --inner "$tmp"
log "ok"

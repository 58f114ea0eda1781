# shellcheck shell=bash
# bark lab: network-namespace LAN + per-host headless PipeWire, as a bash
# library. Sourced by lan.sh (the CLI) and by the session scripts.
#
# Everything a run creates is named after its run id and recorded in
# "$RUN/state", so teardown removes exactly what this run made and nothing
# else, even when several runs go on in parallel.
#
# Layout of one run (RUN = $BARK_LAB_ROOT/<id>):
#   state                 one record a line: "netns NAME" / "proc PID HOST WHAT"
#                         / "mount PATH" (hosts in another root, see below)
#   roots                 "ROOT VIEW" per root this run's hosts use
#   hN/runtime            XDG_RUNTIME_DIR of host N (PipeWire sockets)
#   hN/config             XDG_CONFIG_HOME of host N (pipewire.conf.d drop-ins)
#   hN/logs               daemon logs
#
# Network: namespace "bark<id>-br" holds bridge br0 and one veth end per host
# ("v<N>"); namespace "bark<id>-h<N>" holds the other end as eth0 with
# 10.99.0.<N+1>/24, lo up, and a multicast route 224.0.0.0/4 dev eth0.
# No namespace has a default route or an uplink, and the root namespace is
# never touched, so no lab packet can reach a real interface.

set -o pipefail

: "${BARK_LAB_ROOT:=/tmp/bark-lab}"
# The repository this library belongs to: its modules and lab tools must be
# reachable from hosts that run in another root.
BARK_LAB_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Upper bound for any single wait, seconds.
: "${BARK_LAB_TIMEOUT:=15}"

BARK_LAB_SUBNET=10.99.0

lab_log() { printf '[lab %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
lab_die() {
	lab_log "error: $*"
	exit 1
}

lab_run_dir() { printf '%s/%s' "$BARK_LAB_ROOT" "$1"; }
lab_ns_host() { printf 'bark%s-h%s' "$1" "$2"; }
lab_ns_bridge() { printf 'bark%s-br' "$1"; }

# Accept "h3" or "3" for a host; print the index.
lab_host_index() {
	local h=${1#h}
	[[ $h =~ ^[0-9]+$ ]] || lab_die "bad host '$1' (want hN or N)"
	printf '%s' "$h"
}

lab_record() { printf '%s\n' "$2" >>"$(lab_run_dir "$1")/state"; }

# lab_wait SECONDS DESCRIPTION CMD...: poll CMD every 0.1 s until it
# succeeds; fail after SECONDS. Bounded by design.
lab_wait() {
	local secs=$1 what=$2
	shift 2
	local tries=$((secs * 10)) i
	for ((i = 0; i < tries; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	lab_log "timeout after ${secs}s waiting for: $what"
	return 1
}

lab_link_up() { ip -n "$1" -o link show "$2" | grep -q 'state UP'; }

lab_has_wireplumber() { lab_exec "$1" "$2" pw-cli ls Client | grep -qi wireplumber; }

lab_require_root() {
	[[ $EUID -eq 0 ]] || lab_die "needs root (network namespaces)"
}

# lab_lock: one lab at a time on this machine. Two lab runs side by side on
# a 2-core machine starve each other's audio threads, and their figures mean
# nothing. Taken by lab_up (so every session holds it for its lifetime) and
# by lab/with-lock.sh for manual work; a script run under either sees
# BARK_LAB_LOCKED and does not take it again; daemons started by lab_spawn
# do not inherit it. Waits (bounded) for the holder to finish.
lab_lock() {
	[[ -n ${BARK_LAB_LOCKED:-} ]] && return 0
	mkdir -p "$BARK_LAB_ROOT"
	exec {BARK_LAB_LOCK_FD}>"$BARK_LAB_ROOT/.lock"
	if ! flock -n "$BARK_LAB_LOCK_FD"; then
		lab_log "another lab run holds $BARK_LAB_ROOT/.lock; waiting (at most ${BARK_LAB_LOCK_WAIT:-3600} s)"
		flock -w "${BARK_LAB_LOCK_WAIT:-3600}" "$BARK_LAB_LOCK_FD" || lab_die "lab lock: gave up waiting"
	fi
	export BARK_LAB_LOCKED=$$ BARK_LAB_LOCK_FD
}

# lab_up ID NHOSTS: create the bridge namespace and NHOSTS host namespaces.
lab_up() {
	local id=$1 n=$2 run br i ns
	lab_require_root
	lab_lock
	[[ $id =~ ^[A-Za-z0-9]{1,8}$ ]] || lab_die "run id must be 1-8 alphanumerics (it goes into netns names)"
	# 64: one host per receiver in the CLI scale run; the /24 and a Linux
	# bridge (1024 ports) hold far more.
	((n >= 1 && n <= 64)) || lab_die "hosts must be 1..64"
	run=$(lab_run_dir "$id")
	[[ -e $run/state ]] && lab_die "run $id already exists ($run)"
	mkdir -p "$run"
	: >"$run/state"
	printf '%s\n' "$n" >"$run/nhosts"
	br=$(lab_ns_bridge "$id")
	ip netns list | grep -q "^$br\b" && lab_die "netns $br already exists (not ours)"

	ip netns add "$br" || return 1
	lab_record "$id" "netns $br"
	ip -n "$br" link set lo up
	ip -n "$br" link add br0 type bridge || return 1
	# No IGMP querier exists on this LAN: with snooping on, a bridge may stop
	# flooding groups once it has seen a report. Plain flooding is what a
	# dumb switch does.
	ip -n "$br" link set br0 type bridge mcast_snooping 0 stp_state 0
	ip -n "$br" link set br0 up

	for ((i = 0; i < n; i++)); do
		ns=$(lab_ns_host "$id" "$i")
		ip netns list | grep -q "^$ns\b" && lab_die "netns $ns already exists (not ours)"
		ip netns add "$ns" || return 1
		lab_record "$id" "netns $ns"
		# Create the pair inside the bridge namespace with its peer moved
		# straight into the host namespace: it never exists in the root ns.
		ip -n "$br" link add "v$i" type veth peer name eth0 netns "$ns" || return 1
		ip -n "$br" link set "v$i" master br0
		ip -n "$br" link set "v$i" up
		ip -n "$ns" link set lo up
		ip -n "$ns" addr add "$BARK_LAB_SUBNET.$((i + 1))/24" dev eth0
		ip -n "$ns" link set eth0 up
		# Sockets bound to no interface pick the route: without this,
		# sendto(224.x) fails with ENETUNREACH (there is no default route,
		# on purpose).
		ip -n "$ns" route add 224.0.0.0/4 dev eth0
	done
	for ((i = 0; i < n; i++)); do
		ns=$(lab_ns_host "$id" "$i")
		lab_wait "$BARK_LAB_TIMEOUT" "$ns eth0 up" lab_link_up "$ns" eth0 || return 1
	done
	lab_log "LAN $id up: $n hosts on $BARK_LAB_SUBNET.0/24 (bridge in netns $br)"
}

# True if PID is alive and was started by run ID (its environment carries
# BARK_LAB_RUN=ID), so a recycled PID is never killed by mistake.
lab_pid_is_ours() {
	local id=$1 pid=$2
	[[ -r /proc/$pid/environ ]] || return 1
	{ tr "\0" "\n" <"/proc/$pid/environ"; } 2>/dev/null | grep -qx "BARK_LAB_RUN=$id"
}

# Stop one recorded process group: TERM, bounded wait, then KILL.
lab_stop_pid() {
	local id=$1 pid=$2 i
	lab_pid_is_ours "$id" "$pid" || return 0
	# Each daemon was started with setsid, so its PID is its process group:
	# the group holds exactly it and its children (dbus-daemon for WirePlumber).
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 30; i++)); do
		lab_pid_is_ours "$id" "$pid" || return 0
		sleep 0.1
	done
	kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
}

# lab_down ID [--keep]: stop every recorded process, delete every recorded
# namespace, remove the run dir (kept with --keep, for the logs).
lab_down() {
	local id=$1 keep=${2:-} run state kind a pids p ns
	run=$(lab_run_dir "$id")
	state=$run/state
	[[ -f $state ]] || {
		lab_log "no state for run $id ($state): nothing to do"
		return 0
	}
	# Processes first, newest first.
	while read -r kind a _; do
		[[ $kind == proc ]] && lab_stop_pid "$id" "$a"
	done < <(tac "$state")
	# Anything else still inside our namespaces was started into them by this
	# run (lan.sh exec, recorders, players): stop it so the netns can go.
	while read -r kind a _; do
		[[ $kind == netns ]] || continue
		ip netns list | grep -q "^$a\b" || continue
		pids=$(ip netns pids "$a" 2>/dev/null)
		[[ -n $pids ]] || continue
		for p in $pids; do kill -TERM "$p" 2>/dev/null; done
		sleep 0.5
		pids=$(ip netns pids "$a" 2>/dev/null)
		for p in $pids; do kill -KILL "$p" 2>/dev/null; done
	done <"$state"
	while read -r kind ns _; do
		[[ $kind == netns ]] || continue
		ip netns list | grep -q "^$ns\b" && ip netns delete "$ns"
	done < <(tac "$state")
	# Mounts last, newest first: nothing of the run runs in them any more.
	lab_rootfs_down "$id" || return 1
	if [[ $keep == --keep ]]; then
		mv "$state" "$state.down"
		lab_log "LAN $id down (kept $run)"
	else
		rm -rf -- "$run"
		lab_log "LAN $id down"
	fi
}

# --- Hosts in another root ---------------------------------------------------
#
# A host may run its daemons, and everything lab_exec/lab_spawn start on it,
# in `chroot ROOT`, still in its own network namespace: ROOT only swaps the
# userland. That is how this Debian 12 machine (PipeWire 0.3.65) runs hosts
# on PipeWire 1.x: lab/pw1-root.sh builds a Debian 13 root with 1.4.2.
# Select it with `lab_audio_up ... --rootfs ROOT` or BARK_LAB_ROOTFS=ROOT.
#
# A run gets its own view of each root it uses, $BARK_LAB_ROOT/.roots/<id>.<n>,
# made once by the first host that needs it and shared by the others:
#   - ROOT bound there and made private before anything is mounted below
#     it, so that nothing mounted below it propagates to other mount
#     namespaces, or from them. (Where / is shared, as under systemd, the
#     view itself, a plain bind of ROOT, also appears in /'s peers until
#     lab_down unmounts it, which propagates the same way.)
#   - /proc /sys /dev /dev/shm /dev/pts bound on top, each made private: a
#     bind of a shared mount is its peer, and what happens below one would
#     happen below the other;
#   - the directories the lab needs, at identical paths: $BARK_LAB_ROOT (the
#     hosts' runtime and config dirs), this repository (target/pw-modules,
#     target/release/bark-lab-*), the module dir and whatever the caller
#     binds (a run's out dir).
# A view per run rather than mounts in ROOT itself: two runs on one root
# never share a mount point, so each unmounts exactly what it mounted and no
# reference count is needed. The views live outside the run dir, so
# copying or removing a run dir never walks into a mounted root (or /dev).
# Each mount is recorded ("mount PATH") before it is made: every such path
# is in this run's own, new view, so it can only be ours. lab_down
# unmounts them newest first once the run's processes are gone (also on
# failure, INT and TERM, through the callers' traps).
#
# Inside a view /sys is the root namespace's sysfs (bound before any host
# namespace exists): /sys/class/net lists this machine's interfaces, not the
# host's eth0. PipeWire and the modules do not read it.

lab_views_dir() { printf '%s/.roots' "$BARK_LAB_ROOT"; }

# lab_mount ID SRC DST: bind SRC on DST, private; recorded first (see above).
lab_mount() {
	lab_record "$1" "mount $3"
	mount --bind "$2" "$3" || return 1
	mount --make-private "$3"
}

# lab_umount PATH: unmount one of our mounts; a mount still busy after 3 s
# (a process that escaped teardown) is detached lazily rather than left.
lab_umount() {
	local p=$1 i
	mountpoint -q "$p" 2>/dev/null || return 0
	for ((i = 0; i < 30; i++)); do
		umount "$p" 2>/dev/null && return 0
		sleep 0.1
	done
	lab_log "warning: $p still busy after 3 s; detaching it (umount -l)"
	umount -l "$p"
}

# lab_rootfs_view ID ROOT [DIR...]: print this run's view of ROOT, making it
# (once per run) and binding each DIR into it (once per view).
lab_rootfs_view() {
	local id=$1 root=$2 run views view='' r v n=0 d b bound
	shift 2
	run=$(lab_run_dir "$id")
	[[ -d $root && -x $root/usr/bin/pipewire ]] ||
		lab_die "rootfs $root has no usr/bin/pipewire (lab/pw1-root.sh builds one)"
	root=$(realpath -- "$root")
	[[ $root != / ]] || lab_die "rootfs /: that is this machine's own root (leave --rootfs out)"
	if [[ -f $run/roots ]]; then
		while read -r r v; do
			[[ $r == "$root" ]] && view=$v
			n=$((n + 1))
		done <"$run/roots"
	fi
	if [[ -z $view ]]; then
		views=$(lab_views_dir)
		view=$views/$id.$n
		mkdir -p "$views"
		mkdir "$view" || return 1
		printf '%s %s\n' "$root" "$view" >>"$run/roots"
		: >"$run/roots.$n.binds"
		lab_mount "$id" "$root" "$view" || return 1
		for d in /proc /sys /dev /dev/shm /dev/pts; do
			lab_mount "$id" "$d" "$view$d" || return 1
		done
	else
		n=${view##*.}
	fi
	for d in "$BARK_LAB_ROOT" "$BARK_LAB_REPO" "$@"; do
		[[ -n $d ]] || continue
		d=$(realpath -- "$d") || return 1
		[[ -d $d ]] || lab_die "rootfs bind: $d is not a directory"
		# The root's own system must stay the root's.
		case $d in
		/ | /usr | /usr/* | /etc | /etc/* | /bin | /sbin | /lib* | /var/lib | /var/lib/* | /proc* | /sys* | /dev*)
			lab_die "rootfs bind: refusing to cover the root's $d" ;;
		esac
		bound=''
		while read -r b; do
			[[ $d == "$b" || $d == "$b"/* ]] && bound=1
		done <"$run/roots.$n.binds"
		[[ -n $bound ]] && continue
		mkdir -p "$view$d"
		lab_mount "$id" "$d" "$view$d" || return 1
		printf '%s\n' "$d" >>"$run/roots.$n.binds"
	done
	printf '%s' "$view"
}

# lab_rootfs_down ID: unmount every recorded mount of run ID, newest first,
# and remove its (then empty) views. Fails, leaving the state for another
# try, if a mount stays.
lab_rootfs_down() {
	local id=$1 run kind path left=0
	run=$(lab_run_dir "$id")
	[[ -f $run/state ]] || return 0
	while read -r kind path; do
		[[ $kind == mount ]] || continue
		lab_umount "$path" || left=1
	done < <(tac "$run/state")
	if ((left)); then
		lab_log "error: run $id still has mounts (state: $run/state); unmount them, then lan.sh down --id $id again"
		return 1
	fi
	if [[ -f $run/roots ]]; then
		local r v
		# rmdir, never rm -r: a view that is not empty is still mounted.
		while read -r r v; do
			[[ -d $v ]] && { rmdir "$v" || return 1; }
		done <"$run/roots"
		rmdir "$(lab_views_dir)" 2>/dev/null || true
	fi
	return 0
}

# lab_root_prefix HOSTDIR: the words that put a command into that host's
# root, one a line; nothing for a host on this machine's own root.
lab_root_prefix() {
	local view
	[[ -f $1/root ]] || return 0
	view=$(<"$1/root")
	printf '%s\n' "$(command -v chroot)" "$view"
	# chroot starts in /: stay in the caller's directory when the view shows
	# the same one (the repository, an out dir), for relative paths.
	if [[ -d $view$PWD && $(stat -c %d:%i "$PWD") == "$(stat -c %d:%i "$view$PWD")" ]]; then
		printf '%s\n' env -C "$PWD"
	fi
}

lab_host_dir() { printf '%s/h%s' "$(lab_run_dir "$1")" "$2"; }

# Environment for anything run as a "user" of host N: its private runtime
# and config dirs, so its clients find its daemon and nobody else's.
lab_host_env() {
	local id=$1 i=$2 d
	d=$(lab_host_dir "$id" "$i")
	printf '%s\n' \
		"BARK_LAB_RUN=$id" \
		"BARK_LAB_HOST=h$i" \
		"HOME=$d/home" \
		"XDG_RUNTIME_DIR=$d/runtime" \
		"XDG_CONFIG_HOME=$d/config" \
		"XDG_STATE_HOME=$d/state" \
		"XDG_DATA_HOME=$d/data" \
		"PATH=$PATH" \
		"LANG=C.UTF-8"
	[[ -n ${BARK_LAB_MODULE_PATH:-} ]] && printf 'PIPEWIRE_MODULE_DIR=%s\n' "$BARK_LAB_MODULE_PATH"
	[[ -f $d/extra-env ]] && cat "$d/extra-env"
	return 0
}

# lab_exec ID HOST CMD...: run CMD inside host HOST's namespace, as a user
# of that host's audio stack (foreground, exit code passed through).
lab_exec() {
	local id=$1 i
	i=$(lab_host_index "$2")
	shift 2
	local -a envs root
	mapfile -t envs < <(lab_host_env "$id" "$i")
	mapfile -t root < <(lab_root_prefix "$(lab_host_dir "$id" "$i")")
	ip netns exec "$(lab_ns_host "$id" "$i")" env -i "${envs[@]}" "${root[@]}" "$@"
}

# lab_setsid LOG CMD...: start CMD in the background in its own session and
# process group, output to LOG; prints its PID. setsid without -f does not
# fork when the caller is not a group leader (true for a background job of
# a non-interactive shell); `ip netns exec`, `env` and `chroot` (and `env
# -C`) exec too, so $! is the daemon's own PID. The daemons must not
# inherit the lab lock: one that outlived its run would hold it.
lab_setsid() {
	local log=$1
	shift
	if [[ -n ${BARK_LAB_LOCK_FD:-} ]]; then
		setsid "$@" </dev/null >"$log" 2>&1 {BARK_LAB_LOCK_FD}>&- &
	else
		setsid "$@" </dev/null >"$log" 2>&1 &
	fi
	printf '%s' "$!"
}

# lab_spawn ID HOST WHAT LOG CMD...: start CMD in the background inside the
# host namespace, in its own session/process group, record its PID.
lab_spawn() {
	local id=$1 i=$2 what=$3 log=$4 pid
	shift 4
	local -a envs root
	mapfile -t envs < <(lab_host_env "$id" "$i")
	mapfile -t root < <(lab_root_prefix "$(lab_host_dir "$id" "$i")")
	pid=$(lab_setsid "$log" ip netns exec "$(lab_ns_host "$id" "$i")" env -i "${envs[@]}" "${root[@]}" "$@")
	lab_record "$id" "proc $pid h$i $what"
	printf '%s' "$pid"
}

# lab_wire ID HOST LOG WIRE ARGS...: give host HOST its own impaired link.
# Its port v<HOST> comes off the bridge and the tool WIRE (bark-lab-wire,
# with ARGS) forwards every frame between it and a new pair x<HOST> /
# w<HOST>, w<HOST> on the bridge; all in the bridge namespace, which takes
# the pair with it when the LAN goes down. Returns once the wire forwards;
# prints its PID.
lab_wire() {
	local id=$1 i=$2 log=$3 wire=$4 br pid
	shift 4
	br=$(lab_ns_bridge "$id")
	ip -n "$br" link add "w$i" type veth peer name "x$i" || return 1
	ip -n "$br" link set "w$i" master br0
	ip -n "$br" link set "w$i" up
	ip -n "$br" link set "x$i" up
	pid=$(lab_setsid "$log" ip netns exec "$br" env -i "BARK_LAB_RUN=$id" "$wire" \
		--host "v$i" --switch "x$i" "$@")
	lab_record "$id" "proc $pid br wire$i"
	lab_wait "$BARK_LAB_TIMEOUT" "wire to h$i" grep -q '^bark-lab-wire:' "$log" || return 1
	ip -n "$br" link set "v$i" nomaster
	printf '%s' "$pid"
}

lab_pw_socket_ready() { [[ -S $1/runtime/pipewire-0 ]]; }

# lab_default_module_path [EXTRA_DIR] [ROOTFS]: EXTRA_DIR, then PipeWire's
# own module dir (the one inside ROOTFS for a host in another root: no
# pkg-config or headers there, so found by its adapter module).
lab_default_module_path() {
	local sysdir f
	sysdir=$(pkg-config --variable=moduledir libpipewire-0.3 2>/dev/null ||
		echo /usr/lib/x86_64-linux-gnu/pipewire-0.3)
	if [[ -n ${2:-} && ! -f $2$sysdir/libpipewire-module-adapter.so ]]; then
		f=$(find "$2/usr/lib" -maxdepth 3 -path '*/pipewire-0.3/libpipewire-module-adapter.so' -print -quit)
		[[ -n $f ]] || lab_die "no PipeWire modules under $2/usr/lib"
		f=${f#"$2"}
		sysdir=${f%/*}
	fi
	if [[ -n ${1:-} ]]; then printf '%s:%s' "$1" "$sysdir"; else printf '%s' "$sysdir"; fi
}

# lab_audio_up ID HOST [--conf FILE]... [--env K=V]... [--quantum FRAMES]
#              [--rate HZ] [--module-dir DIR] [--no-pulse] [--speaker-driver]
#              [--rootfs DIR] [--bind DIR]...
# Start pipewire, wireplumber (in its own D-Bus session) and pipewire-pulse
# in the host namespace, then create the "speaker" null sink as default.
# --rootfs DIR (default $BARK_LAB_ROOTFS; "" = this machine's own) runs the
# host in that root, with each --bind DIR (and each of the colon-separated
# $BARK_LAB_ROOTFS_BIND) visible at its own path; see "Hosts in another
# root" above.
lab_audio_up() {
	local id=$1 i d pid confs=() envs=() quantum='' rate=48000 moddir='' pulse=1 driver=0
	local rootfs=${BARK_LAB_ROOTFS:-} binds=()
	[[ -n ${BARK_LAB_ROOTFS_BIND:-} ]] && IFS=: read -r -a binds <<<"$BARK_LAB_ROOTFS_BIND"
	i=$(lab_host_index "$2")
	shift 2
	while (($#)); do
		case $1 in
		--conf) confs+=("$2"); shift 2 ;;
		--env) envs+=("$2"); shift 2 ;;
		--quantum) quantum=$2; shift 2 ;;
		--rate) rate=$2; shift 2 ;;
		--module-dir) moddir=$2; shift 2 ;;
		--no-pulse) pulse=0; shift ;;
		--speaker-driver) driver=1; shift ;;
		--rootfs) rootfs=$2; shift 2 ;;
		--bind) binds+=("$2"); shift 2 ;;
		*) lab_die "audio-up: unknown option $1" ;;
		esac
	done
	[[ -d $(lab_run_dir "$id") ]] || lab_die "run $id is not up"
	d=$(lab_host_dir "$id" "$i")
	mkdir -p "$d"/{runtime,config/pipewire/pipewire.conf.d,config/wireplumber/main.lua.d,config/wireplumber/bluetooth.lua.d,config/wireplumber/wireplumber.conf.d,state,data,home,logs}
	chmod 700 "$d/runtime"
	: >"$d/extra-env"
	local e
	for e in "${envs[@]}"; do
		[[ $e == *=* ]] || lab_die "--env wants K=V, got '$e'"
		printf '%s\n' "$e" >>"$d/extra-env"
	done
	rm -f "$d/root"
	if [[ -n $rootfs ]]; then
		local view
		view=$(lab_rootfs_view "$id" "$rootfs" "$moddir" "${binds[@]}") || return 1
		printf '%s\n' "$view" >"$d/root"
	fi
	BARK_LAB_MODULE_PATH=$(lab_default_module_path "$moddir" "$rootfs")
	export BARK_LAB_MODULE_PATH
	printf '%s\n' "$BARK_LAB_MODULE_PATH" >"$d/module-path"

	# Clock settings as a drop-in, the way a user would tune them.
	{
		echo "# written by bark lab"
		echo "context.properties = {"
		echo "    default.clock.rate = $rate"
		if [[ -n $quantum ]]; then
			echo "    default.clock.quantum = $quantum"
			echo "    default.clock.min-quantum = $quantum"
			echo "    default.clock.max-quantum = $quantum"
		fi
		echo "}"
	} >"$d/config/pipewire/pipewire.conf.d/00-bark-lab-clock.conf"
	local c
	for c in "${confs[@]}"; do
		[[ -f $c ]] || lab_die "drop-in $c not found"
		cp -- "$c" "$d/config/pipewire/pipewire.conf.d/"
	done
	# No hardware in a lab host: keep WirePlumber from probing any (this
	# machine may have sound cards or cameras that belong to the real user).
	# WirePlumber 0.4 (Debian 12: 0.4.13) reads the Lua files; 0.5 (Debian
	# 13: 0.5.8) reads only SPA-JSON wireplumber.conf.d/*.conf, where the
	# monitors are profile features, and warns about Lua files, so they are
	# written only where the stock Lua config is (0.4). 0.4 does not read
	# the .conf drop-in (its log lists only wireplumber.conf).
	rm -f "$d"/config/wireplumber/{main,bluetooth}.lua.d/51-bark-lab.lua
	if [[ -d $rootfs/usr/share/wireplumber/main.lua.d ]]; then
		cat >"$d/config/wireplumber/main.lua.d/51-bark-lab.lua" <<-'EOF'
			alsa_monitor.enabled = false
			v4l2_monitor.enabled = false
			libcamera_monitor.enabled = false
		EOF
		cat >"$d/config/wireplumber/bluetooth.lua.d/51-bark-lab.lua" <<-'EOF'
			bluez_monitor.enabled = false
		EOF
	fi
	cat >"$d/config/wireplumber/wireplumber.conf.d/51-bark-lab.conf" <<-'EOF'
		# written by bark lab: no hardware monitors (WirePlumber 0.5)
		wireplumber.profiles = {
		  main = {
		    hardware.audio = disabled
		    hardware.bluetooth = disabled
		    hardware.video-capture = disabled
		    monitor.alsa = disabled
		    monitor.alsa-midi = disabled
		    monitor.bluez = disabled
		    monitor.bluez-midi = disabled
		    monitor.v4l2 = disabled
		    monitor.libcamera = disabled
		  }
		}
	EOF

	pid=$(lab_spawn "$id" "$i" pipewire "$d/logs/pipewire.log" pipewire)
	printf '%s\n' "$pid" >"$d/pipewire.pid"
	lab_wait "$BARK_LAB_TIMEOUT" "h$i pipewire socket" lab_pw_socket_ready "$d" || {
		tail -20 "$d/logs/pipewire.log" >&2
		return 1
	}
	pid=$(lab_spawn "$id" "$i" wireplumber "$d/logs/wireplumber.log" dbus-run-session -- wireplumber)
	printf '%s\n' "$pid" >"$d/wireplumber.pid"
	lab_wait "$BARK_LAB_TIMEOUT" "h$i wireplumber client" lab_has_wireplumber "$id" "$i" || {
		tail -20 "$d/logs/wireplumber.log" >&2
		return 1
	}
	if ((pulse)); then
		pid=$(lab_spawn "$id" "$i" pipewire-pulse "$d/logs/pipewire-pulse.log" pipewire-pulse)
		printf '%s\n' "$pid" >"$d/pipewire-pulse.pid"
		lab_wait "$BARK_LAB_TIMEOUT" "h$i pulse socket" test -S "$d/runtime/pulse/native" || return 1
	fi
	# By default the speaker joins the Dummy-Driver's group, so the
	# Dummy-Driver (a CLOCK_MONOTONIC timer, like the null sink's own) drives
	# the graph and the speaker is a follower. Why: a capture stream on a
	# *driver's* monitor is woken at cycle start and reads the quantum the
	# driver wrote at the end of the previous cycle, racing with the next
	# write (repeated/skipped quanta). On a follower it runs after the sink
	# in the same cycle: clean. --speaker-driver keeps the null sink driving
	# (closer to an ALSA card); bark-lab-record then corrects by one quantum.
	# Holds on 0.3.65 and 1.4.2 alike: the Dummy-Driver is in group
	# pipewire.dummy in both (1.4 also gives it node.sync-group=sync.dummy
	# and priority.driver 200000, 0.3.65 20000), and on 1.4 pw-dump shows
	# the speaker's node.driver-id = the Dummy-Driver's id.
	local group=''
	((driver)) || group='node.group=pipewire.dummy'
	lab_exec "$id" "$i" pw-cli create-node adapter \
		"{ factory.name=support.null-audio-sink node.name=speaker node.description=Speaker media.class=Audio/Sink object.linger=true $group audio.position=[FL FR] }" \
		>"$d/logs/create-speaker.log" 2>&1 || return 1
	lab_wait "$BARK_LAB_TIMEOUT" "h$i speaker node" lab_node_id "$id" "$i" speaker || return 1
	local sid
	sid=$(lab_node_id "$id" "$i" speaker)
	# wpctl set-default: the same on WirePlumber 0.4.13 and 0.5.8 (both store
	# default.configured.audio.sink).
	lab_wait "$BARK_LAB_TIMEOUT" "h$i default sink" lab_exec "$id" "$i" wpctl set-default "$sid" || return 1
	lab_log "h$i audio up (pipewire pid $(cat "$d/pipewire.pid"), speaker node $sid)"
}

# lab_node_id ID HOST NODE_NAME: print the object id of a node, fail if none.
# `pw-cli ls Node` prints "\tid N, type ..." then "\t\tkey = "value"" lines,
# identically on 0.3.65 and 1.4.2.
lab_node_id() {
	local id=$1 i=$2 name=$3 out
	out=$(lab_exec "$id" "$i" pw-cli ls Node 2>/dev/null | awk -v want="$name" '
		/^[[:space:]]*id [0-9]+,/ { gsub(/,/, "", $2); cur = $2 }
		/node\.name = / { v = $0; sub(/.*node\.name = "/, "", v); sub(/".*/, "", v); if (v == want) { print cur; exit } }')
	[[ -n $out ]] || return 1
	printf '%s\n' "$out"
}

# lab_speaker_fed ID HOST: true once something plays into the speaker (a
# link into its playback port), whatever the receiving module calls itself.
# `pw-link -l` prints "speaker:playback_FL" then "  |<- peer:port" on
# 0.3.65 and 1.4.2 alike.
lab_speaker_fed() {
	lab_exec "$1" "$2" pw-link -l 2>/dev/null |
		awk '/^speaker:playback_FL$/ { s = 1; next } /^[^ ]/ { s = 0 } s && /\|<-/ { f = 1 } END { exit !f }'
}

# lab_audio_down ID HOST: stop this host's daemons (by their recorded PIDs).
lab_audio_down() {
	local id=$1 i d w
	i=$(lab_host_index "$2")
	d=$(lab_host_dir "$id" "$i")
	for w in pipewire-pulse wireplumber pipewire; do
		[[ -f $d/$w.pid ]] && lab_stop_pid "$id" "$(cat "$d/$w.pid")"
		rm -f "$d/$w.pid"
	done
}

# CPU time (utime+stime) of a PID, in clock ticks.
lab_cpu_ticks() {
	# Fields after the ")" of comm: state is 3, utime 14, stime 15.
	awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}

# --- What the lab's scripts share ---------------------------------------------

# lab_bins HINT NAME...: set `bin` to the lab's binaries ($BARK_LAB_BIN, else
# this repository's target/release), absolute (a host in another root starts
# its commands in its root's /); die, naming HINT, if one of NAME is missing.
lab_bins() {
	local hint=$1 b
	shift
	bin=${BARK_LAB_BIN:-$BARK_LAB_REPO/target/release}
	for b in "$@"; do
		[[ -x $bin/$b ]] || lab_die "$bin/$b missing: $hint"
	done
	bin=$(realpath "$bin")
}

# lab_music: print the path of the music the lab plays (planetblupi's first
# Ogg file); die if the package is not installed.
lab_music() {
	local m
	m=$(dpkg -L planetblupi-music-ogg 2>/dev/null | grep -m1 '\.ogg$' || true)
	[[ -n $m ]] || lab_die "planetblupi-music-ogg is not installed (make deps)"
	printf '%s\n' "$m"
}

# lab_noisy_music OUT SECONDS AMPLITUDE: the music excerpt the sessions
# play (44.1 kHz, from 60 s, at 0.9 so the sum does not clip) with a white
# noise of its own mixed into each channel at AMPLITUDE (0.03: 30 dB below
# full scale), into OUT. Music alone has stretches (a held note) that one
# window cannot time to a few µs; the noise gives every window timing
# detail in every channel. Temporary files go beside OUT.
lab_noisy_music() {
	local out=$1 len=$2 amp=$3 music t=${1%.wav}
	music=$(lab_music) || return 1
	sox "$music" -r 44100 "$t.music.wav" trim 60 "$len" vol 0.9 &&
		sox -n -r 44100 -c 1 "$t.wn.wav" synth $((2 * len)) whitenoise vol "$amp" &&
		sox "$t.wn.wav" "$t.wn0.wav" trim 0 "$len" &&
		sox "$t.wn.wav" "$t.wn1.wav" trim "$len" "$len" &&
		sox -M "$t.wn0.wav" "$t.wn1.wav" "$t.wn2.wav" &&
		sox -m -v 1 "$t.music.wav" -v 1 "$t.wn2.wav" "$out" &&
		rm -f "$t.wn.wav" "$t.wn0.wav" "$t.wn1.wav" "$t.wn2.wav"
}

# lab_out_dir DIR DEFAULT: make DIR (DEFAULT if DIR is empty) and print its
# absolute path.
lab_out_dir() {
	local d=${1:-$2}
	mkdir -p "$d" && realpath "$d"
}

# lab_env_args HOST SETTING...: the `--env K=V` words (one a line) that the
# settings scoped to HOST ("hN:K=V", e.g. h2:BARK_TEST_CLOCK=150000,80) give
# it, for lab_audio_up and lab_pa_up.
lab_env_args() {
	local i=$1 e
	shift
	for e in "$@"; do
		[[ $e == "h$i:"* ]] && printf -- '--env\n%s\n' "${e#h"$i":}"
	done
	return 0
}

# lab_traps CMD...: run CMD on exit, and exit on INT (130) and TERM (143)
# through it. CMD's words are fixed now; CMD's first line sees the exit
# status in $?.
lab_traps() {
	# shellcheck disable=SC2064 # expanded now, on purpose
	trap "$(printf '%q ' "$@")" EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# lab_wait_pids SECONDS PID...: wait for the processes to exit, all within
# SECONDS; log the first one that overruns and fail.
lab_wait_pids() {
	local deadline=$((SECONDS + $1)) p
	shift
	for p in "$@"; do
		while kill -0 "$p" 2>/dev/null; do
			((SECONDS < deadline)) || { lab_log "pid $p overran"; return 1; }
			sleep 0.2
		done
	done
}

# lab_pw_recorder HOST NODE: the command words (one a line) of a recorder of
# what NODE plays on a PipeWire host: bark-lab-record (from lab_bins' $bin).
lab_pw_recorder() { printf '%s\n' "$bin/bark-lab-record" --target "$2"; }

# lab_record_run ID DIR SECONDS RECORDER REF_NODE HOST...: record what a run
# played: REF_NODE on h0 as the reference (DIR/ref.wav), then the speaker of
# each HOST (DIR/rxN.wav) for SECONDS; wait for them (bounded), fail if one
# overruns. The reference starts 1 s early and runs 2 s longer: receivers
# play what the sender played ~latency earlier, and that content must be
# in it. `RECORDER HOST NODE` prints a recorder's command words (e.g.
# lab_pw_recorder); they take --seconds and --out. Logs go to
# DIR/record-h0.log and DIR/record-rxN.log; the PIDs to lab_pids. The
# machine's stalls over the same span go to DIR/stalls.csv.
lab_record_run() {
	local id=$1 dir=$2 secs=$3 recorder=$4 ref=$5 i pids=() words
	shift 5
	# The machine's own stalls over the recording (bark-lab-stalls), so
	# that the analysis can tell a dropout nothing could avoid from one
	# Bark caused: written to DIR/stalls.csv.
	[[ -x ${bin:-}/bark-lab-stalls ]] &&
		pids+=("$(lab_spawn "$id" 0 stalls "$dir/stalls.log" "$bin/bark-lab-stalls" \
			--seconds $((secs + 3)) --out "$dir/stalls.csv")")
	mapfile -t words < <("$recorder" 0 "$ref")
	pids+=("$(lab_spawn "$id" 0 record "$dir/record-h0.log" "${words[@]}" \
		--seconds $((secs + 2)) --out "$dir/ref.wav")")
	sleep 1
	for i in "$@"; do
		mapfile -t words < <("$recorder" "$i" speaker)
		pids+=("$(lab_spawn "$id" "$i" record "$dir/record-rx$i.log" "${words[@]}" \
			--seconds "$secs" --out "$dir/rx$i.wav")")
	done
	lab_pids+=("${pids[@]}")
	lab_wait_pids $((secs + 30)) "${pids[@]}"
}

# lab_stop_pids PID...: TERM each, give each 3 s, then KILL.
lab_stop_pids() {
	local p
	for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "$@"; do
		for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null || true
	done
}

# lab_save_logs ID DIR [--keep]: copy run ID's daemon logs into DIR/logs/hN
# (they are small and the first thing wanted when a run fails); with
# --keep, its whole run dir (configs too) into DIR/run.
lab_save_logs() {
	local d
	if [[ ${3:-} == --keep ]]; then
		cp -r "$(lab_run_dir "$1")" "$2/run" 2>/dev/null || true
		return 0
	fi
	mkdir -p "$2/logs"
	for d in "$(lab_run_dir "$1")"/h*; do
		[[ -d $d/logs ]] && cp -r "$d/logs" "$2/logs/$(basename "$d")" 2>/dev/null
	done
	return 0
}

# Processes a session script started outside lanlib (players, recorders):
# lab_session_exit stops them.
lab_pids=()

# lab_session_exit ID OUT LOG [--keep]: the end of a session script (through
# lab_traps): stop lab_pids, save run ID's logs into OUT (lab_save_logs),
# take the run down (its log to LOG), exit with the script's status.
lab_session_exit() {
	local rc=$?
	trap - EXIT INT TERM
	lab_stop_pids "${lab_pids[@]}"
	lab_save_logs "$1" "$2" "${4:-}"
	lab_down "$1" >>"$3" 2>&1 || true
	exit "$rc"
}

# lab_scratch_exit ID DIR: the end of a self-test (through lab_traps): take
# run ID down; remove DIR if the test passed, else keep it and say so.
lab_scratch_exit() {
	local rc=$?
	trap - EXIT INT TERM
	lab_down "$1" >/dev/null 2>&1 || true
	if ((rc == 0)); then rm -rf -- "$2"; else lab_log "kept $2"; fi
	exit "$rc"
}

# lab_case NAME OUTBASE TRY ARGS...: one case of a test script, tried at most
# twice: `TRY OUT ARGS...` with OUT=OUTBASE-1, then OUTBASE-2, prints
# "== NAME (try N)" first and must leave its session's output in OUT.log.
# A failed try shows that log's telling lines. Counts into the caller's
# `passed` and `failed`, and adds NAME to `retried` when only the second
# try passed. Why a retry: the lab's hosts have no real-time scheduling on
# a shared 2-core machine, and a starved daemon glitches whatever Bark
# does; reported, a case that needs it every time stays visible.
lab_case() {
	local name=$1 base=$2 try_fn=$3 try out
	shift 3
	for try in 1 2; do
		out=$base-$try
		echo "== $name (try $try)"
		if "$try_fn" "$out" "$@"; then
			passed=$((passed + 1))
			((try == 1)) || retried+=("$name")
			return 0
		fi
		echo "$name: try $try failed (session log: $out.log)"
		grep -E '^(h[0-9]|skew|reference|\[lab.*error)' "$out.log" || tail -20 "$out.log"
	done
	failed=$((failed + 1))
	return 1
}

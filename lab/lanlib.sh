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

# lab_up ID NHOSTS: create the bridge namespace and NHOSTS host namespaces.
lab_up() {
	local id=$1 n=$2 run br i ns
	lab_require_root
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
	if [[ $keep == --keep ]]; then
		mv "$state" "$state.down"
		lab_log "LAN $id down (kept $run)"
	else
		rm -rf -- "$run"
		lab_log "LAN $id down"
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
	local -a envs
	mapfile -t envs < <(lab_host_env "$id" "$i")
	ip netns exec "$(lab_ns_host "$id" "$i")" env -i "${envs[@]}" "$@"
}

# lab_spawn ID HOST WHAT LOG CMD...: start CMD in the background inside the
# host namespace, in its own session/process group, record its PID.
lab_spawn() {
	local id=$1 i=$2 what=$3 log=$4 pid
	shift 4
	local -a envs
	mapfile -t envs < <(lab_host_env "$id" "$i")
	# setsid without -f does not fork when the caller is not a group leader
	# (true for a background job of a non-interactive shell); `ip netns exec`
	# and `env` exec too, so $! is the daemon's own PID.
	setsid ip netns exec "$(lab_ns_host "$id" "$i")" env -i "${envs[@]}" "$@" \
		</dev/null >"$log" 2>&1 &
	pid=$!
	lab_record "$id" "proc $pid h$i $what"
	printf '%s' "$pid"
}

lab_pw_socket_ready() { [[ -S $1/runtime/pipewire-0 ]]; }

lab_default_module_path() {
	local sysdir
	sysdir=$(pkg-config --variable=moduledir libpipewire-0.3 2>/dev/null ||
		echo /usr/lib/x86_64-linux-gnu/pipewire-0.3)
	if [[ -n ${1:-} ]]; then printf '%s:%s' "$1" "$sysdir"; else printf '%s' "$sysdir"; fi
}

# lab_audio_up ID HOST [--conf FILE]... [--env K=V]... [--quantum FRAMES]
#              [--rate HZ] [--module-dir DIR] [--no-pulse] [--speaker-driver]
# Start pipewire, wireplumber (in its own D-Bus session) and pipewire-pulse
# in the host namespace, then create the "speaker" null sink as default.
lab_audio_up() {
	local id=$1 i d pid confs=() envs=() quantum='' rate=48000 moddir='' pulse=1 driver=0
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
		*) lab_die "audio-up: unknown option $1" ;;
		esac
	done
	[[ -d $(lab_run_dir "$id") ]] || lab_die "run $id is not up"
	d=$(lab_host_dir "$id" "$i")
	mkdir -p "$d"/{runtime,config/pipewire/pipewire.conf.d,config/wireplumber/main.lua.d,config/wireplumber/bluetooth.lua.d,state,data,home,logs}
	chmod 700 "$d/runtime"
	: >"$d/extra-env"
	local e
	for e in "${envs[@]}"; do
		[[ $e == *=* ]] || lab_die "--env wants K=V, got '$e'"
		printf '%s\n' "$e" >>"$d/extra-env"
	done
	BARK_LAB_MODULE_PATH=$(lab_default_module_path "$moddir")
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
	cat >"$d/config/wireplumber/main.lua.d/51-bark-lab.lua" <<-'EOF'
		alsa_monitor.enabled = false
		v4l2_monitor.enabled = false
		libcamera_monitor.enabled = false
	EOF
	cat >"$d/config/wireplumber/bluetooth.lua.d/51-bark-lab.lua" <<-'EOF'
		bluez_monitor.enabled = false
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
	local group=''
	((driver)) || group='node.group=pipewire.dummy'
	lab_exec "$id" "$i" pw-cli create-node adapter \
		"{ factory.name=support.null-audio-sink node.name=speaker node.description=Speaker media.class=Audio/Sink object.linger=true $group audio.position=[FL FR] }" \
		>"$d/logs/create-speaker.log" 2>&1 || return 1
	lab_wait "$BARK_LAB_TIMEOUT" "h$i speaker node" lab_node_id "$id" "$i" speaker || return 1
	local sid
	sid=$(lab_node_id "$id" "$i" speaker)
	lab_wait "$BARK_LAB_TIMEOUT" "h$i default sink" lab_exec "$id" "$i" wpctl set-default "$sid" || return 1
	lab_log "h$i audio up (pipewire pid $(cat "$d/pipewire.pid"), speaker node $sid)"
}

# lab_node_id ID HOST NODE_NAME: print the object id of a node, fail if none.
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

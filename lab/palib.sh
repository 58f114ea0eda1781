# shellcheck shell=bash
# bark lab: PulseAudio hosts. Sourced after lanlib.sh (which it extends, and
# does not change): a host may run a real `pulseaudio` daemon instead of
# PipeWire, with the same private per-host dirs, the same PID records and
# teardown, and the same "speaker" (a null sink, made the default).
#
# Per PulseAudio host N (d = $BARK_LAB_ROOT/<id>/hN):
#   d/config/pulse/daemon.conf   48 kHz float32, never exits when idle
#   d/pulse/default.pa           the daemon's only script (-n -F)
#   d/runtime/pulse/native       its socket (clients find it through
#                                XDG_RUNTIME_DIR, as a user's would)
#   d/logs/pulseaudio.log
#
# The speaker is `module-null-sink ... norewinds=1`: with rewinds off its
# monitor hands every rendered chunk to a recorder at once, which is what
# makes the recorder's timestamps exact (pulse-module/src/timing.rs).

# lab_pa_binary: the pulseaudio daemon to run: $BARK_LAB_PULSEAUDIO, else
# the one lab/pa-fetch.sh unpacked into target/pulseaudio (the default: it
# leaves the system's sound server setup alone, see that script), else an
# installed pulseaudio package.
lab_pa_binary() {
	local repo
	repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	if [[ -n ${BARK_LAB_PULSEAUDIO:-} ]]; then
		printf '%s' "$BARK_LAB_PULSEAUDIO"
	elif [[ -x $repo/target/pulseaudio/pulseaudio ]]; then
		printf '%s' "$repo/target/pulseaudio/pulseaudio"
	else
		command -v pulseaudio || lab_die "no pulseaudio daemon: run lab/pa-fetch.sh (make pulse-deps)"
	fi
}

lab_pa_socket_ready() { [[ -S $1/runtime/pulse/native ]]; }

# lab_pa_up ID HOST [--env K=V]...: start pulseaudio in the host namespace
# and create the default "speaker" null sink.
lab_pa_up() {
	local id=$1 i d pid envs=() e bin
	i=$(lab_host_index "$2")
	shift 2
	while (($#)); do
		case $1 in
		--env) envs+=("$2"); shift 2 ;;
		*) lab_die "pa-up: unknown option $1" ;;
		esac
	done
	[[ -d $(lab_run_dir "$id") ]] || lab_die "run $id is not up"
	bin=$(lab_pa_binary)
	d=$(lab_host_dir "$id" "$i")
	mkdir -p "$d"/{runtime,config/pulse,pulse,state,data,home,logs}
	chmod 700 "$d/runtime"
	: >"$d/extra-env"
	for e in "${envs[@]}"; do
		[[ $e == *=* ]] || lab_die "--env wants K=V, got '$e'"
		printf '%s\n' "$e" >>"$d/extra-env"
	done
	cat >"$d/config/pulse/daemon.conf" <<-'EOF'
		# written by bark lab (PulseAudio host)
		default-sample-format = float32le
		default-sample-rate = 48000
		alternate-sample-rate = 48000
		avoid-resampling = yes
		exit-idle-time = -1
		flat-volumes = no
	EOF
	# The script a distribution's default.pa boils down to for this host:
	# the native protocol, suspend-on-idle, and a speaker instead of cards
	# (no hardware in a lab host: the machine's cards belong to its user).
	cat >"$d/pulse/default.pa" <<-'EOF'
		.fail
		load-module module-native-protocol-unix
		load-module module-null-sink sink_name=speaker sink_properties=device.description=Speaker rate=48000 format=float32le channels=2 norewinds=1
		set-default-sink speaker
		load-module module-suspend-on-idle
	EOF
	pid=$(lab_spawn "$id" "$i" pulseaudio "$d/logs/pulseaudio.log" \
		"$bin" -n -F "$d/pulse/default.pa" --daemonize=no --use-pid-file=no \
		--exit-idle-time=-1 --log-target=stderr --log-time=yes)
	printf '%s\n' "$pid" >"$d/pulseaudio.pid"
	lab_wait "$BARK_LAB_TIMEOUT" "h$i pulseaudio socket" lab_pa_socket_ready "$d" || {
		tail -20 "$d/logs/pulseaudio.log" >&2
		return 1
	}
	lab_wait "$BARK_LAB_TIMEOUT" "h$i pulseaudio answers" lab_exec "$id" "$i" pactl info || return 1
	lab_log "h$i PulseAudio up (pid $pid)"
}

# lab_pa_down ID HOST: stop this host's pulseaudio (by its recorded PID).
lab_pa_down() {
	local id=$1 i d
	i=$(lab_host_index "$2")
	d=$(lab_host_dir "$id" "$i")
	[[ -f $d/pulseaudio.pid ]] && lab_stop_pid "$id" "$(cat "$d/pulseaudio.pid")"
	rm -f "$d/pulseaudio.pid"
	# A daemon killed hard leaves its socket; the next one replaces it.
	return 0
}

# lab_pa_kill ID HOST: kill this host's pulseaudio hard (a crash).
lab_pa_kill() {
	local id=$1 i d pid
	i=$(lab_host_index "$2")
	d=$(lab_host_dir "$id" "$i")
	pid=$(cat "$d/pulseaudio.pid")
	lab_pid_is_ours "$id" "$pid" && kill -KILL "$pid"
	lab_wait 5 "h$i pulseaudio gone" lab_pid_gone "$id" "$pid"
	rm -f "$d/pulseaudio.pid"
}

lab_pid_gone() { ! lab_pid_is_ours "$1" "$2"; }

# lab_pa_spawn ID HOST WHAT LOG CMD...: start a client (bark-pulse, a
# recorder, paplay) on a PulseAudio host; prints its PID.
lab_pa_spawn() { lab_spawn "$@"; }

# lab_pa_sink_index ID HOST NAME: index of sink NAME, fail if none.
lab_pa_sink_index() {
	local out
	out=$(lab_exec "$1" "$2" pactl list short sinks 2>/dev/null | awk -v n="$3" '$2 == n { print $1; exit }')
	[[ -n $out ]] || return 1
	printf '%s\n' "$out"
}

# lab_pa_speaker_fed ID HOST: true once some stream plays into "speaker".
lab_pa_speaker_fed() {
	local idx
	idx=$(lab_pa_sink_index "$1" "$2" speaker) || return 1
	lab_exec "$1" "$2" pactl list short sink-inputs 2>/dev/null | awk -v s="$idx" '$2 == s { f = 1 } END { exit !f }'
}

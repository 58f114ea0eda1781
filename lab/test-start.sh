#!/usr/bin/env bash
# Start of playback in the lab: is the first frame of every playback heard,
# at its instant, on every receiver? (root; lab/README.md)
#
# Each case is one LAN: a sender (conf/bark-sink.conf) and two receivers
# (conf/bark-source.conf) whose clocks are skewed as in `make demo`. The
# receivers' speakers are recorded from before the first event to after the
# last; the sender's sink is recorded passively (node.passive: the recorder
# does not keep it awake, so it suspends as it would for a user). The
# signal starts with an onset that cannot be mistaken (a 150 ms chirp from
# 300 Hz to 6 kHz, starting at full level), then music. bark-lab-onsets then
# judges every run of audio: onset error within 100 µs, the first 2 ms all
# there, no missing or damaged 10 ms block after it.
#
# Cases:
#   idle-pw-play    receivers start while the sink has never played; then,
#                   REPEAT times: the sink idles until suspended (6.5 s),
#                   pw-play plays the onset file
#   idle-paplay     the same with paplay after `pactl set-default-sink`
#   idle-gst        the same with a GStreamer player (pulsesink: libpulse)
#   pause-resume    the GStreamer player pauses a track three times (1.5 s
#                   each: PAUSED corks the stream and the sink idles), REPEAT
#                   times
#   second-player   pw-play plays; 2 s later paplay starts a second stream
#                   into the same sink; nothing may be lost (REPEAT times)
#   sender-restart  the receivers keep running while the sender's whole
#                   audio stack restarts (a new session), then pw-play
#                   (REPEAT times)
#
# Options: --cases "LIST" (all), --repeat N (1), --out DIR, --keep,
#   --rootfs DIR (run every host in a PipeWire 1.x root, lab/pw1-root.sh),
#   --max-error-us (100).
# Exits non-zero if a case fails; prints "start: N passed, N failed".
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lanlib.sh
. "$here/lanlib.sh"

usage() { sed -n '2,34s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 2; }
cases="idle-pw-play idle-paplay idle-gst pause-resume second-player sender-restart"
repeat=1 out='' keep='' rootfs='' max_error_us=100
while (($#)); do
	case $1 in
	--cases) cases=$2; shift 2 ;;
	--repeat) repeat=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--keep) keep=--keep; shift ;;
	--rootfs) rootfs=$2; shift 2 ;;
	--max-error-us) max_error_us=$2; shift 2 ;;
	-h | --help) usage ;;
	*) lab_die "unknown option $1 (try --help)" ;;
	esac
done
[[ $repeat =~ ^[0-9]+$ ]] && ((repeat >= 1 && repeat <= 50)) || lab_die "--repeat must be 1..50"
lab_require_root
lab_lock
lab_bins "run 'make lab-build'" bark-lab-record bark-lab-onsets bark-lab-stalls
moddir=$repo/target/pw-modules
[[ -e $moddir/libpipewire-module-bark-sink.so ]] || lab_die "no modules in $moddir: run 'make modules'"
music=$(lab_music) || exit 1
out=$(lab_out_dir "$out" "$repo/lab/out/start-$(date +%Y%m%d-%H%M%S)")
if [[ -n $rootfs ]]; then
	export BARK_LAB_ROOTFS=$rootfs
fi

# The signals, at 44.1 kHz so that the graph resamples as for a user.
chirp=$out/chirp.wav
sox -n -r 44100 -c 2 -b 16 "$chirp" synth 0.15 sine 300-6000 vol 0.5 2>>"$out/sox.log" ||
	lab_die "sox could not make the chirp"
sox "$music" -r 44100 -c 2 -b 16 "$out/m3.wav" trim 60 2.85 2>>"$out/sox.log"
sox "$chirp" "$out/m3.wav" "$out/onset.wav" 2>>"$out/sox.log"
sox "$music" -r 44100 -c 2 -b 16 "$out/m12.wav" trim 75 11.85 2>>"$out/sox.log"
sox "$chirp" "$out/m12.wav" "$out/track.wav" 2>>"$out/sox.log"
onset=$out/onset.wav track=$out/track.wav
drift=(h1:BARK_TEST_CLOCK=-300000,-60 h2:BARK_TEST_CLOCK=150000,80)
passed=0 failed=0 id=''

teardown() { # the case's recorders and LAN (idempotent)
	lab_stop_pids "${lab_pids[@]}"
	lab_pids=()
	if [[ -n $id ]]; then
		lab_save_logs "$id" "$case_out"
		lab_down "$id" $keep >>"$case_out/lab.log" 2>&1 || true
		id=''
	fi
}
lab_traps teardown

host_up() { # host_up INDEX CONF
	local i=$1 conf=$2 envs
	mapfile -t envs < <(lab_env_args "$i" "${drift[@]}")
	lab_audio_up "$id" "$i" --conf "$conf" --module-dir "$moddir" \
		--env PIPEWIRE_DEBUG=2,mod.bark:4 "${envs[@]}" 2>>"$case_out/lab.log"
}

# record SECONDS [NAME [REF_SECONDS]]: records every receiver's speaker for
# SECONDS and the sender's sink passively (as NAME, default ref, for
# REF_SECONDS, default SECONDS), and the machine's stalls
# (CASE_OUT/stalls.csv); sets rec_pids.
record() {
	local seconds=$1 i
	rec_pids=()
	for i in 1 2; do
		rec_pids+=("$(lab_spawn "$id" "$i" record "$case_out/record-rx$i.log" \
			"$bin/bark-lab-record" --target speaker --seconds "$seconds" --out "$case_out/rx$i.wav")")
	done
	# The machine's own stalls over the same span (see lab/src/stalls.rs).
	rec_pids+=("$(lab_spawn "$id" 0 stalls "$case_out/stalls.log" \
		"$bin/bark-lab-stalls" --seconds "$seconds" --out "$case_out/stalls.csv")")
	record_ref "${3:-$seconds}" "${2:-ref}"
	lab_pids+=("${rec_pids[@]}")
}

record_ref() { # record_ref SECONDS [NAME]: the sender's sink, passively, for SECONDS
	local name=${2:-ref}
	ref_pid=$(lab_spawn "$id" 0 record "$case_out/record-$name.log" \
		"$bin/bark-lab-record" --passive --target bark_sink --seconds "$1" \
		--start-timeout "$1" --wall-seconds "$1" --out "$case_out/$name.wav")
	lab_pids+=("$ref_pid")
}

sink_state() { # the sender sink's node state (for the log: suspended?)
	local nid
	nid=$(lab_node_id "$id" 0 bark_sink) || return 0
	lab_exec "$id" 0 pw-cli info "$nid" 2>/dev/null | awk -F': ' '/state:/ { gsub(/"/, "", $2); print $2; exit }'
}

wait_pids() { # wait_pids SECONDS PID...: bounded; what overruns is stopped
	local s=$1
	shift
	lab_wait_pids "$s" "$@" || kill -TERM "$@" 2>/dev/null
}

play() { # play PLAYER FILE [args]: in the foreground, bounded
	local player=$1 file=$2
	shift 2
	case $player in
	pw-play) lab_exec "$id" 0 timeout 60 pw-play --target bark_sink "$file" ;;
	paplay) lab_exec "$id" 0 timeout 60 paplay --device=bark_sink "$file" ;;
	gst) lab_exec "$id" 0 timeout 60 /usr/bin/python3 "$here/gst-player.py" "$file" --device bark_sink "$@" ;;
	esac
}

idle_then() { # idle_then: let the sink suspend, note its state
	sleep 6.5
	echo "sink state before playing: $(sink_state)" >>"$case_out/events.log"
}

case_run() {
	local name=$1 rx_secs
	case_out=$out/$name
	[[ -d $case_out ]] && case_out=$out/$name-retry
	mkdir -p "$case_out"
	echo "== $name"
	id=st$((RANDOM % 10000))
	lab_up "$id" 3 2>>"$case_out/lab.log" || { failed=$((failed + 1)); teardown; return; }
	host_up 0 "$repo/conf/bark-sink.conf" && host_up 1 "$repo/conf/bark-source.conf" &&
		host_up 2 "$repo/conf/bark-source.conf" ||
		{ echo "$name: hosts did not come up (see $case_out/lab.log)"; failed=$((failed + 1)); teardown; return; }
	lab_wait "$BARK_LAB_TIMEOUT" "bark_sink on h0" lab_node_id "$id" 0 bark_sink || {
		failed=$((failed + 1)); teardown; return; }
	local per k ok=1
	case $name in
	# Seconds each repetition takes, with room: the receivers' recordings
	# must outlast the reference's.
	idle-pw-play | idle-paplay | idle-gst) per=12 ;;
	pause-resume) per=26 ;;
	second-player) per=21 ;;
	sender-restart) per=20 ;;
	esac
	rx_secs=$((3 + repeat * per))
	if [[ $name == sender-restart ]]; then
		record "$rx_secs" ref-0 2
	else
		record "$rx_secs" ref $((rx_secs - 2))
	fi
	sleep 2
	for ((k = 0; k < repeat; k++)); do
		case $name in
		idle-pw-play) idle_then; play pw-play "$onset" ;;
		idle-paplay)
			lab_exec "$id" 0 pactl set-default-sink bark_sink >>"$case_out/lab.log" 2>&1
			idle_then; play paplay "$onset" ;;
		idle-gst) idle_then; play gst "$onset" ;;
		pause-resume) idle_then; play gst "$track" --pause 3:1.5 --pause 6:1.5 --pause 9:1.5 ;;
		second-player)
			idle_then
			play pw-play "$track" &
			local first=$!
			sleep 2
			play paplay "$onset"
			wait "$first" ;;
		sender-restart)
			# Each session has its own reference; the receivers' recorders
			# run on.
			wait_pids 30 "$ref_pid"
			lab_audio_down "$id" 0
			host_up 0 "$repo/conf/bark-sink.conf" || ok=0
			lab_wait "$BARK_LAB_TIMEOUT" "bark_sink on h0" lab_node_id "$id" 0 bark_sink || ok=0
			record_ref 8 "ref-$((k + 1))"
			sleep 2
			echo "restarted; sink state: $(sink_state)" >>"$case_out/events.log"
			play pw-play "$onset"
			sleep 1 ;;
		esac
		echo "$name $k played at $(date +%T.%N)" >>"$case_out/events.log"
	done
	wait_pids $((rx_secs + 30)) "${rec_pids[@]}" "$ref_pid"
	local refs=("$case_out/ref.wav") min_runs=$repeat r
	case $name in
	sender-restart)
		# ref-0 holds the session before the first restart (never played);
		# each later one holds one run.
		refs=()
		for ((k = 1; k <= repeat; k++)); do refs+=("$case_out/ref-$k.wav"); done
		min_runs=1 ;;
	pause-resume) min_runs=$((4 * repeat)) ;;
	esac
	for r in "${refs[@]}"; do
		[[ -s $r ]] || { echo "$name: no reference $r"; ok=0; continue; }
		"$bin/bark-lab-onsets" --reference "$r" --receiver "$case_out/rx1.wav" --label h1 \
			--receiver "$case_out/rx2.wav" --label h2 --latency-ms 40 --prefix "$name" \
			--max-error-us "$max_error_us" --min-head-ratio 0.9 --max-missing 0 \
			--max-damaged 0 --min-runs "$min_runs" --stalls "$case_out/stalls.csv" \
			--json "${r%.wav}.onsets.json" |
			tee -a "$case_out/onsets.txt"
		((${PIPESTATUS[0]} == 0)) || ok=0
	done
	if ((ok)); then
		passed=$((passed + 1))
	else
		echo "$name: FAILED (results in $case_out)"
		failed=$((failed + 1))
	fi
	teardown
}

# One retry per case, reported, never silent: the lab's hosts have no
# real-time scheduling, and a stall of the whole machine (all recorders
# skip a cycle at once) is no fault of the code under test.
retried=()
for c in $cases; do
	case $c in
	idle-pw-play | idle-paplay | idle-gst | pause-resume | second-player | sender-restart) ;;
	*) lab_die "unknown case $c" ;;
	esac
	before=$failed
	case_run "$c"
	if ((failed > before)) && ((repeat == 1)); then
		failed=$before
		retried+=("$c")
		echo "$c: retrying once"
		case_run "$c"
	fi
done
((${#retried[@]} == 0)) || echo "start: retried: ${retried[*]}"
echo "start: $passed passed, $failed failed (results in $out)"
((failed == 0))

#!/usr/bin/env bash
# One lab run mixing PulseAudio and PipeWire hosts: a Bark sender on h0
# (bark-pulse sink on a real pulseaudio daemon, or Bark's PipeWire module),
# receivers h1..hN each either bark-pulse source on pulseaudio or the
# PipeWire module. Real music from a stock client (paplay / pw-play) into
# "Bark Network"; every speaker recorded against the one kernel clock.
#
#   lab/run-pa-session.sh [--sender pa|pw|pp] [--receivers pw,pa,pp,...] [options]
#
# Host kinds: pa = real pulseaudio + bark-pulse; pw = PipeWire + Bark's
# module; pp = PipeWire + bark-pulse as a client of pipewire-pulse.
#
# Options:
#   --seconds S            recording length (20)
#   --music FILE           default: planetblupi music000.ogg; --music-offset S (60)
#   --host-env hN:K=V      environment of host N's daemons and bark-pulse
#                          (e.g. h2:BARK_TEST_CLOCK=150000,80)
#   --sender-arg ARG       extra bark-pulse sink argument (repeatable)
#   --rx-arg ARG           extra bark-pulse source argument (repeatable)
#   --crash-sender         before recording: kill -9 the PulseAudio sender,
#                          start it again (it must clean up its stale sink),
#                          restart the player; wait for receivers to follow
#   --restart-pa hN        before recording: kill host N's pulseaudio, start
#                          it again; its bark-pulse must reconnect, not exit
#                          (h0: the sender reloads its sink; repeatable)
#   --settle S (3)  --module-dir DIR  --out DIR  --keep  --id ID
#
# Receivers start before the sender, always: each must pick the stream up
# by itself. Results in lab/out/<time>-<id>/ as for run-session.sh
# (analysis.txt, analysis.json, series.csv, cpu.csv, logs/, session.txt).
# Exit 0 when the run completed (limits are the caller's: test-pulse.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lanlib.sh
. "$here/lanlib.sh"
# shellcheck source=palib.sh
. "$here/palib.sh"

usage() { sed -n '2,31s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 2; }
orig_args=("$@")
sender=pa receivers=pw,pa seconds=20 music='' music_offset=60 settle=3
moddir='' out='' keep='' id='' crash_sender=0
host_env=() sender_args=() rx_args=() restart_pa=()
while (($#)); do
	case $1 in
	--sender) sender=$2; shift 2 ;;
	--receivers) receivers=$2; shift 2 ;;
	--seconds) seconds=$2; shift 2 ;;
	--music) music=$2; shift 2 ;;
	--music-offset) music_offset=$2; shift 2 ;;
	--host-env) host_env+=("$2"); shift 2 ;;
	--sender-arg) sender_args+=("$2"); shift 2 ;;
	--rx-arg) rx_args+=("$2"); shift 2 ;;
	--crash-sender) crash_sender=1; shift ;;
	--restart-pa) restart_pa+=("$(lab_host_index "$2")"); shift 2 ;;
	--settle) settle=$2; shift 2 ;;
	--module-dir) moddir=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--keep) keep=--keep; shift ;;
	--id) id=$2; shift 2 ;;
	-h | --help) usage ;;
	*) lab_die "unknown option $1 (try --help)" ;;
	esac
done
[[ $sender == pa || $sender == pw || $sender == pp ]] || lab_die "--sender is pa, pw or pp"
IFS=, read -ra kinds <<<"$receivers"
nrx=${#kinds[@]}
((nrx >= 1 && nrx <= 8)) || lab_die "--receivers lists 1..8 of pw|pa"
for k in "${kinds[@]}"; do [[ $k == pa || $k == pw || $k == pp ]] || lab_die "receiver kind '$k' is not pa, pw or pp"; done
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 2 || seconds > 600)); then
	lab_die "--seconds must be an integer in 2..600"
fi
((crash_sender == 0)) || [[ $sender == pa ]] || lab_die "--crash-sender needs --sender pa"
kind=("$sender" "${kinds[@]}")
for r in "${restart_pa[@]}"; do
	if ((r < 0 || r > nrx)) || [[ ${kind[$r]} != pa ]]; then
		lab_die "--restart-pa h$r: not a PulseAudio host"
	fi
done
lab_require_root

[[ -n $music ]] || music=$(lab_music) || exit 1
if [[ -z $moddir && -d $repo/target/pw-modules ]]; then moddir=$repo/target/pw-modules; fi
lab_bins "make pulse lab-build (cargo build --release -p bark-pulse -p bark-lab-pulse -p bark-lab)" \
	bark-lab-record bark-lab-analyze bark-lab-pulse bark-pulse
if [[ " ${kind[*]} " == *" pw "* && ! -e $moddir/libpipewire-module-bark-sink.so ]]; then
	lab_die "PipeWire hosts need the modules: make modules"
fi

[[ -n $id ]] || id=p$(($$ % 100000))
out=$(lab_out_dir "$out" "$repo/lab/out/$(date +%Y%m%d-%H%M%S)-$id")
# A reused --out dir must not mix an older run's logs into this one's.
rm -rf -- "$out/logs" "$out/events.txt"
log=$out/session.log
: >"$log"

lab_traps lab_session_exit "$id" "$out" "$log" "$keep"

host_envs() { lab_env_args "$1" "${host_env[@]}"; } # host_envs INDEX -> "--env K=V" words
hdir() { lab_host_dir "$id" "$1"; }
# bark-pulse logs of host I: one file per instance (restarts add more).
bark_logs() { ls "$(hdir "$1")"/logs/bark-pulse*.log 2>/dev/null || true; }
# bark_says I PATTERN N: host I's bark-pulse logs have N lines matching.
bark_says() {
	local n
	# shellcheck disable=SC2046 # one word per log file
	n=$(cat $(bark_logs "$1") /dev/null 2>/dev/null | grep -c -- "$2" || true)
	((n >= $3))
}

# bark-pulse on host I in ROLE (sink|source); its PID goes to hI/bark-pulse.pid.
start_bark() {
	local i=$1 role=$2 pid n
	shift 2
	n=$(bark_logs "$i" | wc -l)
	pid=$(lab_spawn "$id" "$i" "bark-pulse-$role" "$(hdir "$i")/logs/bark-pulse$((n + 1)).log" \
		"$bin/bark-pulse" -v "$role" "$@")
	printf '%s\n' "$pid" >"$(hdir "$i")/bark-pulse.pid"
}

start_player() {
	if [[ $sender != pw ]]; then
		lab_spawn "$id" 0 paplay "$out/player.log" paplay --device=bark_sink "$excerpt" >"$out/.player.pid"
	else
		lab_spawn "$id" 0 pw-play "$out/player.log" pw-play --target bark_sink "$excerpt" >"$out/.player.pid"
	fi
	lab_pids+=("$(cat "$out/.player.pid")")
}

nhosts=$((nrx + 1))
lab_log "run $id: $sender sender + receivers ${kind[*]:1}, ${seconds}s, out $out"
lab_up "$id" "$nhosts" 2>>"$log"

# Receivers first: they must find the sender by themselves when it comes.
for ((i = 1; i <= nrx; i++)); do
	mapfile -t envs < <(host_envs "$i")
	case ${kind[$i]} in
	pw) lab_audio_up "$id" "$i" --conf "$repo/conf/bark-source.conf" --module-dir "$moddir" "${envs[@]}" 2>>"$log" ;;
	pa)
		lab_pa_up "$id" "$i" "${envs[@]}" 2>>"$log"
		start_bark "$i" source "${rx_args[@]}"
		;;
	pp)
		# bark-pulse as a client of pipewire-pulse (no Bark module loaded).
		lab_audio_up "$id" "$i" --module-dir "$moddir" "${envs[@]}" 2>>"$log"
		start_bark "$i" source "${rx_args[@]}"
		;;
	esac
done
sleep 1
mapfile -t envs < <(host_envs 0)
if [[ $sender == pw ]]; then
	lab_audio_up "$id" 0 --conf "$repo/conf/bark-sink.conf" --module-dir "$moddir" "${envs[@]}" 2>>"$log"
	lab_wait "$BARK_LAB_TIMEOUT" "bark_sink on h0" lab_node_id "$id" 0 bark_sink ||
		lab_die "h0: no bark_sink (see logs)"
elif [[ $sender == pp ]]; then
	lab_audio_up "$id" 0 --module-dir "$moddir" "${envs[@]}" 2>>"$log"
	start_bark 0 sink "${sender_args[@]}"
	lab_wait "$BARK_LAB_TIMEOUT" "bark_sink on h0" lab_node_id "$id" 0 bark_sink ||
		lab_die "h0: bark-pulse sink did not load bark_sink through pipewire-pulse (see $out/logs/h0)"
else
	lab_pa_up "$id" 0 "${envs[@]}" 2>>"$log"
	start_bark 0 sink "${sender_args[@]}"
	lab_wait "$BARK_LAB_TIMEOUT" "bark_sink on h0" lab_pa_sink_index "$id" 0 bark_sink ||
		lab_die "h0: bark-pulse sink did not load bark_sink (see $out/logs/h0)"
fi

excerpt=$out/music.wav
sox "$music" "$excerpt" trim "$music_offset" $((seconds + 60)) 2>>"$log" ||
	lab_die "sox could not cut $music"
start_player
lab_log "playing $(basename "$music") (+${music_offset}s) into h0:bark_sink"

# wait_playing I N: receiver I has played a session N times (PA: its log
# says so; PipeWire: something plays into its speaker).
wait_playing() {
	local i=$1 n=${2:-1}
	if [[ ${kind[$i]} != pw ]]; then
		lab_wait 30 "h$i: bark-pulse playing (x$n)" bark_says "$i" "playing session" "$n"
	else
		lab_wait 30 "h$i: a stream into its speaker" lab_speaker_fed "$id" "$i"
	fi
}
for ((i = 1; i <= nrx; i++)); do
	wait_playing "$i" || lab_die "h$i never played (see $out/logs/h$i)"
done
lab_log "receivers playing"

if ((crash_sender)); then
	sleep 2
	p=$(cat "$(hdir 0)/bark-pulse.pid")
	lab_log "crash: kill -9 the sender (pid $p)"
	kill -KILL "$p"
	sleep 1
	lab_pa_sink_index "$id" 0 bark_sink >/dev/null ||
		lab_die "after the crash the stale bark_sink should still be loaded"
	start_bark 0 sink "${sender_args[@]}"
	lab_wait 15 "h0: stale sink cleaned up" bark_says 0 "unloading stale sink" 1 ||
		lab_die "the restarted sender did not clean up the stale sink"
	lab_wait 15 "h0: sending again" bark_says 0 "sending to" 2 ||
		lab_die "the restarted sender did not load bark_sink and send"
	# Unloading the stale sink moved the player's stream elsewhere (or
	# ended it): play into the new sink again.
	pp=$(cat "$out/.player.pid")
	kill -TERM "$pp" 2>/dev/null || true
	lab_wait 5 "old player gone" lab_pid_gone "$id" "$pp" || true
	start_player
	for ((i = 1; i <= nrx; i++)); do
		[[ ${kind[$i]} == pa ]] || continue
		wait_playing "$i" 2 || lab_die "h$i did not follow the restarted sender"
		echo "recovered: h$i follows the restarted sender" >>"$out/events.txt"
	done
	lab_log "sender restarted; receivers follow"
fi
for r in "${restart_pa[@]}"; do
	bp=$(cat "$(hdir "$r")/bark-pulse.pid")
	# What bark-pulse logs once per connection that works: the sender
	# "sending to", a receiver "playing into".
	if ((r == 0)); then want="sending to"; else want="playing into"; fi
	# shellcheck disable=SC2046 # one word per log file
	n=$(cat $(bark_logs "$r") /dev/null | grep -c -- "$want" || true)
	lab_log "restart: kill -9 pulseaudio on h$r"
	lab_pa_kill "$id" "$r"
	sleep 1
	mapfile -t envs < <(host_envs "$r")
	lab_pa_up "$id" "$r" "${envs[@]}" 2>>"$log"
	lab_wait 20 "h$r: bark-pulse reconnected" bark_says "$r" "$want" $((n + 1)) ||
		lab_die "h$r: bark-pulse did not reconnect"
	lab_pid_is_ours "$id" "$bp" || lab_die "h$r: bark-pulse exited instead of reconnecting"
	if ((r == 0)); then
		# The player died with its server: play again.
		start_player
	fi
	echo "recovered: h$r bark-pulse (pid $bp) reconnected to a restarted pulseaudio" >>"$out/events.txt"
	lab_log "h$r: bark-pulse reconnected (same pid $bp)"
done

lab_log "settling ${settle}s"
sleep "$settle"

# CPU over the recording window: the daemons and bark-pulse per host.
cpu_pids() {
	local i w ws
	for ((i = 0; i <= nrx; i++)); do
		case ${kind[$i]} in
		pa) ws=(pulseaudio bark-pulse) ;;
		pp) ws=(pipewire pipewire-pulse bark-pulse) ;;
		pw) ws=(pipewire) ;;
		esac
		for w in "${ws[@]}"; do
			printf 'h%s %s %s\n' "$i" "$w" "$(cat "$(hdir "$i")/$w.pid")"
		done
	done
}
declare -A cpu0
while read -r h w p; do cpu0[$h.$w]=$(lab_cpu_ticks "$p"); done < <(cpu_pids)
t_cpu0=$(date +%s.%N)

recorder() { # recorder HOST NODE: a recorder of what NODE plays there (lab_record_run)
	if [[ ${kind[$1]} == pa ]]; then
		# A pulseaudio host: its nodes are PulseAudio sinks.
		printf '%s\n' "$bin/bark-lab-pulse" record --device "$2.monitor"
	else
		lab_pw_recorder "$@"
	fi
}
lab_log "recording ${seconds}s"
# shellcheck disable=SC2046 # one word per host
lab_record_run "$id" "$out" "$seconds" recorder bark_sink $(seq 1 "$nrx") || lab_die "a recorder overran"
t_cpu1=$(date +%s.%N)
hz=$(getconf CLK_TCK)
{
	echo "host,process,cpu_percent_of_one_core"
	while read -r h w p; do
		awk -v a="${cpu0[$h.$w]}" -v b="$(lab_cpu_ticks "$p")" -v hz="$hz" -v t0="$t_cpu0" -v t1="$t_cpu1" -v h="$h" -v w="$w" \
			'BEGIN { printf "%s,%s,%.2f\n", h, w, 100 * (b - a) / hz / (t1 - t0) }'
	done < <(cpu_pids)
} >"$out/cpu.csv"
for f in "$out"/ref.wav "$out"/rx*.wav; do
	[[ -s $f ]] || lab_die "recording $f is missing (see $out/record-*.log)"
done
# Every bark-pulse must still be the one started (no silent exit/restart).
for ((i = 0; i <= nrx; i++)); do
	[[ ${kind[$i]} != pw ]] || continue
	lab_pid_is_ours "$id" "$(cat "$(hdir "$i")/bark-pulse.pid")" || lab_die "h$i: bark-pulse is not running"
done

args=(--reference "$out/ref.wav" --json "$out/analysis.json" --series "$out/series.csv")
for ((i = 1; i <= nrx; i++)); do args+=(--receiver "$out/rx$i.wav" --label "h$i-${kind[$i]}"); done
[[ -s $out/stalls.csv ]] && args+=(--stalls "$out/stalls.csv")
"$bin/bark-lab-analyze" "${args[@]}" | tee "$out/analysis.txt"
echo "CPU over the ${seconds}s window (% of one core):"
column -s, -t "$out/cpu.csv" | sed 's/^/  /'
{
	echo "command: $0 $(printf '%q ' "${orig_args[@]}")"
	echo "sender: $sender; receivers: ${kind[*]:1}"
	echo "pulseaudio: $("$(lab_pa_binary)" --version 2>/dev/null | head -1)"
	echo "pipewire: $(pipewire --version | tail -1)"
	echo "kernel: $(uname -r)"
} >"$out/session.txt"
lab_log "results in $out"

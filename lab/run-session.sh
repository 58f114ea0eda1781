#!/usr/bin/env bash
# One lab session: 1 sender + N receivers, each a network namespace with its
# own headless PipeWire; real music played into the sender's network sink;
# the sender sink's monitor (reference) and every receiver's speaker monitor
# recorded with CLOCK_MONOTONIC stamps; then analyzed.
#
# Which network audio is tested is only a matter of drop-ins:
#   --sender-conf FILE    pipewire.conf.d drop-in for the sender (h0)
#   --receiver-conf FILE  drop-in for every receiver (h1..hN)
#   --sink NODE           node.name of the sender's network sink (rtp-sink)
#   --rx-node NODE        node.name that appears on a receiver once it plays
#                         the stream (default: wait for any link into the
#                         receiver's speaker)
# Options:
#   --receivers N (2)   --seconds S (20)   --quantum FRAMES (graph default)
#   --music FILE (planetblupi Ogg)   --music-offset S (60)
#   --sender-receives   the sender host also runs the receiver drop-in and
#                       its speaker is recorded as receiver h0 (a common
#                       home set-up: the sending PC plays along)
#   --player pw-play|paplay (pw-play): pw-play --target SINK, or paplay
#                       after `pactl set-default-sink SINK` (what picking
#                       the sink in pavucontrol does)
#   --module-dir DIR    extra PIPEWIRE_MODULE_DIR entry (default: the
#                       Makefile's target/pw-modules if it exists)
#   --sender-env K=V    environment for h0's daemons (repeatable)
#   --rx-env K=V        environment for every receiver's daemons (repeatable)
#   --host-env hN:K=V   environment for one host's daemons, e.g.
#                       h2:BARK_TEST_CLOCK=150000,40 (repeatable)
#   --host-conf hN:FILE receiver N's drop-in in place of --receiver-conf
#                       (a stereo pair: bark.channels = [ FL ] on h1,
#                       [ FR ] on h2; repeatable)
#   --analyze-arg ARG   one more argument for bark-lab-analyze (repeatable;
#                       e.g. --ref-channels=0,1 for a stereo pair)
#   --ref-record-channels N  record the sender's sink with N channels
#                       (default 2; a 5.1 sink: 6)
#   --settle S (3)      seconds between the receivers appearing and recording
#   --speaker-driver    null-sink speakers drive their graphs (see lanlib.sh)
#   --wire "ARGS"       every receiver on its own impaired link: bark-lab-wire
#                       ARGS (e.g. "--model loss --loss 3"; seed 40+i, and
#                       with --model wifi the first outage at 6 + 1.7(i-1) s)
#   --sender-cmd CMD    also run `bash -c CMD` on h0 once its daemons are
#                       up, before the player (a peer's server)
#   --rx-cmd CMD        also run `bash -c CMD` on every receiver once its
#                       daemons are up ({i} is the host's index: a peer's
#                       client)
#   --rootfs DIR        every host runs in that root, e.g. PipeWire 1.x from
#                       lab/pw1-root.sh (default $BARK_LAB_ROOTFS; lanlib.sh,
#                       "Hosts in another root")
#   --out DIR           results (default lab/out/<time>-<id>)
#   --keep              keep the run dir (logs, configs) after teardown
#   --id ID             run id (default: derived from this PID)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lanlib.sh
. "$here/lanlib.sh"

usage() { sed -n '2,40s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 2; }

orig_args=("$@")
sender_conf='' receiver_conf='' sink=rtp-sink rx_node=''
receivers=2 seconds=20 quantum='' settle=3 moddir='' out='' keep='' id=''
music='' music_offset=60 speaker_driver='' player=pw-play sender_receives=''
sender_env=() rx_env=() host_env=() rootfs=${BARK_LAB_ROOTFS:-}
wire='' sender_cmd='' rx_cmd='' host_conf=() analyze_extra=() ref_record_channels=''
while (($#)); do
	case $1 in
	--sender-conf) sender_conf=$2; shift 2 ;;
	--receiver-conf) receiver_conf=$2; shift 2 ;;
	--sink) sink=$2; shift 2 ;;
	--rx-node) rx_node=$2; shift 2 ;;
	--receivers) receivers=$2; shift 2 ;;
	--seconds) seconds=$2; shift 2 ;;
	--quantum) quantum=$2; shift 2 ;;
	--music) music=$2; shift 2 ;;
	--music-offset) music_offset=$2; shift 2 ;;
	--player) player=$2; shift 2 ;;
	--sender-receives) sender_receives=1; shift ;;
	--module-dir) moddir=$2; shift 2 ;;
	--sender-env) sender_env+=("$2"); shift 2 ;;
	--rx-env) rx_env+=("$2"); shift 2 ;;
	--host-env) host_env+=("$2"); shift 2 ;;
	--host-conf) host_conf+=("$2"); shift 2 ;;
	--analyze-arg) analyze_extra+=("$2"); shift 2 ;;
	--ref-record-channels) ref_record_channels=$2; shift 2 ;;
	--settle) settle=$2; shift 2 ;;
	--speaker-driver) speaker_driver=--speaker-driver; shift ;;
	--wire) wire=$2; shift 2 ;;
	--sender-cmd) sender_cmd=$2; shift 2 ;;
	--rx-cmd) rx_cmd=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--keep) keep=--keep; shift ;;
	--rootfs) rootfs=$2; shift 2 ;;
	--id) id=$2; shift 2 ;;
	-h | --help) usage ;;
	*) lab_die "unknown option $1 (try --help)" ;;
	esac
done
[[ -f $sender_conf ]] || lab_die "--sender-conf FILE is required"
[[ -f $receiver_conf ]] || lab_die "--receiver-conf FILE is required"
for hc in "${host_conf[@]}"; do
	[[ $hc =~ ^h[0-9]+:. && -f ${hc#*:} ]] || lab_die "--host-conf $hc: want hN:FILE of an existing file"
done
((receivers >= 1 && receivers <= 16)) || lab_die "--receivers must be 1..16"
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 2 || seconds > 600)); then
	lab_die "--seconds must be an integer in 2..600"
fi
lab_require_root
sender_conf=$(realpath "$sender_conf")
receiver_conf=$(realpath "$receiver_conf")

[[ -n $music ]] || music=$(lab_music) || exit 1
if [[ -z $moddir && -d $repo/target/pw-modules ]]; then moddir=$repo/target/pw-modules; fi
lab_bins "run 'cargo build --release -p bark-lab' (or make lab-build)" bark-lab-record bark-lab-analyze bark-lab-wire
if [[ -n $rootfs ]]; then
	[[ -d $rootfs ]] || lab_die "--rootfs $rootfs is not a directory (lab/pw1-root.sh builds one)"
	rootfs=$(realpath "$rootfs")
fi

[[ -n $id ]] || id=s$(($$ % 100000))
out=$(lab_out_dir "$out" "$repo/lab/out/$(date +%Y%m%d-%H%M%S)-$id")
log=$out/session.log
: >"$log"

# Everything this run starts outside lanlib (recorders, the player) goes in
# lab_pids; teardown stops those, then the LAN (daemons, namespaces).
lab_traps lab_session_exit "$id" "$out" "$log" "$keep"

nhosts=$((receivers + 1))
lab_log "run $id: 1 sender + $receivers receivers, ${seconds}s, out $out"
lab_up "$id" "$nhosts" 2>>"$log"
if [[ -n $wire ]]; then
	for ((i = 1; i <= receivers; i++)); do
		# shellcheck disable=SC2206 # ARGS is a word list by design
		wargs=($wire --seed $((40 + i)) --seconds $((seconds + 180)) --stats "$out/wire$i.json")
		[[ $wire == *"--model wifi"* ]] && wargs+=(--first-outage-s "$(awk -v i="$i" 'BEGIN { print 6 + 1.7 * (i - 1) }')")
		lab_wire "$id" "$i" "$out/wire$i.log" "$bin/bark-lab-wire" "${wargs[@]}" >/dev/null ||
			lab_die "bark-lab-wire for h$i did not start (see $out/wire$i.log)"
	done
	lab_log "receivers each behind bark-lab-wire $wire"
fi

# Always passed, so that --rootfs '' overrides $BARK_LAB_ROOTFS. In another
# root the hosts need the recorders and the out dir (music, recordings) at
# the same paths; lanlib binds the repository and the run dirs itself.
common=(--module-dir "$moddir" --rootfs "$rootfs")
[[ -n $rootfs ]] && common+=(--bind "$out" --bind "$bin")
[[ -n $quantum ]] && common+=(--quantum "$quantum")
[[ -n $speaker_driver ]] && common+=("$speaker_driver")
host_envs() { # host_envs INDEX -> "--env K=V" words for that host
	local i=$1 e
	if ((i == 0)); then
		for e in "${sender_env[@]}"; do printf -- '--env\n%s\n' "$e"; done
	else
		for e in "${rx_env[@]}"; do printf -- '--env\n%s\n' "$e"; done
	fi
	lab_env_args "$i" "${host_env[@]}"
}
mapfile -t envs < <(host_envs 0)
h0_confs=(--conf "$sender_conf")
[[ -n $sender_receives ]] && h0_confs+=(--conf "$receiver_conf")
lab_audio_up "$id" 0 "${h0_confs[@]}" "${common[@]}" "${envs[@]}" 2>>"$log"
rx_conf() { # rx_conf INDEX -> the drop-in of receiver INDEX
	local c
	for c in "${host_conf[@]}"; do
		if [[ $c == "h$1:"* ]]; then
			realpath "${c#*:}"
			return
		fi
	done
	echo "$receiver_conf"
}
for ((i = 1; i <= receivers; i++)); do
	mapfile -t envs < <(host_envs "$i")
	lab_audio_up "$id" "$i" --conf "$(rx_conf "$i")" "${common[@]}" "${envs[@]}" 2>>"$log"
done
lab_wait "$BARK_LAB_TIMEOUT" "sender sink '$sink' on h0" lab_node_id "$id" 0 "$sink" ||
	lab_die "sender sink '$sink' did not appear (see $out/logs/h0/pipewire.log)"

if [[ -n $sender_cmd ]]; then
	lab_spawn "$id" 0 sender-cmd "$out/sender-cmd.log" bash -c "$sender_cmd" >/dev/null
fi
if [[ -n $rx_cmd ]]; then
	for ((i = 1; i <= receivers; i++)); do
		lab_spawn "$id" "$i" rx-cmd "$out/rx-cmd$i.log" bash -c "${rx_cmd//\{i\}/$i}" >/dev/null
	done
fi

# The music: a 44.1 kHz excerpt, so the graph's resampler is in the path as
# it is for a user playing a CD-rate file. Long enough for warm-up + run.
excerpt=$out/music.wav
total=$((seconds + 40))
sox "$music" "$excerpt" trim "$music_offset" "$total" 2>>"$log" ||
	lab_die "sox could not cut $music"

# Player: a stock client into the network sink, the user's way: pw-play
# with the sink as target, or paplay (through pipewire-pulse) after making
# the sink the default. Its own PID, stopped at teardown.
case $player in
pw-play)
	lab_spawn "$id" 0 pw-play "$out/pw-play.log" pw-play --target "$sink" "$excerpt" >"$out/.player.pid" ;;
paplay)
	lab_exec "$id" 0 pactl set-default-sink "$sink" >>"$log" 2>&1 ||
		lab_die "pactl set-default-sink $sink failed on h0"
	lab_spawn "$id" 0 paplay "$out/paplay.log" paplay "$excerpt" >"$out/.player.pid" ;;
*) lab_die "unknown --player $player (pw-play or paplay)" ;;
esac
lab_pids+=("$(cat "$out/.player.pid")")
lab_log "playing $(basename "$music") (+${music_offset}s) into h0:$sink with $player"

# Receivers must have picked the stream up (rtp-source waits for a SAP
# announcement, every 5 s), bounded.
first_rx=1
[[ -n $sender_receives ]] && first_rx=0
for ((i = first_rx; i <= receivers; i++)); do
	if [[ -n $rx_node ]]; then
		lab_wait 30 "h$i: node '$rx_node'" lab_node_id "$id" "$i" "$rx_node" ||
			lab_die "h$i never created '$rx_node' (see $out/logs/h$i)"
	else
		lab_wait 30 "h$i: a stream into its speaker" lab_speaker_fed "$id" "$i" ||
			lab_die "h$i never played into its speaker (see $out/logs/h$i)"
	fi
done
lab_log "receivers up; settling ${settle}s"
sleep "$settle"

# CPU of each receiver's daemons over the recording window.
declare -A cpu0
snap_cpu() {
	local i w pid
	for ((i = 1; i <= receivers; i++)); do
		for w in pipewire wireplumber pipewire-pulse; do
			pid=$(cat "$(lab_host_dir "$id" "$i")/$w.pid")
			# dbus-run-session is the recorded PID for wireplumber: count
			# the wireplumber process itself.
			[[ $w == wireplumber ]] && pid=$(pgrep -P "$pid" -x wireplumber | head -1)
			printf '%s %s %s\n' "h$i" "$w" "$(lab_cpu_ticks "$pid")"
		done
	done
}
# Context switches (voluntary + involuntary) of every thread of each
# receiver's pipewire: how often its threads sleep and wake.
snap_csw() {
	local i pid
	for ((i = 1; i <= receivers; i++)); do
		pid=$(cat "$(lab_host_dir "$id" "$i")/pipewire.pid")
		printf 'h%s %s\n' "$i" "$(cat /proc/"$pid"/task/*/status 2>/dev/null |
			awk '/^(non)?voluntary_ctxt_switches/ { n += $2 } END { print n + 0 }')"
	done
}
declare -A cpu1 csw0 csw1
# What the sender host sent, all of it (audio, repair, time, status), bytes.
tx_bytes() { ip netns exec "$(lab_ns_host "$id" 0)" cat /sys/class/net/eth0/statistics/tx_bytes; }
tx0=$(tx_bytes)
t_cpu0=$(date +%s.%N)
while read -r h w t; do cpu0[$h.$w]=$t; done < <(snap_cpu)
while read -r h n; do csw0[$h]=$n; done < <(snap_csw)

lab_log "recording ${seconds}s"
# shellcheck disable=SC2046 # one word per host
# The recorders: the reference with as many channels as the sink has.
recorder() { # recorder HOST NODE
	lab_pw_recorder "$@"
	if (($1 == 0)) && [[ $2 != speaker && -n $ref_record_channels ]]; then
		printf '%s\n' --channels "$ref_record_channels"
	fi
}
lab_record_run "$id" "$out" "$seconds" recorder "$sink" $(seq "$first_rx" "$receivers") ||
	lab_die "a recorder overran"
t_cpu1=$(date +%s.%N)
tx1=$(tx_bytes)
awk -v a="$tx0" -v b="$tx1" -v t0="$t_cpu0" -v t1="$t_cpu1" \
	'BEGIN { printf "sender_tx_bytes,seconds,sender_kbit_per_s\n%d,%.3f,%.1f\n", b - a, t1 - t0, 8 * (b - a) / (t1 - t0) / 1000 }' >"$out/net.csv"
while read -r h w t; do cpu1[$h.$w]=$t; done < <(snap_cpu)
while read -r h n; do csw1[$h]=$n; done < <(snap_csw)
hz=$(getconf CLK_TCK)
{
	echo "host,process,cpu_percent_of_one_core"
	for k in "${!cpu1[@]}"; do
		h=${k%%.*} w=${k#*.}
		awk -v a="${cpu0[$k]}" -v b="${cpu1[$k]}" -v hz="$hz" -v t0="$t_cpu0" -v t1="$t_cpu1" -v h="$h" -v w="$w" \
			'BEGIN { printf "%s,%s,%.2f\n", h, w, 100 * (b - a) / hz / (t1 - t0) }'
	done | sort
} >"$out/cpu.csv"
{
	echo "host,pipewire_context_switches_per_s"
	for h in "${!csw1[@]}"; do
		awk -v a="${csw0[$h]}" -v b="${csw1[$h]}" -v t0="$t_cpu0" -v t1="$t_cpu1" -v h="$h" \
			'BEGIN { printf "%s,%.0f\n", h, (b - a) / (t1 - t0) }'
	done | sort
} >"$out/ctxsw.csv"
for f in "$out"/ref.wav "$out"/rx*.wav; do
	[[ -s $f ]] || lab_die "recording $f is missing (see $out/record-*.log)"
done

args=(--reference "$out/ref.wav" --json "$out/analysis.json" --series "$out/series.csv")
for ((i = first_rx; i <= receivers; i++)); do args+=(--receiver "$out/rx$i.wav" --label "h$i"); done
[[ -s $out/stalls.csv ]] && args+=(--stalls "$out/stalls.csv")
args+=("${analyze_extra[@]}")
"$bin/bark-lab-analyze" "${args[@]}" | tee "$out/analysis.txt"
echo "CPU over the ${seconds}s window (% of one core):"
column -s, -t "$out/cpu.csv" | sed 's/^/  /'
echo "Context switches per second, all threads of each receiver's pipewire:"
column -s, -t "$out/ctxsw.csv" | sed 's/^/  /'
echo "Sent by the sender host over the window:"
column -s, -t "$out/net.csv" | sed 's/^/  /'
if [[ -n $wire ]]; then
	# The wires print their counters when stopped.
	while read -r kind pid _ what; do
		[[ $kind == proc && $what == wire* ]] && kill -TERM "$pid" 2>/dev/null
	done <"$(lab_run_dir "$id")/state"
	sleep 1
fi
{
	echo "command: $0 $(printf '%q ' "${orig_args[@]}")"
	echo "sender-conf: $sender_conf"
	echo "receiver-conf: $receiver_conf"
	echo "pipewire: $(lab_exec "$id" 0 pipewire --version 2>/dev/null | tail -1)"
	[[ -z $rootfs ]] || echo "rootfs: $rootfs"
	echo "kernel: $(uname -r)"
} >"$out/session.txt"
lab_log "results in $out"

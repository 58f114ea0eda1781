#!/usr/bin/env bash
# In sync at the speaker, whatever sits after the stream (root).
#
# A sender (conf/bark-sink.conf, default latency) and two receivers
# (conf/bark-source.conf) with clocks skewed as in `make demo`. Receiver h2
# plays into a node that delays by N ms and reports it (bark-lab-delay: its
# sink made h2's default sink, so the playing receiver moves to it, as it
# would to a Bluetooth speaker), then into its speaker; h1 plays straight
# into its speaker. Music plays throughout. For each step the speakers are
# recorded and judged against the sender's sink: skew p99 between the two
# speakers, latency of each, dropouts once the session latency has settled.
#
# Steps (DELAYS, ms; default "20 50 150 0"): the delay changes at run time
# (the node's control file); after each change the session latency rises at
# once to cover h2 (or, for 0, falls back after the hold, ~15 s), then the
# speakers are recorded for SECONDS (10).
#
# Options: --delays "LIST", --seconds S, --max-skew-us (50), --out DIR,
#   --rootfs DIR (hosts in a PipeWire 1.x root).
# Prints per step a line
#   speaker: delay_ms=N session_ms=X latency_ms=h1/h2 skew_p99_us=X dropouts=N
# and exits non-zero if a step breaks a limit.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lanlib.sh
. "$here/lanlib.sh"

usage() { sed -n '2,23s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 2; }
delays="20 50 150 0" seconds=10 max_skew=50 out='' rootfs=''
while (($#)); do
	case $1 in
	--delays) delays=$2; shift 2 ;;
	--seconds) seconds=$2; shift 2 ;;
	--max-skew-us) max_skew=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--rootfs) rootfs=$2; shift 2 ;;
	-h | --help) usage ;;
	*) lab_die "unknown option $1 (try --help)" ;;
	esac
done
lab_require_root
lab_lock
[[ -n $rootfs ]] && export BARK_LAB_ROOTFS=$rootfs
lab_bins "run 'make lab-build'" bark-lab-record bark-lab-analyze bark-lab-delay bark-lab-summary bark-lab-stalls
moddir=$repo/target/pw-modules
music=$(lab_music) || exit 1
out=$(lab_out_dir "$out" "$repo/lab/out/speaker-$(date +%Y%m%d-%H%M%S)")
id=sp$((RANDOM % 10000))
lab_traps lab_session_exit "$id" "$out" "$out/lab.log"

steps=($delays)
((${#steps[@]} >= 1)) || lab_die "--delays is empty"
total=$((30 + ${#steps[@]} * (seconds + 30)))
sox "$music" -r 44100 -c 2 "$out/music.wav" trim 30 "$total" 2>>"$out/sox.log" ||
	lab_die "sox could not cut the music"

lab_up "$id" 3 2>>"$out/lab.log" || exit 1
dbg=(--env PIPEWIRE_DEBUG=2,mod.bark:4)
lab_audio_up "$id" 0 --conf "$repo/conf/bark-sink.conf" --module-dir "$moddir" "${dbg[@]}" 2>>"$out/lab.log" || exit 1
lab_audio_up "$id" 1 --conf "$repo/conf/bark-source.conf" --module-dir "$moddir" "${dbg[@]}" \
	--env BARK_TEST_CLOCK=-300000,-60 2>>"$out/lab.log" || exit 1
lab_audio_up "$id" 2 --conf "$repo/conf/bark-source.conf" --module-dir "$moddir" "${dbg[@]}" \
	--env BARK_TEST_CLOCK=150000,80 2>>"$out/lab.log" || exit 1
lab_wait "$BARK_LAB_TIMEOUT" "bark_sink on h0" lab_node_id "$id" 0 bark_sink || exit 1

# The delaying node on h2, made its default sink: the receiver follows.
ctl=$(lab_host_dir "$id" 2)/delay.ctl
echo 0 >"$ctl"
lab_pids+=("$(lab_spawn "$id" 2 delay "$out/delay.log" "$bin/bark-lab-delay" \
	--msec 0 --max-msec 500 --name delay --target speaker --control "$ctl")")
lab_wait "$BARK_LAB_TIMEOUT" "delay node on h2" lab_node_id "$id" 2 delay || exit 1
lab_exec "$id" 2 wpctl set-default "$(lab_node_id "$id" 2 delay)" >>"$out/lab.log" 2>&1

lab_pids+=("$(lab_spawn "$id" 0 player "$out/pw-play.log" pw-play --target bark_sink "$out/music.wav")")
into_delay() { lab_exec "$id" 2 pw-link -l 2>/dev/null | grep -A2 '^delay:playback_FL' | grep -q bark_source; }
lab_wait 30 "h2's receiver playing into the delay node" into_delay ||
	lab_die "h2's receiver never played into the delay node (see $out/logs)"
lab_wait 30 "h1 playing" lab_speaker_fed "$id" 1 || exit 1
# Everything settled (the start-up's graph changes) before the first step.
sleep 4

session_ms() { # the latency the sender's status last logged, or the base
	grep -h 'session latency' "$(lab_host_dir "$id" 0)/logs/pipewire.log" 2>/dev/null |
		tail -1 | sed -n 's/.*latency \(raised to\|back to\) \([0-9.]*\) ms.*/\2/p'
}

failed=0 k=0
for d in "${steps[@]}"; do
	step=$out/step$k-$d
	mkdir -p "$step"
	echo "$d" >"$ctl"
	# A rise is at once, then the receivers' loops settle; a fall waits out
	# the hold (receiver 5 s, sender 10 s after the report expired).
	prev=$((k > 0 ? ${steps[k - 1]} : 0))
	if ((d < prev)); then sleep 22; else sleep 8; fi
	lab_record_run "$id" "$step" "$seconds" lab_pw_recorder bark_sink 1 2 || true
	"$bin/bark-lab-analyze" --reference "$step/ref.wav" --receiver "$step/rx1.wav" --label h1 \
		--receiver "$step/rx2.wav" --label h2 --stalls "$step/stalls.csv" \
		--json "$step/analysis.json" >"$step/analysis.txt" 2>&1
	sess=$(session_ms)
	sess=${sess:-40}
	if "$bin/bark-lab-summary" --prefix "speaker delay_ms=$d session_ms=$sess" \
		--max-skew-us "$max_skew" --max-dropouts 0 --min-fidelity 0.9 "$step/analysis.json" \
		>"$step/summary.txt" 2>&1; then
		tail -1 "$step/summary.txt"
	else
		cat "$step/summary.txt"
		failed=$((failed + 1))
	fi
	k=$((k + 1))
done
grep -h 'session latency\|playing .* late\|in sync again' "$(lab_host_dir "$id" 0)/logs/pipewire.log" \
	"$(lab_host_dir "$id" 2)/logs/pipewire.log" 2>/dev/null | sed 's/^/  log: /' | tail -12
echo "speaker: ${#steps[@]} steps, $failed failed (results in $out)"
((failed == 0))

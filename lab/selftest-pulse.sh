#!/usr/bin/env bash
# Lab self-test for PulseAudio hosts: checks bark-lab-pulse's timestamps.
#
# One PulseAudio host (lab/palib.sh). `bark-lab-pulse play` plays noise into
# the speaker and stamps, from the *playback* stream's timing reports, when
# each frame will be heard; `bark-lab-pulse record` records the speaker's
# monitor and stamps, from the *monitor* record stream's reports, when each
# frame was played. Those are different paths through the server (sink
# input vs monitor source), on one CLOCK_MONOTONIC, so the analyzed latency
# between them must be ~0 and the fidelity ~1.
#
#   lab/selftest-pulse.sh [--max-us N (20)]
# Exit 0 when the check passes. Needs root (network namespaces).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lanlib.sh
. "$here/lanlib.sh"
# shellcheck source=palib.sh
. "$here/palib.sh"

max_us=20
while (($#)); do
	case $1 in
	--max-us) max_us=$2; shift 2 ;;
	*) lab_die "unknown option $1" ;;
	esac
done
lab_require_root
lab_bins "cargo build --release -p bark-lab-pulse -p bark-lab" bark-lab-pulse bark-lab-analyze
id=q$(($$ % 100000))
out=$(mktemp -d /tmp/bark-selftest-pulse.XXXXXX)
lab_traps lab_scratch_exit "$id" "$out"

lab_up "$id" 1 2>/dev/null
lab_pa_up "$id" 0 2>/dev/null
lab_spawn "$id" 0 record "$out/rec.log" "$bin/bark-lab-pulse" record \
	--device speaker.monitor --seconds 6 --out "$out/rec.wav" >"$out/.pid"
sleep 0.5
lab_exec "$id" 0 "$bin/bark-lab-pulse" play --device speaker --seconds 5 --out "$out/play.wav" \
	2>>"$out/play.log"
lab_wait_pids 15 "$(cat "$out/.pid")" || true
"$bin/bark-lab-analyze" --reference "$out/play.wav" --receiver "$out/rec.wav" --json "$out/a.json" >"$out/a.txt"
python3 - "$out/a.json" "$max_us" <<-'PY'
	import json, sys
	r = json.load(open(sys.argv[1]))["receivers"][0]
	lat_us = r["latency_ms"]["p50"] * 1000
	spread_us = (r["latency_ms"]["max"] - r["latency_ms"]["min"]) * 1000
	fid = r["fidelity"]["mean"]
	ok = abs(lat_us) <= float(sys.argv[2]) and fid >= 0.999 and r["dropouts"] == 0
	print(f"PulseAudio playback vs monitor stamps: latency p50 {lat_us:.1f} us "
	      f"(max |.| {sys.argv[2]}), spread {spread_us:.1f} us, fidelity {fid:.5f}: "
	      f"{'ok' if ok else 'FAIL'}")
	sys.exit(0 if ok else 1)
PY
lab_log "selftest-pulse: passed"

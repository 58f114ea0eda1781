#!/usr/bin/env bash
# End-to-end tests of bark-pulse (Bark on PulseAudio) against real
# `pulseaudio` daemons and Bark's PipeWire modules, in network namespaces
# (root). Each case is one lab/run-pa-session.sh run whose analysis must
# meet the limits below; exits non-zero if any case fails and prints
# "pulse lab: N passed, N failed".
#
# Cases:
#  0. selftest: the PulseAudio recorder's stamps against the player's
#     (two different server paths) agree within 20 µs.
#  1. pa-to-pw: paplay into bark-pulse's "Bark Network" sink; two PipeWire
#     receivers and one bark-pulse receiver, all with artificial clock
#     errors (offset and -60..+80 ppm).
#  2. pw-to-pa: pw-play into the PipeWire module's sink; two bark-pulse
#     receivers and one PipeWire receiver, with clock errors.
#  3. pipewire-pulse: bark-pulse as a client of pipewire-pulse on PipeWire
#     hosts, as the sender and as one receiver, beside a PipeWire-module
#     receiver and a pulseaudio one.
#  4. recovery: receivers start before the sender; the PulseAudio sender is
#     killed -9 and restarted (it must clean up its stale sink, receivers
#     must follow the new session); a receiver's pulseaudio, then the
#     sender's, is killed and restarted (bark-pulse must reconnect, same
#     PID; the sender reloads its sink). Then recorded.
#  5. opus: bark-pulse's sink sending Opus (format = "OPUS", 160 kbit/s,
#     10 ms frames) to a bark-pulse receiver and a PipeWire one (issue 17:
#     every front end offers Opus), with clock errors.
#
# Limits per case: every receiver's fidelity ≥ 0.9, no dropouts or jumps
# (beyond those within a stall of the machine itself: bark-lab-stalls),
# median latency within 0.5 ms of the sender's 40 ms; skew p99 ≤ 100 µs
# between two PipeWire-module receivers, ≤ 500 µs for any pair with a
# bark-pulse receiver on pulseaudio (the issue's goal; PulseAudio's timing
# is coarser), ≤ 1 ms with bark-pulse on pipewire-pulse. One reported retry
# per case.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lanlib.sh
. "$here/lanlib.sh"
cd "$repo" || exit 1
stamp=$(date +%Y%m%d-%H%M%S)
passed=0 failed=0 retried=()
mkdir -p "$repo/lab/out"

check() { # check ANALYSIS.JSON NAME [LIMIT_US for pairs with bark-pulse]
	python3 - "$1" "$2" "${3:-500}" <<-'PY'
		import json, sys
		d = json.load(open(sys.argv[1]))
		name, bad = sys.argv[2], []
		st = d.get("machine_stalls_ms", [])
		if st: print(f"  machine stalls: {len(st)} (longest {max(st):.1f} ms)")
		for r in d["receivers"]:
		    lab, lat = r["label"], r["latency_ms"]["p50"]
		    fid = r["fidelity"]["mean"]
		    # Those within the reach of a stall of the machine itself
		    # (bark-lab-stalls: not even a top-priority thread ran) are
		    # reported, not failed: nothing plays through those.
		    stalled = r.get("dropouts_in_stalls", 0) + r.get("jumps_in_stalls", 0)
		    drops = r["dropouts"] + r["jumps"] - stalled
		    note = f" (and {stalled} in machine stalls)" if stalled else ""
		    print(f"  {lab}: latency {lat:.3f} ms, fidelity {fid:.4f}, dropouts+jumps {drops}{note}")
		    if not fid >= 0.9: bad.append(f"{lab} fidelity {fid:.4f} < 0.9")
		    if drops: bad.append(f"{lab}: {drops} dropouts/jumps")
		    if not abs(lat - 40.0) <= 0.5: bad.append(f"{lab} latency {lat:.3f} ms not 40 +- 0.5")
		for p in d["pairs"]:
		    k = p["abs_skew_us"]["p99"]
		    kinds = {p["a"][-2:], p["b"][-2:]}
		    lim = 100.0 if kinds == {"pw"} else float(sys.argv[3])
		    print(f"  skew {p['b']} - {p['a']}: p99 {k:.1f} us (limit {lim:.0f})")
		    if not k <= lim: bad.append(f"skew {p['b']}-{p['a']} p99 {k:.1f} us > {lim:.0f}")
		for b in bad: print(f"{name}: FAIL {b}")
		print(f"{name}: {'ok' if not bad else 'FAILED'}")
		sys.exit(1 if bad else 0)
	PY
}

session() { # session OUT NAME SESSION-ARGS...: one try
	local out=$1 name=$2 pa_limit=500
	shift 2
	# bark-pulse on pipewire-pulse (whose reports are per graph cycle, see
	# pulse-module/src/timing.rs): 1 ms.
	[[ $* == *pp* ]] && pa_limit=1000
	"$here/run-pa-session.sh" --out "$out" "$@" >"$out.log" 2>&1 &&
		check "$out/analysis.json" "$name" "$pa_limit" || return 1
	[[ -f $out/events.txt ]] && sed 's/^/  /' "$out/events.txt"
	return 0
}

# case_run NAME SESSION-ARGS...: up to two tries (lab_case)
case_run() { lab_case "$1" "$repo/lab/out/pulse-$stamp-$1" session "$@"; }

echo "== selftest"
# One reported retry, as every case has: the self-test is PulseAudio and
# the lab's own tools alone, and a machine stall during its 5 s costs its
# fidelity (CI of 9c7302c: 0.99813 against ≥ 0.999, nothing of Bark in it).
if "$here/selftest-pulse.sh" || { echo "selftest: retrying once"; "$here/selftest-pulse.sh"; }; then
	passed=$((passed + 1))
else
	failed=$((failed + 1))
fi

# shellcheck disable=SC2054 # the commas are inside values
drift=(--host-env h1:BARK_TEST_CLOCK=-300000,-60 --host-env h2:BARK_TEST_CLOCK=150000,80
	--host-env h3:BARK_TEST_CLOCK=50000,-30)
case_run pa-to-pw --sender pa --receivers pw,pw,pa --seconds 20 "${drift[@]}"
case_run pw-to-pa --sender pw --receivers pa,pa,pw --seconds 20 "${drift[@]}"
case_run pipewire-pulse --sender pp --receivers pw,pa,pp --seconds 15
case_run recovery --sender pa --receivers pa,pw --seconds 10 --crash-sender --restart-pa h1 --restart-pa h0 \
	--host-env h1:BARK_TEST_CLOCK=-300000,-60
case_run opus --sender pa --receivers pa,pw --seconds 15 --sender-arg --format --sender-arg OPUS \
	--host-env h2:BARK_TEST_CLOCK=150000,80
if [[ -n $(ip netns list | grep -E '^bark[pq][0-9]+-' || true) ]]; then
	echo "pulse lab: namespaces left behind:"; ip netns list | grep -E '^bark[pq][0-9]+-'
	failed=$((failed + 1))
fi
((${#retried[@]} == 0)) || echo "pulse lab: passed only on a retry: ${retried[*]}"
echo "pulse lab: $passed passed, $failed failed"
((failed == 0))

#!/usr/bin/env bash
# Fault-injection scenarios (root): headless `bark stream` / `bark receive`
# in lab namespaces (lab/lanlib.sh), real music, receivers with artificial
# clock errors, faults from bark-lab-relay (loss, partition) and
# bark-lab-hostile. Receivers write what they would play with
# CLOCK_MONOTONIC stamps (ground truth across namespaces); bark-lab-analyze
# and lab/robust-check.py turn that into the figures each case asserts.
#
#   lab/test-robust.sh [CASE...]     (default: every case; docs/ROBUSTNESS.md)
#
# Cases:
#   loss5       5 % random loss through the relay: every lost packet
#               repaired (bark.repair; none lost, late or given up, repaired
#               3..8 % of the packets, no dropout), fidelity ≥ 0.99, skew
#               p99 ≤ 100 µs, no resync after the start-up (jumps ≤ 1, clock
#               resets 0).
#   partition   3 s partition: the receivers play digital silence during it
#               (peak ≤ 1e-4 from 0.2 s in), then |latency − before| ≤ 100 µs
#               for 5 windows in a row starting ≤ 1 s after the network returns.
#   restart     the sender is killed and a new one starts (new session, other
#               music): in sync with it ≤ 1 s after its first packet.
#   join        a receiver joins 8 s into the stream: within 100 µs of the
#               other receiver's latency ≤ 1 s after it started.
#   two         two senders on one group, streams "alpha" and "beta": each
#               receiver plays its own (fidelity ≥ 0.9 against its sender).
#   hostile     bark-lab-hostile sends 10 s of malformed and forged packets
#               and copies of the live session (replayed, shifted, flipped),
#               FEC repair packets with random shards for the live block,
#               NACKs and Subscribes with forged cookies to the sender (no
#               answer; refused and counted), subscribes itself from 6 ports
#               (served on at most 4), and a 2 s flood at the group while
#               two receivers play: both
#               run to the end and play throughout, every malformed datagram
#               is counted, fidelity ≥ 0.9, skew p99 ≤ 100 µs, no jump, no
#               dropout outside the flood (during it genuine packets are lost
#               with the rest and concealed).
#   flap        a sender that starts and stops every 100 ms for 30 s (300
#               sessions, `bark stream` killed each time) at two receivers
#               running the PipeWire module: afterwards both play the next
#               stream (fidelity ≥ 0.9, skew p99 ≤ 100 µs, no dropout), and
#               neither receiving daemon crashed or grew over the 30 s (fds
#               equal, RSS within 2 MiB).
#   unicast     two receivers given the sender's address (bark.sender) and
#               no group: they subscribe and get the stream unicast
#               (docs/PROTOCOL.md, Subscribe): fidelity ≥ 0.99, played
#               throughout, no dropout, skew p99 ≤ 100 µs; the sender took
#               both subscriptions and sent each a copy of every audio
#               packet; a receiver on the group (rx3, no bark.sender) still
#               plays the multicast copy in sync with them. rx2 has
#               bark.profile = wifi: the session latency goes to 250 ms
#               and every receiver plays there. rx4 joins no group and
#               does not subscribe: the sender lists its address in
#               destination.ip (a list), and it plays in sync too.
#   loss3       issue 14's acceptance on a lossy LAN: each of two multicast
#               receivers behind its own bark-lab-wire losing 3 % of the
#               frames at random, both ways, 60 s at the default 40 ms:
#               ≥ 2 % of the packets repaired, all in time, no
#               damaged window (correlation < 0.9), dropouts ≤ 8 ms, skew
#               p99 ≤ 50 µs.
#   opus-loss3  loss3 with an Opus stream (`bark stream --format OPUS`,
#               160 kbit/s, 10 ms frames), at 60 ms (Opus's framing takes
#               12.5 ms of the repair window: docs/BENCHMARKS.md "Opus"):
#               lost packets repaired in time (at most 8 not: those before
#               the first Cookie), no damaged window, dropouts ≤ 8 ms,
#               skew p99 ≤ 100 µs (held notes through the codec).
#   opus-unicast  unicast with an Opus stream (`--format OPUS`): the same
#               limits, and every receiver (subscribed, listed, on the
#               group) decoded every Opus packet, none invalid.
#   wifi        the same on the Wi-Fi model (NetModel::wifi_station: bursty
#               3 % loss, 20-200 ms stalls, a 150 ms outage every 5 s), two
#               unicast receivers on bark.profile = wifi (250 ms): no
#               damaged window, dropouts ≤ 15 ms (an outage and a stall
#               together can outlast the latency), skew p99 ≤ 100 µs.
#
# ROBUST_RX_ARGS: extra `bark receive` flags for every receiver, for an
# A/B run (e.g. ROBUST_RX_ARGS="--repair false").
#
# One reported retry per case (lab hosts have no real-time scheduling on a
# shared 2-core box), never a silent one. Results: lab/out/robust-<time>/.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lanlib.sh
. "$here/lanlib.sh"
lab_require_root
bark=${BARK_BIN:-$repo/target/release/bark}
labbin=${BARK_LAB_BIN:-$repo/target/release}
relay=$labbin/bark-lab-relay
wire=$labbin/bark-lab-wire
hostile=$labbin/bark-lab-hostile
analyzer=$labbin/bark-lab-analyze
check=$here/robust-check.py
for b in "$bark" "$relay" "$wire" "$hostile" "$analyzer"; do
	[[ -x $b ]] || lab_die "$b missing: make cli lab-build"
done
music=$(lab_music) || exit 1
out=$repo/lab/out/robust-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
group=239.255.66.66
relay_ip=10.99.0.2

current_id=''
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[[ -n $current_id ]] && lab_down "$current_id" >>"$out/lab.log" 2>&1
	exit "$rc"
}
lab_traps cleanup

mono_ns() { python3 -c 'import time; print(time.monotonic_ns())'; }

# Two excerpts of the music (44.1 kHz, as a player would hand them over):
# A for most cases, B where a second sender must be told apart.
sox "$music" "$out/music-a.wav" trim 60 45 2>>"$out/lab.log" || lab_die "sox failed"
sox "$music" "$out/music-b.wav" trim 120 45 2>>"$out/lab.log" || lab_die "sox failed"
# C: the minute issue 14's acceptance plays.
sox "$music" "$out/music-c.wav" trim 60 62 2>>"$out/lab.log" || lab_die "sox failed"

# Each receiver's artificial clock error (offset ns, rate ppm), by name.
# shellcheck disable=SC2054 # the commas are inside values
declare -A clock=([rx1]=-300000,-40 [rx2]=200000,50 [rx3]=-100000,20 [rx4]=150000,-30)

# rx ID HOST NAME DIR SECONDS [ARGS...]: a receiver with its clock error;
# prints its PID.
rx() {
	local id=$1 h=$2 name=$3 dir=$4 secs=$5
	shift 5
	lab_spawn "$id" "$h" "$name" "$dir/$name.log" "$bark" receive --local-ifname eth0 \
		--seconds "$secs" --node-name "$name" --output "$dir/$name.wav" \
		--summary "$dir/$name.json" --test-clock "${clock[$name]}" ${ROBUST_RX_ARGS:-} "$@"
}

# recovery DIR RX EVENT_NS BASE...: robust-check.py's recovery of receiver
# RX after EVENT_NS against its BASE latency (--base-ms MS, or --base-from
# and --base-to NS), into DIR/RX-recovery.json. Never fails: the case's
# checks judge what it wrote (an error there too).
recovery() {
	local dir=$1 r=$2 ev=$3
	shift 3
	python3 "$check" recovery --series "$dir/series.csv" --label "$r" --ts "$dir/$r.ts.csv" \
		--event "$ev" "$@" >"$dir/$r-recovery.json" || true
}

# tx ID HOST NAME DIR SECONDS INPUT [ARGS...]: a sender; prints its PID.
tx() {
	local id=$1 h=$2 name=$3 dir=$4 secs=$5 input=$6
	shift 6
	lab_spawn "$id" "$h" "$name" "$dir/$name.log" "$bark" stream --input "$input" \
		--local-ifname eth0 --seconds "$secs" --node-name "$name" \
		--record "$dir/$name.wav" --summary "$dir/$name.json" "$@"
}

# relay_up ID DIR SECONDS IMPAIRMENTS...: bark-lab-relay on h1; prints its PID.
relay_up() {
	local id=$1 dir=$2 secs=$3
	shift 3
	lab_spawn "$id" 1 relay "$dir/relay.log" "$relay" --listen "$relay_ip:1530" \
		--to "$group:1530" --seconds "$secs" --stats "$dir/relay.json" "$@"
}

# analyze DIR REF RX...: analysis.json and series.csv of receivers against REF.
# SETTLE (s, default 3) skips each receiver's start-up.
analyze() {
	local dir=$1 ref=$2 r args=()
	shift 2
	args=(--reference "$dir/$ref.wav" --json "$dir/analysis.json" --series "$dir/series.csv" --settle-s "${SETTLE:-3}")
	for r in "$@"; do args+=(--receiver "$dir/$r.wav" --label "$r"); done
	# shellcheck disable=SC2206 # ANALYZE_EXTRA is a word list by design
	args+=(${ANALYZE_EXTRA:-})
	"$analyzer" "${args[@]}" >"$dir/analysis.txt" 2>&1 || { tail -5 "$dir/analysis.txt"; return 1; }
	cat "$dir/analysis.txt"
}

# json FILE EXPR: evaluate a Python expression on the JSON in FILE (as j).
json() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }

# verdict DIR: run the assertions a case wrote into DIR/checks.py (Python,
# with load, need, in_sync and skew_within_100us); they print each figure and exit 1 naming
# the limits broken. Run after each case that completed.
verdict() {
	python3 - "$1" <<-'EOF'
	import json, sys, os
	d = sys.argv[1]
	bad = []
	def load(n):
	    return json.load(open(os.path.join(d, n)))
	def need(ok, what):
	    print(("  ok   " if ok else "  FAIL ") + what)
	    if not ok: bad.append(what)
	def in_sync(rec, what):  # a recovery (robust-check.py) within 1 s
	    need(rec.get("recovery_ms") is not None and rec["recovery_ms"] <= 1000, what)
	def skew_within_100us(a):  # every receiver pair of an analysis.json
	    for p in a["pairs"]:
	        print(f"  skew {p['a']}-{p['b']}: |skew| p99 {p['abs_skew_us']['p99']:.1f} us")
	        need(p["abs_skew_us"]["p99"] <= 100, "skew p99 ≤ 100 µs")
	exec(open(os.path.join(d, "checks.py")).read())
	sys.exit(1 if bad else 0)
	EOF
}

# The cases: case_NAME ID DIR runs one on a LAN it brings up as run ID,
# results into DIR. Each first writes what it asserts (DIR/checks.py, for
# verdict once it has completed), then plays it out.

# relayed ID DIR SECONDS IMPAIRMENT...: 4 hosts; music A for SECONDS from
# the sender (h0) through bark-lab-relay (h1, with IMPAIRMENT) to rx1 (h2)
# and rx2 (h3), then both analyzed against what the sender sent.
relayed() {
	local id=$1 dir=$2 secs=$3 r1 r2 t rl
	shift 3
	lab_up "$id" 4 2>>"$out/lab.log" || return 1
	rl=$(relay_up "$id" "$dir" 30 "$@")
	r1=$(rx "$id" 2 rx1 "$dir" 26)
	r2=$(rx "$id" 3 rx2 "$dir" 26)
	sleep 1
	t=$(tx "$id" 0 tx "$dir" "$secs" "$out/music-a.wav" --destination-ip "$relay_ip")
	lab_wait_pids 60 "$t" "$r1" "$r2" || return 1
	kill -TERM "$rl" 2>/dev/null
	lab_wait_pids 10 "$rl"
	analyze "$dir" tx rx1 rx2
}

case_loss5() {
	local id=$1 dir=$2
	cat >"$dir/checks.py" <<-'EOF'
	a = load("analysis.json"); relay = load("relay.json")
	print("  relay:", relay)
	for r in a["receivers"]:
	    s = load(r["label"] + ".json")
	    c = s["counters"]
	    rep = c["repaired"] / max(1, c["packets"])
	    print(f"  {r['label']}: fidelity {r['fidelity']['mean']:.4f} lost {c['lost']} late {c['late']} repaired {c['repaired']} ({100*rep:.2f} %) repair {c['repair']} concealed {c['concealed_frames']} jumps {s['jumps']} clock_resets {s['clock_resets']} dropouts {r['dropouts']}")
	    need(r["fidelity"]["mean"] >= 0.99, f"{r['label']} fidelity ≥ 0.99")
	    # 20 s of audio, 3 s settle, a window every 100 ms: about 170.
	    need(r["windows"] >= 150, f"{r['label']} played throughout ({r['windows']} analysis windows ≥ 150)")
	    need(c["lost"] == 0 and c["late"] == 0 and c["repair"]["expired"] == 0, f"{r['label']} nothing lost, late or given up")
	    need(0.03 <= rep <= 0.08, f"{r['label']} repaired 3..8 % of the packets")
	    need(r["dropouts"] == 0, f"{r['label']} no dropout")
	    need(s["jumps"] <= 1, f"{r['label']} no resync after start-up (jumps ≤ 1)")
	    need(s["clock_resets"] == 0, f"{r['label']} clock never reset")
	skew_within_100us(a)
	EOF
	relayed "$id" "$dir" 20 --loss 5 --seed 5
}

case_partition() {
	local id=$1 dir=$2
	cat >"$dir/checks.py" <<-'EOF'
	relay = load("relay.json"); print("  relay:", relay)
	p = relay["partitions"][0]
	print(f"  partition {(p['end_ns'] - p['start_ns']) / 1e9:.3f} s")
	for r in ("rx1", "rx2"):
	    rec = load(r + "-recovery.json"); sil = load(r + "-silence.json"); s = load(r + ".json")
	    print(f"  {r}: during the partition {sil}; after it {rec}; jumps {s['jumps']}")
	    need(sil.get("peak", 1.0) <= 1e-4, f"{r} silent during the partition")
	    in_sync(rec, f"{r} back in sync ≤ 1 s after the network returns")
	EOF
	relayed "$id" "$dir" 22 --partition 9:3 || return 1
	local ps pe t0 r
	ps=$(json "$dir/relay.json" 'j["partitions"][0]["start_ns"]')
	pe=$(json "$dir/relay.json" 'j["partitions"][0]["end_ns"]')
	t0=$(sed -n 3p "$dir/tx.ts.csv" | cut -d, -f3)
	for r in rx1 rx2; do
		python3 "$check" level --wav "$dir/$r.wav" --ts "$dir/$r.ts.csv" \
			--from $((ps + 200000000)) --to "$pe" >"$dir/$r-silence.json"
		recovery "$dir" "$r" "$pe" --base-from $((t0 + 3000000000)) --base-to "$ps"
	done
}

case_restart() {
	local id=$1 dir=$2 r1 r2 t1 t2 ev
	cat >"$dir/checks.py" <<-'EOF'
	for r in ("rx1", "rx2"):
	    rec = load(r + "-recovery.json")
	    print(f"  {r}: after the new sender's first packet {rec}")
	    in_sync(rec, f"{r} follows the new session ≤ 1 s")
	EOF
	lab_up "$id" 3 2>>"$out/lab.log" || return 1
	r1=$(rx "$id" 1 rx1 "$dir" 24)
	r2=$(rx "$id" 2 rx2 "$dir" 24)
	sleep 1
	t1=$(tx "$id" 0 tx1 "$dir" 30 "$out/music-a.wav")
	sleep 8
	# A crash, not a clean stop: the old session just goes quiet.
	kill -KILL "$t1"
	t2=$(tx "$id" 0 tx2 "$dir" 12 "$out/music-b.wav")
	lab_wait_pids 60 "$t2" "$r1" "$r2" || return 1
	analyze "$dir" tx2 rx1 rx2 || return 1
	ev=$(sed -n 3p "$dir/tx2.ts.csv" | cut -d, -f3)
	for r in rx1 rx2; do
		recovery "$dir" "$r" "$ev" --base-from $((ev + 3000000000)) --base-to $((ev + 60000000000))
	done
}

case_join() {
	local id=$1 dir=$2 r1 r2 t ev base
	cat >"$dir/checks.py" <<-'EOF'
	rec = load("rx2-recovery.json")
	print(f"  rx2 (joined 8 s in), against rx1's latency: {rec}")
	in_sync(rec, "rx2 in sync ≤ 1 s after joining")
	EOF
	lab_up "$id" 3 2>>"$out/lab.log" || return 1
	r1=$(rx "$id" 1 rx1 "$dir" 24)
	sleep 1
	t=$(tx "$id" 0 tx "$dir" 20 "$out/music-a.wav")
	sleep 8
	ev=$(mono_ns)
	r2=$(rx "$id" 2 rx2 "$dir" 14)
	lab_wait_pids 60 "$t" "$r1" "$r2" || return 1
	# No settle: the joiner's start-up is what is measured.
	SETTLE=0 analyze "$dir" tx rx1 rx2 || return 1
	base=$(json "$dir/analysis.json" '[r for r in j["receivers"] if r["label"] == "rx1"][0]["latency_ms"]["p50"]')
	recovery "$dir" rx2 "$ev" --base-ms "$base"
}

case_two() {
	local id=$1 dir=$2 r1 r2 ta tb
	cat >"$dir/checks.py" <<-'EOF'
	for sub, r in (("a", "rx1"), ("b", "rx2")):
	    x = load(sub + "/analysis.json")["receivers"][0]
	    print(f"  {r} against its own sender: fidelity {x['fidelity']['mean']:.4f} dropouts {x['dropouts']} jumps {x['jumps']}")
	    need(x["fidelity"]["mean"] >= 0.9, f"{r} plays its own stream (fidelity ≥ 0.9)")
	    need(x["dropouts"] == 0 and x["jumps"] == 0, f"{r} never switched (no dropout, no jump)")
	EOF
	lab_up "$id" 4 2>>"$out/lab.log" || return 1
	r1=$(rx "$id" 2 rx1 "$dir" 18 --stream alpha)
	r2=$(rx "$id" 3 rx2 "$dir" 18 --stream beta)
	sleep 1
	ta=$(tx "$id" 0 txa "$dir" 15 "$out/music-a.wav" --stream alpha)
	tb=$(tx "$id" 1 txb "$dir" 15 "$out/music-b.wav" --stream beta --priority 5)
	lab_wait_pids 60 "$ta" "$tb" "$r1" "$r2" || return 1
	mkdir -p "$dir/a" "$dir/b"
	"$analyzer" --reference "$dir/txa.wav" --receiver "$dir/rx1.wav" --label rx1 --settle-s 3 \
		--json "$dir/a/analysis.json" >"$dir/a/analysis.txt" 2>&1 || return 1
	"$analyzer" --reference "$dir/txb.wav" --receiver "$dir/rx2.wav" --label rx2 --settle-s 3 \
		--json "$dir/b/analysis.json" >"$dir/b/analysis.txt" 2>&1 || return 1
	cat "$dir/a/analysis.txt" "$dir/b/analysis.txt"
}

case_hostile() {
	local id=$1 dir=$2 r1 r2 t
	cat >"$dir/checks.py" <<-'EOF'
	h = load("hostile.json"); print("  sent:", h)
	malformed = sum(h[k] for k in ("random", "truncated", "oversized", "version", "magic", "fields"))
	# Copies of the live session (replayed, shifted, flipped) from the
	# hostile host's own address: refused without a trace (core/src/trust.rs).
	copies = h["replay"] + h["shifted"] + h["flipped"]
	need(copies >= 1500, f"the mix carried {copies} copies of the live session (≥ 1500)")
	# Requests to the sender itself: forged cookies are refused without an
	# answer; the hostile host's own subscriptions are capped per host.
	tx = load("tx.json"); subs = tx["subscriptions"]; rep = tx["repair"]
	print(f"  sender: subscriptions {subs}; repair {rep}")
	need(h["answers_to_forged"] == 0, "no answer to a forged NACK or Subscribe")
	need(rep["bad_cookie"] >= 0.9 * h["nack-forged"], f"forged NACKs refused ({rep['bad_cookie']} of {h['nack-forged']})")
	need(subs["refused_cookie"] >= 0.9 * h["sub-forged"], f"forged Subscribes refused ({subs['refused_cookie']} of {h['sub-forged']})")
	need(h["own_cookies"] == h["own_subscriptions"], "every Hello of the hostile host answered with a cookie")
	need(1 <= h["own_served"] <= 4 and subs["refused_full"] >= 1, f"its own subscriptions served on at most 4 ports ({h['own_served']} of {h['own_subscriptions']})")
	a = load("analysis.json")
	for r in a["receivers"]:
	    s = load(r["label"] + ".json")
	    print(f"  {r['label']}: rx {s['rx']} jumps {s['jumps']} clock_resets {s['clock_resets']} fidelity {r['fidelity']['mean']:.4f} dropouts {r['dropouts']}")
	    need(s["wall_s"] > 20, f"{r['label']} ran to the end")
	    need(s["rx"]["malformed"] >= malformed, f"{r['label']} counted every malformed datagram of the mix (≥ {malformed})")
	    # 22 s of audio, 3 s settle, a window every 100 ms: about 190.
	    need(r["windows"] >= 170, f"{r['label']} played throughout ({r['windows']} analysis windows ≥ 170)")
	    need(r["fidelity"]["mean"] >= 0.9, f"{r['label']} fidelity ≥ 0.9")
	    need(r["jumps"] == 0, f"{r['label']} no jump")
	    # The flood fills the link and the receivers' socket buffers: some
	    # genuine packets are lost then, and concealed. Outside it (the
	    # whole malformed/forged mix included) nothing may be lost.
	    t0 = int(open(os.path.join(d, r["label"] + ".ts.csv")).read().splitlines()[2].split(",")[2])
	    at = [t0 + x * 1e9 for x in r["dropout_at_s"]]
	    inside = [t for t in at if h["flood_start_ns"] - 1e8 <= t <= h["flood_end_ns"] + 5e8]
	    print(f"  {r['label']}: dropouts {len(at)}, {len(inside)} of them during the {(h['flood_end_ns'] - h['flood_start_ns']) / 1e9:.1f} s flood ({r['dropout_ms']:.1f} ms in all)")
	    need(len(at) == len(inside), f"{r['label']} no dropout outside the flood")
	skew_within_100us(a)
	EOF
	lab_up "$id" 4 2>>"$out/lab.log" || return 1
	r1=$(rx "$id" 2 rx1 "$dir" 26 --stream default)
	r2=$(rx "$id" 3 rx2 "$dir" 26)
	sleep 1
	t=$(tx "$id" 0 tx "$dir" 22 "$out/music-a.wav")
	sleep 3
	lab_exec "$id" 1 "$hostile" --local 10.99.0.2 --seconds 10 --pps 500 \
		--flood-seconds 2 >"$dir/hostile.json" 2>"$dir/hostile.log" || {
		tail -3 "$dir/hostile.log"
		return 1
	}
	lab_wait_pids 60 "$t" "$r1" "$r2" || return 1
	# Skew is judged outside the flood (as dropouts are): there the
	# receivers conceal about half of the audio, which no alignment can
	# measure (same span as the dropout check below).
	local span
	span=$(python3 -c 'import json,sys; h=json.load(open(sys.argv[1])); print("%d:%d" % (h["flood_start_ns"] - 100000000, h["flood_end_ns"] + 500000000))' "$dir/hostile.json") || return 1
	ANALYZE_EXTRA="--skew-exclude-ns $span" analyze "$dir" tx rx1 rx2
}

# pw_stats HOST: "fds rss_kib" of a host's pipewire daemon.
pw_stats() {
	local pid
	pid=$(cat "$(lab_host_dir "$1" "$2")/pipewire.pid")
	printf '%s %s\n' "$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)" \
		"$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")"
}

case_flap() {
	local id=$1 dir=$2 i t p
	cat >"$dir/checks.py" <<-'EOF'
	print("  " + open(os.path.join(d, "flap.count")).read().strip())
	a = load("analysis.json")
	for r in a["receivers"]:
	    print(f"  {r['label']}: fidelity {r['fidelity']['mean']:.4f} dropouts {r['dropouts']} jumps {r['jumps']}")
	    need(r["fidelity"]["mean"] >= 0.9, f"{r['label']} plays the next stream (fidelity ≥ 0.9)")
	    need(r["dropouts"] == 0, f"{r['label']} no dropout")
	skew_within_100us(a)
	for h in ("h1", "h2"):
	    b = open(os.path.join(d, h + ".before")).read().split()
	    f = open(os.path.join(d, h + ".after")).read().split()
	    print(f"  {h} pipewire: fds {b[0]} -> {f[0]}, RSS {b[1]} -> {f[1]} KiB")
	    need(int(f[0]) == int(b[0]), f"{h} no fd leak")
	    need(int(f[1]) - int(b[1]) <= 2048, f"{h} RSS grew at most 2 MiB")
	EOF
	lab_up "$id" 3 2>>"$out/lab.log" || return 1
	lab_audio_up "$id" 1 --conf "$repo/conf/bark-source.conf" --module-dir "$repo/target/pw-modules" \
		--env BARK_TEST_CLOCK="${clock[rx1]}" 2>>"$out/lab.log" || return 1
	lab_audio_up "$id" 2 --conf "$repo/conf/bark-source.conf" --module-dir "$repo/target/pw-modules" \
		--env BARK_TEST_CLOCK="${clock[rx2]}" 2>>"$out/lab.log" || return 1
	for i in 1 2; do lab_wait 30 "h$i playing into its speaker" lab_speaker_fed "$id" "$i" || return 1; done
	# One real stream first, so the receivers' buffers and clocks are in
	# use before the "before" figures are taken.
	t=$(tx "$id" 0 warm "$dir" 3 "$out/music-b.wav" --lead-in-msec 300)
	lab_wait_pids 30 "$t" || return 1
	sleep 2
	for i in 1 2; do pw_stats "$id" "$i" >"$dir/h$i.before"; done
	# 300 senders, each killed 100 ms after it started: most only announce,
	# some get a packet or two of audio out.
	local t_end=$((SECONDS + 30)) n=0
	while ((SECONDS < t_end && n < 300)); do
		p=$(lab_spawn "$id" 0 flap "$dir/flap.log" "$bark" stream --input "$out/music-b.wav" \
			--local-ifname eth0 --lead-in-msec $((n % 3 == 0 ? 0 : 50)) --node-name "flap$n")
		sleep 0.1
		kill -KILL "$p" 2>/dev/null
		n=$((n + 1))
	done
	echo "$n senders started and killed" >"$dir/flap.count"
	sleep 3
	# Before anything else connects to the daemons (a recorder's client
	# adds its own fds and memory).
	for i in 1 2; do pw_stats "$id" "$i" >"$dir/h$i.after"; done
	for i in 1 2; do
		lab_spawn "$id" "$i" record "$dir/rec$i.log" "$labbin/bark-lab-record" --target speaker \
			--seconds 14 --out "$dir/rx$i.wav" >"$dir/.rec$i"
	done
	t=$(tx "$id" 0 tx "$dir" 12 "$out/music-a.wav" --lead-in-msec 300)
	lab_wait_pids 60 "$t" "$(cat "$dir/.rec1")" "$(cat "$dir/.rec2")" || return 1
	SETTLE=1 analyze "$dir" tx rx1 rx2
}

case_unicast() {
	unicast_checks >"$2/checks.py"
	unicast_run "$1" "$2" ""
}

unicast_checks() {
	cat <<-'EOF'
	a = load("analysis.json"); tx = load("tx.json")
	subs = tx["subscriptions"]; audio = tx["tx"]["audio"]["packets"]; copies = tx["tx"]["fanout"]["packets"]
	print(f"  sender: subscriptions {subs}, {audio} audio packets, {copies} unicast copies")
	need(subs["joined"] == 2 and subs["refused_cookie"] == 0 and subs["refused_full"] == 0, "the sender took both subscriptions, refused none")
	need(subs["listed"] == 1, "rx4's address is listed (destination.ip)")
	need(copies >= 3 * audio, "each subscriber and the listed rx4 got a copy of every audio packet")
	# rx2 is on the Wi-Fi profile: the session goes to 250 ms for all.
	print(f"  session latency {tx['latency']}")
	need(tx["latency"]["session_us"] == 250000, "rx2's wifi profile took the session to 250 ms")
	for r in a["receivers"]:
	    need(abs(r["latency_ms"]["p50"] - 250) <= 0.1, f"{r['label']} plays at 250 ms")
	for r in a["receivers"]:
	    s = load(r["label"] + ".json")
	    sub = s.get("subscription")
	    print(f"  {r['label']}: fidelity {r['fidelity']['mean']:.4f} dropouts {r['dropouts']} windows {r['windows']} lost {s['counters']['lost']} subscription {sub}")
	    need(r["fidelity"]["mean"] >= 0.99, f"{r['label']} fidelity ≥ 0.99")
	    need(r["windows"] >= 150, f"{r['label']} played throughout ({r['windows']} analysis windows ≥ 150)")
	    need(r["dropouts"] == 0, f"{r['label']} no dropout")
	    if r["label"] in ("rx1", "rx2"):
	        # The session is gone by the end (the receivers outlive the sender).
	        need(sub is not None and sub["sessions"] == 1 and sub["cookies"] >= 1, f"{r['label']} subscribed to one session")
	skew_within_100us(a)
	EOF
}

case_opus-unicast() {
	{
		unicast_checks
		cat <<-'EOF'
		for r in ("rx1", "rx2", "rx3", "rx4"):
		    c = load(r + ".json")["counters"]; o = c["opus"]
		    print(f"  {r}: opus {o}")
		    need(o["invalid"] == 0 and o["concealed"] <= c["lost"] + c["late"] and o["decoded"] >= 0.99 * c["packets"], f"{r} decoded every Opus packet")
		EOF
	} >"$2/checks.py"
	unicast_run "$1" "$2" "--format OPUS"
}

# unicast_run ID DIR TX_ARGS: the unicast case's hosts, with TX_ARGS
# (words) added to the sender's; DIR/checks.py is the caller's.
unicast_run() {
	local id=$1 dir=$2 r1 r2 r3 r4 t
	lab_up "$id" 5 2>>"$out/lab.log" || return 1
	r1=$(rx "$id" 1 rx1 "$dir" 26 --sender "$BARK_LAB_SUBNET.1:4010")
	r2=$(rx "$id" 2 rx2 "$dir" 26 --sender "$BARK_LAB_SUBNET.1:4010" --profile wifi)
	r3=$(rx "$id" 3 rx3 "$dir" 26)
	# rx4 neither joins nor subscribes: the sender lists its address.
	r4=$(rx "$id" 4 rx4 "$dir" 26 --source-ip "$BARK_LAB_SUBNET.5")
	sleep 1
	# shellcheck disable=SC2086 # words by design
	t=$(tx "$id" 0 tx "$dir" 20 "$out/music-a.wav" --control-port 4010 \
		--destination-ip "$group,$BARK_LAB_SUBNET.5" $3)
	lab_wait_pids 60 "$t" "$r1" "$r2" "$r3" "$r4" || return 1
	analyze "$dir" tx rx1 rx2 rx3 rx4
}

# wired ID DIR WIRE_ARGS1 WIRE_ARGS2 RX_ARGS TX_ARGS: 3 hosts; rx1 (h1) and
# rx2 (h2) each behind its own bark-lab-wire (with WIRE_ARGSn, words), 60 s
# of music C from the sender (h0), both analyzed against what it sent.
wired() {
	local id=$1 dir=$2 w1 w2 r1 r2 t
	lab_up "$id" 3 2>>"$out/lab.log" || return 1
	# shellcheck disable=SC2086 # word lists by design
	w1=$(lab_wire "$id" 1 "$dir/wire1.log" "$wire" --seconds 90 --stats "$dir/wire1.json" $3) || return 1
	# shellcheck disable=SC2086
	w2=$(lab_wire "$id" 2 "$dir/wire2.log" "$wire" --seconds 90 --stats "$dir/wire2.json" $4) || return 1
	# shellcheck disable=SC2086
	r1=$(rx "$id" 1 rx1 "$dir" 66 $5)
	# shellcheck disable=SC2086
	r2=$(rx "$id" 2 rx2 "$dir" 66 $5)
	sleep 1
	# shellcheck disable=SC2086
	t=$(tx "$id" 0 tx "$dir" 60 "$out/music-c.wav" $6)
	lab_wait_pids 90 "$t" "$r1" "$r2" || return 1
	kill -TERM "$w1" "$w2" 2>/dev/null
	lab_wait_pids 10 "$w1" "$w2"
	analyze "$dir" tx rx1 rx2
}

# Checks both wired cases share: every receiver played the minute
# undamaged; SKEW_US and DROPOUT_MS are the case's limits.
wired_checks() {
	cat <<-'EOF'
	a = load("analysis.json")
	for i, r in enumerate(a["receivers"], 1):
	    w = load(f"wire{i}.json"); s = load(r["label"] + ".json"); c = s["counters"]
	    dropped = {k: w["down"][k] for k in ("cut", "lost", "overflow")}
	    print(f"  wire{i}: down {w['down']['frames']} frames, dropped {dropped}; up {w['up']}")
	    print(f"  {r['label']}: fidelity mean {r['fidelity']['mean']:.4f} min {r['fidelity']['min']:.4f} damaged windows {r['damaged_windows']} of {r['windows']} dropouts {r['dropouts']} lost {c['lost']} late {c['late']} repaired {c['repaired']} of {c['packets']} repair {c['repair']} jumps {s['jumps']}")
	    need(sum(dropped.values()) >= 0.015 * w["down"]["frames"], f"wire{i} dropped ≥ 1.5 % of the frames to {r['label']}")
	    need(c["repaired"] > 0, f"{r['label']} repaired what it lost")
	    # A minute of audio, 3 s settle, a window every 100 ms: about 570.
	    need(r["windows"] >= 540, f"{r['label']} played throughout ({r['windows']} analysis windows ≥ 540)")
	    need(r["damaged_windows"] == 0, f"{r['label']} no damaged window (correlation < 0.9)")
	    need(r["dropout_ms"] <= DROPOUT_MS, f"{r['label']} dropouts ≤ {DROPOUT_MS} ms ({r['dropouts']}: {r['dropout_ms']:.1f} ms)")
	for p in a["pairs"]:
	    print(f"  skew {p['a']}-{p['b']}: |skew| p99 {p['abs_skew_us']['p99']:.1f} us")
	    need(p["abs_skew_us"]["p99"] <= SKEW_US, f"skew p99 ≤ {SKEW_US} µs")
	EOF
}

# loss3's checks (and opus-loss3's): wired_checks at 50 µs and 8 ms, and
# every lost packet repaired in time.
loss3_checks() {
	echo 'SKEW_US = 50; DROPOUT_MS = 8'
	wired_checks
	cat <<-'EOF'
	for r in ("rx1", "rx2"):
	    c = load(r + ".json")["counters"]
	    need(c["lost"] + c["late"] == 0 and c["repaired"] >= 0.02 * c["packets"], f"{r} repaired ≥ 2 % of the packets, all in time")
	EOF
}

case_loss3() {
	local id=$1 dir=$2
	{
		# Issue 14: every one of the ~480 packets each receiver loses
		# comes back in time. (Before bark receive took datagrams between
		# its output cycles, 0-2 stayed lost a minute: docs/BENCHMARKS.md.)
		loss3_checks
	} >"$dir/checks.py"
	wired "$id" "$dir" "--model loss --loss 3 --seed 31" "--model loss --loss 3 --seed 32" "" ""
}

case_opus-loss3() {
	local id=$1 dir=$2
	{
		# Skew: 100 µs. On music through Opus the window-by-window
		# measure is limited by held notes whose high bands the codec
		# quantizes (CI: 29 and 65 µs p99, p50 5 µs); Opus's sync is
		# judged in test-opus.sh on a signal with timing detail (5-6 µs).
		# Repair: a loss before the receiver's first Cookie cannot be
		# asked for (CI once needed 18 Hellos at 3 % both ways, and 5
		# packets before playback began were lost): at most 8.
		echo 'SKEW_US = 100; DROPOUT_MS = 8'
		wired_checks
		cat <<-'EOF'
		for r in ("rx1", "rx2"):
		    c = load(r + ".json")["counters"]
		    o = c["opus"]
		    print(f"  {r}: opus {o}")
		    need(c["lost"] + c["late"] <= 8 and c["repaired"] >= 0.02 * c["packets"], f"{r} repaired ≥ 2 % of the packets, at most 8 not in time")
		    need(o["concealed"] <= c["lost"] + c["late"] and o["invalid"] == 0 and o["decoded"] >= 0.99 * c["packets"], f"{r} decoded every Opus packet but those lost")
		EOF
	} >"$dir/checks.py"
	wired "$id" "$dir" "--model loss --loss 3 --seed 31" "--model loss --loss 3 --seed 32" "" \
		"--format OPUS --latency-msec 60"
}

case_wifi() {
	local id=$1 dir=$2
	{
		# An outage (150 ms) with a stall (up to 200 ms) right after it
		# keeps the link dark for longer than 250 ms less what the output
		# needs: the first packets of the outage cannot come back in
		# time, about once a minute (the simulator's wifi scenario shows
		# the same). Two or three such packets are allowed; what is asked
		# is that no window is damaged. Skew: issue 14's 100 µs; 44-75 µs
		# measured on 2026-12-04's VM (docs/BENCHMARKS.md), where it was
		# 100-157 µs before each subscriber's sync copy carried its own
		# t3, busy receivers made 50 exchanges a second and the wire
		# counted delays from its kernel receive stamps.
		echo 'SKEW_US = 100; DROPOUT_MS = 15'
		wired_checks
		cat <<-'EOF'
		tx = load("tx.json")
		print(f"  sender: subscriptions {tx['subscriptions']}, session latency {tx['latency']}")
		need(tx["subscriptions"]["joined"] >= 2, "both receivers subscribed")
		need(tx["latency"]["session_us"] == 250000, "the Wi-Fi profile took the session to 250 ms")
		# The clock estimate's own error (the test clock knows the truth),
		# once a second: the clock's share of the skew.
		for r in ("rx1", "rx2"):
		    e = sorted(abs(v) for v in load(r + ".json").get("clock_error_us") or [0.0])
		    print(f"  {r}: |clock error| p50 {e[len(e) // 2]:.1f} max {e[-1]:.1f} us")
		for i in (1, 2):
		    need(load(f"wire{i}.json")["down"]["cut"] > 0, f"wire{i} had outages")
		EOF
	} >"$dir/checks.py"
	wired "$id" "$dir" "--model wifi --first-outage-s 6 --seed 41" "--model wifi --first-outage-s 7.7 --seed 42" \
		"--sender $BARK_LAB_SUBNET.1:4010 --profile wifi" "--control-port 4010"
}

all=(loss5 partition restart join two hostile flap unicast loss3 wifi opus-loss3 opus-unicast)
cases=("$@")
((${#cases[@]})) || cases=("${all[@]}")
passed=0 failed=0 retried=() failures=()
n=0
for c in "${cases[@]}"; do
	declare -F "case_$c" >/dev/null || lab_die "unknown case $c (cases: ${all[*]})"
	ok=''
	for try in 1 2; do
		n=$((n + 1))
		dir=$out/$c-$try
		mkdir -p "$dir"
		current_id=r$(($$ % 1000))x$n
		echo "== $c (try $try)"
		if "case_$c" "$current_id" "$dir" 2>>"$dir/case.log" && verdict "$dir" 2>>"$dir/case.log"; then ok=1; fi
		lab_down "$current_id" >>"$out/lab.log" 2>&1
		current_id=''
		if [[ -n $ok ]]; then
			((try == 1)) || retried+=("$c")
			break
		fi
		echo "$c: try $try failed (logs: $dir)"
		tail -5 "$dir/case.log"
	done
	if [[ -n $ok ]]; then passed=$((passed + 1)); else failed=$((failed + 1)) failures+=("$c"); fi
done
((${#retried[@]} == 0)) || echo "robust: passed only on a retry: ${retried[*]}"
((${#failures[@]} == 0)) || echo "robust: failed: ${failures[*]}"
echo "robust: $passed passed, $failed failed (results in $out)"
((failed == 0))

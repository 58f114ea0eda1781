#!/usr/bin/env bash
# Bark beside Snapcast (Debian's snapserver/snapclient 0.26) on the same
# music and the same impairments, in one run (issue 14): each receiver on
# its own bark-lab-wire link, for each impairment Bark's PipeWire modules
# and then Snapcast, in lab/run-session.sh sessions (1 sender + 2
# receivers, pw-play playing the same music into the sender's sink, every
# receiver's speaker recorded with CLOCK_MONOTONIC stamps). Prints and
# writes a Markdown table: latency, skew p99, damaged windows (analysis
# windows whose correlation with what was sent is below 0.9) per minute,
# dropouts, and what the sender host sent (kbit/s).
#
#   lab/bench-vs-snapcast.sh [--seconds S (60)] [--impairments "loss3 wifi"]
#                            [--variants "bark snapcast"] [--out DIR]
#
# Impairments (bark-lab-wire, per receiver):
#   clean   no impairment (the wire only forwards)
#   loss3   3 % of the frames lost at random, both ways
#   wifi    NetModel::wifi_station: 1.5 + 0-3 ms, Gilbert-Elliott 3 % in
#           bursts of 2.5, 20-200 ms stalls every ~3 s, a 150 ms outage
#           every 5 s
# Variants:
#   bark      conf/bark-sink.conf and conf/bark-source.conf (multicast,
#             40 ms, NACK repair); on wifi, unicast on the Wi-Fi profile
#             (lab/conf/bark-sink-control.conf, lab/conf/bark-source-wifi.conf)
#   snapcast  snapserver (pipe source fed from the sender's null sink
#             "snapcast" by parec; its defaults: FLAC, 1000 ms buffer) and
#             snapclient --player pulse on each receiver (TCP)
#
# Needs root, `make modules`, `cargo build --release -p bark-lab`, and the
# packages snapserver, snapclient and ethtool (installed if missing). The
# veths' TCP segmentation offload is turned off inside the lab's namespaces
# (ethtool -K), so that bark-lab-wire sees Snapcast's TCP as MTU-sized
# frames.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo" || exit 1

usage() { sed -n '2,36s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 2; }

seconds=60 impairments='loss3 wifi' variants='bark snapcast' out=''
while (($#)); do
	case $1 in
	--seconds) seconds=$2; shift 2 ;;
	--impairments) impairments=$2; shift 2 ;;
	--variants) variants=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	-h | --help) usage ;;
	*) echo "bench: unknown option $1 (try --help)" >&2; exit 2 ;;
	esac
done
[[ $(id -u) == 0 ]] || { echo "bench: needs root" >&2; exit 1; }
missing=()
for p in snapserver snapclient ethtool; do command -v "$p" >/dev/null || missing+=("$p"); done
if ((${#missing[@]})); then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
		{ echo "bench: could not install ${missing[*]}" >&2; exit 1; }
fi
out=${out:-$repo/lab/out/snapcast-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"

wire_args() {
	case $1 in
	clean) echo "--model clean" ;;
	loss3) echo "--model loss --loss 3" ;;
	wifi) echo "--model wifi" ;;
	*) echo "bench: unknown impairment $1" >&2; return 1 ;;
	esac
}

# Offloads off on every lab veth (hosts' eth0, the bridge's ports) while a
# session runs: a TSO segment would reach the wire as one 64 KiB frame.
offloads_off() {
	local ns dev
	for ns in $(ip netns list | awk '/^bark[A-Za-z0-9]+-(h[0-9]+|br)( |$)/ { print $1 }'); do
		for dev in $(ip -n "$ns" -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'); do
			[[ $dev == lo || $dev == br0 ]] && continue
			ip netns exec "$ns" ethtool -K "$dev" tso off gso off gro off >/dev/null 2>&1
		done
	done
}

session() { # session NAME IMPAIRMENT VARIANT
	local name=$1 imp=$2 var=$3 dir=$out/$1 w
	w=$(wire_args "$imp") || return 1
	local -a a=(--receivers 2 --seconds "$seconds" --settle 8 --wire "$w" --out "$dir")
	case $var in
	bark)
		if [[ $imp == wifi ]]; then
			a+=(--sender-conf lab/conf/bark-sink-control.conf --receiver-conf lab/conf/bark-source-wifi.conf)
		else
			a+=(--sender-conf conf/bark-sink.conf --receiver-conf conf/bark-source.conf)
		fi
		a+=(--sink bark_sink) ;;
	snapcast)
		local s=$dir/snap
		mkdir -p "$s"
		cat >"$s/snapserver.conf" <<-EOF
		[server]
		datadir = $s
		[http]
		enabled = false
		[tcp]
		enabled = false
		[stream]
		source = pipe://$s/fifo?name=default&sampleformat=48000:16:2&mode=read
		EOF
		rm -f "$s/fifo"
		mkfifo "$s/fifo"
		a+=(--sender-conf lab/conf/snapcast-sink.conf --receiver-conf lab/conf/snapcast-receiver.conf --sink snapcast
			--sender-cmd "snapserver -c $s/snapserver.conf & exec parec --latency-msec=20 -d snapcast.monitor --format=s16le --rate=48000 --channels=2 --raw >$s/fifo"
			--rx-cmd "exec snapclient -h $BARK_LAB_SUBNET_DEFAULT.1 --player pulse --hostID rx{i}") ;;
	*) echo "bench: unknown variant $var" >&2; return 1 ;;
	esac
	echo "== $name: $var, $imp ($w)"
	# The offloads go off as soon as the namespaces exist.
	(for _ in $(seq 1 100); do offloads_off; sleep 0.2; done) &
	local off=$!
	lab/run-session.sh "${a[@]}" >"$out/$name.log" 2>&1
	local rc=$?
	kill "$off" 2>/dev/null
	wait "$off" 2>/dev/null
	tail -12 "$out/$name.log"
	return "$rc"
}

BARK_LAB_SUBNET_DEFAULT=${BARK_LAB_SUBNET:-10.99.0}
failed=0
names=()
for imp in $impairments; do
	for var in $variants; do
		name=$imp-$var
		if session "$name" "$imp" "$var"; then names+=("$name"); else failed=1; echo "bench: $name failed (see $out/$name.log)"; fi
	done
done

/usr/bin/python3 - "$out" "$seconds" "${names[@]}" <<-'EOF' | tee "$out/table.md"
import csv, json, os, sys
out, seconds, names = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
print(f"| session | latency p50 | skew p99 | damaged windows per minute | dropouts | sender kbit/s |")
print("|---|---:|---:|---:|---:|---:|")
for n in names:
    d = os.path.join(out, n)
    a = json.load(open(os.path.join(d, "analysis.json")))
    net = list(csv.DictReader(open(os.path.join(d, "net.csv"))))[0]
    rx = a["receivers"]
    lat = " / ".join(f"{r['latency_ms']['p50']:.1f}" for r in rx)
    dmg = " / ".join(f"{60 * r['damaged_windows'] / seconds:.1f}" for r in rx)
    drops = " / ".join(f"{r['dropouts']} ({r['dropout_ms']:.0f} ms)" for r in rx)
    skew = " / ".join(f"{p['abs_skew_us']['p99']:.1f}" for p in a["pairs"])
    print(f"| {n} | {lat} ms | {skew} µs | {dmg} | {drops} | {float(net['sender_kbit_per_s']):.0f} |")
EOF
echo "bench: results in $out"
exit "$failed"

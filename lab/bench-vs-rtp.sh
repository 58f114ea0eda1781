#!/usr/bin/env bash
# Bark beside PipeWire's own rtp-sink/rtp-source in one lab run: the same
# sessions (1 sender + 2 receivers, pw-play playing the same music, the
# same quantum, the same settle time and the same receiver clock settings),
# each variant in turn, several rounds, interleaved so that the machine's
# load falls on all of them alike. Prints and writes a Markdown table:
# end-to-end latency, latency spread, skew, dropouts, fidelity, CPU of the
# receiving pipewire processes and the load average around each run.
#
#   lab/bench-vs-rtp.sh [options] [-- run-session.sh options...]
#
# Options:
#   --runs N (3)          rounds; every variant runs once per round
#   --seconds S (20)      recording length of each session
#   --quantum FRAMES      force every host's graph quantum (default: as the
#                         nodes ask; pw-play asks 2048, Bark's receiver half
#                         its latency, rtp-source nothing)
#   --variants "A B ..."  (default "bark rtp"); known variants:
#       bark          conf/bark-sink.conf + conf/bark-source.conf (defaults)
#       bark-pw       receiver with bark.resampler = pipewire
#                     (lab/conf/bark-source-pipewire.conf)
#       bark-lowlat   10 ms, 128-frame quanta (lab/conf/bark-*-lowlat.conf)
#       bark-lowlat256  10 ms, 256-frame quanta (lab/conf/bark-*-lowlat256.conf)
#       bark-s16      defaults but S16 on the wire, as rtp's S16BE
#                     (lab/conf/bark-sink-s16.conf)
#       rtp           lab/conf/rtp-sink.conf + lab/conf/rtp-source.conf
#                     (sess.latency.msec 100, the default)
#       rtp-40        the same at Bark's 40 ms (lab/conf/rtp-source-40.conf)
#     or NAME=SENDER_CONF,RECEIVER_CONF,SINK for any other drop-ins
#   --no-drift            no BARK_TEST_CLOCK on the receivers (default: h1
#                         300 µs behind and 60 ppm slow, h2 150 µs ahead
#                         and 80 ppm fast, as in lab/test-bark.sh; only
#                         Bark's module reads it, the rtp modules ignore it)
#   --settle S (5)        seconds between the receivers playing and the
#                         recording (rtp-source's DLL needs a few)
#   --out DIR             results (default lab/out/bench-<time>): one
#                         session directory per run, table.md, runs.txt
#
# Every host's daemons log PipeWire's "client too slow" (a graph cycle that
# did not finish in time: an xrun) and Bark's receivers their per-second
# timing line with PIPEWIRE_DEBUG=2,pw.node:3,mod.bark:4; each session's
# xrun counts and the receivers' least buffered audio ("buffer min", µs:
# what was left when a packet arrived latest) go to xruns.txt
# ("h0 N h1 N h2 N bufmin US") and into the table.
#
# Needs root, `make modules` and `cargo build --release -p bark-lab`.
# Exit status: 0 when every session ran (whatever the figures), 1 if any
# session failed.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"

usage() { sed -n '2,45s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 2; }

runs=3 seconds=20 quantum='' variants='bark rtp' drift=1 settle=5 out=''
extra=()
while (($#)); do
	case $1 in
	--runs) runs=$2; shift 2 ;;
	--seconds) seconds=$2; shift 2 ;;
	--quantum) quantum=$2; shift 2 ;;
	--variants) variants=$2; shift 2 ;;
	--no-drift) drift=0; shift ;;
	--settle) settle=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--) shift; extra=("$@"); break ;;
	-h | --help) usage ;;
	*) echo "bench: unknown option $1 (try --help)" >&2; exit 2 ;;
	esac
done
[[ $runs =~ ^[0-9]+$ ]] && ((runs >= 1 && runs <= 20)) || { echo "bench: --runs must be 1..20" >&2; exit 2; }
bin=${BARK_LAB_BIN:-$repo/target/release}
[[ -x $bin/bark-lab-table ]] || { echo "bench: $bin/bark-lab-table missing: cargo build --release -p bark-lab" >&2; exit 1; }

# variant NAME -> "SENDER_CONF RECEIVER_CONF SINK"
variant() {
	case $1 in
	bark) echo "conf/bark-sink.conf conf/bark-source.conf bark_sink" ;;
	bark-pw) echo "conf/bark-sink.conf lab/conf/bark-source-pipewire.conf bark_sink" ;;
	bark-lowlat) echo "lab/conf/bark-sink-lowlat.conf lab/conf/bark-source-lowlat.conf bark_sink" ;;
	bark-s16) echo "lab/conf/bark-sink-s16.conf conf/bark-source.conf bark_sink" ;;
	bark-lowlat256) echo "lab/conf/bark-sink-lowlat256.conf lab/conf/bark-source-lowlat256.conf bark_sink" ;;
	rtp) echo "lab/conf/rtp-sink.conf lab/conf/rtp-source.conf rtp-sink" ;;
	rtp-40) echo "lab/conf/rtp-sink.conf lab/conf/rtp-source-40.conf rtp-sink" ;;
	*=*,*,*) local spec=${1#*=}; echo "${spec//,/ }" ;;
	*) return 1 ;;
	esac
}
names=()
for v in $variants; do
	spec=$(variant "$v") || { echo "bench: unknown variant $v" >&2; exit 2; }
	read -r s r k <<<"$spec"
	[[ -f $s && -f $r && -n $k ]] || { echo "bench: variant $v: missing drop-in ($s, $r)" >&2; exit 2; }
	names+=("${v%%=*}")
done

stamp=$(date +%Y%m%d-%H%M%S)
[[ -n $out ]] || out=$repo/lab/out/bench-$stamp
mkdir -p "$out"
out=$(realpath "$out")
common=(--receivers 2 --seconds "$seconds" --settle "$settle"
	--sender-env PIPEWIRE_DEBUG=2,pw.node:3,mod.bark:4 --rx-env PIPEWIRE_DEBUG=2,pw.node:3,mod.bark:4)
[[ -n $quantum ]] && common+=(--quantum "$quantum")
((drift)) && common+=(--host-env h1:BARK_TEST_CLOCK=-300000,-60 --host-env h2:BARK_TEST_CLOCK=150000,80)
{
	echo "command: $0 --runs $runs --seconds $seconds ${quantum:+--quantum $quantum }--variants \"$variants\" $( ((drift)) || echo --no-drift) --settle $settle ${extra[*]:+-- ${extra[*]}}"
	echo "date: $(date -Is)"
	echo "pipewire: $(pipewire --version | tail -1)"
	echo "kernel: $(uname -r); cpus: $(nproc); $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
	echo "git: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null)"
} >"$out/runs.txt"

table_args=()
failed=0
for ((round = 1; round <= runs; round++)); do
	i=0
	for v in $variants; do
		name=${names[$i]}
		i=$((i + 1))
		read -r s r k <<<"$(variant "$v")"
		dir=$out/$name-$round
		echo "== round $round/$runs: $name"
		l0=$(cut -d' ' -f1 /proc/loadavg)
		if "$here/run-session.sh" --sender-conf "$s" --receiver-conf "$r" --sink "$k" \
			"${common[@]}" "${extra[@]}" --out "$dir" >"$dir.log" 2>&1; then
			echo "$l0 $(cut -d' ' -f1 /proc/loadavg)" >"$dir/loadavg.txt"
			for h in h0 h1 h2; do
				n=$(grep -c 'client too slow' "$dir/logs/$h/pipewire.log" 2>/dev/null)
				printf '%s %s ' "$h" "${n:-0}"
			done >"$dir/xruns.txt"
			bm=$(cat "$dir"/logs/h[1-9]*/pipewire.log 2>/dev/null |
				grep -o 'buffer min [0-9][0-9]*' | awk '{ print $3 }' | sort -n | head -1)
			[[ -n $bm ]] && printf 'bufmin %s ' "$bm" >>"$dir/xruns.txt"
			echo "   graph xruns: $(cat "$dir/xruns.txt")"
			table_args+=(--run "$name=$dir")
			grep -E '^(h[0-9]|skew)' "$dir/analysis.txt" | sed 's/^/   /'
			echo "$name-$round: ok ($dir)" >>"$out/runs.txt"
		else
			echo "   FAILED (log: $dir.log)"
			tail -5 "$dir.log" | sed 's/^/   /'
			echo "$name-$round: FAILED ($dir.log)" >>"$out/runs.txt"
			failed=$((failed + 1))
		fi
	done
done

if ((${#table_args[@]})); then
	"$bin/bark-lab-table" "${table_args[@]}" >"$out/table.md"
	echo
	cat "$out/table.md"
fi
echo
echo "bench: results in $out (table.md, runs.txt); $failed session(s) failed"
((failed == 0))

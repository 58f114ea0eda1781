#!/usr/bin/env bash
# Scale run of the headless CLI in the lab LAN (root): 1 `bark stream` and
# N `bark receive` (32 by default), each in a network namespace on a private
# bridge (lab/lanlib.sh). Real music (planetblupi, Ogg Vorbis at 44.1 kHz,
# decoded and resampled to 48 kHz by the sender). Each receiver gets its own
# artificial clock error (offset up to ±1 ms, rate up to ±50 ppm), so clock
# sync is doing real work. Receivers write what they would play with
# CLOCK_MONOTONIC stamps (shared by all namespaces: ground truth), the
# sender writes what it sent; bark-lab-analyze measures latency and skew.
#
# Measured: skew between every pair of receivers; sender CPU (getrusage of
# the process, decoding and resampling included); the sender's bandwidth
# (its eth0 byte counters and its own per-kind counts); clock-sync traffic
# per receiver (time requests out, replies in); whether `bark stats` sees
# every node.
#
#   cli/bench/scale.sh [--receivers N] [--seconds S] [--compare "1 8"]
#                      [--no-analyze] [--out DIR] [--id ID] [--keep]
#                      [--loss PCT] [--fec K:M] [--latency-msec MS]
#
#   --receivers N   receivers in the main run (32; at most 63)
#   --seconds S     seconds of audio per run (30)
#   --compare LIST  extra shorter runs (same S) with these receiver counts,
#                   to show the sender's CPU and bandwidth do not grow
#   --no-analyze    skip the skew analysis (496 pairs for 32 receivers
#                   take several minutes)
#   --loss PCT      each receiver drops PCT % of the datagrams it receives,
#                   at random and independently (`bark receive
#                   --test-loss`: a lossy link to each; NACKs are not lost)
#   --fec K:M       the sender's --fec; receivers then rebuild (--fec true)
#   --latency-msec MS  the sender's session latency (40)
#
# The lab makes at most 64 hosts: h0 is the sender, each receiver has its
# own host (h1..h63). Besides whole-run totals, the sender's eth0 counters
# are read over a window in the run's second half (from S/2, about S/3
# long), after every receiver's start-up burst of time requests: the
# steady state. Results: cli/bench/out/<time>/
# (git-ignored): run-N/{ref,rxK}.wav + .ts.csv, tx.json, rxK.json,
# stats.json, analysis.json; summary.txt and summary.json at the top.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=../../lab/lanlib.sh
. "$repo/lab/lanlib.sh"

usage() { sed -n '2,30s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 2; }
receivers=32 seconds=30 compare='' analyze=1 out='' id='' keep='' loss='' fec=off latency=40
while (($#)); do
	case $1 in
	--receivers) receivers=$2; shift 2 ;;
	--seconds) seconds=$2; shift 2 ;;
	--compare) compare=$2; shift 2 ;;
	--no-analyze) analyze=''; shift ;;
	--out) out=$2; shift 2 ;;
	--id) id=$2; shift 2 ;;
	--keep) keep=--keep; shift ;;
	--loss) loss=$2; shift 2 ;;
	--fec) fec=$2; shift 2 ;;
	--latency-msec) latency=$2; shift 2 ;;
	-h | --help) usage ;;
	*) lab_die "unknown option $1 (try --help)" ;;
	esac
done
((receivers >= 1 && receivers <= 63)) || lab_die "--receivers must be 1..63"
[[ -z $id || $id =~ ^[A-Za-z0-9]{1,5}$ ]] || lab_die "--id must be 1-5 alphanumerics"
[[ $seconds =~ ^[0-9]+$ ]] && ((seconds >= 5 && seconds <= 600)) || lab_die "--seconds must be 5..600"
[[ -z $loss || $loss =~ ^[0-9]+(\.[0-9]+)?$ ]] || lab_die "--loss must be a percentage"
[[ $fec == off || $fec =~ ^[0-9]+:[0-9]+$ ]] || lab_die "--fec must be off or K:M"
[[ $latency =~ ^[0-9]+$ ]] || lab_die "--latency-msec must be whole ms"
rx_extra=()
[[ -n $loss ]] && rx_extra+=(--test-loss "$loss")
[[ $fec != off ]] && rx_extra+=(--fec true)
lab_require_root
bark=${BARK_BIN:-$repo/target/release/bark}
analyzer=${BARK_LAB_BIN:-$repo/target/release}/bark-lab-analyze
summary=$(dirname "$bark")/examples/scale-summary
[[ -x $bark ]] || lab_die "$bark missing: cargo build --release -p bark-cli"
[[ -x $summary ]] || lab_die "$summary missing: cargo build --release -p bark-cli --examples"
if [[ -n $analyze && ! -x $analyzer ]]; then
	lab_die "$analyzer missing: cargo build --release -p bark-lab (or --no-analyze)"
fi
music=$(lab_music) || exit 1
[[ -n $id ]] || id=c$(($$ % 1000))
out=$(lab_out_dir "$out" "$here/out/$(date +%Y%m%d-%H%M%S)")
hz=$(getconf CLK_TCK)

current_id=''
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	# lab_down stops every recorded process (by PID, only if it carries
	# this run's marker) and deletes the run's namespaces.
	[[ -n $current_id ]] && lab_down "$current_id" $keep >>"$out/lab.log" 2>&1
	exit "$rc"
}
lab_traps cleanup

# Counters of a host's eth0: "tx_bytes tx_packets rx_bytes rx_packets".
eth0_counters() {
	ip netns exec "$(lab_ns_host "$1" "$2")" sh -c \
		'cd /sys/class/net/eth0/statistics && echo $(cat tx_bytes tx_packets rx_bytes rx_packets)'
}

# User and system CPU ticks of a process, all its threads (/proc/PID/stat
# fields 14 and 15; the command name "bark" has no spaces).
cpu_ticks() {
	awk '{ print $14, $15 }' "/proc/$1/stat"
}

# one_run N DIR: 1 sender + N receivers for $seconds; results into DIR.
one_run() {
	local n=$1 dir=$2 rid=${id}n$1 hosts i h off ppm pids=() txpid
	mkdir -p "$dir"
	hosts=$((n + 1))
	lab_log "run: 1 sender + $n receivers on $hosts hosts, ${seconds}s -> $dir"
	current_id=$rid
	lab_up "$rid" "$hosts" 2>>"$out/lab.log"
	for ((i = 1; i <= n; i++)); do
		h=$((1 + (i - 1) % (hosts - 1)))
		# Distinct, repeatable clock errors: offsets within ±1 ms, rates
		# within ±50 ppm.
		off=$(((i * 7919) % 2001 * 1000 - 1000000))
		ppm=$((((i * 37) % 101) - 50))
		pids+=("$(lab_spawn "$rid" "$h" "rx$i" "$dir/rx$i.log" "$bark" receive \
			--local-ifname eth0 --seconds $((seconds + 6)) --node-name "rx$i" \
			--output "$dir/rx$i.wav" --summary "$dir/rx$i.json" \
			--test-clock "$off,$ppm" "${rx_extra[@]}")")
		printf 'rx%s h%s clock %s ns %s ppm\n' "$i" "$h" "$off" "$ppm" >>"$dir/clocks.txt"
	done
	sleep 1
	read -r t0b t0p r0b r0p < <(eth0_counters "$rid" 0)
	txpid=$(lab_spawn "$rid" 0 stream "$dir/tx.log" "$bark" stream --input "$music" \
		--local-ifname eth0 --seconds "$seconds" --node-name sender \
		--fec "$fec" --latency-msec "$latency" --record "$dir/ref.wav" --summary "$dir/tx.json")
	# Mid-run: the steady-state window opens; what `bark stats` on the
	# sender's host sees.
	sleep $((seconds / 2))
	read -r tab tap rab rap < <(eth0_counters "$rid" 0)
	local ta=$EPOCHREALTIME tb cua csa cub csb
	read -r cua csa < <(cpu_ticks "$txpid")
	lab_exec "$rid" 0 "$bark" stats --local-ifname eth0 --once --json --wait-sec 2.5 \
		>"$dir/stats.json" 2>>"$dir/stats.log" || true
	lab_exec "$rid" 0 "$bark" stats --local-ifname eth0 --once --wait-sec 1.5 \
		>"$dir/stats.txt" 2>>"$dir/stats.log" || true
	# The window closes about S/3 after it opened, before the sender stops.
	sleep "$(awk -v a="$ta" -v b="$EPOCHREALTIME" -v s="$seconds" \
		'BEGIN { d = s / 3 - (b - a); print (d > 0 ? d : 0) }')"
	read -r tbb tbp rbb rbp < <(eth0_counters "$rid" 0)
	tb=$EPOCHREALTIME
	read -r cub csb < <(cpu_ticks "$txpid")
	lab_wait_pids $((seconds + 30)) "$txpid" || lab_die "the sender overran"
	read -r t1b t1p r1b r1p < <(eth0_counters "$rid" 0)
	printf '{"tx_bytes":%s,"tx_packets":%s,"rx_bytes":%s,"rx_packets":%s,"window":{"seconds":%s,"sender_user_s":%s,"sender_sys_s":%s,"tx_bytes":%s,"tx_packets":%s,"rx_bytes":%s,"rx_packets":%s}}\n' \
		$((t1b - t0b)) $((t1p - t0p)) $((r1b - r0b)) $((r1p - r0p)) \
		"$(awk -v a="$ta" -v b="$tb" 'BEGIN { printf "%.3f", b - a }')" \
		"$(awk -v a="$cua" -v b="$cub" -v hz="$hz" 'BEGIN { printf "%.3f", (b - a) / hz }')" \
		"$(awk -v a="$csa" -v b="$csb" -v hz="$hz" 'BEGIN { printf "%.3f", (b - a) / hz }')" \
		$((tbb - tab)) $((tbp - tap)) $((rbb - rab)) $((rbp - rap)) >"$dir/sender-eth0.json"
	lab_wait_pids 30 "${pids[@]}" || lab_die "a receiver overran"
	lab_down "$rid" $keep >>"$out/lab.log" 2>&1
	current_id=''
	for ((i = 1; i <= n; i++)); do
		[[ -s $dir/rx$i.json ]] || lab_die "rx$i wrote no summary (see $dir/rx$i.log)"
	done
}

# summarize N DIR: one JSON line of the run's figures.
summarize() {
	"$summary" "$1" "$2" "$seconds"
}

analyze_run() {
	local n=$1 dir=$2 i args=()
	args=(--reference "$dir/ref.wav" --json "$dir/analysis.json" --settle-s 3)
	for ((i = 1; i <= n; i++)); do args+=(--receiver "$dir/rx$i.wav" --label "rx$i"); done
	lab_log "analyzing $n receivers ($((n * (n - 1) / 2)) pairs)"
	"$analyzer" "${args[@]}" >"$dir/analysis.txt"
}

: >"$out/summary.json"
for n in $compare $receivers; do
	dir=$out/run-$n
	one_run "$n" "$dir"
	if [[ -n $analyze && $n == "$receivers" ]]; then analyze_run "$n" "$dir"; fi
	summarize "$n" "$dir" | tee -a "$out/summary.json"
done
{
	echo "command: $0 --receivers $receivers --seconds $seconds --compare '$compare' --loss '$loss' --fec $fec --latency-msec $latency"
	echo "bark: $("$bark" --version)"
	echo "kernel: $(uname -r); cpus: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "music: $music"
	cat "$out/summary.json"
	[[ -f $out/run-$receivers/stats.txt ]] && cat "$out/run-$receivers/stats.txt"
} >"$out/summary.txt"
lab_log "results in $out (summary.txt)"

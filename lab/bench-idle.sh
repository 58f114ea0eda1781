#!/usr/bin/env bash
# What an idle Bark costs (root): a sender (conf/bark-sink.conf) and a
# receiver (conf/bark-source.conf), nothing playing; after SETTLE seconds,
# for SECONDS: the datagrams and bytes the sender puts on its eth0 (its
# idle announcements and status), the receiver's (time requests, status),
# and the CPU of each host's pipewire daemon (utime+stime, % of one core).
#
#   lab/bench-idle.sh [--seconds S (30)] [--settle S (8)] [--rootfs DIR]
#
# Prints one line per host:
#   idle: host=h0 role=sender tx_pps=X tx_kbit_s=X pipewire_cpu_percent=X
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lanlib.sh
. "$here/lanlib.sh"
seconds=30 settle=8 rootfs=''
while (($#)); do
	case $1 in
	--seconds) seconds=$2; shift 2 ;;
	--settle) settle=$2; shift 2 ;;
	--rootfs) rootfs=$2; shift 2 ;;
	*) sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 2 ;;
	esac
done
lab_require_root
[[ -n $rootfs ]] && export BARK_LAB_ROOTFS=$rootfs
id=bi$((RANDOM % 10000))
trap 'lab_down "$id" >/dev/null 2>&1' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
lab_up "$id" 2 2>/dev/null
moddir=$repo/target/pw-modules
lab_audio_up "$id" 0 --conf "$repo/conf/bark-sink.conf" --module-dir "$moddir" 2>/dev/null
lab_audio_up "$id" 1 --conf "$repo/conf/bark-source.conf" --module-dir "$moddir" 2>/dev/null
sleep "$settle"

tx() { ip -n "$(lab_ns_host "$id" "$1")" -s -j link show eth0 |
	python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["stats64"]["tx"]; print(s["packets"], s["bytes"])'; }
cpu() { lab_cpu_ticks "$(cat "$(lab_host_dir "$id" "$1")/pipewire.pid")"; }
declare -A p0 b0 c0
for h in 0 1; do
	read -r p0[$h] b0[$h] < <(tx "$h")
	c0[$h]=$(cpu "$h")
done
t0=$(date +%s.%N)
sleep "$seconds"
t1=$(date +%s.%N)
hz=$(getconf CLK_TCK)
for h in 0 1; do
	read -r p b < <(tx "$h")
	c=$(cpu "$h")
	role=$([[ $h == 0 ]] && echo sender || echo receiver)
	awk -v h="h$h" -v r="$role" -v dp=$((p - p0[$h])) -v db=$((b - b0[$h])) -v dc=$((c - c0[$h])) \
		-v hz="$hz" -v t0="$t0" -v t1="$t1" 'BEGIN {
		dt = t1 - t0
		printf "idle: host=%s role=%s tx_pps=%.1f tx_kbit_s=%.2f pipewire_cpu_percent=%.2f\n",
			h, r, dp / dt, (db + 24 * dp) * 8 / 1000 / dt, 100 * dc / hz / dt }'
done
echo "idle: load $(cut -d' ' -f1-3 /proc/loadavg), $seconds s, pipewire $(lab_exec "$id" 0 pipewire --version | tail -1)"

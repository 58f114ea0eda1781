#!/usr/bin/env bash
# Baseline lab run: PipeWire's own rtp-sink (sender) and rtp-source
# (receivers), 1 sender + 2 receivers, ~20 s of real music played with
# pw-play into the sender's sink. Prints per-receiver latency, skew,
# dropouts, fidelity and the receivers' daemon CPU.
#
#   lab/run-baseline.sh [run-session.sh options...]
#
# Any option is passed on (e.g. --seconds 30, --quantum 256, --out DIR).
# Bark's modules are measured the same way with their own drop-ins:
#   lab/run-session.sh --sender-conf conf/... --receiver-conf conf/... --sink NODE
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$here/run-session.sh" \
	--sender-conf "$here/conf/rtp-sink.conf" \
	--receiver-conf "$here/conf/rtp-source.conf" \
	--sink rtp-sink \
	--receivers 2 --seconds 20 --settle 5 \
	"$@"

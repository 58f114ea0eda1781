#!/usr/bin/env bash
# The demo: a LAN of three hosts in network namespaces, each with its own
# headless PipeWire. The sender enables the Bark Network sink with
# conf/bark-sink.conf, the two receivers the receiver with
# conf/bark-source.conf, exactly as a user would; pw-play plays real music
# (a 44.1 kHz recording) into "Bark Network", and both receivers' speakers
# are recorded against the one kernel clock all namespaces share.
#
# To show the sync working against clock error, each receiver gets an
# artificial clock offset and rate error (test-only BARK_TEST_CLOCK): h1
# 300 µs behind and 60 ppm slow, h2 150 µs ahead and 80 ppm fast.
#
# Prints per-receiver latency, fidelity and dropouts, then
#   demo: receivers=2 latency_ms=X skew_p99_us=X dropouts=N
# Everything is torn down at the end, on failure and on Ctrl-C.
# Usage: lab/demo.sh [--seconds S] [any other run-session.sh option]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
out="$repo/lab/out/demo-$(date +%Y%m%d-%H%M%S)"
"$here/run-session.sh" \
	--sender-conf conf/bark-sink.conf --receiver-conf conf/bark-source.conf \
	--sink bark_sink --seconds 20 \
	--host-env h1:BARK_TEST_CLOCK=-300000,-60 \
	--host-env h2:BARK_TEST_CLOCK=150000,80 \
	--out "$out" "$@"
"$repo/target/release/bark-lab-summary" --prefix demo "$out/analysis.json"

#!/usr/bin/env bash
# The modules on PipeWire 1.x: this machine is Debian 12 (PipeWire 0.3.65),
# users run 1.x. Everything below runs PipeWire 1.4.2 and WirePlumber 0.5.8
# from the Debian 13 root that lab/pw1-root.sh builds; the modules and the
# lab's tools are the ones built here. What `make test-pw1` runs (after
# `make modules lab-build`). Root only.
#
#   lab/test-pw1.sh [--rootfs DIR] [--all-lab]
#
#  1. Builds the root unless it is complete (lab/pw1-root.sh; DIR, default
#     /var/cache/bark-lab/trixie).
#  2. Builds tests/headless.rs and tests/lifecycle.rs of bark-pw-module
#     here ($CARGO, release) and runs each binary with --ignored inside the
#     root (lab/in-root.sh): their daemons, the clients they call and the
#     lifecycle test's own libpipewire are all 1.4's.
#  3. The demo's session (lab/test-bark.sh --only pw-play-drift:
#     conf/bark-sink.conf, conf/bark-source.conf, two receivers with clock
#     errors, 20 s; fidelity >= 0.9, skew p99 <= 100 us, no dropouts) with
#     every lab host in the root. --all-lab: every lab/test-bark.sh case.
#  4. The start-of-playback cases (lab/test-start.sh), the at-the-speaker
#     steps (lab/test-speaker.sh) and the control plane (lab/test-control.sh:
#     bark set and bark web against the receivers' PipeWire 1.4) with every
#     host in the root.
#
# Holds the lab lock (lanlib.sh, lab_lock) from step 1 on. Prints
# "pw1: N passed, N failed": each test binary counts one, the lab sessions
# one (their own "pw1-lab: N passed, N failed" line is above it).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=lanlib.sh
. "$here/lanlib.sh"

rootfs=${BARK_PW1_ROOT:-/var/cache/bark-lab/trixie} all_lab=''
while (($#)); do
	case $1 in
	--rootfs) rootfs=$2; shift 2 ;;
	--all-lab) all_lab=1; shift ;;
	*) sed -n '2,22s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 2 ;;
	esac
done
lab_require_root
cd "$repo"
moddir=${BARK_PW_MODULE_DIR:-$repo/target/pw-modules}
[[ -f $moddir/libpipewire-module-bark-sink.so ]] || lab_die "no modules in $moddir: run make modules"
moddir=$(realpath "$moddir")

# The test binaries: built here, against 0.3.65's headers, like the modules.
lab_log "building the headless tests"
mapfile -t tests < <(${CARGO:-cargo} test --release -p bark-pw-module --test headless --test lifecycle \
	--no-run --message-format=json 2>/dev/null |
	grep '"reason":"compiler-artifact"' | grep '"test":true' |
	grep -o '"executable":"[^"]*"' | cut -d'"' -f4)
((${#tests[@]} == 2)) || lab_die "expected 2 test binaries, got ${#tests[@]}: ${CARGO:-cargo} test -p bark-pw-module --no-run fails?"

lab_lock
rootfs=$(lab/pw1-root.sh "$rootfs")
lab_log "PipeWire in $rootfs: $(chroot "$rootfs" pipewire --version | tail -1)"
sysdir=$(lab_default_module_path "" "$rootfs")

passed=0 failed=0 failures=()
for t in "${tests[@]}"; do
	name=$(basename "$t")
	name=${name%-*}
	echo "== $name (in $rootfs)"
	# cargo runs a test binary in its package's directory. The lab lock is
	# not passed on: a test daemon must never hold it.
	if (
		[[ -z ${BARK_LAB_LOCK_FD:-} ]] || exec {BARK_LAB_LOCK_FD}>&-
		cd "$repo/pw-module"
		BARK_PW_MODULE_DIR=$moddir BARK_PW_SYSTEM_MODULE_DIR=$sysdir \
			timeout -k 10 600 "$here/in-root.sh" --rootfs "$rootfs" -- "$t" --ignored --nocapture
	); then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures+=("$name")
	fi
done

lab_args=(--rootfs "$rootfs")
[[ -n $all_lab ]] || lab_args+=(--only pw-play-drift)
echo "== lab sessions (in $rootfs)"
if "$here/test-bark.sh" "${lab_args[@]}"; then
	passed=$((passed + 1))
else
	failed=$((failed + 1))
	failures+=(lab)
fi

for t in test-start test-speaker test-control; do
	echo "== $t (in $rootfs)"
	if "$here/$t.sh" --rootfs "$rootfs" ||
		{ [[ $t == test-speaker ]] && echo "$t: retrying once" && "$here/$t.sh" --rootfs "$rootfs"; }; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures+=("$t")
	fi
done

((${#failures[@]} == 0)) || echo "pw1: failed: ${failures[*]}"
echo "pw1: $passed passed, $failed failed"
((failed == 0))

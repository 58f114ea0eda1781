#!/usr/bin/env bash
# Run one command inside another root as if it ran on this machine: same
# network namespace, same environment, and the repository (hence cargo's
# target dir: the modules, the test binaries) at its own path, the caller's
# directory kept. What `make test-pw1` runs the headless module tests with,
# so that their daemons, their clients and the test process itself (which
# loads libpipewire: tests/lifecycle.rs) all use the root's PipeWire 1.x.
#
#   lab/in-root.sh [--rootfs DIR] [--bind DIR]... [--] CMD [ARG...]
#
# --rootfs defaults to $BARK_LAB_ROOTFS, then $BARK_PW1_ROOT, then to
# lab/pw1-root.sh's default, /var/cache/bark-lab/trixie. --bind adds a
# directory (the repository and $CARGO_TARGET_DIR are bound already).
# Root only.
#
# The command gets a mount namespace and a PID namespace of its own:
#  - mounts (/sys /dev /dev/shm /dev/pts and the binds; a fresh /proc for
#    the new PID namespace) with private propagation: only the command and
#    its children see them, nothing propagates out, and they go away with
#    the namespace, however the command ends: nothing is left to unmount.
#    (The lab's hosts need theirs in the root namespace, where each host's
#    `ip netns exec` finds them; lanlib.sh records and unmounts those.)
#  - its PID namespace dies with it: a daemon the command started and did
#    not stop (a test that panicked, was killed or timed out before its
#    teardown ran) is killed then too.
# INT or TERM to the command's process group stops it. (`unshare --fork`
# itself ignores both; killing it with KILL stops everything through
# --kill-child, which is what `timeout -k` ends up doing.)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

usage() { sed -n '2,27s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 2; }

rootfs=${BARK_LAB_ROOTFS:-${BARK_PW1_ROOT:-/var/cache/bark-lab/trixie}}
binds=("$repo")
[[ -n ${CARGO_TARGET_DIR:-} ]] && binds+=("$CARGO_TARGET_DIR")
while (($#)); do
	case $1 in
	--rootfs) rootfs=$2; shift 2 ;;
	--bind) binds+=("$2"); shift 2 ;;
	--) shift; break ;;
	-h | --help) usage ;;
	*) break ;;
	esac
done
(($#)) || usage
[[ $EUID -eq 0 ]] || { echo "in-root: needs root (mount, chroot)" >&2; exit 1; }
[[ -x $rootfs/usr/bin/pipewire ]] || {
	echo "in-root: $rootfs has no usr/bin/pipewire (build it: lab/pw1-root.sh)" >&2
	exit 1
}
rootfs=$(realpath "$rootfs")
[[ $rootfs != / ]] || { echo "in-root: --rootfs / is this machine's own root" >&2; exit 1; }
real=()
for b in "${binds[@]}"; do
	mkdir -p "$b"
	b=$(realpath "$b")
	case $b in
	/ | /usr | /usr/* | /etc | /etc/* | /bin | /sbin | /lib* | /var/lib | /var/lib/* | /proc* | /sys* | /dev*)
		echo "in-root: refusing to cover the root's $b" >&2
		exit 1 ;;
	esac
	real+=("$b")
done

# shellcheck disable=SC2016 # the inner script expands its own arguments
exec unshare -m -p -f --kill-child --propagation private bash -euo pipefail -c '
	r=$1 cwd=$2
	shift 2
	mount -t proc proc "$r/proc"
	for d in /sys /dev /dev/shm /dev/pts; do mount --bind "$d" "$r$d"; done
	while [[ $1 != -- ]]; do
		mkdir -p "$r$1"
		mount --bind "$1" "$r$1"
		shift
	done
	shift
	run=(chroot "$r")
	# chroot starts in /: stay in the same directory if the root shows it.
	if [[ -d $r$cwd && $(stat -c %d:%i "$cwd") == "$(stat -c %d:%i "$r$cwd")" ]]; then
		run+=(env -C "$cwd")
	fi
	# This shell is PID 1 of the namespace: it stays, so that a signal
	# (which PID 1 only gets for a trapped one) reaches the command, and
	# its exit takes down whatever the command left.
	"${run[@]}" "$@" &
	c=$!
	trap "kill -TERM $c 2>/dev/null" INT TERM
	while :; do
		wait "$c" && rc=0 || rc=$?
		kill -0 "$c" 2>/dev/null || break
	done
	exit "$rc"
' in-root "$rootfs" "$PWD" "${real[@]}" -- "$@"

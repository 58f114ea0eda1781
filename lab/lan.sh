#!/usr/bin/env bash
# bark lab LAN: N hosts as network namespaces on a private bridge, each with
# its own headless PipeWire. See lab/README.md.
#
#   lan.sh up [--id ID] [--hosts N]            create the LAN, print ID
#   lan.sh down --id ID [--keep]               remove everything run ID made
#   lan.sh audio-up --id ID HOST [--conf FILE]... [--env K=V]...
#              [--quantum FRAMES] [--rate HZ] [--module-dir DIR] [--no-pulse] [--speaker-driver]
#              [--rootfs DIR] [--bind DIR]...
#                                              --rootfs: run HOST in that root
#                                              (lab/pw1-root.sh: PipeWire 1.x);
#                                              default $BARK_LAB_ROOTFS
#   lan.sh audio-down --id ID HOST
#   lan.sh exec --id ID HOST CMD...            run CMD as a user of HOST
#   lan.sh status --id ID
#
# HOST is hN or N. ID defaults to this script's PID for `up`; 1-8
# alphanumerics. State lives in $BARK_LAB_ROOT/ID (default /tmp/bark-lab).
set -eu
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lanlib.sh
. "$here/lanlib.sh"

usage() { sed -n '2,18s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 2; }

(($#)) || usage
cmd=$1
shift
id='' hosts=2
parse_common() {
	rest=()
	while (($#)); do
		case $1 in
		--id) id=$2; shift 2 ;;
		--hosts) hosts=$2; shift 2 ;;
		*) rest+=("$1"); shift ;;
		esac
	done
}

case $cmd in
up)
	parse_common "$@"
	[[ -n $id ]] || id=$$
	# A half-built LAN is removed on any failure or signal.
	lab_traps lab_down "$id"
	lab_up "$id" "$hosts"
	trap - EXIT INT TERM
	printf '%s\n' "$id"
	;;
down)
	parse_common "$@"
	[[ -n $id ]] || lab_die "down needs --id"
	lab_down "$id" "${rest[0]:-}"
	;;
audio-up)
	id=''
	args=()
	while (($#)); do
		case $1 in
		--id) id=$2; shift 2 ;;
		*) args+=("$1"); shift ;;
		esac
	done
	[[ -n $id ]] || lab_die "audio-up needs --id"
	host=${args[0]:?audio-up needs HOST}
	# On failure stop whatever this host had started; the LAN stays.
	trap 'lab_audio_down "$id" "$host"' ERR
	lab_audio_up "$id" "${args[@]}"
	;;
audio-down)
	parse_common "$@"
	lab_audio_down "$id" "${rest[0]:?audio-down needs HOST}"
	;;
exec)
	[[ ${1:-} == --id ]] || lab_die "exec needs --id ID HOST CMD..."
	id=$2
	shift 2
	host=$1
	shift
	lab_exec "$id" "$host" "$@"
	;;
status)
	parse_common "$@"
	run=$(lab_run_dir "$id")
	[[ -f $run/state ]] || lab_die "no run $id"
	cat "$run/state"
	ip netns list | grep "^bark$id-" || true
	;;
*) usage ;;
esac

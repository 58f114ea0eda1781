#!/usr/bin/env bash
# Run a command holding the lab lock (lanlib.sh, lab_lock): one lab at a
# time on this machine. Lab scripts take the lock themselves; use this for
# manual work that spans several of them (lan.sh up ... down, a benchmark
# by hand).  Usage: lab/with-lock.sh CMD [ARG...]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lanlib.sh
. "$here/lanlib.sh"
(($#)) || { echo "usage: $0 CMD [ARG...]" >&2; exit 2; }
lab_lock
exec "$@"

#!/bin/sh
# Called by meson.build: man.sh OUTDIR PROGRAM...
# Each PROGRAM (a path, maybe relative to the build directory) writes its
# man pages into OUTDIR with its hidden `man` subcommand.
set -eu
out=$1
shift
for prog; do
	case $prog in
	*/*) ;;
	*) prog=./$prog ;;
	esac
	"$prog" man --dir "$out"
done

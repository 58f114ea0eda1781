#!/bin/sh
# Called by meson.build: cargo-build.sh CARGO SRCDIR TARGET_DIR OUTDIR online|offline
# Builds the installed crates in release with the lock file as it is, then
# copies the results into OUTDIR under the names meson installs.
set -eu
cargo=$1 src=$2 target=$3 out=$4 net=$5
set -- build --release --locked --manifest-path "$src/Cargo.toml" \
	--target-dir "$target" -p bark-pw-module -p bark-cli -p bark-pulse
if [ "$net" = offline ]; then
	set -- "$@" --offline
fi
"$cargo" "$@"
# Copy then rename, so that nothing ever sees a half-written file.
for pair in libbark_pw_module.so:libpipewire-module-bark-sink.so bark:bark bark-pulse:bark-pulse; do
	from=${pair%%:*} to=${pair#*:}
	cp -f "$target/release/$from" "$out/.$to.tmp"
	mv -f "$out/.$to.tmp" "$out/$to"
done

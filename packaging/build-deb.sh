#!/usr/bin/env bash
# packaging/build-deb.sh OUTDIR: the Debian packages of this tree, into OUTDIR.
#
# dpkg-buildpackage wants debian/ at the top of the source tree and writes
# its results next to it, so the tree (what git tracks or would track, as it
# is now) is copied to OUTDIR/bark-VERSION with packaging/debian as debian/,
# and built there: the .debs, .buildinfo and .changes land in OUTDIR.
# Needs cargo >= 1.87 in PATH (rustup); see packaging/debian/control.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: build-deb.sh OUTDIR}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
changelog=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
[[ $changelog == "$version" ]] ||
	{ echo "build-deb: debian/changelog is at $changelog, Cargo.toml at $version" >&2; exit 1; }
mkdir -p "$out"
out=$(realpath "$out")
src=$out/bark-$version
rm -rf "$src" "$out"/*.deb "$out"/*.ddeb "$out"/*.changes "$out"/*.buildinfo
mkdir -p "$src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	git ls-files -z --cached --others --exclude-standard | grep -zv '^packaging/debian/' |
		xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
		tar --null -T - -cf - | tar -xf - -C "$src"
else
	tar --exclude=./target --exclude=./debian -cf - . | tar -xf - -C "$src"
fi
cp -r packaging/debian "$src/debian"
cd "$src"
dpkg-buildpackage -us -uc -b
ls -l "$out"/*.deb

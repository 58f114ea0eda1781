#!/usr/bin/env python3
"""Checks the RPM spec's and the PKGBUILD's file lists against `meson install`.

    check-files.py --rpm-root DIR --arch-root DIR [--spec F] [--pkgbuild F]

DIR are DESTDIR trees of `meson install`: --rpm-root configured as Fedora's
%meson does (--prefix=/usr --libdir=lib64), --arch-root as arch-meson does
(--prefix=/usr --libdir=lib). Checks, each failing with a message:

- the spec (expanded by `rpmspec -P`, with Fedora's values for the macros
  Debian's rpm lacks): every installed file is claimed by exactly one
  subpackage's %files, every %files entry matches an installed file, every
  %dir is a directory of the tree;
- the PKGBUILD: its package_*() functions, run by bash with `meson install`
  standing for a copy of the tree, put every installed file into exactly
  one package and leave nothing behind;
- the spec, the PKGBUILD and debian/*.install put each file into the same
  one of the three packages;
- the versions of Cargo.toml, the spec, the PKGBUILD and debian/changelog
  agree.

Exit status 0 when all hold, 1 otherwise.
"""

import argparse
import fnmatch
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)

# Macros that Fedora defines (redhat-rpm-config, systemd-rpm-macros) and
# Debian's rpm does not, or defines otherwise.
FEDORA_MACROS = {
    "_prefix": "/usr",
    "_libdir": "/usr/lib64",
    "_bindir": "/usr/bin",
    "_datadir": "/usr/share",
    "_mandir": "/usr/share/man",
    "_docdir": "/usr/share/doc",
    "_userunitdir": "/usr/lib/systemd/user",
}

errors = []


def fail(msg):
    errors.append(msg)
    print(f"check-files: {msg}", file=sys.stderr)


def tree_files(root):
    """Every file and symlink under root, as absolute paths inside it."""
    out = set()
    for d, dirs, files in os.walk(root):
        for n in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            out.add("/" + os.path.relpath(os.path.join(d, n), root))
    return out


def spec_files(spec):
    """{subpackage: [(kind, path)]} from the expanded %files sections."""
    cmd = ["rpmspec", "-P", spec]
    for k, v in FEDORA_MACROS.items():
        cmd += ["--define", f"{k} {v}"]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    sections, cur = {}, None
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"^%files(?:\s+-n\s+(\S+))?", line)
        if m:
            cur = m.group(1) or "bark"
            sections[cur] = []
            continue
        if line.startswith("%") and re.match(r"^%(package|description|prep|build|install|changelog|check)\b", line):
            cur = None
            continue
        if cur is None or not line or line.startswith("#"):
            continue
        if line.startswith(("%license", "%doc")):
            continue  # taken from the source tree by rpm, not installed by meson
        if line.startswith("%dir "):
            sections[cur].append(("dir", line.split(None, 1)[1]))
        elif line.startswith("%"):
            fail(f"spec: unexpected %files line {line!r}")
        else:
            sections[cur].append(("file", line))
    return sections


def check_rpm(root, spec):
    files = tree_files(root)
    sections = spec_files(spec)
    owner = {}
    for pkg, entries in sections.items():
        for kind, path in entries:
            if "%{" in path:
                fail(f"spec: unexpanded macro in {path}")
                continue
            if kind == "dir":
                if not os.path.isdir(root + path):
                    fail(f"spec: %dir {path} ({pkg}) is not a directory meson installs")
                continue
            hits = [f for f in files if fnmatch.fnmatchcase(f, path)]
            if not hits:
                fail(f"spec: {path} ({pkg}) matches nothing meson installs")
            for f in hits:
                owner.setdefault(f, []).append(pkg)
    before = len(errors)
    for f in sorted(files):
        pkgs = owner.get(f, [])
        if len(pkgs) != 1:
            fail(f"spec: {f} is claimed by {len(pkgs)} subpackages {pkgs}")
    if len(errors) == before:
        print(f"check-files: rpm spec: {len(files)} installed files, each in one of {sorted(sections)}")
    return {f: p[0] for f, p in owner.items() if len(p) == 1}


ARCH_RUNNER = r"""
set -euo pipefail
tree=$1 work=$2 pkgbuild=$3
startdir=$(dirname "$pkgbuild")
srcdir=$work/src
mkdir -p "$srcdir"
# `meson install -C build --destdir X` of the PKGBUILD: a copy of the tree.
meson() {
  [[ $1 == install ]] || { echo "unexpected: meson $*" >&2; return 1; }
  local dest
  while (($#)); do [[ $1 == --destdir ]] && dest=$2; shift; done
  mkdir -p "$dest" && cp -a "$tree/." "$dest/"
}
source "$pkgbuild"
for pkgname in "${pkgname[@]}"; do
  pkgdir=$work/pkg/$pkgname
  mkdir -p "$pkgdir"
  ( cd "$srcdir" && "package_$pkgname" )
done
# What _pick moved out must have been taken by its package.
if [[ -n $(find "$srcdir" -mindepth 1 ! -type d) ]]; then
  echo "left in srcdir:" >&2; find "$srcdir" -mindepth 1 ! -type d >&2; exit 1
fi
"""


def check_arch(root, pkgbuild):
    files = tree_files(root)
    with tempfile.TemporaryDirectory(prefix="bark-arch-check") as work:
        r = subprocess.run(["bash", "-c", ARCH_RUNNER, "runner", root, work, pkgbuild],
                           capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"PKGBUILD: packaging failed: {r.stderr.strip()}")
            return
        owner = {}
        pkgroot = os.path.join(work, "pkg")
        for pkg in sorted(os.listdir(pkgroot)):
            got = tree_files(os.path.join(pkgroot, pkg))
            lic = f"/usr/share/licenses/{pkg}/LICENSE"
            if lic not in got:
                fail(f"PKGBUILD: {pkg} lacks {lic}")
            for f in got - {lic}:
                owner.setdefault(f, []).append(pkg)
        before = len(errors)
        for f in sorted(files | set(owner)):
            pkgs = owner.get(f, [])
            if f not in files:
                fail(f"PKGBUILD: {f} ({pkgs}) is not installed by meson")
            elif len(pkgs) != 1:
                fail(f"PKGBUILD: {f} is in {len(pkgs)} packages {pkgs}")
        if len(errors) == before:
            print(f"check-files: PKGBUILD: {len(files)} installed files, each in one of {sorted(os.listdir(pkgroot))}")
        return {f: p[0] for f, p in owner.items() if len(p) == 1}


def debian_owners():
    """{path: package} from debian/*.install (source paths, libdir as /usr/lib)."""
    owner = {}
    d = os.path.join(HERE, "debian")
    for name in sorted(os.listdir(d)):
        if name.endswith(".install"):
            with open(os.path.join(d, name)) as f:
                for line in f:
                    if line.strip() and not line.startswith("#"):
                        path = "/" + line.split()[0].replace("usr/lib/*/", "usr/lib/")
                        owner[path] = name[: -len(".install")]
    return owner


def check_same_split(owners):
    """The same file goes into the same package on every distribution."""
    norm = {}
    for dist, owner in owners.items():
        norm[dist] = {f.replace("/usr/lib64/", "/usr/lib/"): p for f, p in owner.items()}
    dists = sorted(norm)
    paths = set().union(*norm.values())
    bad = 0
    for f in sorted(paths):
        got = {d: norm[d].get(f) for d in dists}
        if len(set(got.values())) != 1:
            fail(f"{f} is packaged differently: {got}")
            bad += 1
    if not bad:
        print(f"check-files: {', '.join(dists)} split the files into the same packages")


def check_versions(spec, pkgbuild):
    def grab(path, pattern):
        with open(path) as f:
            m = re.search(pattern, f.read(), re.M)
        return m.group(1) if m else None

    versions = {
        "Cargo.toml": grab(os.path.join(TOP, "Cargo.toml"), r'^version = "([^"]+)"'),
        "bark.spec": grab(spec, r"^Version:\s*(\S+)"),
        "PKGBUILD": grab(pkgbuild, r"^pkgver=(\S+)"),
        "debian/changelog": grab(os.path.join(HERE, "debian", "changelog"), r"^bark \(([^)-]+)"),
    }
    if len(set(versions.values())) != 1:
        fail(f"versions disagree: {versions}")
    else:
        print(f"check-files: version {versions['Cargo.toml']} everywhere")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rpm-root", required=True)
    ap.add_argument("--arch-root", required=True)
    ap.add_argument("--spec", default=os.path.join(HERE, "rpm", "bark.spec"))
    ap.add_argument("--pkgbuild", default=os.path.join(HERE, "arch", "PKGBUILD"))
    a = ap.parse_args()
    for d in (a.rpm_root, a.arch_root):
        if not tree_files(d):
            fail(f"{d}: no files (run meson install --destdir {d} first)")
    if not errors:
        rpm = check_rpm(os.path.abspath(a.rpm_root), a.spec)
        arch = check_arch(os.path.abspath(a.arch_root), os.path.abspath(a.pkgbuild))
        if not errors:
            check_same_split({"rpm": rpm, "arch": arch, "debian": debian_owners()})
    check_versions(a.spec, a.pkgbuild)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

# Bark: top-level entry points.
#
# Each target group is self-contained; add new ones (demo, test, ...) in
# their own section below and list them in .PHONY there.

CARGO ?= cargo
# Cargo's target directory.
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: help
help:
	@echo "make demo      set up, then play music from a Bark sink to two receivers (root)"
	@echo "make test      set up and run every test"
	@echo "make deps      install the Debian packages builds and tests need"
	@echo "make sim       the deterministic simulation, every scenario"
	@echo "make modules   build the PipeWire modules into $(PW_MODULE_DIR)"
	@echo "make test-pw   headless PipeWire integration test of the modules"
	@echo "make test-control bark ls/set/web against PipeWire receivers, in headless Chromium (root)"
	@echo "make test-start   the first frame after idle, pauses, restarts, real players (root)"
	@echo "make test-speaker sync at the speaker behind a node that delays and reports it (root)"
	@echo "make test-channels stereo pair, 5.1 from six receivers, mono downmix: each receiver its own channels (root)"
	@echo "make test-opus  Opus streams: latency as PCM's, fidelity, skew, 1/12 of F32's bandwidth (root)"
	@echo "make test-pw1  the headless tests, the demo session, test-start and test-speaker on PipeWire 1.4 (Debian 13 root; root)"
	@echo "make demo-pw1  the demo on PipeWire 1.4 (Debian 13 root; root)"
	@echo "make deb       Debian packages into $(PKG_DIR)/deb"
	@echo "make test-pkg  build, lint, install and try the packages (root)"
	@echo "make fuzz      each fuzz target for FUZZ_SECONDS (60) on the stable toolchain"
	@echo "make test-robust  fault-injection scenarios in namespaces (root, ~6 min)"

# --- PipeWire modules (pw-module/) -------------------------------------------
#
# One cdylib serves both modules; it picks its role from the name PipeWire
# loads it under, so it is laid out under both names. Point PipeWire at them
# with PIPEWIRE_MODULE_DIR=$(PW_MODULE_DIR):$$(pkg-config --variable=moduledir libpipewire-0.3)

PW_MODULE_DIR := $(TARGET_DIR)/pw-modules
PW_MODULES := $(PW_MODULE_DIR)/libpipewire-module-bark-sink.so \
              $(PW_MODULE_DIR)/libpipewire-module-bark-source.so

.PHONY: modules test-pw
# The .so is replaced by rename, so that a daemon that has the old one
# mapped keeps running on it.
modules:
	$(CARGO) build --release -p bark-pw-module
	install -d $(PW_MODULE_DIR)
	install -m 0755 $(TARGET_DIR)/release/libbark_pw_module.so $(PW_MODULE_DIR)/.bark-module.tmp
	mv -f $(PW_MODULE_DIR)/.bark-module.tmp $(PW_MODULE_DIR)/libpipewire-module-bark-sink.so
	ln -sfn libpipewire-module-bark-sink.so $(PW_MODULE_DIR)/libpipewire-module-bark-source.so
	@ls -l $(PW_MODULES)

test-pw: modules
	BARK_PW_MODULE_DIR=$(abspath $(PW_MODULE_DIR)) $(CARGO) test --release -p bark-pw-module --test headless --test lifecycle -- --ignored --nocapture

# --- Set-up, tests and demo ----------------------------------------------------
#
# `make deps` installs what a fresh Debian 12 lacks (as root, or through
# sudo). The Rust toolchain comes from rustup, not Debian: bookworm's cargo
# is too old.

DEB_PACKAGES := pkg-config clang libclang-dev libpipewire-0.3-dev libspa-0.2-dev \
	libpulse-dev pipewire pipewire-bin wireplumber pipewire-pulse \
	pulseaudio-utils dbus iproute2 procps sox planetblupi-music-ogg make \
	tmux nftables python3 debootstrap gstreamer1.0-tools gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good python3-gi python3-gst-1.0 gir1.2-gstreamer-1.0 \
	gir1.2-gst-plugins-base-1.0 chromium chromium-driver python3-selenium \
	python3-zeroconf libopus-dev
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: deps test test-core test-root test-lab test-control test-start test-speaker test-channels test-opus sim demo
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust with rustup (https://rustup.rs)"; exit 1; }

# Every crate's unit, property and simulation tests, then the headless
# PipeWire tests, then end-to-end sessions in network namespaces (PipeWire
# 0.3.65, this machine's; then both again on PipeWire 1.4; then PulseAudio),
# then the packages (root).
test: deps
	$(CARGO) test --workspace --release
	$(MAKE) test-root
	$(MAKE) test-pw
	$(MAKE) test-lab
	$(MAKE) test-control
	$(MAKE) test-start
	$(MAKE) test-speaker
	$(MAKE) test-channels
	$(MAKE) test-opus
	$(MAKE) test-pw1
	$(MAKE) test-pulse
	$(MAKE) test-pkg
	$(MAKE) fuzz
	$(MAKE) test-robust

test-lab: modules lab-build
	lab/test-bark.sh

# The control plane on real daemons: bark ls / bark set against the
# PipeWire receivers, checked in their own PipeWire (lab/test-control.sh).
test-control: modules lab-build
	$(CARGO) build --release -p bark-cli
	lab/test-control.sh

# The first frame after idle, pauses, a second player, a sender restart,
# with pw-play, paplay and a GStreamer player (lab/test-start.sh); and sync
# at the speakers behind a node that delays 20, 50, 150 ms and reports it
# (lab/test-speaker.sh). Both on this machine's PipeWire; test-pw1 runs
# them on 1.4 too. START_ARGS="--repeat 10" for the acceptance runs.
START_ARGS ?=
test-start: modules lab-build
	lab/test-start.sh $(START_ARGS)

# One reported retry (lab hosts have no real-time scheduling).
test-speaker: modules lab-build
	lab/test-speaker.sh || { echo "test-speaker: retrying once"; lab/test-speaker.sh; }

# Stereo pairs, a 5.1 set from six machines, a mono downmix
# (lab/test-channels.sh; each case retries once).
test-channels: modules lab-build
	lab/test-channels.sh

# Opus streams: timing through the codec, fidelity, sync, bandwidth
# against F32 (lab/test-opus.sh; each case retries once).
test-opus: modules lab-build
	lab/test-opus.sh

test-core:
	$(CARGO) test --release -p bark-core

# The tests that need root (network namespaces: `#[ignore = "needs root"]`,
# so that a plain `cargo test` shows them as ignored, never as passed),
# under the lab lock.
test-root:
	lab/with-lock.sh $(CARGO) test --release -p bark-cli -- --ignored

sim:
	$(CARGO) run --release -p bark-core --example simulate -- --scenario all

# Real audio: one sender and two receivers in network namespaces (root).
demo: deps modules lab-build
	lab/demo.sh

# --- PipeWire 1.x: the same on Debian 13's PipeWire (lab/pw1-root.sh) -------
#
# This machine is Debian 12 (PipeWire 0.3.65); users run 1.x. A Debian 13
# root (PW1_ROOT, built once by lab/pw1-root.sh in ~30 s from the machine's
# Debian mirror) supplies PipeWire 1.4.2 and WirePlumber 0.5.8; the modules
# and the lab's tools are the ones built here.
#   make test-pw1   the headless module tests with their daemons and
#                   libpipewire from the root (lab/in-root.sh), then the
#                   demo's session with every lab host in it, with limits
#                   (lab/test-pw1.sh; root)
#   make demo-pw1   the demo with every host on PipeWire 1.4 (root)

PW1_ROOT ?= /var/cache/bark-lab/trixie

.PHONY: pw1-root test-pw1 demo-pw1
pw1-root:
	lab/pw1-root.sh $(PW1_ROOT)

test-pw1: modules lab-build
	$(CARGO) build --release -p bark-cli
	BARK_PW_MODULE_DIR=$(abspath $(PW_MODULE_DIR)) CARGO="$(CARGO)" lab/test-pw1.sh --rootfs $(PW1_ROOT)

demo-pw1: deps modules lab-build
	root=$$(lab/pw1-root.sh $(PW1_ROOT)) && lab/demo.sh --rootfs "$$root"

# --- Lab: network-namespace LAN harness (lab/) --------------------------------
#
# Root only (network namespaces). See lab/README.md. Every run cleans up its
# namespaces and daemons, also on failure or Ctrl-C.
#   make lab-session SENDER_CONF=f RECEIVER_CONF=f SINK=node [LAB_ARGS=...]

LAB_BIN := $(TARGET_DIR)/release
SENDER_CONF ?= lab/conf/rtp-sink.conf
RECEIVER_CONF ?= lab/conf/rtp-source.conf
SINK ?= rtp-sink
LAB_ARGS ?=

BENCH_ARGS ?=

.PHONY: lab-help lab-build lab-test lab-selftest lab-baseline lab-session lab-bench
lab-help:
	@echo "make lab-build     build bark-lab-record/-play/-analyze (release)"
	@echo "make lab-test      analyzer unit tests"
	@echo "make lab-selftest  check the lab's timestamps on this machine (root)"
	@echo "make lab-baseline  PipeWire rtp-sink/rtp-source baseline run (root)"
	@echo "make lab-session   a run with SENDER_CONF, RECEIVER_CONF, SINK, LAB_ARGS (root)"
	@echo "make lab-bench     Bark beside PipeWire's rtp modules, 3 rounds, table (root); BENCH_ARGS=..."

lab-build:
	$(CARGO) build --release -p bark-lab

lab-test:
	$(CARGO) test --release -p bark-lab

lab-selftest: lab-build
	BARK_LAB_BIN=$(LAB_BIN) lab/selftest.sh

lab-baseline: lab-build
	BARK_LAB_BIN=$(LAB_BIN) lab/run-baseline.sh $(LAB_ARGS)

lab-session: lab-build
	BARK_LAB_BIN=$(LAB_BIN) lab/run-session.sh --sender-conf $(SENDER_CONF) \
		--receiver-conf $(RECEIVER_CONF) --sink $(SINK) $(LAB_ARGS)

# e.g. make lab-bench BENCH_ARGS='--variants "bark bark-pw rtp" --quantum 1024'
lab-bench: modules lab-build
	BARK_LAB_BIN=$(LAB_BIN) lab/bench-vs-rtp.sh $(BENCH_ARGS)

# --- CLI: `bark` stats / stream / receive / doctor (cli/) ---------------------
#
#   make cli          build target/release/bark
#   make cli-test     its unit and integration tests (loopback; tmux for the
#                     live view; namespace tests need root)
#   make cli-man      man pages into $(CLI_MAN_DIR)
#   make cli-scale    1 sender + 32 receivers in namespaces (root, several
#                     minutes); CLI_SCALE_ARGS="--receivers 8 --seconds 20 ..."

CLI_MAN_DIR ?= $(TARGET_DIR)/man
CLI_SCALE_ARGS ?= --receivers 32 --seconds 30 --compare "1 8"

.PHONY: cli cli-test cli-man cli-scale
cli:
	$(CARGO) build --release -p bark-cli

cli-test:
	$(CARGO) test --release -p bark-cli

cli-man: cli
	$(TARGET_DIR)/release/bark man --dir $(CLI_MAN_DIR)
	@ls $(CLI_MAN_DIR)

cli-scale: lab-build
	$(CARGO) build --release -p bark-cli --bin bark --examples
	BARK_BIN=$(abspath $(TARGET_DIR)/release/bark) BARK_LAB_BIN=$(abspath $(LAB_BIN)) cli/bench/scale.sh $(CLI_SCALE_ARGS)

# --- PulseAudio: bark-pulse (pulse-module/) -----------------------------------
#
#   make pulse          build target/release/bark-pulse
#   make pulse-deps     a private pulseaudio daemon for the lab (lab/pa-fetch.sh:
#                       the Debian package unpacked into target/pulseaudio, not
#                       installed, so the system's sound server setup is untouched)
#   make test-pulse     unit tests, then the lab tests on real pulseaudio daemons
#                       beside PipeWire hosts (root, about 2 minutes)
#   make pulse-selftest check the PulseAudio recorder's timestamps (root)
# Run the lab cases by hand: lab/run-pa-session.sh --help.


.PHONY: pulse pulse-deps pulse-lab-build test-pulse pulse-selftest
pulse:
	$(CARGO) build --release -p bark-pulse

pulse-deps: deps
	lab/pa-fetch.sh

pulse-lab-build:
	$(CARGO) build --release -p bark-pulse -p bark-lab-pulse -p bark-lab

test-pulse: pulse-deps modules pulse-lab-build
	$(CARGO) test --release -p bark-pulse -p bark-lab-pulse
	BARK_LAB_BIN=$(LAB_BIN) lab/test-pulse.sh

pulse-selftest: pulse-deps pulse-lab-build
	BARK_LAB_BIN=$(LAB_BIN) lab/selftest-pulse.sh

# --- Packaging: meson install, .deb, rpm spec, PKGBUILD (packaging/) ----------
#
#   make deb        Debian packages into $(PKG_DIR)/deb (dpkg-buildpackage on a
#                   copy of the tree with packaging/debian as debian/)
#   make dist       source tarball $(PKG_DIR)/bark-VERSION.tar.gz (rpmbuild -ta)
#   make test-pkg   the .debs: build, lintian (no errors), install with apt and
#                   check that a fresh PipeWire with the installed drop-ins
#                   lists "Bark Network" (root); then meson install in the
#                   Fedora and Arch layouts against the spec's and the
#                   PKGBUILD's file lists, rpmspec -P, bash -n
# The meson builds of test-pkg share cargo's target dir with the workspace,
# so after `make test` they cost little; the .deb is always built from clean.

PKG_DIR := $(TARGET_DIR)/pkg
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
PKG_DEB_PACKAGES := build-essential meson ninja-build debhelper dpkg-dev fakeroot lintian rpm

.PHONY: pkg-deps deb dist test-pkg
pkg-deps:
	@missing=$$(for p in $(PKG_DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

deb: pkg-deps
	packaging/build-deb.sh $(PKG_DIR)/deb

dist:
	install -d $(PKG_DIR)
	git archive --format=tar.gz --prefix=bark-$(VERSION)/ -o $(PKG_DIR)/bark-$(VERSION).tar.gz HEAD
	@echo $(PKG_DIR)/bark-$(VERSION).tar.gz

test-pkg: deb
	lintian --fail-on error $(PKG_DIR)/deb/bark_$(VERSION)_*.changes
	packaging/test-install.sh $(PKG_DIR)/deb
	rpmspec -P packaging/rpm/bark.spec >/dev/null
	bash -n packaging/arch/PKGBUILD
	rm -rf $(PKG_DIR)/root-rpm $(PKG_DIR)/root-arch $(PKG_DIR)/meson-rpm $(PKG_DIR)/meson-arch
	meson setup $(PKG_DIR)/meson-rpm --prefix=/usr --libdir=lib64 -Dcargo_target_dir=$(abspath $(TARGET_DIR))
	meson install -C $(PKG_DIR)/meson-rpm --destdir $(abspath $(PKG_DIR))/root-rpm
	meson setup $(PKG_DIR)/meson-arch --prefix=/usr --libdir=lib -Dcargo_target_dir=$(abspath $(TARGET_DIR))
	meson install -C $(PKG_DIR)/meson-arch --destdir $(abspath $(PKG_DIR))/root-arch
	packaging/check-files.py --rpm-root $(PKG_DIR)/root-rpm --arch-root $(PKG_DIR)/root-arch

# --- Robustness: fuzzing and fault injection (fuzz/, lab/test-robust.sh) ------
#
#   make fuzz          each cargo-fuzz target for FUZZ_SECONDS, seeded from the
#                      committed corpus (fuzz/corpus/<target>, read only: new
#                      inputs go to a scratch dir that is wiped first); fails on
#                      any crash (the input is kept in fuzz/artifacts/<target>).
#                      Stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass
#                      its -Z flags (sanitizer=address, whose runtime ships with
#                      stable's rust-std); cargo-fuzz is installed if missing.
#   make fuzz-seeds    rewrite the seed corpus with the core's own writers
#   make test-robust   lab/test-robust.sh: loss, partition, sender restart, late
#                      join, two senders, hostile packets (root)
# Figures: docs/ROBUSTNESS.md.

FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= parse receiver auth sender command opus
FUZZ_SCRATCH := fuzz/target/scratch-corpus

.PHONY: fuzz fuzz-seeds test-robust
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
		rm -rf $(FUZZ_SCRATCH)/$$t && mkdir -p $(FUZZ_SCRATCH)/$$t && \
		echo "== fuzz $$t for $(FUZZ_SECONDS) s" && \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O $$t $(FUZZ_SCRATCH)/$$t fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 >$(FUZZ_SCRATCH)/$$t.log 2>&1; \
		rc=$$?; \
		grep -E '^stat::|#[0-9]+ +DONE|INFO: seed corpus' $(FUZZ_SCRATCH)/$$t.log; \
		[ $$rc -eq 0 ] || { tail -40 $(FUZZ_SCRATCH)/$$t.log; echo "fuzz $$t failed (exit $$rc)"; exit 1; }; \
	done

fuzz-seeds:
	$(CARGO) run --manifest-path fuzz/Cargo.toml -p bark-fuzz-seeds -- fuzz/corpus

test-robust: cli lab-build
	BARK_BIN=$(abspath $(TARGET_DIR)/release/bark) BARK_LAB_BIN=$(abspath $(LAB_BIN)) lab/test-robust.sh

# Bark: top-level entry points.
#
# Each target group is self-contained; add new ones (demo, test, ...) in
# their own section below and list them in .PHONY there.

CARGO ?= cargo
# Cargo's target directory.
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: help
help:
	@echo "make modules   build the PipeWire modules into $(PW_MODULE_DIR)"
	@echo "make test-pw   headless PipeWire integration test of the modules"

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
	BARK_PW_MODULE_DIR=$(abspath $(PW_MODULE_DIR)) $(CARGO) test --release -p bark-pw-module --test headless -- --ignored --nocapture

//! Helpers shared by the integration tests that load the built modules.

use std::path::{Path, PathBuf};

/// Where `make modules` put the module files: `$BARK_PW_MODULE_DIR`, else
/// `<target>/pw-modules` (`$CARGO_TARGET_DIR` or the workspace's target).
pub fn module_dir() -> PathBuf {
    if let Ok(d) = std::env::var("BARK_PW_MODULE_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("pw-modules")
}

/// PipeWire's own module directory, to list after ours in
/// `PIPEWIRE_MODULE_DIR` (which replaces the default): `$BARK_PW_SYSTEM_MODULE_DIR`,
/// else `pkg-config --variable=moduledir libpipewire-0.3`. The variable is
/// for runs inside another root (`lab/in-root.sh`, `make test-pw1`: Debian
/// 13's PipeWire 1.x), which has PipeWire but no pkg-config or headers.
pub fn system_module_dir() -> String {
    if let Ok(d) = std::env::var("BARK_PW_SYSTEM_MODULE_DIR") {
        return d;
    }
    let o = std::process::Command::new("pkg-config")
        .args(["--variable=moduledir", "libpipewire-0.3"])
        .output()
        .expect("pkg-config (or set BARK_PW_SYSTEM_MODULE_DIR)");
    assert!(o.status.success(), "pkg-config libpipewire-0.3 failed");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

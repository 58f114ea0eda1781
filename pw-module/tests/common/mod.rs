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

//! `key-file` (flag `--key-file`, TOML `key-file`): the key that the
//! endpoints seal every datagram with and check every datagram against
//! ([`bark_core::auth`]), and warnings about what they drop
//! ([`bark_io::dropwarn`]: the first of each kind at once, then a summary
//! at most once a minute).

use crate::clock::monotonic_ns;
use anyhow::{anyhow, Result};
use bark_core::auth::{AuthCounters, Key};
use bark_io::dropwarn::DropWarnings;
use std::path::Path;

/// Loads `key-file`, if set.
///
/// # Errors
/// The file's problem (permissions, owner, format), naming it and the fix.
pub fn load(path: Option<&Path>) -> Result<Option<Key>> {
    path.map(|p| bark_io::keyfile::load_key_file(p).map_err(|e| anyhow!("key-file: {e}")))
        .transpose()
}

/// Rate-limited warnings about the datagrams the authentication layer
/// dropped (the endpoint counts them), looked at once per status period.
#[derive(Default)]
pub struct Warnings {
    drops: DropWarnings,
    next_ns: u64,
}

impl Warnings {
    /// Logs what was dropped since the last warning of each kind, if due.
    pub fn warn(&mut self, c: &AuthCounters) {
        let now = monotonic_ns();
        if now < self.next_ns {
            return;
        }
        self.next_ns = now + bark_core::endpoint::STATUS_PERIOD_NS;
        for m in self.drops.due(c, now, "key-file") {
            log::warn!("{m}");
        }
    }
}

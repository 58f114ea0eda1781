//! `key-file` (flag `--key-file`, TOML `key-file`): the key that the
//! endpoints seal every datagram with and check every datagram against
//! ([`bark_core::auth`]), and warnings about what they drop: the first of
//! each kind at once, then a summary at most once a minute.

use anyhow::{anyhow, Result};
use bark_core::auth::{self, AuthCounters, Key};
use std::path::Path;
use std::time::{Duration, Instant};

/// Time between repeated warnings about one kind of dropped datagram.
const WARN_PERIOD: Duration = Duration::from_secs(60);

/// Loads `key-file`, if set.
///
/// # Errors
/// The file's problem (permissions, owner, format), naming it and the fix.
pub fn load(path: Option<&Path>) -> Result<Option<Key>> {
    path.map(|p| auth::load_key_file(p).map_err(|e| anyhow!("key-file: {e}")))
        .transpose()
}

/// Rate-limited warnings about the datagrams the authentication layer
/// dropped (the endpoint counts them).
#[derive(Default)]
pub struct Warnings {
    logged: AuthCounters,
    last_warn: [Option<Instant>; 5],
}

impl Warnings {
    /// Logs what was dropped since the last warning of each kind, if due.
    pub fn warn(&mut self, c: &AuthCounters) {
        let c = *c;
        let kinds: [(u64, u64, String); 5] = [
            (c.no_key, self.logged.no_key, "authenticated datagrams: senders use a key and this node has none; set key-file to their key file".into()),
            (c.unauthenticated, self.logged.unauthenticated, "unauthenticated datagrams: a node without a key file sends to this group".into()),
            (c.bad_tag, self.logged.bad_tag, "datagrams that failed authentication: a node with a different key (compare the key ids in the logs), or corrupted or forged datagrams".into()),
            (c.replayed, self.logged.replayed, "replayed datagrams".into()),
            (c.stale, self.logged.stale, format!("authentic datagrams stamped {:.0} s from this host's wall clock: set the hosts' clocks (NTP), or these are old captures being replayed", c.last_stale_skew_ns as f64 / 1e9)),
        ];
        let mut logged = [
            self.logged.no_key,
            self.logged.unauthenticated,
            self.logged.bad_tag,
            self.logged.replayed,
            self.logged.stale,
        ];
        for (i, (now, before, why)) in kinds.into_iter().enumerate() {
            let due = self.last_warn[i].is_none_or(|t| t.elapsed() >= WARN_PERIOD);
            if now > before && due {
                log::warn!("dropped {} {why}", now - before);
                logged[i] = now;
                self.last_warn[i] = Some(Instant::now());
            }
        }
        let [no_key, unauthenticated, bad_tag, replayed, stale] = logged;
        self.logged = AuthCounters {
            no_key,
            unauthenticated,
            bad_tag,
            replayed,
            stale,
            ..c
        };
    }
}

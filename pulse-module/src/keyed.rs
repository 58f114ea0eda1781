//! `key-file` (flag `--key-file`, TOML `key-file`): seals every datagram
//! bark-pulse sends and opens every datagram it receives with
//! [`bark_core::auth`], and warns about what it drops: the first of each
//! kind at once, then a summary at most once a minute.

use anyhow::{anyhow, Result};
use bark_core::auth::{self, AuthCounters, Key, Opener, Sealer};
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

/// Sealer, opener and warning state of one role.
pub struct Auth {
    sealer: Sealer,
    opener: Opener,
    buf: Vec<u8>,
    logged: AuthCounters,
    last_warn: [Option<Instant>; 5],
}

impl Auth {
    /// With `key` (none: open); `encrypt` audio payloads too.
    ///
    /// # Errors
    /// No randomness for the epoch.
    pub fn new(key: Option<&Key>, encrypt: bool) -> Result<Auth> {
        let (sealer, opener) = match key {
            Some(k) => (
                Sealer::new(k, encrypt).map_err(|e| anyhow!("no randomness: {e}"))?,
                Opener::new(k),
            ),
            None => (Sealer::keyless(), Opener::keyless()),
        };
        Ok(Auth {
            sealer,
            opener,
            buf: vec![0; 65_536 + auth::OVERHEAD],
            logged: AuthCounters::default(),
            last_warn: [None; 5],
        })
    }

    /// Bytes sealing adds to a datagram (0 when open).
    pub fn overhead(&self) -> usize {
        self.sealer.overhead()
    }

    /// Opens a received datagram in place: its plain length, or `None`
    /// when it is dropped (counted). No allocation.
    pub fn open(&mut self, data: &mut [u8], wall_ns: u64) -> Option<usize> {
        self.opener.open(data, wall_ns).ok()
    }

    /// A sealed copy of `pkt` to send, or `None` if it cannot be sealed.
    /// No allocation.
    pub fn seal<'a>(&'a mut self, pkt: &'a [u8], wall_ns: u64) -> Option<&'a [u8]> {
        if !self.sealer.keyed() {
            return Some(pkt);
        }
        self.buf.get_mut(..pkt.len())?.copy_from_slice(pkt);
        let n = self.sealer.seal(&mut self.buf, pkt.len(), wall_ns)?;
        Some(&self.buf[..n])
    }

    /// Total datagrams dropped.
    pub fn dropped(&self) -> u64 {
        self.opener.counters().total()
    }

    /// Logs what was dropped since the last warning of each kind, if due.
    pub fn warn(&mut self) {
        let c = *self.opener.counters();
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

//! `--key-file`: the key a command's endpoint seals what it sends with
//! and checks what it receives against ([`bark_core::auth`], applied by
//! [`bark_core::endpoint`]), and rate-limited warnings about the datagrams
//! dropped, from the endpoint's [`AuthCounters`].

use anyhow::Result;
use bark_core::auth::{self, AuthCounters, AuthError, Key, Opener};
use std::path::Path;
use std::time::{Duration, Instant};

/// Time between repeated warnings about one kind of dropped datagram.
const WARN_PERIOD: Duration = Duration::from_secs(60);

/// A command's key (if any) and its warning state.
pub struct Auth {
    key: Option<Key>,
    encrypt: bool,
    /// Per reason: the count at the last warning, and when it was given.
    warned: [(u64, Option<Instant>); 6],
}

impl Auth {
    /// From `--key-file` (none: open) and `--encrypt` (sender only).
    ///
    /// # Errors
    /// The key file's problem, naming the file and the fix; `--encrypt`
    /// without a key file.
    pub fn new(key_file: Option<&Path>, encrypt: bool) -> Result<Auth> {
        let key = key_file
            .map(|p| auth::load_key_file(p).map_err(|e| anyhow::anyhow!("--key-file: {e}")))
            .transpose()?;
        if encrypt && key.is_none() {
            anyhow::bail!("--encrypt needs --key-file (make one with `bark keygen FILE`)");
        }
        Ok(Auth {
            key,
            encrypt,
            warned: [(0, None); 6],
        })
    }

    /// The key, for the endpoint (`None`: open).
    pub fn key(&self) -> Option<&Key> {
        self.key.as_ref()
    }

    /// Whether audio payloads are to be encrypted too.
    pub fn encrypt(&self) -> bool {
        self.encrypt
    }

    /// An opener with this key, for a listener that has no endpoint
    /// (`bark stats`).
    pub fn opener(&self) -> Opener {
        self.key.as_ref().map_or_else(Opener::keyless, Opener::new)
    }

    /// For log lines: "open", or the key id and whether audio is encrypted.
    pub fn describe(&self) -> String {
        match &self.key {
            Some(k) if self.encrypt => format!("authenticated and encrypted, key id {}", k.id()),
            Some(k) => format!("authenticated, key id {}", k.id()),
            None => "open (no --key-file)".into(),
        }
    }

    /// What was dropped (`c`: the endpoint's or opener's counters) as JSON
    /// for `--summary`.
    pub fn counters_json(&self, c: &AuthCounters) -> serde_json::Value {
        serde_json::json!({
            "keyed": self.key.is_some(),
            "unauthenticated": c.unauthenticated,
            "no_key": c.no_key,
            "bad_tag": c.bad_tag,
            "replayed": c.replayed,
            "stale": c.stale,
            "malformed": c.malformed,
        })
    }

    /// After a datagram was dropped for `e` (`c`: the counters that
    /// counted it): warns with the count since the last warning of that
    /// kind, at most once a minute per kind (the first at once), so that a
    /// misconfigured node on the group is named without flooding the log.
    pub fn warn(&mut self, e: AuthError, c: &AuthCounters) {
        let (i, total) = match e {
            AuthError::NoKey => (0, c.no_key),
            AuthError::Unauthenticated => (1, c.unauthenticated),
            AuthError::BadTag => (2, c.bad_tag),
            AuthError::Replay => (3, c.replayed),
            AuthError::Stale => (4, c.stale),
            AuthError::Malformed(_) => (5, c.malformed),
        };
        let skew_s = c.last_stale_skew_ns as f64 / 1e9;
        let (logged, last) = &mut self.warned[i];
        if last.is_some_and(|t| t.elapsed() < WARN_PERIOD) {
            return;
        }
        let n = total - *logged;
        *logged = total;
        *last = Some(Instant::now());
        let why = match e {
            AuthError::NoKey => "authenticated datagrams, and this node has no key: pass --key-file with the senders' key".to_owned(),
            AuthError::Unauthenticated => "unauthenticated datagrams: a node without a key file sends to this group".to_owned(),
            AuthError::BadTag => "datagrams that failed authentication: a node with a different key (compare key ids), or corrupted or forged datagrams".to_owned(),
            AuthError::Replay => "replayed datagrams".to_owned(),
            AuthError::Stale => format!("authentic datagrams stamped {skew_s:.0} s from this host's wall clock: set the hosts' clocks (NTP), or these are old captures being replayed"),
            AuthError::Malformed(what) => format!("malformed sealed datagrams ({what})"),
        };
        log::warn!("dropped {n} {why}");
    }
}

/// `bark keygen FILE`: writes a new random key file with mode 0600 and
/// prints its key id (never the key).
///
/// # Errors
/// No randomness, or the file cannot be created (it is never overwritten).
pub fn keygen(path: &Path) -> Result<()> {
    let key = Key::generate().map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    auth::write_key_file(path, &key).map_err(|e| {
        anyhow::anyhow!(
            "writing {}: {e}{}",
            path.display(),
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                " (bark keygen never overwrites a key file)"
            } else {
                ""
            }
        )
    })?;
    println!(
        "wrote a new key to {} (mode 0600), key id {}; copy it to every node and pass it as --key-file / bark.key-file / key-file",
        path.display(),
        key.id()
    );
    Ok(())
}

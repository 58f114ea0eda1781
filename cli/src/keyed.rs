//! `--key-file`: the key a command's endpoint seals what it sends with
//! and checks what it receives against ([`bark_core::auth`], applied by
//! [`bark_core::endpoint`]), and rate-limited warnings about the datagrams
//! dropped, from the endpoint's [`AuthCounters`] ([`bark_io::dropwarn`]).

use anyhow::Result;
use bark_core::auth::{AuthCounters, Key, Opener};
use bark_core::endpoint::Dropped;
use bark_io::dropwarn::DropWarnings;
use bark_io::keyfile::{load_key_file, write_key_file};
use std::net::SocketAddrV4;
use std::path::Path;

/// CLOCK_REALTIME now, ns, for sealing and opening when `keyed`; 0 (not
/// read) otherwise.
pub fn wall_now(keyed: bool) -> u64 {
    if keyed {
        crate::clock::realtime_ns()
    } else {
        0
    }
}

/// A command's key (if any) and its warning state.
pub struct Auth {
    key: Option<Key>,
    encrypt: bool,
    drops: DropWarnings,
}

impl Auth {
    /// From `--key-file` (none: open) and `--encrypt` (sender only).
    ///
    /// # Errors
    /// The key file's problem, naming the file and the fix; `--encrypt`
    /// without a key file.
    pub fn new(key_file: Option<&Path>, encrypt: bool) -> Result<Auth> {
        let key = key_file
            .map(|p| load_key_file(p).map_err(|e| anyhow::anyhow!("--key-file: {e}")))
            .transpose()?;
        if encrypt && key.is_none() {
            anyhow::bail!("--encrypt needs --key-file (make one with `bark keygen FILE`)");
        }
        Ok(Auth {
            key,
            encrypt,
            drops: DropWarnings::default(),
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
        bark_io::keyfile::describe(self.key.as_ref(), self.encrypt, "--key-file")
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

    /// After the endpoint dropped a datagram from `from` for `e` (`c`: the
    /// authentication layer's counters): warns about authentication drops
    /// ([`Auth::warn`]); other drops are logged at debug level.
    pub fn dropped(&mut self, e: Dropped, from: SocketAddrV4, c: &AuthCounters) {
        match e {
            Dropped::Auth(_) => self.warn(c),
            e => log::debug!("from {from}: {e}"),
        }
    }

    /// After a datagram was dropped by the authentication layer (`c`:
    /// the counters that counted it): logs the warnings due, the first of
    /// each kind at once, then a summary at most once a minute, so that a
    /// misconfigured node on the group is named without flooding the log.
    pub fn warn(&mut self, c: &AuthCounters) {
        for m in self
            .drops
            .due(c, crate::clock::monotonic_ns(), "--key-file")
        {
            log::warn!("{m}");
        }
    }
}

/// `bark keygen FILE`: writes a new random key file with mode 0600 and
/// prints its key id (never the key).
///
/// # Errors
/// No randomness, or the file cannot be created (it is never overwritten).
pub fn keygen(path: &Path) -> Result<()> {
    let key = Key::generate().map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    write_key_file(path, &key).map_err(|e| {
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

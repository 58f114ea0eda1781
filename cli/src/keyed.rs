//! `--key-file`: seals what a command sends and opens what it receives
//! with [`bark_core::auth`], at the socket boundary, and warns (rate
//! limited) about what it drops.

use anyhow::Result;
use bark_core::auth::{self, AuthCounters, AuthError, Key, Opener, Sealer};
use std::path::Path;
use std::time::{Duration, Instant};

/// Time between repeated warnings about one kind of dropped datagram.
const WARN_PERIOD: Duration = Duration::from_secs(60);

/// What [`Auth::recv_open`] got.
pub enum Received {
    /// A datagram and its plain length (the opened bytes lead the buffer).
    Packet(crate::net::Datagram, usize),
    /// One datagram dropped; more may be queued.
    Dropped,
    /// Nothing more to read this turn.
    Empty,
}

/// A command's sealer, opener and warning state.
pub struct Auth {
    sealer: Sealer,
    opener: Opener,
    key: Option<Key>,
    encrypt: bool,
    buf: Vec<u8>,
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
        let (sealer, opener) = match &key {
            Some(k) => (
                Sealer::new(k, encrypt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?,
                Opener::new(k),
            ),
            None if encrypt => {
                anyhow::bail!("--encrypt needs --key-file (make one with `bark keygen FILE`)")
            }
            None => (Sealer::keyless(), Opener::keyless()),
        };
        Ok(Auth {
            sealer,
            opener,
            key,
            encrypt,
            buf: vec![0; crate::net::MAX_DATAGRAM + auth::OVERHEAD],
            warned: [(0, None); 6],
        })
    }

    /// Bytes sealing adds to each datagram (0 when open).
    pub fn overhead(&self) -> usize {
        self.sealer.overhead()
    }

    /// For log lines: "open", or the key id and whether audio is encrypted.
    pub fn describe(&self) -> String {
        match &self.key {
            Some(k) if self.encrypt => format!("authenticated and encrypted, key id {}", k.id()),
            Some(k) => format!("authenticated, key id {}", k.id()),
            None => "open (no --key-file)".into(),
        }
    }

    /// What was dropped so far.
    pub fn counters(&self) -> AuthCounters {
        *self.opener.counters()
    }

    /// The counters as JSON for `--summary`.
    pub fn counters_json(&self) -> serde_json::Value {
        let c = self.counters();
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

    /// Opens the received datagram `data` in place: the plain length, or
    /// `None` when it is dropped (counted, and warned about at most once a
    /// minute per reason).
    pub fn open(&mut self, data: &mut [u8]) -> Option<usize> {
        match self.opener.open(data, crate::clock::realtime_ns()) {
            Ok(n) => Some(n),
            Err(e) => {
                self.warn(e);
                None
            }
        }
    }

    /// Reads the next datagram from `sock` into `data` and opens it:
    /// [`Received::Packet`] with its metadata and plain length, or
    /// [`Received::Dropped`] for one that was cut (`malformed` is bumped)
    /// or failed authentication, or [`Received::Empty`] when nothing more
    /// is queued or the socket failed (logged).
    pub fn recv_open(
        &mut self,
        sock: &mut crate::net::UdpSocket,
        data: &mut [u8],
        malformed: &mut u64,
    ) -> Received {
        let d = match sock.recv(data) {
            Ok(Some(d)) => d,
            Ok(None) => return Received::Empty,
            Err(e) => {
                log::warn!("receive error: {e}");
                return Received::Empty;
            }
        };
        if d.truncated {
            *malformed += 1;
            return Received::Dropped;
        }
        match self.open(&mut data[..d.len]) {
            Some(n) => Received::Packet(d, n),
            None => Received::Dropped,
        }
    }

    fn warn(&mut self, e: AuthError) {
        let c = self.opener.counters();
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

    /// Seals a copy of the datagram `pkt` for sending: the bytes to send,
    /// or `None` if it cannot be sealed (not Bark, too large).
    pub fn seal<'a>(&'a mut self, pkt: &'a [u8]) -> Option<&'a [u8]> {
        if !self.sealer.keyed() {
            return Some(pkt);
        }
        let room = self.buf.get_mut(..pkt.len())?;
        room.copy_from_slice(pkt);
        let n = self
            .sealer
            .seal(&mut self.buf, pkt.len(), crate::clock::realtime_ns())?;
        Some(&self.buf[..n])
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

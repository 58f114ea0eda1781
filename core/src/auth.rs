//! Authenticated datagrams: an optional pre-shared key (PSK) seals every
//! Bark datagram (audio, time, status) with XChaCha20-Poly1305 and,
//! optionally, encrypts the audio payload. docs/SECURITY.md explains the
//! threat model; docs/PROTOCOL.md gives the trailer's bytes.
//!
//! This is a datagram layer below the sender and receiver state machines:
//! an adapter passes every datagram it receives through [`Opener::open`]
//! before the core sees it, and every datagram the core emits through
//! [`Sealer::seal`] before `sendto`. Both work in place on the caller's
//! buffer; neither allocates nor panics on the packet path.
//!
//! A sealed datagram is the plain v1 datagram with bit 0 ([`FLAG_AUTH`])
//! of the header's flags set (and bit 1, [`FLAG_ENCRYPTED`], when the
//! audio payload is encrypted), followed by a 48-byte trailer:
//!
//! | offset      | size | field |
//! |------------:|-----:|-------|
//! | n           | 16   | epoch: random, drawn once per sealer (process/socket) |
//! | n + 16      | 8    | counter: u64 LE, 0, 1, 2... per epoch |
//! | n + 24      | 8    | wall clock: u64 LE, sender CLOCK_REALTIME ns |
//! | n + 32      | 16   | Poly1305 tag |
//!
//! The 24-byte XChaCha20 nonce is epoch ‖ counter, so nodes sharing one PSK
//! never reuse a nonce as long as their random 128-bit epochs differ. The
//! associated data is the whole datagram (the header with the flag bits
//! set) and the first 32 bytes of the trailer, except the encrypted audio
//! payload, which is the AEAD's plaintext.
//!
//! Replays are rejected with a sliding bitmap window per epoch (IPsec's
//! anti-replay window, RFC 4303 §3.4.3, kept as a ring of words without
//! shifting as in RFC 6479 and WireGuard), and packets whose wall clock is
//! more than [`MAX_CLOCK_SKEW_NS`] from the receiver's are rejected as
//! stale, which bounds how long a captured epoch can be replayed once its
//! window has been evicted from the table.

use crate::protocol::{PacketType, AUDIO_HEADER_LEN, HEADER_LEN, MAGIC, VERSION};
use blake2::digest::Mac;
use blake2::Blake2sMac256;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use std::fmt;
use zeroize::Zeroize;

/// Header flags bit 0: an authentication trailer follows the datagram.
pub const FLAG_AUTH: u16 = 1;
/// Header flags bit 1: the audio payload is encrypted (with [`FLAG_AUTH`],
/// audio packets only).
pub const FLAG_ENCRYPTED: u16 = 2;
/// Bytes of the epoch, the random per-sealer half of the nonce.
pub const EPOCH_LEN: usize = 16;
/// Bytes of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Bytes the trailer adds to every datagram: epoch, counter, wall clock,
/// tag. Senders subtract it from `net.mtu` when packing frames.
pub const OVERHEAD: usize = EPOCH_LEN + 8 + 8 + TAG_LEN;
/// Bytes of a pre-shared key (256 bits).
pub const KEY_LEN: usize = 32;
/// Packets per epoch that may arrive out of order and still be accepted.
/// The ring holds 64 words; one is the word being filled (RFC 6479), so
/// 4032 counters. One sender's counters are shared by everything it seals:
/// 273 audio packets/s, and per unicast copy of a sync message (each
/// re-stamped and re-sealed) and per time reply; with 16 busy subscribers
/// about 2 800 a second, so the window still spans ~1.4 s there (14.8 s of
/// audio alone). 512 bytes per remembered epoch.
pub const REPLAY_WINDOW: u64 = (WORDS as u64 - 1) * 64;
/// Epochs (peers, or restarts of a peer) remembered at once; the least
/// recently heard one is forgotten when a new one arrives.
pub const MAX_PEERS: usize = 64;
/// Largest difference between a datagram's wall-clock stamp and the
/// receiver's wall clock, ns (5 min). Keyed nodes need wall clocks set to
/// within this (any NTP client does far better); it bounds how long a
/// captured epoch stays replayable (see docs/SECURITY.md).
pub const MAX_CLOCK_SKEW_NS: u64 = 300_000_000_000;

const WORDS: usize = 64;
const META_LEN: usize = EPOCH_LEN + 16;
/// Domain-separation labels for the keys derived from the PSK.
const LABEL_AEAD: &[u8] = b"bark v1 xchacha20poly1305 key";
const LABEL_ID: &[u8] = b"bark v1 key id";
const LABEL_WEB: &[u8] = b"bark v1 web token";

/// A 256-bit pre-shared key. Its bytes are wiped on drop and never shown:
/// `Debug` prints the [`KeyId`] only.
#[derive(Clone)]
pub struct Key([u8; KEY_LEN]);

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(id {})", self.id())
    }
}

/// A short public fingerprint of a key, 4 bytes, shown as 8 hex digits:
/// two nodes that print the same id share the same key (with 2^-32 odds of
/// a false match). Derived with keyed BLAKE2s, so it reveals nothing usable
/// about the key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KeyId(pub [u8; 4]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

fn derive(key: &[u8; KEY_LEN], label: &[u8]) -> [u8; 32] {
    // BLAKE2s in keyed mode is a PRF (RFC 7693 §2.5), enough to derive
    // independent subkeys from a uniformly random PSK.
    let mut m = <Blake2sMac256 as blake2::digest::KeyInit>::new_from_slice(key)
        .expect("BLAKE2s accepts 32-byte keys");
    m.update(label);
    m.finalize().into_bytes().into()
}

impl Key {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Key {
        Key(bytes)
    }

    /// A new random key from the OS (getrandom).
    ///
    /// # Errors
    /// When the OS has no entropy source.
    pub fn generate() -> Result<Key, getrandom::Error> {
        let mut k = [0u8; KEY_LEN];
        getrandom::fill(&mut k)?;
        Ok(Key(k))
    }

    /// The web controller's access token for this key (`bark web`): 32
    /// bytes derived with their own label (BLAKE2s-MAC, as the AEAD key
    /// is), so that showing the token reveals neither the key nor the
    /// AEAD key. Secret: whoever holds it can change every room through
    /// that controller.
    pub fn web_token(&self) -> [u8; 32] {
        derive(&self.0, LABEL_WEB)
    }

    /// The key's public fingerprint.
    pub fn id(&self) -> KeyId {
        let h = derive(&self.0, LABEL_ID);
        KeyId([h[0], h[1], h[2], h[3]])
    }

    /// Parses the text of a key file: one line of 64 hex digits (the 32
    /// key bytes); blank lines and lines starting with `#` are ignored,
    /// spaces around the key line too. Reading the file, and its owner and
    /// mode checks, are the adapters' (`bark_io::keyfile`): this crate does
    /// no I/O.
    ///
    /// # Errors
    /// [`KeyError`] saying what is wrong, never quoting the file's text.
    pub fn parse(text: &str) -> Result<Key, KeyError> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let Some(line) = lines.next() else {
            return Err(KeyError::NoKey);
        };
        if lines.next().is_some() {
            return Err(KeyError::SeveralKeys);
        }
        if line.len() != 2 * KEY_LEN {
            return Err(KeyError::Length(line.chars().count()));
        }
        let mut k = [0u8; KEY_LEN];
        for (i, pair) in line.as_bytes().chunks_exact(2).enumerate() {
            let hex = |c: u8| (c as char).to_digit(16);
            match (hex(pair[0]), hex(pair[1])) {
                (Some(h), Some(l)) => k[i] = (h * 16 + l) as u8,
                _ => {
                    k.zeroize();
                    return Err(KeyError::NotHex);
                }
            }
        }
        Ok(Key(k))
    }

    /// The text of a key file for this key: two comment lines (what it is,
    /// its id), then the key in lowercase hex.
    pub fn to_file_text(&self) -> String {
        let mut s = format!(
            "# Bark pre-shared key (bark.key-file, --key-file, key-file). Keep it secret:\n\
             # mode 0600, owned by the user that runs Bark. Key id: {}\n",
            self.id()
        );
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s.push('\n');
        s
    }

    fn aead(&self) -> XChaCha20Poly1305 {
        let mut k = derive(&self.0, LABEL_AEAD);
        let c = XChaCha20Poly1305::new(&k.into());
        k.zeroize();
        c
    }
}

/// What is wrong with a key or key file. Messages never contain key bytes.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No key line.
    #[error("no key in it: expected one line of 64 hex digits (make one with `bark keygen FILE`)")]
    NoKey,
    /// More than one non-comment line.
    #[error("more than one key line: expected exactly one line of 64 hex digits")]
    SeveralKeys,
    /// A key line of the wrong length (characters).
    #[error("the key line has {0} characters, expected 64 hex digits (32 bytes)")]
    Length(usize),
    /// A character that is not a hex digit.
    #[error("the key line is not hexadecimal")]
    NotHex,
}

/// Why [`Opener::open`] dropped a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A keyed node received an open datagram (no [`FLAG_AUTH`]).
    #[error("unauthenticated datagram (the sender has no key)")]
    Unauthenticated,
    /// A node without a key received a sealed datagram.
    #[error("authenticated datagram but this node has no key")]
    NoKey,
    /// Not a Bark v1 datagram, or a trailer or flags that make no sense.
    #[error("malformed datagram: {0}")]
    Malformed(&'static str),
    /// The tag does not verify: a different key, a corrupted or forged
    /// datagram.
    #[error("authentication failed (wrong key, corrupted or forged)")]
    BadTag,
    /// Authentic, but its counter was already seen or is older than the
    /// replay window.
    #[error("replayed or too old for the replay window")]
    Replay,
    /// Authentic, but its wall-clock stamp is more than
    /// [`MAX_CLOCK_SKEW_NS`] from ours (an old capture, or clocks not set).
    #[error("wall-clock stamp too far from ours")]
    Stale,
}

/// Counts of datagrams an [`Opener`] dropped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthCounters {
    /// [`AuthError::Unauthenticated`].
    pub unauthenticated: u64,
    /// [`AuthError::NoKey`].
    pub no_key: u64,
    /// [`AuthError::Malformed`].
    pub malformed: u64,
    /// [`AuthError::BadTag`].
    pub bad_tag: u64,
    /// [`AuthError::Replay`].
    pub replayed: u64,
    /// [`AuthError::Stale`].
    pub stale: u64,
    /// Wall-clock stamp minus our wall clock of the last stale datagram, ns.
    pub last_stale_skew_ns: i64,
}

impl AuthCounters {
    /// All drops.
    pub fn total(&self) -> u64 {
        self.unauthenticated
            + self.no_key
            + self.malformed
            + self.bad_tag
            + self.replayed
            + self.stale
    }
}

fn flags(d: &[u8]) -> u16 {
    u16::from_le_bytes([d[6], d[7]])
}

fn set_flags(d: &mut [u8], f: u16) {
    d[6..8].copy_from_slice(&f.to_le_bytes());
}

fn is_bark(d: &[u8]) -> bool {
    d.len() >= HEADER_LEN && d[0..4] == MAGIC && d[4] == VERSION
}

/// Seals outgoing datagrams: sets the flag bits, appends the trailer and,
/// if configured, encrypts audio payloads. One per socket or thread; its
/// epoch and counter make every nonce unique.
pub struct Sealer {
    aead: Option<XChaCha20Poly1305>,
    epoch: [u8; EPOCH_LEN],
    counter: u64,
    encrypt: bool,
}

impl Sealer {
    /// A sealer that leaves datagrams open (no key configured).
    pub fn keyless() -> Sealer {
        Sealer {
            aead: None,
            epoch: [0; EPOCH_LEN],
            counter: 0,
            encrypt: false,
        }
    }

    /// A sealer with `key` and an explicit `epoch`, which must never have
    /// been used with this key before (tests; use [`Sealer::new`]).
    /// `encrypt`: also encrypt audio payloads.
    pub fn with_epoch(key: &Key, epoch: [u8; EPOCH_LEN], encrypt: bool) -> Sealer {
        Sealer {
            aead: Some(key.aead()),
            epoch,
            counter: 0,
            encrypt,
        }
    }

    /// A sealer with `key` and a fresh random epoch (getrandom).
    ///
    /// # Errors
    /// When the OS has no entropy source.
    pub fn new(key: &Key, encrypt: bool) -> Result<Sealer, getrandom::Error> {
        let mut epoch = [0u8; EPOCH_LEN];
        getrandom::fill(&mut epoch)?;
        Ok(Sealer::with_epoch(key, epoch, encrypt))
    }

    /// Whether it seals (a key is configured).
    pub fn keyed(&self) -> bool {
        self.aead.is_some()
    }

    /// Bytes [`Sealer::seal`] adds: [`OVERHEAD`] when keyed, else 0.
    pub fn overhead(&self) -> usize {
        if self.keyed() {
            OVERHEAD
        } else {
            0
        }
    }

    /// Seals the `len`-byte datagram at the start of `buf` in place, at
    /// sender wall-clock time `wall_ns` (CLOCK_REALTIME ns), and returns
    /// the sealed length (`len` unchanged without a key). `None` if `buf`
    /// lacks [`OVERHEAD`] bytes of room after the datagram, if it is not a
    /// Bark v1 datagram, or if it is already sealed. No allocation.
    pub fn seal(&mut self, buf: &mut [u8], len: usize, wall_ns: u64) -> Option<usize> {
        let Some(aead) = &self.aead else {
            return Some(len);
        };
        if len > buf.len() || !is_bark(&buf[..len]) || flags(buf) & FLAG_AUTH != 0 {
            return None;
        }
        let sealed = len.checked_add(OVERHEAD)?;
        if sealed > buf.len() || self.counter == u64::MAX {
            return None;
        }
        let encrypt = self.encrypt && buf[5] == PacketType::Audio as u8 && len > AUDIO_HEADER_LEN;
        let f = flags(buf) | FLAG_AUTH | if encrypt { FLAG_ENCRYPTED } else { 0 };
        set_flags(buf, f);
        buf[len..len + EPOCH_LEN].copy_from_slice(&self.epoch);
        buf[len + EPOCH_LEN..len + EPOCH_LEN + 8].copy_from_slice(&self.counter.to_le_bytes());
        buf[len + EPOCH_LEN + 8..len + META_LEN].copy_from_slice(&wall_ns.to_le_bytes());
        let nonce = nonce(&self.epoch, self.counter);
        self.counter += 1;
        let tag = if encrypt {
            let aad = encrypted_aad(buf, len);
            aead.encrypt_in_place_detached(&nonce, &aad, &mut buf[AUDIO_HEADER_LEN..len])
        } else {
            aead.encrypt_in_place_detached(&nonce, &buf[..len + META_LEN], &mut [])
        }
        .ok()?;
        buf[len + META_LEN..sealed].copy_from_slice(&tag);
        Some(sealed)
    }
}

fn nonce(epoch: &[u8; EPOCH_LEN], counter: u64) -> XNonce {
    let mut n = [0u8; 24];
    n[..EPOCH_LEN].copy_from_slice(epoch);
    n[EPOCH_LEN..].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

/// Associated data of an encrypted audio datagram of plain length `len`:
/// its clear header and the trailer's epoch, counter and wall clock.
fn encrypted_aad(buf: &[u8], len: usize) -> [u8; AUDIO_HEADER_LEN + META_LEN] {
    let mut aad = [0u8; AUDIO_HEADER_LEN + META_LEN];
    aad[..AUDIO_HEADER_LEN].copy_from_slice(&buf[..AUDIO_HEADER_LEN]);
    aad[AUDIO_HEADER_LEN..].copy_from_slice(&buf[len..len + META_LEN]);
    aad
}

/// Anti-replay state of one epoch: the highest counter accepted and a ring
/// of `WORDS` 64-bit words, bit `c % 64` of word `(c / 64) % WORDS` for
/// counter `c` (RFC 6479).
#[derive(Clone, Copy)]
struct Peer {
    epoch: [u8; EPOCH_LEN],
    top: u64,
    bits: [u64; WORDS],
    last_used: u64,
}

impl Peer {
    fn new(epoch: [u8; EPOCH_LEN], counter: u64, now: u64) -> Peer {
        let mut p = Peer {
            epoch,
            top: counter,
            bits: [0; WORDS],
            last_used: now,
        };
        p.mark(counter);
        p
    }

    fn mark(&mut self, c: u64) {
        self.bits[(c / 64) as usize % WORDS] |= 1 << (c % 64);
    }

    /// Accepts `c` once (true), or rejects a repeat or a counter older than
    /// the window (false).
    fn accept(&mut self, c: u64) -> bool {
        if c > self.top {
            // Clear the words the window moves over (at most all of them).
            let (old, new) = (self.top / 64, c / 64);
            for w in (old + 1..=new).take(WORDS) {
                self.bits[w as usize % WORDS] = 0;
            }
            self.top = c;
        } else if self.top - c >= REPLAY_WINDOW
            || self.bits[(c / 64) as usize % WORDS] & (1 << (c % 64)) != 0
        {
            // Older than the window, or seen.
            return false;
        }
        self.mark(c);
        true
    }
}

/// Opens incoming datagrams: checks the flags, verifies the tag, decrypts
/// the payload if it was encrypted, rejects replays and stale stamps, and
/// counts what it drops. Without a key it passes open datagrams and drops
/// sealed ones. All memory is allocated in the constructor.
pub struct Opener {
    aead: Option<XChaCha20Poly1305>,
    peers: Vec<Peer>,
    tick: u64,
    counters: AuthCounters,
}

impl Opener {
    /// An opener for a node without a key: open datagrams pass, sealed ones
    /// are dropped as [`AuthError::NoKey`].
    pub fn keyless() -> Opener {
        Opener {
            aead: None,
            peers: Vec::new(),
            tick: 0,
            counters: AuthCounters::default(),
        }
    }

    /// An opener for `key`.
    pub fn new(key: &Key) -> Opener {
        Opener {
            aead: Some(key.aead()),
            peers: Vec::with_capacity(MAX_PEERS),
            tick: 0,
            counters: AuthCounters::default(),
        }
    }

    /// Whether a key is configured.
    pub fn keyed(&self) -> bool {
        self.aead.is_some()
    }

    /// What was dropped so far.
    pub fn counters(&self) -> &AuthCounters {
        &self.counters
    }

    /// Opens the datagram `data` received at receiver wall-clock time
    /// `wall_ns` (CLOCK_REALTIME ns) in place and returns the length of
    /// the plain v1 datagram at its start (flag bits cleared, payload
    /// decrypted), ready for [`crate::protocol::parse`]. Without a key,
    /// open datagrams (and anything that is not Bark, for the core to
    /// reject) pass unchanged. No allocation.
    ///
    /// # Errors
    /// [`AuthError`], also counted in [`Opener::counters`]. The datagram
    /// must then be dropped; its bytes may have been changed.
    pub fn open(&mut self, data: &mut [u8], wall_ns: u64) -> Result<usize, AuthError> {
        let r = self.open_inner(data, wall_ns);
        if let Err(e) = r {
            let c = &mut self.counters;
            match e {
                AuthError::Unauthenticated => c.unauthenticated += 1,
                AuthError::NoKey => c.no_key += 1,
                AuthError::Malformed(_) => c.malformed += 1,
                AuthError::BadTag => c.bad_tag += 1,
                AuthError::Replay => c.replayed += 1,
                AuthError::Stale => {
                    c.stale += 1;
                    let at = data.len() - OVERHEAD + EPOCH_LEN + 8;
                    let stamp = u64::from_le_bytes(data[at..at + 8].try_into().unwrap_or([0; 8]));
                    c.last_stale_skew_ns = stamp.wrapping_sub(wall_ns) as i64;
                }
            }
        }
        r
    }

    fn open_inner(&mut self, data: &mut [u8], wall_ns: u64) -> Result<usize, AuthError> {
        let sealed = is_bark(data) && flags(data) & FLAG_AUTH != 0;
        let Some(aead) = &self.aead else {
            return if sealed {
                Err(AuthError::NoKey)
            } else {
                Ok(data.len())
            };
        };
        if !is_bark(data) {
            return Err(AuthError::Malformed("not a Bark v1 datagram"));
        }
        let f = flags(data);
        if f & FLAG_AUTH == 0 {
            return Err(AuthError::Unauthenticated);
        }
        if f & !(FLAG_AUTH | FLAG_ENCRYPTED) != 0 {
            return Err(AuthError::Malformed("unknown header flags"));
        }
        if data.len() < HEADER_LEN + OVERHEAD {
            return Err(AuthError::Malformed("too short for its trailer"));
        }
        let len = data.len() - OVERHEAD;
        let mut epoch = [0u8; EPOCH_LEN];
        epoch.copy_from_slice(&data[len..len + EPOCH_LEN]);
        let counter = u64::from_le_bytes(
            data[len + EPOCH_LEN..len + EPOCH_LEN + 8]
                .try_into()
                .unwrap_or([0; 8]),
        );
        let stamp = u64::from_le_bytes(
            data[len + EPOCH_LEN + 8..len + META_LEN]
                .try_into()
                .unwrap_or([0; 8]),
        );
        let tag = *Tag::from_slice(&data[len + META_LEN..]);
        let n = nonce(&epoch, counter);
        // Verify (and decrypt) first: every later verdict is then about an
        // authentic datagram, and nothing unauthenticated touches the
        // replay state.
        if f & FLAG_ENCRYPTED != 0 {
            if data[5] != PacketType::Audio as u8 || len <= AUDIO_HEADER_LEN {
                return Err(AuthError::Malformed(
                    "encrypted flag on a non-audio datagram",
                ));
            }
            let aad = encrypted_aad(data, len);
            aead.decrypt_in_place_detached(&n, &aad, &mut data[AUDIO_HEADER_LEN..len], &tag)
        } else {
            aead.decrypt_in_place_detached(&n, &data[..len + META_LEN], &mut [], &tag)
        }
        .map_err(|_| AuthError::BadTag)?;
        if stamp.abs_diff(wall_ns) > MAX_CLOCK_SKEW_NS {
            return Err(AuthError::Stale);
        }
        self.tick += 1;
        match self.peers.iter_mut().find(|p| p.epoch == epoch) {
            Some(p) => {
                if !p.accept(counter) {
                    return Err(AuthError::Replay);
                }
                p.last_used = self.tick;
            }
            None => {
                let fresh = Peer::new(epoch, counter, self.tick);
                if self.peers.len() < MAX_PEERS {
                    self.peers.push(fresh);
                } else if let Some(lru) = self.peers.iter_mut().min_by_key(|p| p.last_used) {
                    *lru = fresh;
                }
            }
        }
        set_flags(data, f & !(FLAG_AUTH | FLAG_ENCRYPTED));
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{AudioFormat, SampleFormat};
    use crate::protocol::{self, AudioHeader, Packet, TimePacket, TIME_LEN};
    use proptest::prelude::*;

    const T0: u64 = 1_800_000_000_000_000_000;

    fn key(b: u8) -> Key {
        Key::from_bytes([b; KEY_LEN])
    }

    fn audio(buf: &mut [u8], seq: u64) -> usize {
        let format = AudioFormat {
            sample: SampleFormat::S16,
            rate: 48_000,
            channels: 2,
        };
        let h = AudioHeader {
            positions: Default::default(),
            stream_id: 9,
            seq,
            frame: seq * 4,
            pts: 5,
            format,
            latency_us: 40_000,
            name_hash: 1,
            priority: 0,
            frames: 4,
        };
        let samples = [0.25f32, -0.5, 0.125, 0.75, -1.0, 0.0, 0.5, 0.5];
        protocol::write_audio(buf, &h, &samples).unwrap()
    }

    fn time(buf: &mut [u8], t1: u64) -> usize {
        let t = TimePacket::request(9, 3, t1);
        protocol::write_time(buf, false, &t).unwrap()
    }

    fn sealed_audio(s: &mut Sealer, seq: u64) -> Vec<u8> {
        let mut buf = vec![0u8; 512];
        let n = audio(&mut buf, seq);
        let m = s.seal(&mut buf, n, T0).unwrap();
        buf.truncate(m);
        buf
    }

    #[test]
    fn round_trip_of_every_type() {
        for encrypt in [false, true] {
            let mut s = Sealer::with_epoch(&key(1), [7; EPOCH_LEN], encrypt);
            let mut o = Opener::new(&key(1));
            let mut plain = vec![0u8; 512];
            let n = audio(&mut plain, 0);
            let mut d = sealed_audio(&mut s, 0);
            assert_eq!(d.len(), n + OVERHEAD);
            assert_eq!(flags(&d) & FLAG_AUTH, FLAG_AUTH);
            assert_eq!(flags(&d) & FLAG_ENCRYPTED != 0, encrypt);
            // Encryption hides the payload and only the payload.
            assert_eq!(d[..6], plain[..6]);
            assert_eq!(d[8..AUDIO_HEADER_LEN], plain[8..AUDIO_HEADER_LEN]);
            assert_eq!(
                d[AUDIO_HEADER_LEN..n] != plain[AUDIO_HEADER_LEN..n],
                encrypt
            );
            assert_eq!(o.open(&mut d, T0 + 1_000_000), Ok(n));
            assert_eq!(d[..n], plain[..n]);
            assert!(matches!(protocol::parse(&d[..n]), Ok(Packet::Audio(_))));

            let mut t = vec![0u8; TIME_LEN + OVERHEAD];
            let tn = time(&mut t, 42);
            let m = s.seal(&mut t, tn, T0).unwrap();
            assert_eq!(flags(&t), FLAG_AUTH, "time packets are never encrypted");
            assert_eq!(o.open(&mut t[..m], T0), Ok(TIME_LEN));
            assert!(
                matches!(protocol::parse(&t[..TIME_LEN]), Ok(Packet::TimeRequest(p)) if p.t1 == 42)
            );
        }
    }

    #[test]
    fn seal_needs_room_and_a_bark_datagram() {
        let mut s = Sealer::with_epoch(&key(1), [0; EPOCH_LEN], false);
        let mut buf = [0u8; TIME_LEN + OVERHEAD - 1];
        let n = time(&mut buf, 1);
        assert_eq!(s.seal(&mut buf, n, T0), None);
        let mut junk = [0u8; 200];
        assert_eq!(s.seal(&mut junk, 20, T0), None);
        // Without a key nothing changes.
        let mut open = Sealer::keyless();
        let mut b2 = [0u8; TIME_LEN];
        let n = time(&mut b2, 1);
        let before = b2;
        assert_eq!(open.seal(&mut b2, n, T0), Some(n));
        assert_eq!(b2, before);
    }

    #[test]
    fn wrong_key_is_a_bad_tag() {
        let mut s = Sealer::with_epoch(&key(1), [7; EPOCH_LEN], true);
        let mut o = Opener::new(&key(2));
        let mut d = sealed_audio(&mut s, 0);
        assert_eq!(o.open(&mut d, T0), Err(AuthError::BadTag));
        assert_eq!(o.counters().bad_tag, 1);
    }

    #[test]
    fn open_and_keyed_nodes_reject_each_other_by_reason() {
        let mut s = Sealer::with_epoch(&key(1), [7; EPOCH_LEN], false);
        let mut keyless = Opener::keyless();
        let mut d = sealed_audio(&mut s, 0);
        assert_eq!(keyless.open(&mut d, T0), Err(AuthError::NoKey));
        assert_eq!(keyless.counters().no_key, 1);
        // The core itself refuses a sealed datagram too.
        assert!(protocol::parse(&d).is_err());

        let mut plain = vec![0u8; 512];
        let n = audio(&mut plain, 0);
        assert_eq!(keyless.open(&mut plain[..n], T0), Ok(n));
        let mut keyed = Opener::new(&key(1));
        assert_eq!(
            keyed.open(&mut plain[..n], T0),
            Err(AuthError::Unauthenticated)
        );
        assert_eq!(keyed.counters().unauthenticated, 1);
        assert_eq!(
            keyed.open(&mut [1u8, 2, 3], T0),
            Err(AuthError::Malformed("not a Bark v1 datagram"))
        );
    }

    #[test]
    fn replays_are_rejected_and_reordering_within_the_window_is_not() {
        let mut s = Sealer::with_epoch(&key(1), [7; EPOCH_LEN], false);
        let mut o = Opener::new(&key(1));
        let w = REPLAY_WINDOW as usize;
        let pkts: Vec<Vec<u8>> = (0..2 * w + 100)
            .map(|i| sealed_audio(&mut s, i as u64))
            .collect();
        let open = |o: &mut Opener, i: usize| o.open(&mut pkts[i].clone(), T0);
        // In order, with 5 and w + 5 held back.
        for i in (0..w + 40).filter(|&i| i != 5 && i != w + 5) {
            assert!(open(&mut o, i).is_ok(), "{i}");
        }
        // Late but within the window: accepted, once.
        assert!(open(&mut o, w + 5).is_ok());
        assert_eq!(open(&mut o, w + 5), Err(AuthError::Replay));
        assert_eq!(open(&mut o, w + 39), Err(AuthError::Replay));
        // Older than the window ((w + 39) - 5 >= w): rejected though unseen.
        assert_eq!(open(&mut o, 5), Err(AuthError::Replay));
        // A jump far ahead clears the ring: counters just below the new
        // top that were never seen are accepted.
        assert!(open(&mut o, 2 * w + 99).is_ok());
        assert!(open(&mut o, 2 * w + 98).is_ok());
        assert_eq!(open(&mut o, w + 45), Err(AuthError::Replay));
        assert_eq!(o.counters().replayed, 4);
    }

    #[test]
    fn stale_stamps_are_rejected() {
        let mut s = Sealer::with_epoch(&key(1), [7; EPOCH_LEN], false);
        let mut o = Opener::new(&key(1));
        let mut d = sealed_audio(&mut s, 0);
        assert_eq!(
            o.open(&mut d.clone(), T0 + MAX_CLOCK_SKEW_NS + 1),
            Err(AuthError::Stale)
        );
        assert_eq!(
            o.counters().last_stale_skew_ns,
            -(MAX_CLOCK_SKEW_NS as i64) - 1
        );
        assert_eq!(
            o.open(&mut d.clone(), T0 - MAX_CLOCK_SKEW_NS - 1),
            Err(AuthError::Stale)
        );
        assert!(o.open(&mut d, T0 + MAX_CLOCK_SKEW_NS).is_ok());
    }

    #[test]
    fn new_epochs_are_accepted_and_the_oldest_forgotten() {
        let mut o = Opener::new(&key(1));
        let mut first = Sealer::with_epoch(&key(1), [0; EPOCH_LEN], false);
        let old = sealed_audio(&mut first, 0);
        assert!(o.open(&mut old.clone(), T0).is_ok());
        assert_eq!(o.open(&mut old.clone(), T0), Err(AuthError::Replay));
        for e in 1..=MAX_PEERS as u8 {
            let mut s = Sealer::with_epoch(&key(1), [e; EPOCH_LEN], false);
            assert!(o.open(&mut sealed_audio(&mut s, 0), T0).is_ok());
        }
        assert_eq!(o.peers.len(), MAX_PEERS);
        // Epoch 0 was evicted: its replay is accepted again (documented
        // limit: bounded by the stamp check).
        assert!(o.open(&mut old.clone(), T0).is_ok());
    }

    #[test]
    fn key_text_round_trips_and_errors_never_quote_it() {
        let k = Key::from_bytes(core::array::from_fn(|i| i as u8 * 7));
        let text = k.to_file_text();
        let back = Key::parse(&text).unwrap();
        assert_eq!(back.0, k.0);
        assert_eq!(back.id(), k.id());
        assert_ne!(k.id(), key(1).id());
        assert!(!format!("{k:?}").contains("0007"));
        let hex: String = text.lines().last().unwrap().into();
        assert!(matches!(Key::parse(""), Err(KeyError::NoKey)));
        assert!(matches!(Key::parse("# only\n\n"), Err(KeyError::NoKey)));
        assert!(matches!(
            Key::parse(&format!("{hex}\n{hex}")),
            Err(KeyError::SeveralKeys)
        ));
        assert!(matches!(Key::parse(&hex[..62]), Err(KeyError::Length(62))));
        let bad = format!("zz{}", &hex[2..]);
        let e = Key::parse(&bad).unwrap_err();
        assert!(matches!(e, KeyError::NotHex));
        assert!(!e.to_string().contains(&hex[2..10]));
        assert_eq!(
            Key::parse(&format!("  {}  \r\n", hex.to_uppercase()))
                .unwrap()
                .0,
            k.0
        );
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_is_rejected(bit in 0usize..(AUDIO_HEADER_LEN + 16 + OVERHEAD) * 8, encrypt in any::<bool>()) {
            let mut s = Sealer::with_epoch(&key(3), [9; EPOCH_LEN], encrypt);
            let mut o = Opener::new(&key(3));
            let mut d = sealed_audio(&mut s, 0);
            prop_assert_eq!(d.len(), AUDIO_HEADER_LEN + 16 + OVERHEAD);
            d[bit / 8] ^= 1 << (bit % 8);
            let r = o.open(&mut d, T0);
            prop_assert!(r.is_err(), "flip of bit {} accepted", bit);
        }

        #[test]
        fn open_never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..300), keyed in any::<bool>(), head in any::<bool>()) {
            if head && data.len() >= 8 {
                data[0..4].copy_from_slice(&MAGIC);
                data[4] = VERSION;
                data[6] |= FLAG_AUTH as u8;
            }
            let mut o = if keyed { Opener::new(&key(1)) } else { Opener::keyless() };
            let _ = o.open(&mut data, T0);
        }
    }
}

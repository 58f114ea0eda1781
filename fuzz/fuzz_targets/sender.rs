//! The sender endpoint (core/src/endpoint.rs) with repair on, keyless,
//! pushed audio at increasing times and fed datagrams from eight source
//! addresses: arbitrary bytes, bytes behind a valid header, Hellos (well
//! formed or not, for this session or another), NACKs carrying the cookie
//! the sender gave that address (got the way a receiver gets it: a Hello,
//! then the Cookie out of `poll_transmit`), NACKs with made-up, stolen
//! (another address's), other-node or other-session cookies, NACK storms,
//! time requests and receivers' status (which raises the session
//! latency), interleaved with `push`, `poll_transmit` and time passing
//! (by a cycle, by seconds, by days: cookies expire).
//!
//! Invariants, checked on every datagram the endpoint writes:
//! - nothing panics, everything it writes parses, and a drain of
//!   `poll_transmit` ends;
//! - `push` sends only fresh audio and syncs, `poll_transmit` to the group
//!   only syncs and status; nothing to an address no datagram came from;
//! - nothing to an address that only sent malformed datagrams, and to any
//!   address only what it asked for: a time reply per time request, a
//!   Cookie per Hello (with its node id and nonce, and never longer than
//!   the Hello), a resend per sequence number named by a NACK from that
//!   address carrying a cookie the sender gave that address and node;
//! - copies of the stream (audio, syncs, status) only to an address whose
//!   last Subscribe, within the lease, carried a cookie the sender gave
//!   it, still valid (Subscribes with made-up, stolen, stale or
//!   other-session cookies, leaves, and Hellos for any session are in the
//!   mix): nobody can point the stream at someone else;
//! - a resend is the datagram sent before (but for the latency field and
//!   the resent flag);
//! - resent bytes to one address ≤ the stream's wire rate × the time since
//!   its first such NACK + `REPAIR_BURST_S` of it (+ one packet), and in
//!   all ≤ `RESEND_MULTIPLE` × that (core/src/repair/resend.rs);
//! - the endpoint's counts agree with what the harness saw go out.
#![no_main]

use bark_core::endpoint::{Dest, Dropped, SenderEndpoint, MAX_SINK_BUFFER_FRAMES, TRANSMIT_BUF};
use bark_core::fanout::LEASE_NS;
use bark_core::protocol::{
    self, CookieTag, HelloPacket, NackPacket, Packet, PacketType, Role, StatusCounters,
    StatusPacket, SubscribePacket, TimePacket, ANY_SESSION, COOKIE_MAC_LEN, SUBSCRIBE_LEAVE,
};
use bark_core::repair::cookie::SLOT_SHIFT;
use bark_core::repair::resend::{REPAIR_BURST_S, RESEND_MULTIPLE};
use bark_core::SenderConfig;
use bark_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

/// The sender's session id.
const SESSION: u64 = 77;
/// Source addresses datagrams come from.
const PEERS: usize = 8;
/// Events per input: bounds the time one input takes.
const MAX_EVENTS: usize = 1_000;
/// Sender clock at the start, ns.
const T0: u64 = 1_000_000_000;
/// A sink buffer of a cycle, frames, and its duration at 48 kHz, ns.
const CYCLE_FRAMES: usize = 256;
const CYCLE_NS: u64 = 5_333_333;
/// Datagrams one drain of `poll_transmit` may return: the owed replies
/// (32), the resend queue (256), a sync and a status packet, with room.
const MAX_DRAIN: usize = 1_000;
/// Cookies remembered per address.
const MAX_COOKIES: usize = 16;

/// What the harness knows about one source address.
#[derive(Default)]
struct Peer {
    /// Node id its well-behaved datagrams carry.
    node: u64,
    /// Some datagram from it parsed.
    wellformed: bool,
    /// Time requests for this session taken from it, not yet answered.
    time_requests: u32,
    /// Hellos for this session taken from it, not yet answered: node id,
    /// nonce, length.
    hellos: Vec<(u64, u64, usize)>,
    /// Cookies the sender sent to it: node id, tag.
    cookies: Vec<(u64, CookieTag)>,
    /// When it first sent a NACK with one of its cookies.
    first_valid_nack: Option<u64>,
    /// Resends it may get, by sequence number: one per valid NACK naming it.
    credit: HashMap<u64, u32>,
    /// Resent bytes it got.
    resent_bytes: u64,
    /// When it last subscribed with a valid cookie of its own (`None`:
    /// never, or it left since).
    subscribed_at: Option<u64>,
}

struct Harness {
    ep: SenderEndpoint,
    now: u64,
    addrs: [SocketAddr; PEERS],
    peers: [Peer; PEERS],
    /// Digest of every audio datagram pushed, by sequence number.
    sent: HashMap<u64, u64>,
    last_seq: Option<u64>,
    /// The stream's wire bytes per second, and one packet's bytes.
    rate: f64,
    packet_len: usize,
    first_valid_nack: Option<u64>,
    resent_bytes: u64,
    resent_packets: u64,
    buf: Vec<u8>,
    samples: Vec<f32>,
    silence: Vec<f32>,
    scratch: Vec<u8>,
}

/// FNV-1a of an audio datagram but for what a resend changes: the
/// latency field (44..48) and the flags byte (55).
fn digest(d: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, &b) in d.iter().enumerate() {
        if (44..48).contains(&i) || i == 55 {
            continue;
        }
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ d.len() as u64
}

impl Harness {
    fn new() -> Self {
        let ep = SenderEndpoint::new(
            SenderConfig {
                session_id: SESSION,
                ..Default::default()
            },
            None,
            false,
            5,
        )
        .expect("default sender endpoint");
        assert!(ep.resends().is_some(), "repair is on by default");
        // The rate the resender's caps are made of: the stream's wire
        // bytes per second (default: 176 frames of 48 kHz stereo F32 in a
        // 1468-byte datagram, plus 28 bytes of IPv4 and UDP).
        let frames = ep.sender().packet_frames();
        let format = ep.sender().config().format;
        let packet_len = protocol::AUDIO_HEADER_LEN + frames * format.frame_bytes();
        assert_eq!((frames, packet_len), (176, 1468));
        let rate =
            (packet_len + protocol::IP_UDP_OVERHEAD) as f64 * format.rate as f64 / frames as f64;
        let mut peers: [Peer; PEERS] = Default::default();
        for (i, p) in peers.iter_mut().enumerate() {
            p.node = 0x1000 + i as u64;
        }
        Harness {
            ep,
            now: T0,
            addrs: std::array::from_fn(|i| {
                SocketAddr::from((
                    Ipv4Addr::new(10, 0, 0, 10 + i as u8 / 2),
                    40_000 + (i as u16 % 2),
                ))
            }),
            peers,
            sent: HashMap::new(),
            last_seq: None,
            rate,
            packet_len,
            first_valid_nack: None,
            resent_bytes: 0,
            resent_packets: 0,
            buf: vec![0; TRANSMIT_BUF],
            samples: (0..MAX_SINK_BUFFER_FRAMES * 2)
                .map(|i| ((i / 2) as f32 * 0.03).sin() * 0.5)
                .collect(),
            silence: vec![0.0; MAX_SINK_BUFFER_FRAMES * 2],
            scratch: vec![0; 2048],
        }
    }

    /// One sink buffer of `frames` frames (silent unless `loud`) at now.
    fn push(&mut self, frames: usize, loud: bool) {
        let Harness {
            ep,
            now,
            sent,
            last_seq,
            samples,
            silence,
            addrs,
            peers,
            ..
        } = self;
        let n = frames.min(MAX_SINK_BUFFER_FRAMES) * 2;
        let input = if loud { &samples[..n] } else { &silence[..n] };
        let now = *now;
        ep.push(now, &mut || now, 0, input, &mut |d, dest| {
            if let Dest::To(a) = dest {
                let to = addrs.iter().position(|&x| x == a);
                assert!(
                    to.is_some_and(|i| subscribed(&peers[i], now)),
                    "push sent a copy to {a}, which holds no subscription"
                );
                return;
            }
            match protocol::parse(d) {
                Ok(Packet::Audio(a)) => {
                    assert!(!a.resent, "push sent a packet marked resent");
                    assert_eq!(a.header.stream_id, SESSION);
                    sent.insert(a.header.seq, digest(d));
                    *last_seq = Some(a.header.seq);
                }
                Ok(Packet::Sync(y)) => assert_eq!(y.stream_id, SESSION),
                other => panic!("push sent {other:?}"),
            }
        });
    }

    /// A datagram from peer `p`, at now.
    fn deliver(&mut self, p: usize, data: &[u8]) {
        self.scratch.clear();
        self.scratch.extend_from_slice(data);
        let r = self
            .ep
            .handle_datagram(self.now, 0, &mut self.scratch, self.addrs[p]);
        let parsed = protocol::parse(data);
        let Ok(pkt) = parsed else {
            assert!(
                matches!(r, Err(Dropped::Malformed(_))),
                "a malformed datagram was taken: {r:?}"
            );
            return;
        };
        let ptype = protocol::parse_header(data).expect("parsed").ptype;
        match r {
            Ok(t) => assert_eq!(t, ptype),
            Err(Dropped::Flood) => assert!(
                matches!(ptype, PacketType::TimeRequest | PacketType::Hello),
                "{ptype:?} dropped as a flood"
            ),
            Err(e) => panic!("a well-formed {ptype:?} was dropped: {e:?}"),
        }
        let now = self.now;
        let peer = &mut self.peers[p];
        peer.wellformed = true;
        if r.is_err() {
            return;
        }
        match pkt {
            Packet::TimeRequest(t) if t.stream_id == SESSION => peer.time_requests += 1,
            Packet::Hello(h) if h.stream_id == SESSION || h.stream_id == ANY_SESSION => {
                peer.hellos.push((h.node_id, h.nonce, data.len()));
            }
            Packet::Subscribe(s) => {
                let cur = (now >> SLOT_SHIFT) as u32;
                let valid = s.stream_id == SESSION
                    && (s.cookie.slot == cur || s.cookie.slot.wrapping_add(1) == cur)
                    && peer
                        .cookies
                        .iter()
                        .any(|&(node, tag)| node == s.node_id && tag == s.cookie);
                if valid {
                    peer.subscribed_at = (s.flags & SUBSCRIBE_LEAVE == 0).then_some(now);
                }
            }
            Packet::Nack(k) if k.stream_id == SESSION => {
                let ours = peer
                    .cookies
                    .iter()
                    .any(|&(node, tag)| node == k.node_id && tag == k.cookie);
                if ours {
                    peer.first_valid_nack.get_or_insert(now);
                    self.first_valid_nack.get_or_insert(now);
                    for s in k.seqs() {
                        *peer.credit.entry(s).or_default() += 1;
                    }
                }
            }
            _ => {}
        }
    }

    /// `poll_transmit` until it has nothing more, checking each datagram.
    fn drain(&mut self) {
        for _ in 0..MAX_DRAIN {
            let Some((n, dest)) = self.ep.poll_transmit(self.now, 0, &mut self.buf) else {
                return;
            };
            assert!(n <= TRANSMIT_BUF);
            self.check(n, dest);
        }
        panic!("poll_transmit did not run dry in {MAX_DRAIN} datagrams");
    }

    fn check(&mut self, n: usize, dest: Dest) {
        let d = &self.buf[..n];
        let pkt = protocol::parse(d)
            .unwrap_or_else(|e| panic!("the sender wrote a malformed datagram: {e:?}"));
        if let (Dest::To(a), false) = (
            dest,
            matches!(pkt, Packet::TimeReply(_) | Packet::Cookie(_)),
        ) {
            if !matches!(pkt, Packet::Audio(au) if au.resent) {
                let to = self.addrs.iter().position(|&x| x == a);
                assert!(
                    to.is_some_and(|i| subscribed(&self.peers[i], self.now)),
                    "sent a copy of {pkt:?} to {a}, which holds no subscription"
                );
                assert!(
                    matches!(pkt, Packet::Sync(_) | Packet::Status(_)),
                    "poll_transmit copied {pkt:?} to {a}"
                );
                return;
            }
        }
        let a = match dest {
            Dest::Group => {
                match pkt {
                    Packet::Sync(y) => assert_eq!(y.stream_id, SESSION),
                    Packet::Status(s) => {
                        assert_eq!((s.stream_id, s.role), (SESSION, Role::Sender));
                    }
                    other => panic!("poll_transmit sent {other:?} to the group"),
                }
                return;
            }
            Dest::To(a) => a,
        };
        let i = self
            .addrs
            .iter()
            .position(|&x| x == a)
            .unwrap_or_else(|| panic!("sent to {a}, where nothing came from"));
        let peer = &mut self.peers[i];
        assert!(
            peer.wellformed,
            "sent {pkt:?} to {a}, which only sent malformed datagrams"
        );
        match pkt {
            Packet::TimeReply(t) => {
                assert!(
                    peer.time_requests > 0,
                    "a time reply nobody at {a} asked for"
                );
                peer.time_requests -= 1;
                assert_eq!(t.stream_id, SESSION);
            }
            Packet::Cookie(c) => {
                let k = peer
                    .hellos
                    .iter()
                    .position(|&(node, nonce, _)| node == c.node_id && nonce == c.nonce)
                    .unwrap_or_else(|| panic!("a Cookie to {a} answers no Hello of its: {c:?}"));
                let (_, _, hello_len) = peer.hellos.swap_remove(k);
                assert!(
                    n <= hello_len,
                    "a Cookie ({n} bytes) longer than its Hello ({hello_len})"
                );
                assert_eq!(c.stream_id, SESSION);
                assert!(c.offers & protocol::OFFER_NACK != 0);
                if peer.cookies.len() == MAX_COOKIES {
                    peer.cookies.remove(0);
                }
                peer.cookies.push((c.node_id, c.cookie));
            }
            Packet::Audio(au) if au.resent => {
                let seq = au.header.seq;
                assert_eq!(au.header.stream_id, SESSION);
                match peer.credit.get_mut(&seq) {
                    Some(c) if *c > 0 => *c -= 1,
                    _ => {
                        panic!("seq {seq} resent to {a}, which did not ask for it with its cookie")
                    }
                }
                assert_eq!(
                    self.sent.get(&seq),
                    Some(&digest(d)),
                    "resend of seq {seq} is not the packet sent"
                );
                self.resent_packets += 1;
                self.resent_bytes += n as u64;
                peer.resent_bytes += n as u64;
                let since =
                    |t0: Option<u64>| (self.now - t0.expect("a valid NACK came")) as f64 * 1e-9;
                let one = self.rate * (since(peer.first_valid_nack) + REPAIR_BURST_S)
                    + self.packet_len as f64;
                assert!(
                    peer.resent_bytes as f64 <= one,
                    "{} bytes resent to {a}, over its cap {one:.0}",
                    peer.resent_bytes
                );
                let all =
                    RESEND_MULTIPLE * self.rate * (since(self.first_valid_nack) + REPAIR_BURST_S)
                        + self.packet_len as f64;
                assert!(
                    self.resent_bytes as f64 <= all,
                    "{} bytes resent in all, over the cap {all:.0}",
                    self.resent_bytes
                );
            }
            other => panic!("sent {other:?} to {a}"),
        }
    }

    /// The newest cookie the sender gave peer `p`, with its node id.
    fn cookie_of(&self, p: usize) -> (u64, CookieTag) {
        self.peers[p]
            .cookies
            .last()
            .copied()
            .unwrap_or((self.peers[p].node, CookieTag::default()))
    }

    /// A NACK's base and mask, mostly about the packets just sent.
    fn span(&self, b: &mut Bytes) -> (u64, u64) {
        let ctl = b.u8();
        let last = self.last_seq.unwrap_or(0);
        let base = match ctl & 3 {
            0 | 1 => last.saturating_sub(b.u8() as u64 % 96),
            2 => last.wrapping_add(b.u8() as u64),
            _ => b.u64(),
        };
        let mask = match (ctl >> 2) & 3 {
            0 => b.u64(),
            1 => u64::MAX,
            2 => 0,
            _ => 1 << (b.u8() % 64),
        };
        (base, mask)
    }

    fn nack(&mut self, p: usize, node: u64, cookie: CookieTag, stream: u64, b: &mut Bytes) {
        let (base, mask) = self.span(b);
        let k = NackPacket {
            stream_id: stream,
            node_id: node,
            cookie,
            base,
            mask,
        };
        let mut d = [0u8; protocol::NACK_LEN];
        let n = protocol::write_nack(&mut d, &k).expect("room for a NACK");
        self.deliver(p, &d[..n]);
    }

    fn hello(&mut self, p: usize, node: u64, stream: u64, nonce: u64) {
        let mut d = [0u8; protocol::HELLO_LEN];
        let h = HelloPacket {
            stream_id: stream,
            node_id: node,
            nonce,
        };
        let n = protocol::write_hello(&mut d, &h).expect("room for a Hello");
        self.deliver(p, &d[..n]);
    }

    fn subscribe(&mut self, p: usize, node: u64, cookie: CookieTag, stream: u64, flags: u32) {
        let mut d = [0u8; protocol::SUBSCRIBE_LEN];
        let s = SubscribePacket {
            stream_id: stream,
            node_id: node,
            cookie,
            flags,
        };
        let n = protocol::write_subscribe(&mut d, &s).expect("room for a Subscribe");
        self.deliver(p, &d[..n]);
    }

    /// Time passes (the sender clock never goes back).
    fn wait(&mut self, ns: u64) {
        self.now = self.now.saturating_add(ns);
    }

    /// Everything it still has to send, then the counts against what went
    /// out.
    fn finish(&mut self) {
        self.drain();
        let rs = *self.ep.resends().expect("repair on");
        assert_eq!(rs.resent, self.resent_packets, "{rs:?}");
        assert_eq!(rs.resent_bytes, self.resent_bytes, "{rs:?}");
        let c = self.ep.wire().counts();
        assert_eq!(c.tx_resend.packets, self.resent_packets, "{c:?}");
        assert_eq!(c.tx_resend.bytes, self.resent_bytes, "{c:?}");
        assert!(c.tx_cookie.packets <= c.rx_hello.packets, "{c:?}");
        // To see what an input reaches (seeds, a crash):
        // BARK_FUZZ_DEBUG=1 target/.../sender INPUT
        if std::env::var_os("BARK_FUZZ_DEBUG").is_some() {
            eprintln!("resends: {rs:?}\ncounts: {c:?}");
        }
    }
}

/// Whether `p` may get copies of the stream at `now`: it subscribed with
/// a valid cookie of its own within the lease, and has not left since.
fn subscribed(p: &Peer, now: u64) -> bool {
    p.subscribed_at
        .is_some_and(|t| now < t.saturating_add(LEASE_NS))
}

fuzz_target!(|d: &[u8]| {
    let mut b = Bytes::new(d);
    let mut h = Harness::new();
    // A few buffers of audio first, so that there is something to resend.
    for _ in 0..4 {
        h.push(CYCLE_FRAMES, true);
        h.drain();
        h.wait(CYCLE_NS);
    }
    for _ in 0..MAX_EVENTS {
        if b.is_empty() {
            break;
        }
        let op = b.u8();
        let p = (op >> 4) as usize % PEERS;
        match op & 15 {
            // Arbitrary bytes.
            0 => {
                let n = b.u16() as usize % 1600;
                let raw = b.take(n).to_vec();
                h.deliver(p, &raw);
            }
            // Arbitrary bytes behind a valid header, of any type.
            1 => {
                let ctl = b.u8();
                let stream = if ctl & 1 == 0 { SESSION } else { b.u64() };
                let n = b.u16() as usize % 200;
                let mut raw = vec![0u8; protocol::HEADER_LEN];
                raw[..4].copy_from_slice(&protocol::MAGIC);
                raw[4] = protocol::VERSION;
                raw[5] = (ctl >> 1) % 11;
                raw[8..16].copy_from_slice(&stream.to_le_bytes());
                raw.extend_from_slice(b.take(n));
                h.deliver(p, &raw);
            }
            // A Hello: its own node or another, this session or another,
            // well formed or not.
            2 => {
                let ctl = b.u8();
                let node = if ctl & 1 == 0 {
                    h.peers[p].node
                } else {
                    b.u64()
                };
                let stream = if ctl & 2 == 0 { SESSION } else { b.u64() };
                let nonce = b.u64();
                if ctl & 12 == 0 {
                    h.hello(p, node, stream, nonce);
                } else {
                    let mut d = [0u8; protocol::HELLO_LEN + 1];
                    let hello = HelloPacket {
                        stream_id: stream,
                        node_id: node,
                        nonce,
                    };
                    protocol::write_hello(&mut d, &hello).expect("room for a Hello");
                    let n = match ctl & 12 {
                        // Padding set.
                        4 => {
                            d[32 + (ctl >> 4) as usize % 32] = 1;
                            protocol::HELLO_LEN
                        }
                        // Short, or one byte long.
                        8 => (ctl >> 4) as usize % protocol::HELLO_LEN,
                        _ => protocol::HELLO_LEN + 1,
                    };
                    h.deliver(p, &d[..n]);
                }
            }
            // What a receiver does: a Hello, the Cookie, a NACK with it.
            3 => {
                let node = h.peers[p].node;
                let nonce = b.u64();
                h.hello(p, node, SESSION, nonce);
                h.drain();
                let (node, cookie) = h.cookie_of(p);
                h.nack(p, node, cookie, SESSION, &mut b);
            }
            // A NACK with the newest cookie it was given.
            4 | 5 => {
                let (node, cookie) = h.cookie_of(p);
                h.nack(p, node, cookie, SESSION, &mut b);
            }
            // A NACK with a cookie that is not its own.
            6 => {
                let ctl = b.u8();
                let (node, cookie) = h.cookie_of(p);
                match ctl & 3 {
                    // Made up.
                    0 => {
                        let mut mac = [0u8; COOKIE_MAC_LEN];
                        let t = b.take(COOKIE_MAC_LEN);
                        mac[..t.len()].copy_from_slice(t);
                        let slot = if ctl & 4 == 0 { cookie.slot } else { b.u32() };
                        let node = if ctl & 8 == 0 { node } else { b.u64() };
                        h.nack(p, node, CookieTag { slot, mac }, SESSION, &mut b);
                    }
                    // Another address's, with its node id.
                    1 => {
                        let q = (p + 1 + (ctl >> 2) as usize % (PEERS - 1)) % PEERS;
                        let (node, cookie) = h.cookie_of(q);
                        h.nack(p, node, cookie, SESSION, &mut b);
                    }
                    // Its own, for another node id.
                    2 => {
                        let other = node ^ (1 + b.u64() % u64::MAX);
                        h.nack(p, other, cookie, SESSION, &mut b);
                    }
                    // Its own, for another session.
                    _ => {
                        let other = b.u64();
                        let other = if other == SESSION { SESSION + 1 } else { other };
                        h.nack(p, node, cookie, other, &mut b);
                    }
                }
            }
            // One sink buffer: a cycle's or any size, sound or silence.
            7 => {
                let ctl = b.u8();
                let frames = if ctl & 1 == 0 {
                    CYCLE_FRAMES
                } else {
                    1 + b.u16() as usize % MAX_SINK_BUFFER_FRAMES
                };
                h.push(frames, ctl & 2 == 0);
            }
            // A cycle: a buffer, what is due, a buffer's time.
            8 => {
                h.push(CYCLE_FRAMES, true);
                h.drain();
                h.wait(CYCLE_NS);
            }
            // What is due.
            9 => h.drain(),
            // A Subscribe (or a leave): as a receiver does it (a Hello for
            // any session, the Cookie, the Subscribe), or with a cookie
            // that is not its own, or for another session.
            10 => {
                let ctl = b.u8();
                if ctl & 1 == 0 {
                    let nonce = b.u64();
                    h.hello(p, h.peers[p].node, ANY_SESSION, nonce);
                    h.drain();
                }
                let (node, cookie) = match (ctl >> 1) & 3 {
                    0 | 1 => h.cookie_of(p),
                    2 => h.cookie_of((p + 1 + (ctl >> 4) as usize % (PEERS - 1)) % PEERS),
                    _ => {
                        let mut mac = [0u8; COOKIE_MAC_LEN];
                        let t = b.take(COOKIE_MAC_LEN);
                        mac[..t.len()].copy_from_slice(t);
                        let (node, own) = h.cookie_of(p);
                        (
                            node,
                            CookieTag {
                                slot: own.slot,
                                mac,
                            },
                        )
                    }
                };
                let flags = if ctl & 8 != 0 { SUBSCRIBE_LEAVE } else { 0 };
                let stream = if ctl & 64 == 0 { SESSION } else { b.u64() };
                h.subscribe(p, node, cookie, stream, flags);
            }
            // Time passes: mostly within a cycle, sometimes a latency's
            // worth, sometimes minutes to days (cookies expire).
            11 | 12 => {
                let ns = match op >> 6 {
                    0 | 1 => b.u16() as u64 * 100,
                    2 => b.u16() as u64 * 1_000,
                    _ => b.u32() as u64 * 1_000_000,
                };
                h.wait(ns);
            }
            // A time request.
            13 => {
                let ctl = b.u8();
                let t = TimePacket::request(
                    if ctl & 1 == 0 { SESSION } else { b.u64() },
                    h.peers[p].node,
                    b.u64(),
                );
                let mut d = [0u8; protocol::TIME_LEN];
                let n = protocol::write_time(&mut d, ctl & 2 != 0, &t).expect("room for time");
                h.deliver(p, &d[..n]);
            }
            // A receiver's status: the latency it needs (up to 4 s) raises
            // the session's, so that older packets stay resendable.
            14 => {
                let need_us = b.u16() as u32 * 64;
                let st = StatusPacket {
                    stream_id: SESSION,
                    node_id: h.peers[p].node,
                    role: Role::Receiver,
                    flags: 1,
                    counters: StatusCounters {
                        need_us,
                        downstream_us: need_us / 2,
                        ..Default::default()
                    },
                    name: "fuzz",
                    host: "fuzz",
                    stream: "default",
                    settings: None,
                };
                let mut d = [0u8; protocol::MAX_STATUS_LEN];
                let n = protocol::write_status(&mut d, &st).expect("room for status");
                h.deliver(p, &d[..n]);
            }
            // A NACK storm: up to 32 NACKs for all it holds of the last
            // 65 packets, with its cookie, each followed by a drain or not.
            _ => {
                let ctl = b.u8();
                let (node, cookie) = h.cookie_of(p);
                let last = h.last_seq.unwrap_or(0);
                let k = NackPacket {
                    stream_id: SESSION,
                    node_id: node,
                    cookie,
                    base: last.saturating_sub(64),
                    mask: u64::MAX,
                };
                let mut d = [0u8; protocol::NACK_LEN];
                let n = protocol::write_nack(&mut d, &k).expect("room for a NACK");
                for _ in 0..=(ctl & 31) {
                    h.deliver(p, &d[..n]);
                    if ctl & 32 != 0 {
                        h.drain();
                    }
                    if ctl & 64 != 0 {
                        h.wait(CYCLE_NS / 4);
                    }
                }
            }
        }
    }
    h.finish();
});

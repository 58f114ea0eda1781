//! bark-lab-hostile: a hostile node for the lab. It listens to the group
//! until it has heard a real sender's audio (to learn its session id,
//! sequence numbers, frames and stream hash), then sends, round-robin:
//!
//! - `random`: random bytes, 1..1472 long;
//! - `truncated`: a real audio packet cut short;
//! - `oversized`: a real audio packet with bytes appended (up to 9000);
//! - `version`: a real packet with version 2; `magic`: with a bad magic;
//! - `fields`: header fields out of range (rate 0 or 10⁹, channels 0 or 200,
//!   frames 0 or 65535, unknown sample format or packet type);
//! - `forged-session`: well-formed audio of a new random session, other
//!   stream name, lowest priority (-128);
//! - `forged-seq`: well-formed audio of the *real* session with sequence
//!   numbers and frames far from the real ones and absurd `pts`;
//! - `forged-time`: time replies with the real session id, random node
//!   ids and t1 no receiver sent;
//! - `replay`: a recent datagram of the real sender (audio or sync),
//!   verbatim, as a reflecting switch or a duplicating bridge would;
//! - `shifted`: a recent real audio packet with the sequence number bumped
//!   by 1..64, the frame by up to 2048 and the pts shifted by up to ±1 s;
//! - `flipped`: a recent real datagram with 1..3 of its bytes 16..60 (the
//!   header after the session id) flipped;
//!
//! - `nack-forged`: to the sender's own address (learned from its audio),
//!   a NACK for the live packets with a made-up cookie;
//! - `sub-forged`: to the sender, a Subscribe for the live session with a
//!   made-up cookie;
//! - `fec-forged`: to the group, an FEC repair packet (type 7) of the live
//!   session for the current block (4:1), its shard random bytes;
//!
//! (replay, shifted and flipped twice as often as the others, and learned
//! from the group throughout: they carry the live sequence numbers and
//! times). Before the mix it also subscribes itself, as a receiver does
//! (Hello, Cookie, Subscribe, renewed every second), from
//! `OWN_SUBSCRIPTIONS` ports of its address, more than a sender serves one
//! host; it reports how many of them got the stream (`own_served`) and
//! how many datagrams came back to its sending socket, which only ever
//! sends forged requests (`answers_to_forged`: must be 0).
//! at `--pps` for `--seconds`, then (with `--flood-seconds`) a flood of
//! random-byte and truncated datagrams as fast as the socket takes them,
//! bounded by `--flood-max` datagrams. Counts per kind, and the
//! CLOCK_MONOTONIC times the mix and the flood began and ended, go to
//! stdout (JSON) at exit. Lab only: it refuses a destination outside 239.0.0.0/8 or the
//! lab subnet 10.99.0.0/24.

use anyhow::{bail, Context, Result};
use bark_core::protocol::{self, Packet};
use bark_io::clock::monotonic_ns as mono_ns;
use clap::Parser;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Send hostile Bark datagrams into a lab LAN")]
struct Args {
    /// Group (or receiver) to attack.
    #[arg(long, default_value = "239.255.66.66:1530")]
    to: SocketAddrV4,
    /// Local address to join the group on (this host's eth0 address).
    #[arg(long)]
    local: Ipv4Addr,
    /// Seconds of mixed hostile traffic.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Datagrams per second of mixed hostile traffic.
    #[arg(long, default_value_t = 500.0)]
    pps: f64,
    /// Seconds of flood after the mix (0: none).
    #[arg(long, default_value_t = 0.0)]
    flood_seconds: f64,
    /// Most datagrams of the flood.
    #[arg(long, default_value_t = 2_000_000)]
    flood_max: u64,
    /// Longest wait for a real sender, s.
    #[arg(long, default_value_t = 10.0)]
    learn_seconds: f64,
    /// PRNG seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

const KINDS: [&str; 16] = [
    "random",
    "truncated",
    "oversized",
    "version",
    "magic",
    "fields",
    "forged-session",
    "forged-seq",
    "forged-time",
    "replay",
    "shifted",
    "flipped",
    "nack-forged",
    "sub-forged",
    "fec-forged",
    "flood",
];
/// Ports of its own address the hostile node subscribes from: more than
/// a sender takes from one host (core/src/fanout.rs `MAX_PER_HOST`).
const OWN_SUBSCRIPTIONS: usize = 6;
/// The flood's entry in [`KINDS`].
const FLOOD: usize = KINDS.len() - 1;
/// Recent real datagrams kept for the copies.
const RECENT: usize = 64;

fn main() -> Result<()> {
    let a = Args::parse();
    let ip = a.to.ip().octets();
    if !(ip[0] == 239 || (ip[0] == 10 && ip[1] == 99 && ip[2] == 0)) {
        bail!("lab only: --to must be in 239.0.0.0/8 or 10.99.0.0/24");
    }
    if !(a.seconds >= 0.0 && a.seconds <= 600.0 && a.flood_seconds <= 60.0 && a.pps > 0.0) {
        bail!("--seconds ≤ 600, --flood-seconds ≤ 60, --pps > 0");
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(a.seed);
    // Learn a real packet.
    let listen = UdpSocket::bind(("0.0.0.0", a.to.port())).context("binding the group port")?;
    if a.to.ip().is_multicast() {
        listen
            .join_multicast_v4(a.to.ip(), &a.local)
            .context("joining the group")?;
    }
    listen.set_read_timeout(Some(Duration::from_millis(100)))?;
    let deadline = Instant::now() + Duration::from_secs_f64(a.learn_seconds);
    let mut buf = vec![0u8; 65_536];
    let (real, sender): (Vec<u8>, SocketAddr) = loop {
        if Instant::now() > deadline {
            bail!("no sender heard within {} s", a.learn_seconds);
        }
        if let Ok((n, from)) = listen.recv_from(&mut buf) {
            if let Ok(Packet::Audio(_)) = protocol::parse(&buf[..n]) {
                break (buf[..n].to_vec(), from);
            }
        }
    };
    // Keep listening: the copies need the live sequence numbers.
    listen.set_nonblocking(true)?;
    let mut recent: Vec<Vec<u8>> = vec![real.clone()];
    let mut oldest = 0;
    let Ok(Packet::Audio(ra)) = protocol::parse(&real) else {
        unreachable!("parsed above")
    };
    let h = ra.header;
    eprintln!(
        "bark-lab-hostile: learned session {:016x} seq {} frame {} ({} bytes)",
        h.stream_id,
        h.seq,
        h.frame,
        real.len()
    );
    let tx = UdpSocket::bind((a.local, 0)).context("binding the send socket")?;
    tx.set_multicast_ttl_v4(1)?;
    tx.set_nonblocking(true)?;
    let mut own = subscribe_own(a.local, sender, h.stream_id, &mut rng)?;
    let mut last_renewal = Instant::now();
    let mut answers_to_forged = 0u64;
    let mut counts = [0u64; KINDS.len()];
    let mut send_errors = 0u64;
    let mut pkt = vec![0u8; 9_000];
    let period = Duration::from_secs_f64(1.0 / a.pps);
    let start = Instant::now();
    let mix_start_ns = mono_ns();
    let mut next = start;
    let mut k = 0usize;
    let end = start + Duration::from_secs_f64(a.seconds);
    while Instant::now() < end {
        // What the real sender sent since (not our own copies looped back).
        for _ in 0..32 {
            let Ok((n, from)) = listen.recv_from(&mut buf) else {
                break;
            };
            let genuine = from.ip() != std::net::IpAddr::V4(a.local)
                && matches!(
                    protocol::parse(&buf[..n]),
                    Ok(Packet::Audio(_) | Packet::Sync(_))
                );
            if genuine {
                if recent.len() < RECENT {
                    recent.push(buf[..n].to_vec());
                } else {
                    recent[oldest] = buf[..n].to_vec();
                    oldest = (oldest + 1) % RECENT;
                }
            }
        }
        // Anything back on the socket that only sends forged requests
        // means the sender answered one.
        while tx.recv_from(&mut buf).is_ok() {
            answers_to_forged += 1;
        }
        if last_renewal.elapsed() >= Duration::from_secs(1) {
            last_renewal = Instant::now();
            own.renew(sender)?;
        }
        own.drain(&mut buf);
        // 0..9 once, replay/shifted/flipped twice each, then the two
        // forged requests to the sender and the forged repair packet once
        // each, per 18.
        let kind = match k % 18 {
            i @ 0..=8 => i,
            i @ 9..=14 => 9 + (i - 9) / 2,
            i => i - 3,
        };
        k += 1;
        let len = match kind {
            0 => {
                let n = rng.random_range(1..=1472);
                rng.fill(&mut pkt[..n]);
                n
            }
            1 => {
                let n = rng.random_range(1..real.len());
                pkt[..n].copy_from_slice(&real[..n]);
                n
            }
            2 => {
                let n = rng.random_range(real.len() + 1..=9_000);
                pkt[..real.len()].copy_from_slice(&real);
                rng.fill(&mut pkt[real.len()..n]);
                n
            }
            3 | 4 => {
                pkt[..real.len()].copy_from_slice(&real);
                if kind == 3 {
                    pkt[4] = 2;
                } else {
                    pkt[0] = b'X';
                }
                real.len()
            }
            5 => {
                pkt[..real.len()].copy_from_slice(&real);
                match rng.random_range(0..7) {
                    0 => pkt[40..44].copy_from_slice(&0u32.to_le_bytes()),
                    1 => pkt[40..44].copy_from_slice(&1_000_000_000u32.to_le_bytes()),
                    2 => pkt[53] = 0,
                    3 => pkt[53] = 200,
                    4 => pkt[56..58].copy_from_slice(&0u16.to_le_bytes()),
                    5 => pkt[52] = 9,
                    _ => pkt[5] = 77,
                }
                real.len()
            }
            6 => {
                let mut fh = h;
                fh.stream_id = rng.random::<u64>() | 1;
                fh.name_hash = protocol::stream_hash("hostile");
                fh.priority = -128;
                fh.seq = rng.random();
                write(&mut pkt, &fh)
            }
            7 => {
                let mut fh = h;
                let dt = start.elapsed().as_nanos() as u64;
                fh.seq = h.seq.wrapping_add(rng.random_range(1_000..1_000_000_000));
                fh.frame = h
                    .frame
                    .wrapping_add(rng.random_range(100_000..1_000_000_000));
                fh.pts = match rng.random_range(0..3) {
                    0 => i64::MAX,
                    1 => i64::MIN,
                    _ => h
                        .pts
                        .wrapping_add(dt as i64)
                        .wrapping_add(rng.random_range(-1_000_000_000_000..1_000_000_000_000)),
                };
                write(&mut pkt, &fh)
            }
            9 => {
                let r = &recent[rng.random_range(0..recent.len())];
                pkt[..r.len()].copy_from_slice(r);
                r.len()
            }
            10 => {
                // A recent audio packet's header (a sync's: the learned one).
                let r = &recent[rng.random_range(0..recent.len())];
                let base = match protocol::parse(r) {
                    Ok(Packet::Audio(ra)) => ra.header,
                    _ => h,
                };
                let mut fh = base;
                fh.seq = fh.seq.wrapping_add(rng.random_range(1..=64));
                fh.frame = fh.frame.wrapping_add(rng.random_range(0..=2048));
                fh.pts = fh
                    .pts
                    .wrapping_add(rng.random_range(-1_000_000_000..=1_000_000_000));
                write(&mut pkt, &fh)
            }
            11 => {
                let r = &recent[rng.random_range(0..recent.len())];
                pkt[..r.len()].copy_from_slice(r);
                // Not the session id (bytes 8..16): a copy with another id
                // is a new session, which open mode lets anyone start
                // (docs/SECURITY.md); that is `forged-session`'s case.
                for _ in 0..rng.random_range(1..=3) {
                    let at = rng.random_range(16..r.len().min(60));
                    pkt[at] ^= rng.random_range(1..=255u8);
                }
                r.len()
            }
            12 => {
                let last = match protocol::parse(&recent[rng.random_range(0..recent.len())]) {
                    Ok(Packet::Audio(ra)) => ra.header.seq,
                    _ => h.seq,
                };
                let nack = protocol::NackPacket {
                    stream_id: h.stream_id,
                    node_id: rng.random(),
                    cookie: made_up_cookie(&mut rng),
                    base: last.saturating_sub(64),
                    mask: u64::MAX,
                };
                protocol::write_nack(&mut pkt, &nack).expect("room")
            }
            13 => {
                let sub = protocol::SubscribePacket {
                    stream_id: h.stream_id,
                    node_id: rng.random(),
                    cookie: made_up_cookie(&mut rng),
                    flags: 0,
                };
                protocol::write_subscribe(&mut pkt, &sub).expect("room")
            }
            14 => {
                let last = match protocol::parse(&recent[rng.random_range(0..recent.len())]) {
                    Ok(Packet::Audio(ra)) => ra.header.seq,
                    _ => h.seq,
                };
                let mut shard = [0u8; protocol::FEC_MAX_SHARD];
                let n = ((real.len() + 3) & !1).min(protocol::FEC_MAX_SHARD);
                rng.fill(&mut shard[..n]);
                let f = protocol::FecPacket {
                    stream_id: h.stream_id,
                    base: last - last % 4,
                    k: 4,
                    m: 1,
                    index: 0,
                    shard: &shard[..n],
                };
                protocol::write_fec(&mut pkt, &f).expect("room")
            }
            _ => protocol::write_time(
                &mut pkt,
                true,
                &protocol::TimePacket {
                    stream_id: h.stream_id,
                    node_id: rng.random(),
                    t1: rng.random(),
                    t2: rng.random(),
                    t3: rng.random(),
                },
            )
            .expect("room"),
        };
        // The forged requests go to the sender itself, the rest to the group.
        let to = if matches!(kind, 12 | 13) {
            sender
        } else {
            a.to.into()
        };
        match tx.send_to(&pkt[..len], to) {
            Ok(_) => counts[kind] += 1,
            Err(_) => send_errors += 1,
        }
        pace(&mut next, period);
    }
    own.leave(sender);
    let flood_start_ns = mono_ns();
    if a.flood_seconds > 0.0 {
        let fend = Instant::now() + Duration::from_secs_f64(a.flood_seconds);
        let mut n = 0u64;
        while n < a.flood_max && Instant::now() < fend {
            for _ in 0..64 {
                let len = if n.is_multiple_of(2) {
                    let l = rng.random_range(16..=1472);
                    rng.fill(&mut pkt[..l]);
                    l
                } else {
                    let l = rng.random_range(1..real.len());
                    pkt[..l].copy_from_slice(&real[..l]);
                    l
                };
                match tx.send_to(&pkt[..len], a.to) {
                    Ok(_) => counts[FLOOD] += 1,
                    Err(_) => send_errors += 1,
                }
                n += 1;
            }
        }
    }
    let flood_end_ns = mono_ns();
    let fields: Vec<String> = KINDS
        .iter()
        .zip(counts)
        .map(|(k, c)| format!("\"{k}\":{c}"))
        .collect();
    println!(
        "{{{},\"total\":{},\"send_errors\":{send_errors},\"own_subscriptions\":{OWN_SUBSCRIPTIONS},\"own_cookies\":{},\"own_served\":{},\"answers_to_forged\":{answers_to_forged},\"mix_start_ns\":{mix_start_ns},\"flood_start_ns\":{flood_start_ns},\"flood_end_ns\":{flood_end_ns}}}",
        fields.join(","),
        counts.iter().sum::<u64>(),
        own.cookies.iter().flatten().count(),
        own.served.iter().filter(|&&n| n > 0).count(),
    );
    Ok(())
}

/// Sleeps until the next send is due (a period after the last), without
/// bursting to catch up when the box fell behind.
fn pace(next: &mut Instant, period: Duration) {
    *next += period;
    let now = Instant::now();
    if *next > now {
        std::thread::sleep(*next - now);
    } else if now - *next > Duration::from_millis(100) {
        *next = now;
    }
}

/// A cookie the sender never minted.
fn made_up_cookie(rng: &mut Xoshiro256PlusPlus) -> protocol::CookieTag {
    let mut mac = [0u8; protocol::COOKIE_MAC_LEN];
    rng.fill(&mut mac[..]);
    protocol::CookieTag {
        slot: rng.random(),
        mac,
    }
}

/// The hostile node's own subscriptions: one socket per port, the cookie
/// each got, the session, and how many datagrams each received since.
struct Own {
    socks: Vec<UdpSocket>,
    cookies: Vec<Option<protocol::CookieTag>>,
    session: u64,
    node: u64,
    served: Vec<u64>,
}

/// Hello (any session) from each of `OWN_SUBSCRIPTIONS` ports of `local`
/// to `sender`, the Cookies (up to 1 s), then a Subscribe from each.
fn subscribe_own(
    local: Ipv4Addr,
    sender: SocketAddr,
    session: u64,
    rng: &mut Xoshiro256PlusPlus,
) -> Result<Own> {
    let node: u64 = rng.random();
    let mut own = Own {
        socks: Vec::new(),
        cookies: vec![None; OWN_SUBSCRIPTIONS],
        session,
        node,
        served: vec![0; OWN_SUBSCRIPTIONS],
    };
    let mut pkt = [0u8; 64];
    let mut nonces = Vec::new();
    for _ in 0..OWN_SUBSCRIPTIONS {
        let s = UdpSocket::bind((local, 0)).context("binding a subscription socket")?;
        s.set_nonblocking(true)?;
        let nonce: u64 = rng.random();
        let hello = protocol::HelloPacket {
            stream_id: protocol::ANY_SESSION,
            node_id: node,
            nonce,
        };
        let n = protocol::write_hello(&mut pkt, &hello).expect("room");
        s.send_to(&pkt[..n], sender)?;
        nonces.push(nonce);
        own.socks.push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = vec![0u8; 2048];
    while Instant::now() < deadline && own.cookies.iter().any(Option::is_none) {
        for (i, s) in own.socks.iter().enumerate() {
            while let Ok((n, _)) = s.recv_from(&mut buf) {
                if let Ok(Packet::Cookie(c)) = protocol::parse(&buf[..n]) {
                    if c.nonce == nonces[i] && c.stream_id == session {
                        own.cookies[i] = Some(c.cookie);
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    own.renew(sender)?;
    Ok(own)
}

impl Own {
    fn send(&self, sender: SocketAddr, flags: u32) -> Result<()> {
        let mut pkt = [0u8; protocol::SUBSCRIBE_LEN];
        for (s, c) in self.socks.iter().zip(&self.cookies) {
            let Some(cookie) = *c else { continue };
            let sub = protocol::SubscribePacket {
                stream_id: self.session,
                node_id: self.node,
                cookie,
                flags,
            };
            let n = protocol::write_subscribe(&mut pkt, &sub).expect("room");
            s.send_to(&pkt[..n], sender)?;
        }
        Ok(())
    }

    /// Subscribes (again) from every port that holds a cookie.
    fn renew(&mut self, sender: SocketAddr) -> Result<()> {
        self.send(sender, 0)
    }

    /// Leaves from every port, so that the sender stops at once.
    fn leave(&self, sender: SocketAddr) {
        let _ = self.send(sender, protocol::SUBSCRIBE_LEAVE);
    }

    /// Counts what arrived on each port.
    fn drain(&mut self, buf: &mut [u8]) {
        for (s, n) in self.socks.iter().zip(&mut self.served) {
            for _ in 0..256 {
                if s.recv_from(buf).is_err() {
                    break;
                }
                *n += 1;
            }
        }
    }
}

/// A well-formed audio packet with header `h` and a quiet payload.
fn write(out: &mut [u8], h: &protocol::AudioHeader) -> usize {
    let n = h.frames as usize * h.format.channels as usize;
    let samples = vec![0.25f32; n];
    protocol::write_audio(out, h, &samples).expect("room for audio")
}

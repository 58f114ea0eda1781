//! bark-lab-relay: a user-space network impairment relay for the lab (this
//! kernel has no netem). It sits between a sender and its receivers:
//!
//! - the sender streams **unicast** to `--listen` (the relay host's address);
//!   every datagram from there (audio, the sender's status) is impaired and
//!   re-sent to `--to` (the multicast group) from the relay's "out" socket;
//! - receivers therefore see the audio coming from the out socket and send
//!   their time requests there (they answer the *source address* of the
//!   audio they follow, core/src/select.rs); the relay proxies each
//!   receiver through its own socket towards the sender (a NAT-like port
//!   map, at most [`MAX_PEERS`] receivers) and relays the replies back.
//!
//! Impairments (each from a flag, all drawn from one seeded PRNG so a run
//! is repeatable): random loss, burst loss (mean burst length), reordering
//! (a packet held back `--reorder-ms`), duplication, fixed delay, jitter
//! (uniform extra delay, kept in order), corruption (1–4 random bytes of a
//! datagram overwritten) and partitions (nothing crosses, either way, for
//! N s from T s after start). Audio-path impairments apply to the
//! sender→group direction; `--impair-time` applies them to the time
//! exchange too (a partition always does).
//!
//! Bounded: it runs `--seconds`, holds at most [`MAX_QUEUE`] datagrams,
//! and exits on SIGTERM/SIGINT too, printing its counters (JSON, one line;
//! also to `--stats FILE`), plus the CLOCK_MONOTONIC times each partition
//! began and ended, so a scenario can time recovery from them.

use anyhow::{bail, Context, Result};
use bark_io::clock::monotonic_ns as mono_ns;
use clap::Parser;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// Receivers proxied at most; more are refused (counted), so a flood of
/// forged sources cannot exhaust the relay's file descriptors.
const MAX_PEERS: usize = 256;
/// Datagrams held (delayed) at most; more are dropped and counted.
const MAX_QUEUE: usize = 65_536;
/// Largest datagram relayed, bytes (the UDP maximum).
const MAX_DATAGRAM: usize = 65_536;

#[derive(Parser, Debug)]
#[command(about = "Forward UDP from a sender to a multicast group with impairments")]
struct Args {
    /// Address the sender streams to (this host), e.g. 10.99.0.2:1530.
    #[arg(long)]
    listen: SocketAddrV4,
    /// Where to re-send the sender's datagrams, e.g. 239.255.66.66:1530.
    #[arg(long)]
    to: SocketAddrV4,
    /// Multicast TTL of re-sent datagrams.
    #[arg(long, default_value_t = 1)]
    ttl: u32,
    /// Run this long, s.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Loss, percent of datagrams (with --burst: of datagrams overall).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Mean length of a loss burst, datagrams (1 = independent losses).
    #[arg(long, default_value_t = 1.0)]
    burst: f64,
    /// Reordering, percent of datagrams held back by --reorder-ms.
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// How long a reordered datagram is held back, ms.
    #[arg(long, default_value_t = 8.0)]
    reorder_ms: f64,
    /// Duplication, percent of datagrams sent twice.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Fixed one-way delay, ms.
    #[arg(long, default_value_t = 0.0)]
    delay_ms: f64,
    /// Jitter: extra delay uniform in [0, J] ms, order kept.
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// Corruption, percent of datagrams with 1-4 random bytes overwritten.
    #[arg(long, default_value_t = 0.0)]
    corrupt: f64,
    /// Partition: START:DURATION in seconds after the relay starts; nothing
    /// crosses either way meanwhile. Repeatable.
    #[arg(long, value_parser = parse_partition)]
    partition: Vec<(f64, f64)>,
    /// Apply loss, delay, reorder, duplication, corruption to the time
    /// exchange (requests and replies) too.
    #[arg(long)]
    impair_time: bool,
    /// PRNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the exit counters (JSON) here.
    #[arg(long)]
    stats: Option<PathBuf>,
}

fn parse_partition(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}': want START:DURATION (seconds)"))?;
    let a: f64 = a.parse().map_err(|e| format!("'{a}': {e}"))?;
    let b: f64 = b.parse().map_err(|e| format!("'{b}': {e}"))?;
    if !(a >= 0.0 && b > 0.0) {
        return Err(format!("'{s}': START ≥ 0 and DURATION > 0"));
    }
    Ok((a, b))
}

#[derive(Default, Debug)]
struct Counters {
    from_sender: u64,
    forwarded: u64,
    lost_random: u64,
    lost_burst: u64,
    partitioned: u64,
    reordered: u64,
    duplicated: u64,
    corrupted: u64,
    queue_full: u64,
    requests: u64,
    replies: u64,
    peers: u64,
    peers_refused: u64,
    send_errors: u64,
    /// Datagrams on the listen socket from anyone but the first sender.
    foreign: u64,
}

/// Where a held datagram goes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dest {
    /// To the group, from the out socket.
    Group,
    /// A request to the sender, through peer socket i.
    Sender(usize),
    /// A reply to a receiver, from the out socket.
    Peer(SocketAddrV4),
}

/// A datagram held back until `due`. Ordered by `due`, then `order` (the
/// arrival count, unique), so the fields after them never decide: the
/// queue releases by due time and, within one, in arrival order.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    due: u64,
    order: u64,
    dest: Dest,
    data: Vec<u8>,
}

struct Impair {
    rng: Xoshiro256PlusPlus,
    a: Args,
    /// Datagrams still to drop in the current loss burst.
    burst_left: u64,
    /// Probability that a loss burst starts at a datagram outside one.
    burst_start: f64,
    /// Release time of the last in-order datagram per direction: jitter
    /// never reorders.
    last_due: [u64; 2],
}

impl Impair {
    fn new(a: Args) -> Self {
        // A burst of mean length L starting with probability q per datagram
        // outside a burst loses p = qL / (1 + q(L - 1)) of all datagrams
        // (fraction of time in the loss state of a two-state Markov chain,
        // Gilbert 1960); solved for q.
        let p = (a.loss / 100.0).clamp(0.0, 0.99);
        let l = a.burst.max(1.0);
        let burst_start = p / (l - p * (l - 1.0));
        Impair {
            rng: Xoshiro256PlusPlus::seed_from_u64(a.seed),
            burst_left: 0,
            burst_start,
            last_due: [0; 2],
            a,
        }
    }

    fn pct(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool((p / 100.0).clamp(0.0, 1.0))
    }

    /// Decides the fate of a datagram arriving at `now` for direction `dir`
    /// (0 audio, 1 time): the release times of its copies (none = lost),
    /// each corrupted or not.
    fn fate(&mut self, now: u64, dir: usize, c: &mut Counters) -> Vec<(u64, bool)> {
        if self.burst_left > 0 {
            self.burst_left -= 1;
            c.lost_burst += 1;
            return Vec::new();
        }
        if self.pct_burst() {
            if self.a.burst > 1.0 {
                // Geometric burst length with mean `burst`: this datagram
                // plus the ones after it.
                let q = 1.0 / self.a.burst;
                let mut n = 0;
                while !self.rng.random_bool(q) && n < 10_000 {
                    n += 1;
                }
                self.burst_left = n;
                c.lost_burst += 1;
            } else {
                c.lost_random += 1;
            }
            return Vec::new();
        }
        let ms = 1_000_000.0;
        let mut due = now + (self.a.delay_ms * ms) as u64;
        if self.a.jitter_ms > 0.0 {
            due += (self.rng.random_range(0.0..1.0) * self.a.jitter_ms * ms) as u64;
        }
        due = due.max(self.last_due[dir]);
        self.last_due[dir] = due;
        if self.pct(self.a.reorder) {
            due += (self.a.reorder_ms * ms) as u64;
            c.reordered += 1;
        }
        let corrupt = self.pct(self.a.corrupt);
        if corrupt {
            c.corrupted += 1;
        }
        let mut out = vec![(due, corrupt)];
        if self.pct(self.a.duplicate) {
            c.duplicated += 1;
            out.push((due + 100_000, false));
        }
        out
    }

    fn pct_burst(&mut self) -> bool {
        self.burst_start > 0.0 && self.rng.random_bool(self.burst_start.min(1.0))
    }

    fn corrupt(&mut self, d: &mut [u8]) {
        if d.is_empty() {
            return;
        }
        for _ in 0..self.rng.random_range(1..=4) {
            let i = self.rng.random_range(0..d.len());
            d[i] = self.rng.random();
        }
    }
}

fn poll_in(fds: &mut [libc::pollfd], timeout_ms: i32) -> Result<usize> {
    // SAFETY: fds is a valid slice of pollfd for its length.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e).context("poll");
    }
    Ok(n as usize)
}

fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    if !(a.seconds > 0.0 && a.seconds <= 3600.0) {
        bail!("--seconds must be within (0, 3600]");
    }
    for (name, v) in [
        ("loss", a.loss),
        ("reorder", a.reorder),
        ("duplicate", a.duplicate),
        ("corrupt", a.corrupt),
    ] {
        if !(0.0..=100.0).contains(&v) {
            bail!("--{name} is a percentage, 0..100");
        }
    }
    if a.delay_ms < 0.0 || a.jitter_ms < 0.0 || a.reorder_ms < 0.0 || a.burst < 1.0 {
        bail!("delays must be ≥ 0 and --burst ≥ 1");
    }
    bark_lab::stop::install();
    let listen = UdpSocket::bind(a.listen).with_context(|| format!("binding {}", a.listen))?;
    let out = UdpSocket::bind((*a.listen.ip(), 0)).context("binding the out socket")?;
    out.set_multicast_ttl_v4(a.ttl)?;
    out.set_multicast_loop_v4(false)?;
    listen.set_nonblocking(true)?;
    out.set_nonblocking(true)?;
    let to = a.to;
    let stats_path = a.stats.clone();
    let partitions = a.partition.clone();
    let impair_time = a.impair_time;
    let local_ip = *a.listen.ip();
    let seconds = a.seconds;
    let mut imp = Impair::new(a);
    let mut c = Counters::default();

    let start = mono_ns();
    let end = start + (seconds * 1e9) as u64;
    let mut sender: Option<SocketAddrV4> = None;
    // Receivers by address, each with its socket towards the sender.
    let mut peers: Vec<(SocketAddrV4, UdpSocket)> = Vec::new();
    let mut by_addr: HashMap<SocketAddrV4, usize> = HashMap::new();
    let mut queue: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
    let mut order = 0u64;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut part_times: Vec<(Option<u64>, Option<u64>)> = vec![(None, None); partitions.len()];
    eprintln!(
        "bark-lab-relay: {} -> {} (out {}), {seconds} s",
        listen.local_addr()?,
        to,
        out.local_addr()?
    );

    let partitioned = |now: u64, times: &mut [(Option<u64>, Option<u64>)]| -> bool {
        let t = (now - start) as f64 / 1e9;
        let mut any = false;
        for (i, &(s, d)) in partitions.iter().enumerate() {
            if t >= s && t < s + d {
                any = true;
                times[i].0.get_or_insert(now);
            } else if t >= s + d && times[i].0.is_some() {
                times[i].1.get_or_insert(now);
            }
        }
        any
    };

    while !bark_lab::stop::stopped() {
        let now = mono_ns();
        if now >= end {
            break;
        }
        let cut = partitioned(now, &mut part_times);
        // Release what is due.
        while let Some(Reverse(h)) = queue.peek() {
            if h.due > now {
                break;
            }
            let Reverse(h) = queue.pop().expect("peeked");
            let r = match h.dest {
                Dest::Group => out.send_to(&h.data, to),
                Dest::Peer(p) => out.send_to(&h.data, p),
                Dest::Sender(i) => match sender {
                    Some(s) => peers[i].1.send_to(&h.data, s),
                    None => Ok(0),
                },
            };
            match r {
                Ok(_) => c.forwarded += 1,
                Err(_) => c.send_errors += 1,
            }
        }
        let next_due = queue.peek().map(|Reverse(h)| h.due);
        let wait_ns = next_due
            .unwrap_or(now + 50_000_000)
            .min(end)
            .saturating_sub(now);
        let mut fds: Vec<libc::pollfd> = std::iter::once(&listen)
            .chain(std::iter::once(&out))
            .chain(peers.iter().map(|(_, s)| s))
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // Round up: a sub-millisecond wait polls with 0 and spins briefly,
        // which keeps release times within ~0.1 ms.
        let timeout = (wait_ns / 1_000_000).min(50) as i32;
        if poll_in(&mut fds, timeout)? == 0 {
            continue;
        }
        let now = mono_ns();
        let mut held = |dest: Dest, data: &[u8], dir: usize, impaired: bool, c: &mut Counters| {
            if cut {
                c.partitioned += 1;
                return;
            }
            let fates = if impaired {
                imp.fate(now, dir, c)
            } else {
                vec![(now, false)]
            };
            for (due, corrupt) in fates {
                if queue.len() >= MAX_QUEUE {
                    c.queue_full += 1;
                    continue;
                }
                let mut d = data.to_vec();
                if corrupt {
                    imp.corrupt(&mut d);
                }
                order += 1;
                queue.push(Reverse(Held {
                    due,
                    order,
                    dest,
                    data: d,
                }));
            }
        };
        // Bounded drains: at most 256 datagrams per socket per turn.
        if fds[0].revents != 0 {
            for _ in 0..256 {
                let Ok((n, from)) = listen.recv_from(&mut buf) else {
                    break;
                };
                let Some(from) = v4(from) else { continue };
                match sender {
                    None => {
                        eprintln!("bark-lab-relay: sender is {from}");
                        sender = Some(from);
                    }
                    Some(s) if s != from => {
                        // A restarted sender (new socket, new port) takes
                        // over; counted so a scenario can see it.
                        c.foreign += 1;
                        sender = Some(from);
                    }
                    _ => {}
                }
                c.from_sender += 1;
                held(Dest::Group, &buf[..n], 0, true, &mut c);
            }
        }
        if fds[1].revents != 0 {
            for _ in 0..256 {
                let Ok((n, from)) = out.recv_from(&mut buf) else {
                    break;
                };
                let Some(from) = v4(from) else { continue };
                let i = match by_addr.get(&from) {
                    Some(&i) => i,
                    None if peers.len() < MAX_PEERS => {
                        let s = UdpSocket::bind((local_ip, 0))?;
                        s.set_nonblocking(true)?;
                        peers.push((from, s));
                        by_addr.insert(from, peers.len() - 1);
                        c.peers += 1;
                        peers.len() - 1
                    }
                    None => {
                        c.peers_refused += 1;
                        continue;
                    }
                };
                c.requests += 1;
                held(Dest::Sender(i), &buf[..n], 1, impair_time, &mut c);
            }
        }
        // Only the peers polled this turn (one may have been added above).
        for i in 0..fds.len() - 2 {
            if fds[2 + i].revents == 0 {
                continue;
            }
            for _ in 0..256 {
                let Ok((n, _)) = peers[i].1.recv_from(&mut buf) else {
                    break;
                };
                c.replies += 1;
                let p = peers[i].0;
                held(Dest::Peer(p), &buf[..n], 1, impair_time, &mut c);
            }
        }
    }
    // Close any partition still open at exit.
    let now = mono_ns();
    for t in part_times.iter_mut() {
        if t.0.is_some() && t.1.is_none() {
            t.1 = Some(now);
        }
    }
    let parts: Vec<String> = part_times
        .iter()
        .map(|(s, e)| {
            format!(
                "{{\"start_ns\":{},\"end_ns\":{}}}",
                s.map_or("null".into(), |v| v.to_string()),
                e.map_or("null".into(), |v| v.to_string())
            )
        })
        .collect();
    let line = format!(
        "{{\"from_sender\":{},\"forwarded\":{},\"lost_random\":{},\"lost_burst\":{},\"partitioned\":{},\"reordered\":{},\"duplicated\":{},\"corrupted\":{},\"queue_full\":{},\"requests\":{},\"replies\":{},\"peers\":{},\"peers_refused\":{},\"send_errors\":{},\"sender_changes\":{},\"queued_at_exit\":{},\"partitions\":[{}]}}",
        c.from_sender,
        c.forwarded,
        c.lost_random,
        c.lost_burst,
        c.partitioned,
        c.reordered,
        c.duplicated,
        c.corrupted,
        c.queue_full,
        c.requests,
        c.replies,
        c.peers,
        c.peers_refused,
        c.send_errors,
        c.foreign,
        queue.len(),
        parts.join(",")
    );
    println!("{line}");
    if let Some(p) = stats_path {
        std::fs::write(&p, format!("{line}\n"))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

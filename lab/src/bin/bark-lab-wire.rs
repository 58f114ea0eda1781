//! bark-lab-wire: one host's own impaired link, at layer 2 (this kernel has
//! no netem). lab/lanlib.sh's `lab_wire` takes the host's port off the
//! lab's bridge and puts this tool between the two: every Ethernet frame
//! the switch sends the host (multicast and unicast alike) and every frame
//! the host sends goes through core's network model (`bark_core::netmodel`,
//! the simulator's own), one `Path` per direction with a shared link seed,
//! so an outage cuts both ways at once. Each receiver behind its own wire
//! loses different packets, as on a switch that drops frames per port or a
//! Wi-Fi station on its own link.
//!
//! Models (`--model`): `clean` (forwarding only, to measure the wire's own
//! cost), `loss` (`--loss` percent at random, both ways, nothing else) and
//! `wifi` (`NetModel::wifi_station`: bursty 3 % loss, 20–200 ms stalls, a
//! 150 ms outage every 5 s from `--first-outage-s`). Model time starts
//! when the wire does.
//!
//! Frames are re-sent through AF_PACKET sockets. The hosts' veths leave
//! UDP and TCP checksums to an offload that a re-sent frame no longer has,
//! so the wire fills them in (RFC 768, RFC 793 pseudo-header sums) before
//! it sends an IPv4 frame on.
//!
//! The wire should add only the model's delay. Each frame's delay counts
//! from its kernel receive stamp (`SO_TIMESTAMPNS`), not from when this
//! process got round to reading it, and the timer slack is 1 ns (Linux's
//! default 50 µs would release every held frame up to 50 µs late): on the
//! 2-core lab VM those two blurred each direction's least delay by an
//! exponential-like ~80 µs, which the clock estimate then had to see
//! through (docs/BENCHMARKS.md, "Wi-Fi skew").
//!
//! Bounded: runs `--seconds` (or until SIGTERM/SIGINT), holds at most
//! [`MAX_QUEUE`] delayed frames (more are dropped and counted), and prints
//! its counters as one JSON line (also to `--stats FILE`).

use anyhow::{bail, Context, Result};
use bark_core::netmodel::{seed_for, NetModel, Path, PathStats, Rng};
use bark_io::clock::{monotonic_ns as mono_ns, ClockPair};
use clap::{Parser, ValueEnum};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

/// Frames held (delayed) at most, both directions together.
const MAX_QUEUE: usize = 16_384;
/// Largest frame read, bytes: a 1500-byte MTU frame and its header, with
/// room for what an offload might hand over whole (dropped, counted).
const MAX_FRAME: usize = 65_536;
/// Largest frame sent on, bytes: a 1500-byte MTU, its Ethernet header
/// and a VLAN tag.
const MAX_WIRE_FRAME: usize = 1518;
/// Frames read from one side per wake-up at most, so that one side's
/// burst cannot starve the other's.
const BATCH: usize = 64;
/// `PACKET_IGNORE_OUTGOING` (linux/if_packet.h, Linux ≥ 4.20): do not see
/// the frames this socket itself sends.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Model {
    Clean,
    Loss,
    Wifi,
}

#[derive(Parser, Debug)]
#[command(about = "Forward Ethernet frames between two interfaces through a network model")]
struct Args {
    /// The interface on the host's side (its veth peer), e.g. v2.
    #[arg(long)]
    host: String,
    /// The interface on the switch's side (a veth whose peer is on the
    /// bridge), e.g. x2.
    #[arg(long)]
    switch: String,
    /// The link model.
    #[arg(long, value_enum, default_value = "loss")]
    model: Model,
    /// `loss`: percent of frames lost at random, each direction.
    #[arg(long, default_value_t = 3.0)]
    loss: f64,
    /// `wifi`: when the first outage starts, s after the wire does.
    #[arg(long, default_value_t = 5.0)]
    first_outage_s: f64,
    /// Seed of the draws (a run repeats its decisions for the same frames).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run this long, s.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Also write the counters (JSON) here.
    #[arg(long)]
    stats: Option<PathBuf>,
}

/// One direction: its model path, draws and counters.
struct Direction {
    name: &'static str,
    path: Path,
    rng: Rng,
    forwarded: u64,
    queue_full: u64,
    oversize: u64,
    send_errors: u64,
}

/// A frame waiting for its arrival time.
struct Held {
    due_ns: u64,
    order: u64,
    dir: usize,
    frame: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.due_ns, self.order) == (o.due_ns, o.order)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due_ns, self.order).cmp(&(o.due_ns, o.order))
    }
}

fn model(a: &Args) -> Result<NetModel> {
    Ok(match a.model {
        Model::Clean => NetModel::wired(0.0, 0.0),
        Model::Loss => {
            if !(0.0..=100.0).contains(&a.loss) {
                bail!("--loss is a percentage, 0..100");
            }
            NetModel {
                loss: a.loss / 100.0,
                ..NetModel::wired(0.0, 0.0)
            }
        }
        Model::Wifi => NetModel::wifi_station(a.first_outage_s * 1e9),
    })
}

/// An AF_PACKET socket on `ifname` that sees every frame arriving there
/// (promiscuous), none it sends itself.
fn packet_socket(ifname: &str) -> Result<OwnedFd> {
    let name = CString::new(ifname)?;
    // SAFETY: plain libc calls on a socket this function owns; every
    // pointer passed points at a live local of the size given.
    unsafe {
        let index = libc::if_nametoindex(name.as_ptr());
        if index == 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("interface {ifname}"));
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            proto as libc::c_int,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("AF_PACKET socket (root?)");
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = index as i32;
        let size = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        if libc::bind(
            fd.as_raw_fd(),
            &sll as *const _ as *const libc::sockaddr,
            size,
        ) != 0
        {
            return Err(io::Error::last_os_error()).with_context(|| format!("binding to {ifname}"));
        }
        let mut mr: libc::packet_mreq = std::mem::zeroed();
        mr.mr_ifindex = index as i32;
        mr.mr_type = libc::PACKET_MR_PROMISC as u16;
        let one: libc::c_int = 1;
        for (opt, val, len) in [
            (
                libc::PACKET_ADD_MEMBERSHIP,
                &mr as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::packet_mreq>(),
            ),
            (
                PACKET_IGNORE_OUTGOING,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>(),
            ),
        ] {
            if libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                opt,
                val,
                len as libc::socklen_t,
            ) != 0
            {
                return Err(io::Error::last_os_error())
                    .with_context(|| format!("SOL_PACKET option {opt} on {ifname}"));
            }
        }
        // Kernel receive stamps (CLOCK_REALTIME) on every frame read.
        if libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) != 0
        {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("SO_TIMESTAMPNS on {ifname}"));
        }
        Ok(fd)
    }
}

/// Control-message room for one `struct timespec`, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Cmsg([u8; 64]);

/// Reads one frame into `buf` with its kernel receive stamp: `(length as
/// the kernel reported it, MSG_TRUNC, and CLOCK_REALTIME ns if stamped)`,
/// or `None` when the socket is drained.
fn recv_stamped(fd: &OwnedFd, buf: &mut [u8], cmsg: &mut Cmsg) -> Option<(usize, Option<u64>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `msg` points at a live iovec over `buf` and at `cmsg`, each
    // of the size given; the kernel writes within them.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.0.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = cmsg.0.len() as _;
    // SAFETY: as above.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
    if n < 0 {
        return None; // EAGAIN: drained
    }
    let mut stamp = None;
    // SAFETY: walking the control messages the kernel wrote into `msg`;
    // CMSG_* stay within msg_controllen, and the data of an
    // SCM_TIMESTAMPNS message is one `struct timespec`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Some((n as usize, stamp))
}

/// The one's-complement sum of `data` (RFC 1071), folded later.
fn sum16(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Fills in the UDP or TCP checksum of an unfragmented IPv4 frame (the
/// sender's veth left it to an offload); anything else is left alone.
fn fill_checksum(frame: &mut [u8]) {
    const ETH: usize = 14;
    if frame.len() < ETH + 20 || frame[12..14] != [0x08, 0x00] {
        return;
    }
    let ip = &frame[ETH..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let fragmented = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if ip[0] >> 4 != 4 || ihl < 20 || total < ihl || total > ip.len() || fragmented {
        return;
    }
    let (proto, at) = match ip[9] {
        17 => (17u8, 6),
        6 => (6u8, 16),
        _ => return,
    };
    let l4_len = total - ihl;
    if l4_len < at + 2 {
        return;
    }
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(&ip[12..20]);
    pseudo[9] = proto;
    pseudo[10..12].copy_from_slice(&(l4_len as u16).to_be_bytes());
    let l4 = &mut frame[ETH + ihl..ETH + total];
    l4[at] = 0;
    l4[at + 1] = 0;
    let mut c = fold(sum16(sum16(0, &pseudo), l4));
    if proto == 17 && c == 0 {
        c = 0xffff; // RFC 768: a computed zero is sent as all ones
    }
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

fn send(fd: &OwnedFd, frame: &mut [u8], d: &mut Direction) {
    fill_checksum(frame);
    // SAFETY: `frame` is a live buffer of the length given.
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            frame.as_ptr() as *const libc::c_void,
            frame.len(),
            0,
        )
    };
    if n < 0 {
        d.send_errors += 1;
    } else {
        d.forwarded += 1;
    }
}

fn stats_json(d: &Direction) -> String {
    let PathStats {
        sent,
        cut,
        lost,
        overflow,
        held,
    } = *d.path.stats();
    format!(
        "\"{}\":{{\"frames\":{sent},\"forwarded\":{},\"cut\":{cut},\"lost\":{lost},\"overflow\":{overflow},\"held\":{held},\"queue_full\":{},\"oversize\":{},\"send_errors\":{}}}",
        d.name, d.forwarded, d.queue_full, d.oversize, d.send_errors
    )
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.seconds.is_nan() || a.seconds <= 0.0 {
        bail!("--seconds must be > 0");
    }
    let net = model(&a)?;
    bark_lab::stop::install();
    // Index 0: switch → host ("down"); 1: host → switch ("up").
    let fds = [packet_socket(&a.switch)?, packet_socket(&a.host)?];
    let link = seed_for(a.seed, 0);
    let mut dirs = [
        Direction {
            name: "down",
            path: Path::new(&net, link),
            rng: Rng::new(seed_for(a.seed, 1)),
            forwarded: 0,
            queue_full: 0,
            oversize: 0,
            send_errors: 0,
        },
        Direction {
            name: "up",
            path: Path::new(&net, link),
            rng: Rng::new(seed_for(a.seed, 2)),
            forwarded: 0,
            queue_full: 0,
            oversize: 0,
            send_errors: 0,
        },
    ];
    // SAFETY: prctl on this thread's own timer slack.
    if unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) } != 0 {
        eprintln!(
            "bark-lab-wire: timer slack stays at its default: {}",
            io::Error::last_os_error()
        );
    }
    let mut cmsg = Cmsg([0; 64]);
    // Each direction's model time never goes back (kernel stamps of one
    // socket come in order; this guards the rest).
    let mut last_t = [0u64; 2];
    let start = mono_ns();
    let end = start + (a.seconds * 1e9) as u64;
    let mut held: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
    let mut order = 0u64;
    let mut buf = vec![0u8; MAX_FRAME];
    eprintln!(
        "bark-lab-wire: {} <-> {}, model {:?}, {} s",
        a.switch, a.host, a.model, a.seconds
    );
    while !bark_lab::stop::stopped() {
        let now = mono_ns();
        if now >= end {
            break;
        }
        // Frames due now go out first.
        while held.peek().is_some_and(|h| h.0.due_ns <= now) {
            let Reverse(mut h) = held.pop().expect("peeked");
            send(&fds[1 - h.dir], &mut h.frame, &mut dirs[h.dir]);
        }
        let wake = held
            .peek()
            .map_or(end, |h| h.0.due_ns)
            .min(end)
            .min(now + 100_000_000);
        let wait = wake.saturating_sub(now);
        let ts = libc::timespec {
            tv_sec: (wait / 1_000_000_000) as libc::time_t,
            tv_nsec: (wait % 1_000_000_000) as libc::c_long,
        };
        let mut pfd = [
            libc::pollfd {
                fd: fds[0].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: fds[1].as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two live pollfds, a live timespec, no signal mask.
        let r = unsafe { libc::ppoll(pfd.as_mut_ptr(), 2, &ts, std::ptr::null()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("ppoll");
        }
        for dir in 0..2 {
            if pfd[dir].revents & libc::POLLIN == 0 {
                continue;
            }
            for _ in 0..BATCH {
                let Some((n, stamp)) = recv_stamped(&fds[dir], &mut buf, &mut cmsg) else {
                    break;
                };
                let d = &mut dirs[dir];
                if !(14..=MAX_WIRE_FRAME).contains(&n) {
                    d.oversize += 1;
                    continue;
                }
                // When the frame reached this host, not when it was read;
                // a stamp from a stepped realtime clock falls back to now.
                let pair = ClockPair::now();
                let t = stamp
                    .map_or(pair.mono, |r| pair.to_mono(r))
                    .max(start)
                    .max(last_t[dir]);
                last_t[dir] = t;
                let group = buf[0] & 1 == 1;
                let Some(arrive) = d.path.transit(&mut d.rng, (t - start) as f64, n, group) else {
                    continue;
                };
                let due = start + arrive.max(0.0) as u64;
                // Due already (it counts from the kernel stamp): out now,
                // unless a held frame is due before it, which goes first
                // at the top of the loop.
                if due <= pair.mono && held.peek().is_none_or(|h| h.0.due_ns > due) {
                    send(&fds[1 - dir], &mut buf[..n], d);
                } else if held.len() >= MAX_QUEUE {
                    d.queue_full += 1;
                } else {
                    order += 1;
                    held.push(Reverse(Held {
                        due_ns: due,
                        order,
                        dir,
                        frame: buf[..n].to_vec(),
                    }));
                }
            }
        }
    }
    let line = format!(
        "{{\"model\":\"{:?}\",{},{}}}",
        a.model,
        stats_json(&dirs[0]),
        stats_json(&dirs[1])
    );
    println!("{line}");
    if let Some(p) = &a.stats {
        std::fs::write(p, format!("{line}\n"))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A UDP/IPv4 frame whose checksum the wire must fill: checked by
    /// summing the pseudo-header and segment again, which gives 0.
    #[test]
    fn fills_a_udp_checksum_that_verifies() {
        let payload = b"bark!";
        let udp_len = 8 + payload.len();
        let total = 20 + udp_len;
        let mut f = vec![0u8; 14 + total];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&(total as u16).to_be_bytes());
        f[14 + 8] = 1;
        f[14 + 9] = 17;
        f[14 + 12..14 + 16].copy_from_slice(&[10, 99, 0, 1]);
        f[14 + 16..14 + 20].copy_from_slice(&[239, 255, 66, 66]);
        let u = 14 + 20;
        f[u..u + 2].copy_from_slice(&1530u16.to_be_bytes());
        f[u + 2..u + 4].copy_from_slice(&1530u16.to_be_bytes());
        f[u + 4..u + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        f[u + 6..u + 8].copy_from_slice(&[0xde, 0xad]); // a partial sum
        f[u + 8..].copy_from_slice(payload);
        fill_checksum(&mut f);
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&f[14 + 12..14 + 20]);
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&(udp_len as u16).to_be_bytes());
        assert_eq!(fold(sum16(sum16(0, &pseudo), &f[u..])), 0);
        assert_ne!(&f[u + 6..u + 8], &[0xde, 0xad]);
    }

    #[test]
    fn leaves_fragments_and_other_protocols_alone() {
        let mut f = vec![0u8; 14 + 40];
        f[12] = 0x08;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[14 + 9] = 17;
        f[14 + 6] = 0x20; // more fragments
        f[14 + 26] = 0xab;
        let before = f.clone();
        fill_checksum(&mut f);
        assert_eq!(f, before);
        f[14 + 6] = 0;
        f[14 + 9] = 1; // ICMP
        let before = f.clone();
        fill_checksum(&mut f);
        assert_eq!(f, before);
    }
}

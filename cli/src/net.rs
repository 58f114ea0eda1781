//! UDP sockets for every role, IPv4 only, as the modules open them: the
//! sender's socket (which also receives time requests), the group socket
//! (joined to the multicast group, shared with other listeners on the host)
//! and a receiver's control socket (time requests and status).
//!
//! Every socket asks the kernel for receive timestamps (`SO_TIMESTAMPNS`) so
//! that the time a datagram waited for this process to wake up does not end
//! up in clock exchanges or arrival times.

use crate::clock::ClockPair;
use anyhow::{anyhow, Context, Result};
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrIn};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// Receive buffer of a group socket, bytes: about 200 ms of 8-channel F32
/// audio at 48 kHz, so a late wake-up loses nothing (the kernel caps it at
/// `net.core.rmem_max`).
const GROUP_RCVBUF: usize = 1 << 20;
/// Send buffer, bytes: one long buffer's worth of packets never blocks.
const SNDBUF: usize = 512 << 10;
/// Largest datagram any role reads, bytes (the UDP maximum).
pub const MAX_DATAGRAM: usize = 65_536;

#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// One received datagram's metadata; the bytes are in the caller's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Datagram {
    /// Bytes received (at most the buffer's length).
    pub len: usize,
    /// Sender's address.
    pub from: SocketAddrV4,
    /// Arrival, CLOCK_MONOTONIC ns: the kernel's receive stamp when it gave
    /// one, else the time of the read.
    pub arrival_ns: u64,
    /// The datagram was larger than the buffer and was cut.
    pub truncated: bool,
}

/// A non-blocking IPv4 UDP socket with kernel receive timestamps.
pub struct UdpSocket {
    sock: Socket,
    cmsg: CmsgBuf,
}

impl UdpSocket {
    fn open() -> io::Result<Socket> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_nonblocking(true)?;
        setsockopt(&s, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)?;
        Ok(s)
    }

    fn wrap(sock: Socket) -> Self {
        UdpSocket {
            sock,
            cmsg: CmsgBuf([0; 64]),
        }
    }

    /// Receives one datagram into `buf` without blocking; `Ok(None)` when
    /// nothing is queued.
    ///
    /// # Errors
    /// Socket errors other than "nothing queued".
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<Datagram>> {
        let mut iov = [IoSliceMut::new(buf)];
        let r = recvmsg::<SockaddrIn>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(&mut self.cmsg.0[..]),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
        );
        let msg = match r {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let pair = ClockPair::now();
        let mut arrival_ns = pair.mono;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmTimestampns(ts) = c {
                    let real = ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64;
                    arrival_ns = pair.to_mono(real);
                }
            }
        }
        let from = msg
            .address
            .map(SocketAddrV4::from)
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
        let len = msg.bytes;
        Ok(Some(Datagram {
            len: len.min(buf.len()),
            from,
            arrival_ns,
            truncated: truncated || len > buf.len(),
        }))
    }

    /// Sends one datagram without blocking.
    ///
    /// # Errors
    /// Whatever `sendto` reports (full buffer, no route...).
    pub fn send_to(&self, data: &[u8], to: SocketAddrV4) -> io::Result<()> {
        self.sock.send_to(data, &SockAddr::from(to)).map(|_| ())
    }

    /// The bound local address.
    ///
    /// # Errors
    /// When the socket is not bound to an IPv4 address.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        self.sock
            .local_addr()?
            .as_socket_ipv4()
            .ok_or_else(|| io::Error::other("not an IPv4 socket"))
    }

    /// The file descriptor, for `poll`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// The first IPv4 address of interface `ifname`.
///
/// # Errors
/// When there is no such interface or it has no IPv4 address.
pub fn interface_ipv4(ifname: &str) -> Result<Ipv4Addr> {
    let mut found = false;
    for a in nix::ifaddrs::getifaddrs().context("listing interfaces")? {
        if a.interface_name != ifname {
            continue;
        }
        found = true;
        if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            return Ok(sin.ip());
        }
    }
    if found {
        Err(anyhow!(
            "--local-ifname {ifname}: the interface has no IPv4 address"
        ))
    } else {
        Err(anyhow!(
            "--local-ifname {ifname}: no such interface (see `ip -br addr`)"
        ))
    }
}

/// Where multicast goes out: `source_ip` if it is a unicast address, else
/// the address of `ifname`, else wherever the routing table says (`None`).
fn multicast_iface(source_ip: Option<Ipv4Addr>, ifname: Option<&str>) -> Result<Option<Ipv4Addr>> {
    match (source_ip, ifname) {
        (Some(ip), _) if !ip.is_unspecified() && !ip.is_multicast() => Ok(Some(ip)),
        (_, Some(name)) => interface_ipv4(name).map(Some),
        _ => Ok(None),
    }
}

/// Settings of the sender's socket.
#[derive(Clone, Debug)]
pub struct SendOpts {
    /// Group (or unicast receiver) the audio goes to.
    pub destination: SocketAddrV4,
    /// Local address to bind and send from.
    pub source_ip: Option<Ipv4Addr>,
    /// Interface multicast leaves by.
    pub ifname: Option<String>,
    /// Multicast TTL (unicast: IP TTL, at least 1), hops.
    pub ttl: u32,
    /// Whether multicast loops back to listeners on this host.
    pub multicast_loop: bool,
}

/// The sender's socket: bound to `source_ip` (or any) on an ephemeral port,
/// which is where receivers send their time requests.
///
/// # Errors
/// Socket, bind or option failures, saying what was being done.
pub fn sender_socket(o: &SendOpts) -> Result<UdpSocket> {
    let s = UdpSocket::open().context("creating the UDP socket")?;
    let _ = s.set_send_buffer_size(SNDBUF);
    let bind = o.source_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    s.bind(&SocketAddrV4::new(bind, 0).into())
        .with_context(|| format!("binding to --source-ip {bind}"))?;
    if o.destination.ip().is_multicast() {
        if let Some(ifa) = multicast_iface(o.source_ip, o.ifname.as_deref())? {
            s.set_multicast_if_v4(&ifa)
                .with_context(|| format!("sending multicast from {ifa}"))?;
        }
        s.set_multicast_ttl_v4(o.ttl).context("setting --ttl")?;
        s.set_multicast_loop_v4(o.multicast_loop)
            .context("setting --multicast-loop")?;
    } else {
        s.set_ttl_v4(o.ttl.max(1)).context("setting --ttl")?;
    }
    Ok(UdpSocket::wrap(s))
}

/// A socket that listens on `group` (a multicast group, joined on `ifname`
/// or the routing table's choice; or a local unicast address). Several such
/// sockets share the port on one host (SO_REUSEPORT), and every one of them
/// gets every multicast datagram.
///
/// # Errors
/// Socket, bind, join or option failures, saying what was being done.
pub fn group_socket(group: SocketAddrV4, ifname: Option<&str>) -> Result<UdpSocket> {
    let ifa = multicast_iface(None, ifname)?;
    let g = UdpSocket::open().context("creating the UDP socket")?;
    g.set_reuse_address(true).context("setting SO_REUSEADDR")?;
    g.set_reuse_port(true).context("setting SO_REUSEPORT")?;
    let _ = g.set_recv_buffer_size(GROUP_RCVBUF);
    // Binding the group address, not any, keeps other groups on the same
    // port out of this socket.
    g.bind(&group.into())
        .with_context(|| format!("binding to {group}"))?;
    if group.ip().is_multicast() {
        // Only the groups this socket joined, not every group on the host.
        let _ = g.set_multicast_all_v4(false);
        let on = ifa.unwrap_or(Ipv4Addr::UNSPECIFIED);
        g.join_multicast_v4(group.ip(), &on).with_context(|| {
            format!(
                "joining {} on {on} (is there a multicast route? try `bark doctor`)",
                group.ip()
            )
        })?;
    }
    Ok(UdpSocket::wrap(g))
}

/// A receiver's control socket: an ephemeral port for time requests (whose
/// replies must reach this receiver alone) and status packets to the group.
///
/// # Errors
/// Socket, bind or option failures, saying what was being done.
pub fn control_socket(group: SocketAddrV4, ifname: Option<&str>, ttl: u32) -> Result<UdpSocket> {
    let ifa = multicast_iface(None, ifname)?;
    let c = UdpSocket::open().context("creating the UDP socket")?;
    c.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into())
        .context("binding the control socket")?;
    if group.ip().is_multicast() {
        if let Some(ifa) = ifa {
            c.set_multicast_if_v4(&ifa)
                .with_context(|| format!("sending multicast from {ifa}"))?;
        }
        c.set_multicast_ttl_v4(ttl).context("setting --ttl")?;
        c.set_multicast_loop_v4(true)
            .context("setting multicast loop")?;
    }
    Ok(UdpSocket::wrap(c))
}

/// Waits until one of `socks` is readable or `timeout_ns` has passed
/// (nanosecond resolution, through `ppoll`). Interruptions return early.
pub fn wait_readable(socks: &[&UdpSocket], timeout_ns: u64) {
    use nix::poll::{ppoll, PollFd, PollFlags};
    use nix::sys::time::TimeSpec;
    let mut fds: Vec<PollFd> = socks
        .iter()
        .map(|s| PollFd::new(s.fd(), PollFlags::POLLIN))
        .collect();
    let ts = TimeSpec::new(
        (timeout_ns / 1_000_000_000) as _,
        (timeout_ns % 1_000_000_000) as _,
    );
    let _ = ppoll(&mut fds, Some(ts), None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_round_trip_with_timestamp() {
        let mut g = group_socket(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), None).unwrap();
        let c = control_socket(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0), None, 1).unwrap();
        let to = g.local_addr().unwrap();
        let mut buf = [0u8; 64];
        assert!(g.recv(&mut buf).unwrap().is_none());
        let before = crate::clock::monotonic_ns();
        c.send_to(b"hello", to).unwrap();
        wait_readable(&[&g], 500_000_000);
        let d = g.recv(&mut buf).unwrap().expect("datagram");
        assert_eq!(&buf[..d.len], b"hello");
        assert_eq!(d.from.port(), c.local_addr().unwrap().port());
        assert!(d.arrival_ns >= before && d.arrival_ns <= crate::clock::monotonic_ns());
        assert!(!d.truncated);
        // A datagram bigger than the buffer is reported as cut.
        c.send_to(&[7u8; 100], to).unwrap();
        wait_readable(&[&g], 500_000_000);
        let d = g.recv(&mut buf).unwrap().expect("datagram");
        assert!(d.truncated);
    }

    #[test]
    fn unknown_interface_is_a_clear_error() {
        let e = interface_ipv4("nosuchif0").unwrap_err().to_string();
        assert!(e.contains("no such interface"), "{e}");
    }
}

//! UDP sockets for both roles, set up like the PipeWire modules' (same
//! group, port, TTL, loop and interface handling) so the two interoperate.
//!
//! IPv4 only. Every socket is non-blocking and asks the kernel for receive
//! timestamps (`SO_TIMESTAMPNS`, CLOCK_REALTIME): clock exchanges then do
//! not count the time a datagram waited for the main loop.

use crate::config::{SinkConfig, SourceConfig, DEFAULT_TTL};
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrIn};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};

/// Receive buffer of the group socket, bytes: about 200 ms of 8-channel
/// F32 at 48 kHz, so a late main-loop turn loses nothing. The kernel caps
/// it at `net.core.rmem_max`.
const GROUP_RCVBUF: usize = 1 << 20;
/// Send buffer, bytes: a 50 ms block of 8-channel F32 (the null sink's
/// largest) goes out in one burst.
const SNDBUF: usize = 512 << 10;

/// Control-message space for one `struct timespec`, aligned for cmsghdr.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// Metadata of one received datagram (its bytes are in the caller's buffer).
#[derive(Clone, Copy, Debug)]
pub struct Datagram {
    /// Bytes received.
    pub len: usize,
    /// Sender's address.
    pub from: SocketAddrV4,
    /// Kernel receive time, CLOCK_REALTIME ns, when the kernel gave one.
    pub kernel_real_ns: Option<u64>,
    /// The datagram was larger than the buffer (and was cut).
    pub truncated: bool,
}

/// A non-blocking IPv4 UDP socket with kernel receive timestamps.
pub struct UdpSocket {
    sock: Socket,
    cmsg: CmsgBuf,
}

impl UdpSocket {
    fn open() -> io::Result<Socket> {
        // socket2 opens sockets close-on-exec.
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
    /// nothing is queued. Does not allocate.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<Datagram>> {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<SockaddrIn>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(&mut self.cmsg.0[..]),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut kernel_real_ns = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmTimestampns(ts) = c {
                    kernel_real_ns = Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64);
                }
            }
        }
        let from = msg
            .address
            .map(SocketAddrV4::from)
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
        Ok(Some(Datagram {
            len: msg.bytes.min(buf.len()),
            from,
            kernel_real_ns,
            truncated,
        }))
    }

    /// Sends one datagram without blocking. Does not allocate.
    pub fn send_to(&self, data: &[u8], to: &SockAddr) -> io::Result<()> {
        self.sock.send_to(data, to).map(|_| ())
    }

    /// The file descriptor (stays owned here).
    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// The bound local address.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        self.sock
            .local_addr()?
            .as_socket_ipv4()
            .ok_or_else(|| io::Error::other("not an IPv4 socket"))
    }
}

/// The first IPv4 address of interface `ifname`.
///
/// # Errors
/// No such interface, or it has no IPv4 address.
pub fn interface_ipv4(ifname: &str) -> io::Result<Ipv4Addr> {
    let mut found = false;
    for a in nix::ifaddrs::getifaddrs().map_err(io::Error::from)? {
        if a.interface_name != ifname {
            continue;
        }
        found = true;
        if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            return Ok(sin.ip());
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        if found {
            format!("interface {ifname:?} has no IPv4 address")
        } else {
            format!("interface {ifname:?}: no such interface")
        },
    ))
}

fn multicast_iface(
    source_ip: Option<Ipv4Addr>,
    ifname: Option<&str>,
) -> io::Result<Option<Ipv4Addr>> {
    match (source_ip, ifname) {
        (Some(ip), _) if !ip.is_unspecified() && !ip.is_multicast() => Ok(Some(ip)),
        (_, Some(name)) => interface_ipv4(name).map(Some),
        _ => Ok(None),
    }
}

fn context(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The sender's socket: bound to `source-ip` (or any) on an ephemeral port,
/// where receivers send their time requests; multicast leaves through
/// `source-ip`/`interface` with `ttl` and `loop`.
///
/// # Errors
/// Socket, bind or option failures, saying what was being done.
pub fn sender_socket(c: &SinkConfig) -> io::Result<UdpSocket> {
    let s = UdpSocket::open().map_err(context("creating the UDP socket".into()))?;
    let _ = s.set_send_buffer_size(SNDBUF);
    let bind = c.source_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    s.bind(&SocketAddrV4::new(bind, 0).into())
        .map_err(context(format!("binding to {bind}")))?;
    if c.destination.ip().is_multicast() {
        if let Some(ifa) = multicast_iface(c.source_ip, c.interface.as_deref())? {
            s.set_multicast_if_v4(&ifa)
                .map_err(context(format!("sending multicast from {ifa}")))?;
        }
        s.set_multicast_ttl_v4(c.ttl)
            .map_err(context("setting the TTL".into()))?;
        s.set_multicast_loop_v4(c.multicast_loop)
            .map_err(context("setting multicast loop".into()))?;
    } else {
        s.set_ttl_v4(c.ttl.max(1))
            .map_err(context("setting the TTL".into()))?;
    }
    Ok(UdpSocket::wrap(s))
}

/// The receiver's two sockets: the group socket bound to the group and
/// port (shared with other receivers on this host via SO_REUSEPORT) and
/// joined to the group, and a control socket on an ephemeral port for time
/// requests, whose replies must reach this receiver only.
///
/// # Errors
/// Socket, bind, join or option failures, saying what was being done.
pub fn receiver_sockets(c: &SourceConfig) -> io::Result<(UdpSocket, UdpSocket)> {
    let group = c.group;
    let ifa = multicast_iface(None, c.interface.as_deref())?;
    let g = UdpSocket::open().map_err(context("creating the UDP socket".into()))?;
    g.set_reuse_address(true)
        .map_err(context("setting SO_REUSEADDR".into()))?;
    g.set_reuse_port(true)
        .map_err(context("setting SO_REUSEPORT".into()))?;
    let _ = g.set_recv_buffer_size(GROUP_RCVBUF);
    // Binding the group address (not any) keeps other groups on the same
    // port out of this socket.
    g.bind(&group.into())
        .map_err(context(format!("binding to {group}")))?;
    if group.ip().is_multicast() {
        let _ = g.set_multicast_all_v4(false);
        let on = ifa.unwrap_or(Ipv4Addr::UNSPECIFIED);
        g.join_multicast_v4(group.ip(), &on)
            .map_err(context(format!("joining {} on {on}", group.ip())))?;
    }
    let ctl = UdpSocket::open().map_err(context("creating the UDP socket".into()))?;
    ctl.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into())
        .map_err(context("binding the control socket".into()))?;
    if group.ip().is_multicast() {
        if let Some(ifa) = ifa {
            ctl.set_multicast_if_v4(&ifa)
                .map_err(context(format!("sending multicast from {ifa}")))?;
        }
        // Status packets go to the group: same reach as the sender's.
        let _ = ctl.set_multicast_ttl_v4(DEFAULT_TTL);
        let _ = ctl.set_multicast_loop_v4(true);
    }
    Ok((UdpSocket::wrap(g), UdpSocket::wrap(ctl)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigFile, SourceConfig, SourceFlags};

    #[test]
    fn loopback_round_trip_with_kernel_timestamp() {
        let mut c = SourceConfig::resolve(&SourceFlags::default(), &ConfigFile::default()).unwrap();
        // Port 0 (any free port) is refused by the settings; set it here.
        c.group = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        let (mut g, ctl) = receiver_sockets(&c).unwrap();
        let to: SockAddr = g.local_addr().unwrap().into();
        let mut buf = [0u8; 64];
        assert!(g.recv(&mut buf).unwrap().is_none());
        ctl.send_to(b"hello", &to).unwrap();
        let mut got = None;
        for _ in 0..200 {
            if let Some(d) = g.recv(&mut buf).unwrap() {
                got = Some(d);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let d = got.expect("datagram within 200 ms");
        assert_eq!(&buf[..d.len], b"hello");
        assert_eq!(d.from.port(), ctl.local_addr().unwrap().port());
        assert!(d.kernel_real_ns.is_some());
        assert!(!d.truncated);
        // A datagram larger than the buffer is reported cut.
        ctl.send_to(&[7u8; 100], &to).unwrap();
        for _ in 0..200 {
            if let Some(d) = g.recv(&mut buf).unwrap() {
                assert!(d.truncated);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("no second datagram");
    }
}

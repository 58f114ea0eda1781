//! UDP sockets for both roles: set up on the main thread, then used from
//! the data thread with non-blocking `sendto` and `recvmsg` only.
//!
//! IPv4 only. Each socket asks the kernel for receive timestamps
//! (`SO_TIMESTAMPNS`, CLOCK_REALTIME) so that clock exchanges do not
//! include the time a datagram waited for the next graph cycle.

use crate::args::{SinkArgs, SourceArgs};
use crate::stats::Counters;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrIn};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;

/// Receive buffer of the group socket, bytes: room for about 200 ms of
/// 8-channel F32 audio at 48 kHz, so a late graph cycle loses nothing. The
/// kernel caps it at `net.core.rmem_max`.
const GROUP_RCVBUF: usize = 1 << 20;
/// Send buffer, bytes: one 8192-frame quantum of 8-channel F32 fits.
const SNDBUF: usize = 512 << 10;

/// Control-message space for one `struct timespec`, aligned for cmsghdr.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// One received datagram's metadata (the bytes are in the caller's buffer).
#[derive(Clone, Copy, Debug)]
pub struct Datagram {
    /// Bytes received.
    pub len: usize,
    /// Sender's address.
    pub from: SocketAddrV4,
    /// Kernel receive time, CLOCK_REALTIME ns, when the kernel gave one.
    pub kernel_real_ns: Option<u64>,
    /// The datagram was larger than the buffer (and is cut).
    pub truncated: bool,
}

/// A non-blocking IPv4 UDP socket with kernel receive timestamps.
pub struct UdpSocket {
    sock: Socket,
    cmsg: CmsgBuf,
}

impl UdpSocket {
    fn open() -> io::Result<Socket> {
        // socket2 opens it close-on-exec, which a daemon needs.
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

    /// Sends without blocking and counts the outcome in `c` (failures are
    /// counted, never logged, as this runs on the data thread).
    pub fn send_counted(&self, data: &[u8], to: &SockAddr, c: &Counters) {
        match self.send_to(data, to) {
            Ok(()) => Counters::bump(&c.sent),
            Err(e) => {
                Counters::bump(&c.send_errors);
                c.last_send_errno
                    .store(e.raw_os_error().unwrap_or(0) as i64, Relaxed);
            }
        }
    }

    /// The file descriptor (for data-loop sources; stays owned here).
    pub fn fd(&self) -> std::os::fd::RawFd {
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
/// When there is no such interface or it has no IPv4 address.
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
            format!("local.ifname {ifname:?} has no IPv4 address")
        } else {
            format!("local.ifname {ifname:?}: no such interface")
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

fn context(what: &str) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The sender's socket: bound to `source.ip` (or any) on an ephemeral port,
/// which is where receivers send their time requests; multicast goes out
/// on `source.ip`/`local.ifname` with `net.ttl` and `net.loop`.
///
/// # Errors
/// Socket, bind or option failures, with what was being done.
pub fn sender_socket(a: &SinkArgs) -> io::Result<UdpSocket> {
    let s = UdpSocket::open().map_err(context("creating the UDP socket"))?;
    let _ = s.set_send_buffer_size(SNDBUF);
    let bind = a.source_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    s.bind(&SocketAddrV4::new(bind, 0).into())
        .map_err(context(&format!("binding to source.ip {bind}")))?;
    if a.destination.ip().is_multicast() {
        if let Some(ifa) = multicast_iface(a.source_ip, a.ifname.as_deref())? {
            s.set_multicast_if_v4(&ifa)
                .map_err(context(&format!("sending multicast from {ifa}")))?;
        }
        s.set_multicast_ttl_v4(a.ttl)
            .map_err(context("setting net.ttl"))?;
        s.set_multicast_loop_v4(a.multicast_loop)
            .map_err(context("setting net.loop"))?;
    } else {
        // Unicast: the TTL still bounds how far packets travel.
        s.set_ttl_v4(a.ttl.max(1))
            .map_err(context("setting net.ttl"))?;
    }
    Ok(UdpSocket::wrap(s))
}

/// The receiver's two sockets: the group socket, bound to `source.port`
/// and joined to the group (shared with other receivers on this host
/// through SO_REUSEPORT), and a control socket on an ephemeral port for
/// time requests, whose replies must reach this receiver only.
///
/// # Errors
/// Socket, bind, join or option failures, with what was being done.
pub fn receiver_sockets(a: &SourceArgs) -> io::Result<(UdpSocket, UdpSocket)> {
    let group = a.group;
    let ifa = multicast_iface(None, a.ifname.as_deref())?;
    let g = UdpSocket::open().map_err(context("creating the UDP socket"))?;
    g.set_reuse_address(true)
        .map_err(context("setting SO_REUSEADDR"))?;
    g.set_reuse_port(true)
        .map_err(context("setting SO_REUSEPORT"))?;
    let _ = g.set_recv_buffer_size(GROUP_RCVBUF);
    // Binding the group address (not any) keeps other groups on the same
    // port out of this socket.
    g.bind(&group.into())
        .map_err(context(&format!("binding to {group}")))?;
    if group.ip().is_multicast() {
        // Only the groups this socket joined, not every group on the host.
        let _ = g.set_multicast_all_v4(false);
        let on = ifa.unwrap_or(Ipv4Addr::UNSPECIFIED);
        g.join_multicast_v4(group.ip(), &on)
            .map_err(context(&format!("joining {} on {on}", group.ip())))?;
    }

    let c = UdpSocket::open().map_err(context("creating the UDP socket"))?;
    c.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into())
        .map_err(context("binding the control socket"))?;
    if group.ip().is_multicast() {
        if let Some(ifa) = ifa {
            c.set_multicast_if_v4(&ifa)
                .map_err(context(&format!("sending multicast from {ifa}")))?;
        }
        let _ = c.set_multicast_ttl_v4(crate::args::DEFAULT_TTL);
        let _ = c.set_multicast_loop_v4(true);
    }
    Ok((UdpSocket::wrap(g), UdpSocket::wrap(c)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn loopback_round_trip_with_timestamp() {
        // Port 0 (any free port) is refused by the parser; set it directly.
        let mut a = SourceArgs::parse(&HashMap::<String, String>::new()).unwrap();
        a.group = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        let (mut g, c) = receiver_sockets(&a).unwrap();
        let to: SockAddr = g.local_addr().unwrap().into();
        let mut buf = [0u8; 64];
        assert!(g.recv(&mut buf).unwrap().is_none());
        c.send_to(b"hello", &to).unwrap();
        let mut got = None;
        for _ in 0..100 {
            if let Some(d) = g.recv(&mut buf).unwrap() {
                got = Some(d);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let d = got.expect("datagram");
        assert_eq!(&buf[..d.len], b"hello");
        assert_eq!(
            d.from,
            c.local_addr().unwrap().set_ip_ret(Ipv4Addr::LOCALHOST)
        );
        assert!(d.kernel_real_ns.is_some());
        assert!(!d.truncated);
    }

    trait SetIp {
        fn set_ip_ret(self, ip: Ipv4Addr) -> Self;
    }
    impl SetIp for SocketAddrV4 {
        fn set_ip_ret(mut self, ip: Ipv4Addr) -> Self {
            self.set_ip(ip);
            self
        }
    }
}

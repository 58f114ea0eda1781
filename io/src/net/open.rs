//! Opening the sockets of each role, and finding the interface multicast
//! uses.

use super::socket::UdpSocket;
use super::{FrontEnd, SendPath, GROUP_RCVBUF, SNDBUF};
use bark_core::settings::Role;
use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};
use std::fmt::Display;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

/// `e` with what was being done in front, its kind kept.
fn ctx(e: io::Error, what: impl Display) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A new non-blocking, close-on-exec (socket2 opens it so, which a daemon
/// needs) IPv4 UDP socket that asks for kernel receive timestamps.
fn open() -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    setsockopt(&s, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)?;
    Ok(s)
}

fn open_or_say() -> io::Result<Socket> {
    open().map_err(|e| ctx(e, "creating the UDP socket"))
}

/// The first IPv4 address of interface `ifname`.
///
/// # Errors
/// When there is no such interface or it has no IPv4 address, naming
/// `local.ifname` as `fe` names it; when the interfaces cannot be listed.
pub fn interface_ipv4(ifname: &str, fe: FrontEnd) -> io::Result<Ipv4Addr> {
    let setting = fe.name(Role::Source, "local.ifname");
    let mut found = false;
    let list = nix::ifaddrs::getifaddrs().map_err(|e| ctx(e.into(), "listing interfaces"))?;
    for a in list {
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
            format!("{setting} {ifname:?} has no IPv4 address")
        } else {
            format!("{setting} {ifname:?}: no such interface (see `ip -br addr`)")
        },
    ))
}

/// Where multicast goes out and groups are joined: `source_ip` if it is a
/// unicast address, else the address of `ifname`, else wherever the
/// routing table says (`None`).
fn multicast_iface(
    source_ip: Option<Ipv4Addr>,
    ifname: Option<&str>,
    fe: FrontEnd,
) -> io::Result<Option<Ipv4Addr>> {
    match (source_ip, ifname) {
        (Some(ip), _) if !ip.is_unspecified() && !ip.is_multicast() => Ok(Some(ip)),
        (_, Some(name)) => interface_ipv4(name, fe).map(Some),
        _ => Ok(None),
    }
}

/// The sender's socket: bound to `source_ip` (or any) on `control_port`
/// (0: an ephemeral port), which is where receivers send their time
/// requests, NACKs and subscriptions. To a multicast
/// `destination`, datagrams leave through `source_ip` or `ifname` with
/// multicast TTL `ttl` (hops) and loop back to this host if
/// `multicast_loop`; to a unicast one, `ttl` (at least 1) is the IP TTL,
/// which still bounds how far they travel. Send buffer: [`SNDBUF`].
///
/// # Errors
/// Socket, bind, interface or option failures, saying what was being done
/// and naming the setting as `fe` does.
pub fn sender_socket(path: &SendPath, fe: FrontEnd) -> io::Result<UdpSocket> {
    let SendPath {
        destination,
        source_ip,
        ref ifname,
        ttl,
        control_port,
        multicast_loop,
        // Copies go out through this socket too; nothing to set up.
        copies: _,
    } = *path;
    let ifname = ifname.as_deref();
    let s = open_or_say()?;
    // Best effort: the kernel caps it, and a smaller one still works.
    let _ = s.set_send_buffer_size(SNDBUF);
    let bind = source_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    s.bind(&SocketAddrV4::new(bind, control_port).into())
        .map_err(|e| {
            ctx(
                e,
                format_args!(
                    "binding to {} {bind}{}",
                    fe.name(Role::Sink, "source.ip"),
                    if control_port == 0 {
                        String::new()
                    } else {
                        format!(
                            ", {} {control_port}",
                            fe.name(Role::Sink, "bark.control.port")
                        )
                    }
                ),
            )
        })?;
    if destination.ip().is_multicast() {
        if let Some(ifa) = multicast_iface(source_ip, ifname, fe)? {
            s.set_multicast_if_v4(&ifa)
                .map_err(|e| ctx(e, format_args!("sending multicast from {ifa}")))?;
        }
        s.set_multicast_ttl_v4(ttl).map_err(|e| {
            ctx(
                e,
                format_args!("setting {}", fe.name(Role::Sink, "net.ttl")),
            )
        })?;
        s.set_multicast_loop_v4(multicast_loop).map_err(|e| {
            ctx(
                e,
                format_args!("setting {}", fe.name(Role::Sink, "net.loop")),
            )
        })?;
    } else {
        s.set_ttl_v4(ttl.max(1)).map_err(|e| {
            ctx(
                e,
                format_args!("setting {}", fe.name(Role::Sink, "net.ttl")),
            )
        })?;
    }
    Ok(UdpSocket::wrap(s))
}

/// A socket that listens on `group`: a multicast group, joined on the
/// address of `ifname` (or where the routing table says), or a local
/// unicast address. It is bound to the group's address, not any, so that
/// other groups on the same port stay out; several such sockets share the
/// port on one host (`SO_REUSEPORT`), and every one of them gets every
/// multicast datagram. Receive buffer: [`GROUP_RCVBUF`].
///
/// # Errors
/// Socket, bind, interface, join or option failures, saying what was being
/// done and naming the setting as `fe` does.
pub fn group_socket(
    group: SocketAddrV4,
    ifname: Option<&str>,
    fe: FrontEnd,
) -> io::Result<UdpSocket> {
    let ifa = multicast_iface(None, ifname, fe)?;
    let g = open_or_say()?;
    g.set_reuse_address(true)
        .map_err(|e| ctx(e, "setting SO_REUSEADDR"))?;
    g.set_reuse_port(true)
        .map_err(|e| ctx(e, "setting SO_REUSEPORT"))?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = g.set_recv_buffer_size(GROUP_RCVBUF);
    g.bind(&group.into())
        .map_err(|e| ctx(e, format_args!("binding to {group}")))?;
    // Only the groups this socket joined (bound to any address, as a
    // unicast receiver's is, none), not every group on the host.
    let _ = g.set_multicast_all_v4(false);
    if group.ip().is_multicast() {
        let on = ifa.unwrap_or(Ipv4Addr::UNSPECIFIED);
        g.join_multicast_v4(group.ip(), &on).map_err(|e| {
            ctx(
                e,
                format_args!(
                    "joining {} on {on} (is there a multicast route? try `bark doctor`)",
                    group.ip()
                ),
            )
        })?;
    }
    Ok(UdpSocket::wrap(g))
}

/// A receiver's control socket: an ephemeral port for its time requests
/// (whose replies must reach this receiver alone) and its status packets.
/// To a multicast `group` these leave through `ifname`'s address (or where
/// the routing table says) with multicast TTL `ttl` (hops) and loop back
/// to this host, where `bark stats` and other receivers may listen.
///
/// # Errors
/// Socket, bind, interface or option failures, saying what was being done
/// and naming the setting as `fe` does.
pub fn control_socket(
    group: SocketAddrV4,
    ifname: Option<&str>,
    ttl: u32,
    fe: FrontEnd,
) -> io::Result<UdpSocket> {
    let ifa = multicast_iface(None, ifname, fe)?;
    let c = open_or_say()?;
    c.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into())
        .map_err(|e| ctx(e, "binding the control socket"))?;
    if group.ip().is_multicast() {
        if let Some(ifa) = ifa {
            c.set_multicast_if_v4(&ifa)
                .map_err(|e| ctx(e, format_args!("sending multicast from {ifa}")))?;
        }
        c.set_multicast_ttl_v4(ttl)
            .map_err(|e| ctx(e, format_args!("setting the multicast TTL to {ttl}")))?;
        c.set_multicast_loop_v4(true)
            .map_err(|e| ctx(e, "setting multicast loop"))?;
    }
    Ok(UdpSocket::wrap(c))
}

/// A node's command socket ([`bark_core::command`]): UDP on every
/// address at `port` (0: one the kernel picks, reported in the node's
/// status packets), where controllers send commands and the acks leave
/// from. Read on the adapter's main loop, never its data thread.
///
/// # Errors
/// Socket or bind failures, saying what was being done.
pub fn command_socket(port: u16) -> io::Result<UdpSocket> {
    let c = open_or_say()?;
    c.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())
        .map_err(|e| ctx(e, format_args!("binding the command socket to port {port}")))?;
    Ok(UdpSocket::wrap(c))
}

/// A receiver's pair: its [`group_socket`] on `group` joined on `ifname`,
/// and its [`control_socket`] (status with multicast TTL `ttl`, hops).
///
/// # Errors
/// As those two, naming the setting as `fe` does.
pub fn receiver_sockets(
    group: SocketAddrV4,
    ifname: Option<&str>,
    ttl: u32,
    fe: FrontEnd,
) -> io::Result<(UdpSocket, UdpSocket)> {
    Ok((
        group_socket(group, ifname, fe)?,
        control_socket(group, ifname, ttl, fe)?,
    ))
}

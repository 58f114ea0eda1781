//! The modules' UDP sockets: bark-io's transport ([`bark_io::net`]), set
//! up on the main thread from the module arguments, then used from the
//! data thread with non-blocking `sendto` and `recvmsg` only.

use crate::args::{SinkArgs, SourceArgs, DEFAULT_TTL};
use bark_io::net::{control_socket, group_socket, SettingNames};
pub use bark_io::net::{Drained, UdpSocket};
use std::io;

/// The module arguments that socket errors name.
const NAMES: SettingNames = SettingNames {
    source_ip: "source.ip",
    ifname: "local.ifname",
    ttl: "net.ttl",
    multicast_loop: "net.loop",
};

/// The sender's socket, from `source.ip`, `local.ifname`, `net.ttl`,
/// `net.loop` and the destination (see [`bark_io::net::sender_socket`]).
///
/// # Errors
/// Socket, bind or option failures, naming what was being done.
pub fn sender_socket(a: &SinkArgs) -> io::Result<UdpSocket> {
    bark_io::net::sender_socket(
        a.destination,
        a.source_ip,
        a.ifname.as_deref(),
        a.ttl,
        a.multicast_loop,
        &NAMES,
    )
}

/// The receiver's group socket (joined on `local.ifname`) and control
/// socket (status to the group with the default TTL).
///
/// # Errors
/// Socket, bind, join or option failures, naming what was being done.
pub fn receiver_sockets(a: &SourceArgs) -> io::Result<(UdpSocket, UdpSocket)> {
    let ifname = a.ifname.as_deref();
    let group = group_socket(a.group, ifname, &NAMES)?;
    let control = control_socket(a.group, ifname, DEFAULT_TTL, &NAMES)?;
    Ok((group, control))
}

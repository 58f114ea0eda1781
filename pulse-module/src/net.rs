//! bark-pulse's UDP sockets: bark-io's transport ([`bark_io::net`]), set up
//! from the settings like the PipeWire modules' (same group, port, TTL,
//! loop and interface handling) so that the two interoperate.

use crate::config::{SinkConfig, SourceConfig, DEFAULT_TTL};
pub use bark_io::net::UdpSocket;
use bark_io::net::{control_socket, group_socket, SettingNames};
use std::io;

/// The settings (flags and TOML keys) that socket errors name.
const NAMES: SettingNames = SettingNames {
    source_ip: "source-ip",
    ifname: "interface",
    ttl: "ttl",
    multicast_loop: "loop",
};

/// The sender's socket, from `source-ip`, `interface`, `ttl`, `loop` and
/// the destination (see [`bark_io::net::sender_socket`]).
///
/// # Errors
/// Socket, bind or option failures, saying what was being done.
pub fn sender_socket(c: &SinkConfig) -> io::Result<UdpSocket> {
    bark_io::net::sender_socket(
        c.destination,
        c.source_ip,
        c.interface.as_deref(),
        c.ttl,
        c.multicast_loop,
        &NAMES,
    )
}

/// The receiver's group socket (joined on `interface`) and control socket
/// (status to the group with the sender's default reach).
///
/// # Errors
/// Socket, bind, join or option failures, saying what was being done.
pub fn receiver_sockets(c: &SourceConfig) -> io::Result<(UdpSocket, UdpSocket)> {
    let ifname = c.interface.as_deref();
    let group = group_socket(c.group, ifname, &NAMES)?;
    let control = control_socket(c.group, ifname, DEFAULT_TTL, &NAMES)?;
    Ok((group, control))
}

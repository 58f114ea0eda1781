//! `bark`'s UDP sockets: bark-io's transport ([`bark_io::net`]), with
//! errors naming the command-line flags (`bark stream` opens its sender
//! socket with [`NAMES`] directly).

pub use bark_io::net::{wait_readable, UdpSocket};
use bark_io::net::{Drained, SettingNames};
use std::io;
use std::net::SocketAddrV4;

/// The flags that socket errors name.
pub const NAMES: SettingNames = SettingNames {
    source_ip: "--source-ip",
    ifname: "--local-ifname",
    ttl: "--ttl",
    multicast_loop: "--multicast-loop",
};

/// A socket listening on `group`, joined on `ifname` (see
/// [`bark_io::net::group_socket`]).
///
/// # Errors
/// Socket, bind, join or option failures, naming the flag.
pub fn group_socket(group: SocketAddrV4, ifname: Option<&str>) -> io::Result<UdpSocket> {
    bark_io::net::group_socket(group, ifname, &NAMES)
}

/// A receiver's control socket (see [`bark_io::net::control_socket`]).
///
/// # Errors
/// Socket, bind or option failures, naming the flag.
pub fn control_socket(
    group: SocketAddrV4,
    ifname: Option<&str>,
    ttl: u32,
) -> io::Result<UdpSocket> {
    bark_io::net::control_socket(group, ifname, ttl, &NAMES)
}

/// After a drain: counts its cut datagrams in `truncated` (reported with
/// the malformed ones) and logs the receive error that ended it.
pub fn tally(d: Drained, truncated: &mut u64) {
    *truncated += d.truncated as u64;
    if let Some(e) = d.error {
        log::warn!("receive error: {e}");
    }
}

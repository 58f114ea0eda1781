//! `bark`'s UDP sockets: bark-io's transport ([`bark_io::net`]), with
//! errors naming the command-line flags (`bark stream` and `bark receive`
//! open their sockets with [`NAMES`] directly).

pub use bark_io::net::{wait_readable, UdpSocket};
use bark_io::net::{Drained, FrontEnd};
use std::io;
use std::net::SocketAddrV4;

/// Socket errors name the command-line flags.
pub const NAMES: FrontEnd = FrontEnd::Cli;

/// A socket listening on `group`, joined on `ifname` (see
/// [`bark_io::net::group_socket`]).
///
/// # Errors
/// Socket, bind, join or option failures, naming the flag.
pub fn group_socket(group: SocketAddrV4, ifname: Option<&str>) -> io::Result<UdpSocket> {
    bark_io::net::group_socket(group, ifname, NAMES)
}

/// After a drain: counts its cut datagrams in `truncated` (reported with
/// the malformed ones) and logs the receive error that ended it.
pub fn tally(d: Drained, truncated: &mut u64) {
    *truncated += d.truncated as u64;
    if let Some(e) = d.error {
        log::warn!("receive error: {e}");
    }
}

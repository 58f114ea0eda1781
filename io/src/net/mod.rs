//! The UDP transport every adapter uses: IPv4 only, non-blocking, with
//! kernel receive timestamps.
//!
//! Each socket asks the kernel for receive timestamps (`SO_TIMESTAMPNS`,
//! CLOCK_REALTIME), so that clock exchanges and arrival times do not
//! include the time a datagram waited for the adapter to wake up (a graph
//! cycle, a main-loop turn). Sockets are set up at start (allocating,
//! blocking calls allowed) and then used with non-blocking `sendto` and
//! `recvmsg` only, which neither allocate nor block, so that PipeWire's
//! data thread may call them.
//!
//! The roles:
//! - [`sender_socket`]: the sender's, bound to an ephemeral port where the
//!   receivers send their time requests; audio, syncs and status go out
//!   from it.
//! - [`group_socket`]: a receiver's (or listener's) socket on the group,
//!   joined to it, shared with the other listeners on the host.
//! - [`control_socket`]: a receiver's ephemeral port for its time requests
//!   (whose replies must reach this receiver alone) and its status.
//!
//! Errors say what was being done and name the adapter's own setting
//! ([`FrontEnd`]), so that the user knows what to change.

mod open;
mod socket;

pub use open::{
    command_socket, control_socket, group_socket, interface_ipv4, receiver_sockets, sender_socket,
};
pub use socket::{wait_readable, Arrival, Datagram, Drained, UdpSocket};

/// Receive buffer of a group socket, bytes: about 200 ms of 8-channel F32
/// audio at 48 kHz, so that a late wake-up (graph cycle, main-loop turn)
/// loses nothing. The kernel caps it at `net.core.rmem_max`.
pub const GROUP_RCVBUF: usize = 1 << 20;

/// Send buffer of the sender's socket, bytes: one long buffer of 8-channel
/// F32 (PipeWire's 8192-frame quantum, bark-pulse's 50 ms block) goes out
/// in one burst without `sendto` finding the buffer full.
pub const SNDBUF: usize = 512 << 10;

pub use bark_core::settings::{FrontEnd, SendPath};

#[cfg(test)]
mod tests;

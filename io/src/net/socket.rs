//! The socket itself: a non-allocating `recvmsg` that returns the kernel's
//! receive stamp, a bounded drain of the queue into an endpoint, sending
//! what an endpoint returns, and a wait for readability.

use crate::clock::ClockPair;
use bark_core::endpoint::{Dest, MAX_DATAGRAM, TRANSMIT_BUF};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrIn};
use socket2::{SockAddr, Socket};
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

/// Control-message space for one `struct timespec` (`SCM_TIMESTAMPNS`),
/// aligned for `cmsghdr`; kept in the socket so that `recvmsg` allocates
/// nothing.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// Metadata of one received datagram; its bytes are in the caller's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Datagram {
    /// Bytes received (at most the buffer's length).
    pub len: usize,
    /// Sender's address (0.0.0.0:0 if the kernel gave none).
    pub from: SocketAddrV4,
    /// Kernel receive time, CLOCK_REALTIME ns, when the kernel gave one.
    pub kernel_real_ns: Option<u64>,
    /// The datagram was larger than the buffer and was cut.
    pub truncated: bool,
}

/// When a datagram arrived, on the clocks the core is driven with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// Arrival, CLOCK_MONOTONIC ns: the kernel's receive stamp moved onto
    /// the monotonic clock, or the time of the read when the kernel gave
    /// none or one more than a second old or in the future (the realtime
    /// clock stepped; see [`ClockPair::to_mono`]).
    pub mono_ns: u64,
    /// CLOCK_REALTIME at the read, ns: the wall clock the authentication
    /// layer checks stamps against.
    pub real_ns: u64,
}

impl Arrival {
    /// The arrival of a datagram read just now with kernel stamp
    /// `kernel_real_ns` (CLOCK_REALTIME ns). Reads both clocks (vDSO, no
    /// syscall, no allocation).
    pub fn now(kernel_real_ns: Option<u64>) -> Arrival {
        let pair = ClockPair::now();
        Arrival {
            mono_ns: kernel_real_ns.map_or(pair.mono, |r| pair.to_mono(r)),
            real_ns: pair.real,
        }
    }
}

/// What [`UdpSocket::drain`] did.
#[derive(Debug, Default)]
pub struct Drained {
    /// Whole datagrams handed to the handler.
    pub handled: usize,
    /// Datagrams larger than the buffer, dropped (never handed over). The
    /// socket's buffer holds the largest IPv4 UDP payload, so this stays 0
    /// unless the kernel misbehaves; adapters count it with the malformed.
    pub truncated: usize,
    /// The receive error that ended the drain, other than "nothing
    /// queued". An OS error: creating it does not allocate.
    pub error: Option<io::Error>,
}

/// A non-blocking IPv4 UDP socket with kernel receive timestamps, and the
/// buffers of one datagram each way ([`UdpSocket::drain`] reads into one,
/// an endpoint's `poll_transmit` writes into the other), allocated when it
/// is opened so that the data thread never allocates. Made by
/// [`super::sender_socket`], [`super::group_socket`] and
/// [`super::control_socket`].
pub struct UdpSocket {
    sock: Socket,
    cmsg: CmsgBuf,
    /// [`MAX_DATAGRAM`] bytes: no IPv4 datagram is cut.
    rx: Box<[u8]>,
    /// [`TRANSMIT_BUF`] bytes: what `poll_transmit` needs.
    tx: Box<[u8]>,
}

/// Receives one datagram on `fd` into `buf` (see [`UdpSocket::recv`]).
fn recv_into(fd: RawFd, cmsg: &mut CmsgBuf, buf: &mut [u8]) -> io::Result<Option<Datagram>> {
    let cap = buf.len();
    let mut iov = [IoSliceMut::new(buf)];
    let msg = match recvmsg::<SockaddrIn>(
        fd,
        &mut iov,
        Some(&mut cmsg.0[..]),
        // MSG_TRUNC: the real length comes back, and the flag says the
        // datagram was cut.
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
    Ok(Some(Datagram {
        len: msg.bytes.min(cap),
        from,
        kernel_real_ns,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC) || msg.bytes > cap,
    }))
}

impl UdpSocket {
    pub(super) fn wrap(sock: Socket) -> Self {
        UdpSocket {
            sock,
            cmsg: CmsgBuf([0; 64]),
            rx: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            tx: vec![0; TRANSMIT_BUF].into_boxed_slice(),
        }
    }

    /// Receives one datagram into `buf` without blocking; `Ok(None)` when
    /// nothing is queued. Does not allocate. For listeners with buffers of
    /// their own; an endpoint's loop uses [`UdpSocket::drain`].
    ///
    /// # Errors
    /// Socket errors other than "nothing queued" (`EAGAIN`).
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<Datagram>> {
        recv_into(self.sock.as_raw_fd(), &mut self.cmsg, buf)
    }

    /// Reads up to `max` queued datagrams, one after the other, and hands
    /// each whole one to `handle` with its bytes (in the socket's receive
    /// buffer, to be opened in place), its sender and its [`Arrival`]
    /// (read right after the datagram, so that the kernel stamp is moved
    /// onto the monotonic clock with a fresh pair). Cut datagrams are
    /// counted and skipped. Stops when the queue is empty, after `max`
    /// datagrams (a flood cannot hold the caller), or at the first receive
    /// error.
    ///
    /// Never blocks and allocates nothing itself; real-time callers keep
    /// `handle` so (count, do not log).
    pub fn drain(
        &mut self,
        max: usize,
        mut handle: impl FnMut(&mut [u8], SocketAddrV4, Arrival),
    ) -> Drained {
        let fd = self.sock.as_raw_fd();
        let mut r = Drained::default();
        for _ in 0..max {
            let d = match recv_into(fd, &mut self.cmsg, &mut self.rx) {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) => {
                    r.error = Some(e);
                    break;
                }
            };
            if d.truncated {
                r.truncated += 1;
                continue;
            }
            let at = Arrival::now(d.kernel_real_ns);
            handle(&mut self.rx[..d.len], d.from, at);
            r.handled += 1;
        }
        r
    }

    /// Sends what an endpoint has to send now. `poll` is the endpoint's
    /// `poll_transmit`, with the clocks read inside it right before each
    /// call (so that the time stamps it writes are fresh): it writes one
    /// datagram into the buffer it is given (the socket's, of
    /// [`TRANSMIT_BUF`] bytes) and returns its length and destination
    /// ([`Dest::Group`] is `group`). Stops when `poll` has nothing more or
    /// after `max` datagrams; each send's outcome and destination go to
    /// `sent`.
    ///
    /// Never blocks and allocates nothing itself; real-time callers keep
    /// `sent` so (count, do not log).
    pub fn transmit(
        &mut self,
        group: SocketAddr,
        max: usize,
        mut poll: impl FnMut(&mut [u8]) -> Option<(usize, Dest)>,
        mut sent: impl FnMut(io::Result<()>, SocketAddr),
    ) {
        for _ in 0..max {
            let Some((n, dest)) = poll(&mut self.tx) else {
                break;
            };
            let to = dest.or_group(group);
            let r = self.sock.send_to(&self.tx[..n], &SockAddr::from(to));
            sent(r.map(|_| ()), to);
        }
    }

    /// Sends one datagram without blocking. Does not allocate.
    ///
    /// # Errors
    /// Whatever `sendto` reports (full buffer, no route, an IPv6
    /// address...).
    pub fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        self.sock.send_to(data, &SockAddr::from(to)).map(|_| ())
    }

    /// The file descriptor, for a main loop's or data loop's I/O source;
    /// it stays owned here.
    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// The bound local address.
    ///
    /// # Errors
    /// When the socket has no IPv4 address.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        self.sock
            .local_addr()?
            .as_socket_ipv4()
            .ok_or_else(|| io::Error::other("not an IPv4 socket"))
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// Waits until one of `socks` is readable or `timeout_ns` has passed
/// (nanosecond resolution, through `ppoll`); an interruption returns
/// early. Blocks: for threads that may, not for PipeWire's data thread.
/// One or two sockets (a receiver's group and control sockets) are polled
/// from the stack; more allocate the poll set.
pub fn wait_readable(socks: &[&UdpSocket], timeout_ns: u64) {
    use nix::poll::ppoll;
    use nix::sys::time::TimeSpec;
    let ts = TimeSpec::new(
        (timeout_ns / 1_000_000_000) as _,
        (timeout_ns % 1_000_000_000) as _,
    );
    let _ = match socks {
        [a] => ppoll(&mut [poll_in(a)], Some(ts), None),
        [a, b] => ppoll(&mut [poll_in(a), poll_in(b)], Some(ts), None),
        [a, b, c] => ppoll(&mut [poll_in(a), poll_in(b), poll_in(c)], Some(ts), None),
        _ => ppoll(
            &mut socks.iter().map(|s| poll_in(s)).collect::<Vec<_>>(),
            Some(ts),
            None,
        ),
    };
}

/// A poll entry waiting for `s` to be readable.
fn poll_in(s: &UdpSocket) -> nix::poll::PollFd<'_> {
    nix::poll::PollFd::new(s.as_fd(), nix::poll::PollFlags::POLLIN)
}

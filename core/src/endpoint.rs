//! Endpoints: a [`Sender`] or [`Receiver`] with everything around it that
//! every adapter needs, written once. An endpoint opens what arrives and
//! seals what leaves ([`crate::auth`]), answers time requests, paces status
//! packets and the sender's idle sync messages, sends each receiver's
//! status to its sender as well as to the group, and counts its traffic.
//! It stays sans-IO, in the shape of quinn-proto's endpoints: the adapter
//! hands it datagrams with their arrival times and sends what
//! `poll_transmit` returns, to the [`Dest`] it names. Each adapter's loop
//! is then: read datagrams (with kernel stamps) → `handle_datagram` →
//! write what `poll_transmit` returns; plus `push` (sender) or `fill`
//! (receiver) on the audio thread's cycle.
//!
//! Nothing here allocates after construction, blocks or reads a clock.

use crate::auth::{self, AuthError, Key, Opener, Sealer};
use crate::protocol::{self, Packet, PacketType, TimePacket};
use crate::repair::cookie::CookieJar;
use crate::repair::resend::{ResendCounts, Resender};
use crate::{Error, Receiver, ReceiverConfig, Sender, SenderConfig};
use std::net::SocketAddr;

/// Status packet period, ns: every node reports once a second.
pub const STATUS_PERIOD_NS: u64 = 1_000_000_000;
/// Time requests a sender keeps to answer at its next `poll_transmit`;
/// more in one turn are dropped (and counted): a flood cannot make it
/// queue without bound or answer more than this per turn.
pub const MAX_PENDING_REPLIES: usize = 32;
/// Largest datagram an endpoint receives or writes, bytes (the largest
/// UDP payload over IPv4).
pub const MAX_DATAGRAM: usize = 65_507;
/// Room `poll_transmit` needs in its buffer, bytes: the largest status
/// packet or audio datagram (a resend), sealed.
pub const TRANSMIT_BUF: usize = MAX_DATAGRAM;
/// Largest sink buffer a sender is handed at once, frames: the history
/// keeps one more of it than the latency needs, since a whole buffer's
/// packets leave at once.
pub const MAX_SINK_BUFFER_FRAMES: usize = 8192;
/// Resends `poll_transmit` gives at most per [`RESEND_ROUND_NS`]: NACKs
/// arrive on the audio thread's socket, and a burst of them must not keep
/// one wake-up sending for long (64 default packets take about 0.3 ms of
/// `sendto`); the rest wait for the next round.
pub const MAX_RESENDS_PER_ROUND: usize = 64;
/// A round of resends, ns.
pub const RESEND_ROUND_NS: u64 = 1_000_000;
/// Most bytes a sender's history may take (16 MiB: 2 s of 8-channel
/// 192 kHz F32); beyond, it reaches back less far.
pub const HISTORY_MAX_BYTES: usize = 16 << 20;

/// Where a datagram from `poll_transmit` goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// The stream's destination: the multicast group (or the unicast
    /// address the sender sends to), where receivers and `bark stats`
    /// listen.
    Group,
    /// One peer: a sender's answer to the node that asked, a receiver's
    /// request or status to its sender.
    To(SocketAddr),
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    /// The authentication layer refused it (counted in
    /// [`SenderEndpoint::auth`] / [`ReceiverEndpoint::auth`]).
    #[error("{0}")]
    Auth(AuthError),
    /// Not a valid Bark datagram, or implausible for the live session:
    /// what was wrong.
    #[error("malformed datagram: {0}")]
    Malformed(&'static str),
    /// Too many time requests in one turn ([`MAX_PENDING_REPLIES`]).
    #[error("time request dropped: too many in one turn")]
    Flood,
}

/// Datagrams and bytes of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Datagrams.
    pub packets: u64,
    /// Bytes of UDP payload, as on the wire (sealed).
    pub bytes: u64,
}

impl Traffic {
    fn add(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }
}

/// What an endpoint received and sent, by kind; plain counters for the
/// adapters' logs and stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Datagrams handed to `handle_datagram`.
    pub received: u64,
    /// Dropped as malformed or implausible (see [`Dropped::Malformed`]).
    pub malformed: u64,
    /// Dropped by the authentication layer.
    pub auth_dropped: u64,
    /// Time requests dropped in a flood ([`Dropped::Flood`]).
    pub flood_dropped: u64,
    /// Received, by type (opened).
    pub rx_audio: Traffic,
    /// See `rx_audio`.
    pub rx_time_request: Traffic,
    /// See `rx_audio`.
    pub rx_time_reply: Traffic,
    /// See `rx_audio`.
    pub rx_status: Traffic,
    /// See `rx_audio`.
    pub rx_sync: Traffic,
    /// Sent, by type (sealed).
    pub tx_audio: Traffic,
    /// See `tx_audio`.
    pub tx_sync: Traffic,
    /// See `tx_audio`.
    pub tx_time_request: Traffic,
    /// See `tx_audio`.
    pub tx_time_reply: Traffic,
    /// See `tx_audio`.
    pub tx_status: Traffic,
    /// See `rx_audio`.
    pub rx_nack: Traffic,
    /// See `rx_audio`.
    pub rx_hello: Traffic,
    /// See `rx_audio`.
    pub rx_cookie: Traffic,
    /// See `tx_audio`.
    pub tx_nack: Traffic,
    /// See `tx_audio`.
    pub tx_hello: Traffic,
    /// See `tx_audio`.
    pub tx_cookie: Traffic,
    /// Audio packets sent again on request (not in `tx_audio`).
    pub tx_resend: Traffic,
}

impl Counts {
    fn rx(&mut self, t: PacketType, bytes: usize) {
        match t {
            PacketType::Audio => self.rx_audio.add(bytes),
            PacketType::TimeRequest => self.rx_time_request.add(bytes),
            PacketType::TimeReply => self.rx_time_reply.add(bytes),
            PacketType::Status => self.rx_status.add(bytes),
            PacketType::Sync => self.rx_sync.add(bytes),
            PacketType::Nack => self.rx_nack.add(bytes),
            PacketType::Hello => self.rx_hello.add(bytes),
            PacketType::Cookie => self.rx_cookie.add(bytes),
        }
    }

    fn tx(&mut self, t: PacketType, bytes: usize) {
        match t {
            PacketType::Audio => self.tx_audio.add(bytes),
            PacketType::TimeRequest => self.tx_time_request.add(bytes),
            PacketType::TimeReply => self.tx_time_reply.add(bytes),
            PacketType::Status => self.tx_status.add(bytes),
            PacketType::Sync => self.tx_sync.add(bytes),
            PacketType::Nack => self.tx_nack.add(bytes),
            PacketType::Hello => self.tx_hello.add(bytes),
            PacketType::Cookie => self.tx_cookie.add(bytes),
        }
    }
}

fn why(e: &Error) -> &'static str {
    match e {
        Error::Malformed(m) => m,
        Error::Config(_) => "invalid",
    }
}

fn auth_pair(key: Option<&Key>, encrypt: bool) -> Result<(Sealer, Opener), Error> {
    match key {
        Some(k) => Ok((
            Sealer::new(k, encrypt).map_err(|e| Error::Config(format!("no randomness: {e}")))?,
            Opener::new(k),
        )),
        None if encrypt => Err(Error::Config(
            "bark.encrypt needs bark.key-file (make one with `bark keygen FILE`)".into(),
        )),
        None => Ok((Sealer::keyless(), Opener::keyless())),
    }
}

/// What both endpoints have around their state machine at the socket
/// boundary: the sealer, the opener, and the traffic counts.
pub struct Wire {
    sealer: Sealer,
    opener: Opener,
    counts: Counts,
}

impl Wire {
    fn new(key: Option<&Key>, encrypt: bool) -> Result<Self, Error> {
        let (sealer, opener) = auth_pair(key, encrypt)?;
        Ok(Wire {
            sealer,
            opener,
            counts: Counts::default(),
        })
    }

    /// Traffic so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Datagrams the authentication layer dropped, by reason.
    pub fn auth(&self) -> &auth::AuthCounters {
        self.opener.counters()
    }

    /// Whether datagrams are sealed and checked (a key is set).
    pub fn keyed(&self) -> bool {
        self.sealer.keyed()
    }

    /// Opens `data` in place; returns the plain datagram's length and type.
    fn open(&mut self, data: &mut [u8], wall_ns: u64) -> Result<(usize, PacketType), Dropped> {
        self.counts.received += 1;
        let n = self.opener.open(data, wall_ns).map_err(|e| {
            self.counts.auth_dropped += 1;
            Dropped::Auth(e)
        })?;
        match protocol::parse_header(&data[..n]) {
            Ok(h) => {
                self.counts.rx(h.ptype, data.len());
                Ok((n, h.ptype))
            }
            Err(e) => Err(self.malformed(&e)),
        }
    }

    /// Counts a datagram the state machine refused.
    fn malformed(&mut self, e: &Error) -> Dropped {
        self.counts.malformed += 1;
        Dropped::Malformed(why(e))
    }

    /// Seals the `len`-byte datagram at the start of `buf` and counts it;
    /// `None` if it does not fit (cannot happen with the buffers endpoints
    /// ask for).
    fn seal(&mut self, buf: &mut [u8], len: usize, wall_ns: u64) -> Option<usize> {
        let ptype = protocol::parse_header(&buf[..len]).ok()?.ptype;
        let resend = ptype == PacketType::Audio
            && buf.get(55).is_some_and(|b| b & protocol::AUDIO_RESENT != 0);
        let n = self.sealer.seal(buf, len, wall_ns)?;
        if resend {
            self.counts.tx_resend.add(n);
        } else {
            self.counts.tx(ptype, n);
        }
        Some(n)
    }
}

/// An answer a sender owes: a time reply (stamped when it leaves) or a
/// cookie.
#[derive(Clone, Copy, Debug)]
enum PendingReply {
    Time {
        req: TimePacket,
        t2: u64,
        to: SocketAddr,
    },
    Cookie {
        node_id: u64,
        nonce: u64,
        to: SocketAddr,
    },
}

/// A sender with its sealing, time replies, status and idle syncs.
pub struct SenderEndpoint {
    sender: Sender,
    wire: Wire,
    node_id: u64,
    next_status: u64,
    replies: [Option<PendingReply>; MAX_PENDING_REPLIES],
    /// One audio datagram being sealed.
    tx: Vec<u8>,
    cookies: CookieJar,
    /// Recent packets and resends (`None`: repair off).
    resender: Option<Resender>,
    /// Resends in the current round: (when it began, how many).
    resend_round: (u64, usize),
}

impl SenderEndpoint {
    /// A sender endpoint with `key` (none: open) and, with a key,
    /// `encrypt`ed audio. `node_id` identifies it in status packets. The
    /// sealing trailer comes out of `cfg.mtu`.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad sender configuration (`net.mtu` is
    /// checked against its limits in [`crate::settings`] before the
    /// trailer comes off), `encrypt` without a key, or no randomness for
    /// the sealer's epoch or the cookie secret.
    ///
    /// With `cfg.repair`, a history of the packets of the largest latency
    /// the session may reach (`cfg.max_latency_ns`) plus one 8192-frame
    /// sink buffer is allocated (471 kB for the default stream), at most
    /// [`HISTORY_MAX_BYTES`].
    pub fn new(
        mut cfg: SenderConfig,
        key: Option<&Key>,
        encrypt: bool,
        node_id: u64,
    ) -> Result<Self, Error> {
        let mtu = crate::settings::Value::Int(i64::try_from(cfg.mtu).unwrap_or(i64::MAX));
        crate::settings::find(crate::settings::Role::Sink, "net.mtu").validate(mtu)?;
        let wire = Wire::new(key, encrypt)?;
        let overhead = wire.sealer.overhead();
        cfg.mtu = cfg.mtu.saturating_sub(overhead);
        let sender = Sender::new(cfg).map_err(|e| match e {
            Error::Config(m) if overhead > 0 => Error::Config(format!(
                "{m} (net.mtu less the {overhead}-byte authentication trailer)"
            )),
            e => e,
        })?;
        let plain_len = protocol::AUDIO_HEADER_LEN
            + sender.packet_frames() * sender.config().format.frame_bytes();
        let tx_len = plain_len + overhead;
        let cookies = CookieJar::new()
            .map_err(|e| Error::Config(format!("no randomness for the cookie secret: {e}")))?;
        let resender = sender.config().repair.then(|| {
            let c = sender.config();
            let frames = sender.packet_frames() as f64;
            let packet_ns = frames * c.format.frame_ns();
            let slots = (c.max_latency_ns.max(c.latency_ns) as f64 / packet_ns).ceil() as usize
                + (MAX_SINK_BUFFER_FRAMES as f64 / frames).ceil() as usize
                + 1;
            let slots = slots.min(HISTORY_MAX_BYTES / plain_len).max(1);
            let rate = (tx_len + protocol::IP_UDP_OVERHEAD) as f64 * c.format.rate as f64 / frames;
            Resender::new(slots, plain_len, rate, overhead)
        });
        Ok(SenderEndpoint {
            sender,
            wire,
            node_id,
            next_status: 0,
            replies: [None; MAX_PENDING_REPLIES],
            tx: vec![0; tx_len.max(protocol::SYNC_LEN + overhead)],
            cookies,
            resender,
            resend_round: (0, 0),
        })
    }

    /// What became of NACKs (`None`: repair off).
    pub fn resends(&self) -> Option<&ResendCounts> {
        self.resender.as_ref().map(Resender::counts)
    }

    /// The sender state machine.
    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Sealing, opening and traffic counts.
    pub fn wire(&self) -> &Wire {
        &self.wire
    }

    /// Audio-thread entry: one buffer of the sink (see
    /// [`Sender::push_at`]); every datagram, sealed, goes to `send`, for
    /// [`Dest::Group`]. `wall_ns` is CLOCK_REALTIME (only read when
    /// keyed: pass 0 otherwise). Does not allocate.
    pub fn push(
        &mut self,
        now_ns: u64,
        send_ns: u64,
        wall_ns: u64,
        samples: &[f32],
        send: &mut dyn FnMut(&[u8]),
    ) {
        let SenderEndpoint {
            sender,
            wire,
            tx,
            resender,
            ..
        } = self;
        sender.push_at(now_ns, send_ns, samples, &mut |pkt| {
            let Some(room) = tx.get_mut(..pkt.len()) else {
                return;
            };
            room.copy_from_slice(pkt);
            if let (Some(r), Ok(PacketType::Audio)) = (
                resender.as_mut(),
                protocol::parse_header(pkt).map(|h| h.ptype),
            ) {
                let (seq, pts) = protocol::audio_seq_pts(pkt);
                r.history_mut().store(seq, pts, pkt);
            }
            if let Some(n) = wire.seal(tx, pkt.len(), wall_ns) {
                send(&tx[..n]);
            }
        });
    }

    /// A datagram arrived at sender time `t2_ns` (its kernel receive
    /// stamp, mapped) from `from`; `wall_ns` is CLOCK_REALTIME now. Opened
    /// in place. A time request for this session is answered at the next
    /// [`SenderEndpoint::poll_transmit`] (which stamps t3); a receiver's
    /// status reports the latency it needs. Returns the packet's type.
    ///
    /// # Errors
    /// [`Dropped`]: refused by the key check, malformed, or a request flood.
    pub fn handle_datagram(
        &mut self,
        t2_ns: u64,
        wall_ns: u64,
        data: &mut [u8],
        from: SocketAddr,
    ) -> Result<PacketType, Dropped> {
        let (n, ptype) = self.wire.open(data, wall_ns)?;
        let p = protocol::parse(&data[..n]).map_err(|e| self.wire.malformed(&e))?;
        let session = self.sender.config().session_id;
        match p {
            Packet::TimeRequest(req) if req.stream_id == session => {
                self.owe(PendingReply::Time {
                    req,
                    t2: t2_ns,
                    to: from,
                })?;
            }
            Packet::Hello(h) if h.stream_id == session && self.resender.is_some() => {
                self.owe(PendingReply::Cookie {
                    node_id: h.node_id,
                    nonce: h.nonce,
                    to: from,
                })?;
            }
            Packet::Nack(nack) if self.resender.is_some() => {
                // The MAC only with repair on: a NACK to a sender without
                // it costs nothing but the parse.
                let valid = nack.stream_id == session
                    && self
                        .cookies
                        .check(t2_ns, session, nack.node_id, from, &nack.cookie);
                let latency = self.sender.session_latency().current();
                if let Some(r) = self.resender.as_mut() {
                    r.handle_nack(t2_ns, &nack, from, valid, latency);
                }
            }
            Packet::Status(_) => {
                let mut none = [0u8; 0];
                let _ = self
                    .sender
                    .handle_packet(t2_ns, t2_ns, &data[..n], &mut none);
            }
            _ => {}
        }
        Ok(ptype)
    }

    /// The next datagram to send at sender time `now_ns` (read right
    /// before the send: it is t3 of a time reply and of an idle sync),
    /// written sealed into `buf` (≥ [`TRANSMIT_BUF`] bytes), with its
    /// destination: time replies first, then a sync message while the sink
    /// is idle, then the status packet once per [`STATUS_PERIOD_NS`]. Call
    /// until `None` at every wake-up, and at least every
    /// [`SenderEndpoint::poll_timeout`]. Does not allocate.
    pub fn poll_transmit(
        &mut self,
        now_ns: u64,
        wall_ns: u64,
        buf: &mut [u8],
    ) -> Option<(usize, Dest)> {
        if let Some(slot) = self.replies.iter_mut().find(|r| r.is_some()) {
            let session = self.sender.config().session_id;
            let (len, to) = match slot.take()? {
                PendingReply::Time { req, t2, to } => {
                    let reply = TimePacket {
                        t2,
                        t3: now_ns.max(t2),
                        ..req
                    };
                    (protocol::write_time(buf, true, &reply)?, to)
                }
                PendingReply::Cookie { node_id, nonce, to } => {
                    let answer = protocol::CookiePacket {
                        stream_id: session,
                        node_id,
                        nonce,
                        cookie: self.cookies.mint(now_ns, session, node_id, to),
                        offers: protocol::OFFER_NACK,
                    };
                    (protocol::write_cookie(buf, &answer)?, to)
                }
            };
            let n = self.wire.seal(buf, len, wall_ns)?;
            return Some((n, Dest::To(to)));
        }
        if now_ns.saturating_sub(self.resend_round.0) >= RESEND_ROUND_NS {
            self.resend_round = (now_ns, 0);
        }
        let room = self.resend_round.1 < MAX_RESENDS_PER_ROUND;
        if let Some(r) = self.resender.as_mut().filter(|_| room) {
            if let Some((len, to)) = r.next(buf) {
                self.resend_round.1 += 1;
                let latency_us = (self.sender.session_latency().current() / 1000) as u32;
                protocol::mark_resent(&mut buf[..len], latency_us);
                let n = self.wire.seal(buf, len, wall_ns)?;
                return Some((n, Dest::To(to)));
            }
        }
        let mut sync_len = 0;
        self.sender.poll_idle(now_ns, &mut |d| {
            if let Some(room) = buf.get_mut(..d.len()) {
                room.copy_from_slice(d);
                sync_len = d.len();
            }
        });
        if sync_len > 0 {
            let n = self.wire.seal(buf, sync_len, wall_ns)?;
            return Some((n, Dest::Group));
        }
        if now_ns >= self.next_status {
            self.next_status = now_ns + STATUS_PERIOD_NS;
            let repaired = self.resends().map_or(0, |c| c.resent);
            let len = self.sender.write_status(self.node_id, repaired, buf)?;
            let n = self.wire.seal(buf, len, wall_ns)?;
            return Some((n, Dest::Group));
        }
        None
    }

    /// Queues an answer, within [`MAX_PENDING_REPLIES`].
    fn owe(&mut self, r: PendingReply) -> Result<(), Dropped> {
        let Some(slot) = self.replies.iter_mut().find(|r| r.is_none()) else {
            self.wire.counts.flood_dropped += 1;
            return Err(Dropped::Flood);
        };
        *slot = Some(r);
        Ok(())
    }

    /// Makes the status packet due at the next `poll_transmit` (a last
    /// one with the totals before the sender stops, say).
    pub fn status_now(&mut self) {
        self.next_status = 0;
    }

    /// The latest sender time by which `poll_transmit` should be called
    /// again, ns: the next status packet or idle sync, or the next round
    /// of resends while some wait ([`MAX_RESENDS_PER_ROUND`]).
    pub fn poll_timeout(&self, now_ns: u64) -> u64 {
        let sync = if self.sender.idle(now_ns) {
            now_ns + crate::sender::IDLE_SYNC_INTERVAL_NS
        } else {
            u64::MAX
        };
        // Resends left for the next round.
        let resend = if self.resender.as_ref().is_some_and(Resender::pending) {
            self.resend_round.0 + RESEND_ROUND_NS
        } else {
            u64::MAX
        };
        self.next_status.min(sync).min(resend)
    }
}

/// A receiver with its sealing, status (to the group and to its sender)
/// and counters.
pub struct ReceiverEndpoint {
    receiver: Receiver,
    wire: Wire,
    next_status: u64,
    /// The status packet written for the group, still to go to the sender.
    status_to_sender: bool,
    group_status: bool,
}

impl ReceiverEndpoint {
    /// A receiver endpoint with `key` (none: open). `group_status`: whether
    /// status packets also go to [`Dest::Group`] (where `bark stats`
    /// listens; not when the group is this host's own unicast address).
    ///
    /// # Errors
    /// [`Error::Config`] for a bad receiver configuration, or no
    /// randomness for the sealer's epoch or repair's Hello nonces.
    pub fn new(cfg: ReceiverConfig, key: Option<&Key>, group_status: bool) -> Result<Self, Error> {
        let mut receiver = Receiver::new(cfg)?;
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed)
            .map_err(|e| Error::Config(format!("no randomness for repair's nonces: {e}")))?;
        receiver.seed_repair(u64::from_le_bytes(seed));
        Ok(ReceiverEndpoint {
            receiver,
            wire: Wire::new(key, false)?,
            next_status: 0,
            status_to_sender: false,
            group_status,
        })
    }

    /// The receiver state machine.
    pub fn receiver(&self) -> &Receiver {
        &self.receiver
    }

    /// Sealing, opening and traffic counts.
    pub fn wire(&self) -> &Wire {
        &self.wire
    }

    /// A datagram arrived at local time `now_ns` (its kernel receive
    /// stamp, mapped) from `from`; `wall_ns` is CLOCK_REALTIME now. Opened
    /// in place and handed to the receiver. Returns the packet's type.
    ///
    /// # Errors
    /// [`Dropped`]: refused by the key check, or malformed/implausible
    /// (nothing buffered is touched).
    pub fn handle_datagram(
        &mut self,
        now_ns: u64,
        wall_ns: u64,
        data: &mut [u8],
        from: SocketAddr,
    ) -> Result<PacketType, Dropped> {
        let (n, ptype) = self.wire.open(data, wall_ns)?;
        self.receiver
            .handle_packet(now_ns, &data[..n], from)
            .map_err(|e| self.wire.malformed(&e))?;
        Ok(ptype)
    }

    /// Audio-thread entry: fills `out` for the instant `play_ns` (see
    /// [`Receiver::fill`]); `downstream_ns` is how long before being heard
    /// the buffer is filled (PipeWire: the stream's `pw_time` delay and
    /// queued data), from which the receiver's need follows
    /// ([`Receiver::need_ns`]). Does not allocate.
    pub fn fill(&mut self, play_ns: u64, downstream_ns: u64, out: &mut [f32]) {
        self.receiver.set_downstream_ns(downstream_ns);
        self.receiver.fill(play_ns, out);
        if self.receiver.take_status_due() {
            // The receiver needs more than the session gives: tell the
            // sender now rather than within the second.
            self.next_status = 0;
        }
    }

    /// The receiver, for adapter work on it that the endpoint does not
    /// wrap.
    pub fn receiver_mut(&mut self) -> &mut Receiver {
        &mut self.receiver
    }

    /// The next datagram to send at local time `now_ns`, written sealed
    /// into `buf` (≥ [`TRANSMIT_BUF`] bytes), with its destination: time
    /// requests to the followed sender, then the status packet once per
    /// [`STATUS_PERIOD_NS`] (and at once when the receiver needs more
    /// latency than the session gives), to the group and to the followed
    /// sender, which raises the session latency on it. Call until `None`
    /// at every wake-up, and at least every
    /// [`ReceiverEndpoint::poll_timeout`]. Does not allocate.
    pub fn poll_transmit(
        &mut self,
        now_ns: u64,
        wall_ns: u64,
        buf: &mut [u8],
    ) -> Option<(usize, Dest)> {
        if let Some((len, to)) = self.receiver.poll_transmit(now_ns, buf) {
            let n = self.wire.seal(buf, len, wall_ns)?;
            return Some((n, Dest::To(to)));
        }
        let sender = self.receiver.sender_addr();
        if self.status_to_sender {
            self.status_to_sender = false;
            if let Some(to) = sender {
                let len = self.receiver.write_status(buf)?;
                let n = self.wire.seal(buf, len, wall_ns)?;
                return Some((n, Dest::To(to)));
            }
        }
        if now_ns >= self.next_status {
            self.next_status = now_ns + STATUS_PERIOD_NS;
            self.status_to_sender = sender.is_some() && self.receiver.session().is_some();
            if !self.group_status {
                return self.poll_transmit(now_ns, wall_ns, buf);
            }
            let len = self.receiver.write_status(buf)?;
            let n = self.wire.seal(buf, len, wall_ns)?;
            return Some((n, Dest::Group));
        }
        None
    }

    /// The latest local time by which `poll_transmit` should be called
    /// again, ns: the next time request or status packet.
    pub fn poll_timeout(&self) -> u64 {
        self.next_status.min(self.receiver.next_request_ns())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse, Role};

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 1530))
    }

    fn pair(key: Option<&Key>) -> (SenderEndpoint, ReceiverEndpoint) {
        let s = SenderEndpoint::new(
            SenderConfig {
                session_id: 77,
                ..Default::default()
            },
            key,
            false,
            5,
        )
        .unwrap();
        let r = ReceiverEndpoint::new(ReceiverConfig::default(), key, true).unwrap();
        (s, r)
    }

    /// An idle sender's syncs make a receiver follow it and exchange time;
    /// its status reaches the group and the sender; replies are stamped
    /// when they leave. With and without a key.
    #[test]
    fn idle_sender_and_receiver_talk_through_their_endpoints() {
        for key in [None, Some(Key::from_bytes([7; 32]))] {
            let (mut s, mut r) = pair(key.as_ref());
            let mut buf = [0u8; TRANSMIT_BUF];
            let mut reply = [0u8; TRANSMIT_BUF];
            let mut to_group = 0;
            let mut status_to_sender = 0;
            for ms in 0..3000u64 {
                let now = 1_000_000_000 + ms * 1_000_000;
                while let Some((n, dest)) = s.poll_transmit(now, 0, &mut buf) {
                    assert_eq!(dest, Dest::Group);
                    r.handle_datagram(now + 100_000, 0, &mut buf[..n], addr(1))
                        .unwrap();
                }
                while let Some((n, dest)) = r.poll_transmit(now, 0, &mut buf) {
                    match dest {
                        Dest::Group => to_group += 1,
                        Dest::To(a) => {
                            assert_eq!(a, addr(1));
                            let t = s.handle_datagram(now + 50_000, 0, &mut buf[..n], addr(2));
                            if t == Ok(PacketType::Status) {
                                status_to_sender += 1;
                            }
                            while let Some((m, d)) = s.poll_transmit(now + 60_000, 0, &mut reply) {
                                if d == Dest::To(addr(2)) {
                                    r.handle_datagram(now + 110_000, 0, &mut reply[..m], addr(1))
                                        .unwrap();
                                }
                            }
                        }
                    }
                }
            }
            assert_eq!(r.receiver().session(), Some(77));
            assert!(r.receiver().clock().exchanges() >= 500);
            assert!(r.receiver().sync_flowing(4_000_000_000));
            assert!((2..=3).contains(&to_group), "{to_group}");
            assert!((2..=3).contains(&status_to_sender), "{status_to_sender}");
            let c = s.wire().counts();
            // 10 idle syncs a second, three status packets.
            assert!((29..=31).contains(&c.tx_sync.packets), "{c:?}");
            assert_eq!(c.tx_status.packets, 3);
            assert_eq!(c.tx_time_reply.packets, c.rx_time_request.packets);
            assert_eq!(s.wire().auth().total() + r.wire().auth().total(), 0);
        }
    }

    #[test]
    fn a_request_flood_is_bounded_per_turn_and_a_stranger_gets_nothing_sealed() {
        let key = Key::from_bytes([1; 32]);
        let (mut s, _) = pair(Some(&key));
        let mut buf = [0u8; TRANSMIT_BUF];
        // Open requests to a keyed sender: refused, nothing answered.
        let req = TimePacket::request(77, 3, 1);
        let mut d = [0u8; 64];
        let n = protocol::write_time(&mut d, false, &req).unwrap();
        assert_eq!(
            s.handle_datagram(1, 0, &mut d[..n], addr(9)),
            Err(Dropped::Auth(AuthError::Unauthenticated))
        );
        // Sealed ones beyond the bound in one turn: dropped and counted.
        let mut peer = Sealer::new(&key, false).unwrap();
        for i in 0..(MAX_PENDING_REPLIES + 10) {
            let mut d = [0u8; 64 + auth::OVERHEAD];
            let n = protocol::write_time(&mut d, false, &req).unwrap();
            let n = peer.seal(&mut d, n, 0).unwrap();
            let r = s.handle_datagram(2, 0, &mut d[..n], addr(9));
            assert_eq!(r.is_ok(), i < MAX_PENDING_REPLIES);
        }
        assert_eq!(s.wire().counts().flood_dropped, 10);
        let mut replies = 0;
        while let Some((_, dest)) = s.poll_transmit(3, 0, &mut buf) {
            if dest == Dest::To(addr(9)) {
                replies += 1;
            }
        }
        assert_eq!(replies, MAX_PENDING_REPLIES);
        // The status it sent is a sender's.
        let (mut s2, _) = pair(None);
        let mut sender_status = None;
        while let Some((n, _)) = s2.poll_transmit(5, 0, &mut buf) {
            if let Ok(Packet::Status(st)) = parse(&buf[..n]) {
                sender_status = Some((st.role, st.node_id));
            }
        }
        assert_eq!(sender_status, Some((Role::Sender, 5)));
    }

    /// A link that drops every 23rd audio packet to the receiver: every one
    /// is asked for and resent in time, to the receiver only. A NACK from
    /// another address carrying the receiver's cookie gets nothing.
    #[test]
    fn lost_packets_are_resent_to_the_asker_only() {
        let (mut s, mut r) = pair(None);
        let mut buf = [0u8; TRANSMIT_BUF];
        let mut out = vec![0f32; 2 * 256];
        let samples = vec![0.25f32; 2 * 256];
        let mut sent = 0u64;
        let mut dropped = 0u64;
        let mut stolen = None;
        let mut to_thief = 0;
        for c in 0..2000u64 {
            // 256 frames every 5.33 ms.
            let now = 1_000_000_000 + c * 5_333_333;
            let mut pkts: Vec<Vec<u8>> = vec![];
            s.push(now, now, 0, &samples, &mut |d| pkts.push(d.to_vec()));
            for mut p in pkts {
                let audio = matches!(parse(&p), Ok(Packet::Audio(_)));
                if audio {
                    sent += 1;
                    if sent.is_multiple_of(23) {
                        dropped += 1;
                        continue;
                    }
                }
                let _ = r.handle_datagram(now + 200_000, 0, &mut p, addr(1));
            }
            for k in 0..5u64 {
                let t = now + k * 1_000_000;
                while let Some((n, dest)) = r.poll_transmit(t, 0, &mut buf) {
                    if let Dest::To(a) = dest {
                        assert_eq!(a, addr(1));
                        if let Ok(Packet::Nack(nack)) = parse(&buf[..n]) {
                            stolen = Some(nack);
                        }
                        let _ = s.handle_datagram(t + 100_000, 0, &mut buf[..n], addr(2));
                    }
                }
                // A thief replays the receiver's NACK from its own address.
                if let Some(nack) = stolen.take() {
                    let mut d = [0u8; protocol::NACK_LEN];
                    protocol::write_nack(&mut d, &nack).unwrap();
                    let _ = s.handle_datagram(t + 150_000, 0, &mut d, addr(9));
                }
                while let Some((n, dest)) = s.poll_transmit(t + 200_000, 0, &mut buf) {
                    match dest {
                        Dest::To(a) if a == addr(9) => to_thief += 1,
                        Dest::To(a) if a == addr(2) => {
                            let _ = r.handle_datagram(t + 300_000, 0, &mut buf[..n], addr(1));
                        }
                        _ => {}
                    }
                }
                if k == 0 {
                    r.fill(now + 20_000_000, 1_000_000, &mut out);
                }
            }
        }
        let c = r.receiver().counters();
        assert!(dropped > 50, "{dropped}");
        assert_eq!(to_thief, 0);
        // The last few drops may still be on their way.
        assert!(c.repaired + 2 >= dropped, "{c:?} of {dropped}");
        assert!(c.lost <= 2, "{c:?}");
        let rs = s.resends().unwrap();
        assert!(rs.bad_cookie > 50, "{rs:?}");
        assert_eq!(rs.resent, c.repaired, "{rs:?}");
        assert_eq!(s.wire().counts().tx_resend.packets, rs.resent);
    }
}

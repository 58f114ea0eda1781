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
//! Nothing here allocates after construction or blocks, and nothing reads a
//! clock but through `SenderEndpoint::push`'s `clock` argument.

use crate::auth::{self, AuthError, Key, Opener, Sealer};
use crate::fanout::{self, Fanout};
use crate::fec::{FecCounts, FecEncoder};
use crate::protocol::{self, Packet, PacketType, TimePacket};
use crate::repair::cookie::CookieJar;
use crate::repair::resend::{ResendCounts, Resender};
use crate::subscribe::Subscription;
use crate::{Error, Receiver, ReceiverConfig, Sender, SenderConfig};
use std::net::{SocketAddr, SocketAddrV4};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dest {
    /// The stream's destination: the multicast group (or the unicast
    /// address the sender sends to), where receivers and `bark stats`
    /// listen.
    Group,
    /// One peer: a sender's answer to the node that asked, a receiver's
    /// request or status to its sender.
    To(SocketAddr),
}

impl Dest {
    /// The address: `group` for [`Dest::Group`].
    pub fn or_group(self, group: SocketAddr) -> SocketAddr {
        match self {
            Dest::Group => group,
            Dest::To(a) => a,
        }
    }
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
    /// See `rx_audio`.
    pub rx_subscribe: Traffic,
    /// See `tx_audio`.
    pub tx_subscribe: Traffic,
    /// Copies of group datagrams (audio, syncs, status) sent to each
    /// unicast subscriber ([`crate::fanout`]; not in the counts by type,
    /// which count each datagram once).
    pub tx_fanout: Traffic,
    /// See `rx_audio`.
    pub rx_fec: Traffic,
    /// FEC repair packets sent ([`crate::fec`]), to the group.
    pub tx_fec: Traffic,
    /// Commands and command acks ([`crate::command`]) on a data socket,
    /// where they do not belong (they go to the command socket): dropped.
    pub misdirected: Traffic,
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
            PacketType::Subscribe => self.rx_subscribe.add(bytes),
            PacketType::Fec => self.rx_fec.add(bytes),
            PacketType::Command | PacketType::CommandAck => self.misdirected.add(bytes),
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
            PacketType::Subscribe => self.tx_subscribe.add(bytes),
            PacketType::Fec => self.tx_fec.add(bytes),
            PacketType::Command | PacketType::CommandAck => self.misdirected.add(bytes),
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

    /// Seals a unicast copy of a datagram already counted by
    /// [`Wire::seal`] (a re-stamped sync message): counted as fan-out
    /// only, by the caller.
    fn seal_copy(&mut self, buf: &mut [u8], len: usize, wall_ns: u64) -> Option<usize> {
        self.sealer.seal(buf, len, wall_ns)
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
    /// Unicast subscribers, sent everything the group gets.
    fanout: Fanout,
    /// The last group datagram from `poll_transmit`, sealed (unsealed if
    /// `fan_sync`), with its length and the next subscriber slot it still
    /// goes to.
    fan_copy: Vec<u8>,
    fan_pending: Option<(usize, usize)>,
    /// `fan_copy` holds an unsealed sync message, re-stamped and sealed
    /// for each subscriber (see [`SenderEndpoint::push`]).
    fan_sync: bool,
    /// FEC repair packets (`None`: `bark.fec` off).
    fec: Option<FecEncoder>,
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
        if cfg.fec.is_some() {
            // A repair packet is the largest audio datagram plus its
            // header and a shard's length, rounded to even: audio leaves
            // it that room, so repair packets fit the MTU too.
            cfg.mtu = cfg.mtu.saturating_sub(protocol::FEC_HEADER_LEN + 3);
        }
        let sender = Sender::new(cfg).map_err(|e| match e {
            Error::Config(m) if overhead > 0 => Error::Config(format!(
                "{m} (net.mtu less the {overhead}-byte authentication trailer)"
            )),
            e => e,
        })?;
        let plain_len = sender.max_datagram();
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
        let fec = match sender.config().fec {
            Some((k, m)) => Some(
                FecEncoder::new(k, m, plain_len, sender.config().session_id)
                    .map_err(Error::Config)?,
            ),
            None => None,
        };
        let fec_len = fec.as_ref().map_or(0, |_| {
            protocol::FEC_HEADER_LEN + crate::fec::shard_len(plain_len) + overhead
        });
        Ok(SenderEndpoint {
            sender,
            wire,
            node_id,
            next_status: 0,
            replies: [None; MAX_PENDING_REPLIES],
            tx: vec![0; tx_len.max(protocol::SYNC_LEN + overhead).max(fec_len)],
            cookies,
            resender,
            resend_round: (0, 0),
            fanout: Fanout::default(),
            fan_copy: vec![0; protocol::MAX_STATUS_LEN.max(protocol::SYNC_LEN) + overhead],
            fan_pending: None,
            fan_sync: false,
            fec,
        })
    }

    /// What FEC did (`None`: `bark.fec` off).
    pub fn fec(&self) -> Option<&FecCounts> {
        self.fec.as_ref().map(FecEncoder::counts)
    }

    /// What became of NACKs (`None`: repair off).
    pub fn resends(&self) -> Option<&ResendCounts> {
        self.resender.as_ref().map(Resender::counts)
    }

    /// The unicast subscribers and what became of subscriptions.
    pub fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    /// Sends everything it sends the group to each of `to` as well (the
    /// configured unicast destinations, [`crate::fanout::Fanout::list`]).
    ///
    /// # Errors
    /// More than [`crate::fanout::MAX_LISTED`] addresses.
    pub fn list_destinations(&mut self, to: &[SocketAddrV4]) -> Result<(), Error> {
        self.fanout.list(to).map_err(Error::Config)
    }

    /// The sender, for adapter work the endpoint does not wrap (its
    /// settings, [`Sender::set_settings`]).
    pub fn sender_mut(&mut self) -> &mut Sender {
        &mut self.sender
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
    /// [`Dest::Group`] and then for each unicast subscriber
    /// ([`crate::fanout`]). `clock` reads the sender clock now (ns; the
    /// adapter's mapped CLOCK_MONOTONIC): the sync message's t3, read
    /// again for each subscriber's copy, because each copy leaves after
    /// the sends before it and that lag would add to the backward delay of
    /// that subscriber alone (the second of two subscribers measured
    /// 50-70 µs more than its replies' in the lab; the last of 24 copies,
    /// 16 subscribers and 8 listed, would be off by about half a
    /// millisecond). `wall_ns` is CLOCK_REALTIME (only read when keyed:
    /// pass 0 otherwise). Does not allocate.
    pub fn push(
        &mut self,
        now_ns: u64,
        clock: &mut dyn FnMut() -> u64,
        wall_ns: u64,
        samples: &[f32],
        send: &mut dyn FnMut(&[u8], Dest),
    ) {
        self.fanout.expire(now_ns);
        let SenderEndpoint {
            sender,
            wire,
            tx,
            resender,
            fanout,
            fec,
            ..
        } = self;
        let send_ns = clock();
        // `len` bytes in `tx`, sealed, to the group and then to every
        // listed or subscribed address; a sync message (its unsealed
        // bytes in `sync`) re-stamped and so re-sealed for each copy.
        let mut out = |tx: &mut [u8], len: usize, sync: Option<&[u8]>, wire: &mut Wire| {
            let Some(n) = wire.seal(tx, len, wall_ns) else {
                return;
            };
            send(&tx[..n], Dest::Group);
            for to in fanout.addrs() {
                let n = if let Some(pkt) = sync {
                    let Some(room) = tx.get_mut(..pkt.len()) else {
                        continue;
                    };
                    room.copy_from_slice(pkt);
                    protocol::restamp_sync(room, clock());
                    match wire.seal_copy(tx, pkt.len(), wall_ns) {
                        Some(n) => n,
                        None => continue,
                    }
                } else {
                    n
                };
                wire.counts.tx_fanout.add(n);
                send(&tx[..n], Dest::To(to));
            }
        };
        sender.push_at(now_ns, send_ns, samples, &mut |pkt| {
            let Some(room) = tx.get_mut(..pkt.len()) else {
                return;
            };
            room.copy_from_slice(pkt);
            let ptype = protocol::parse_header(pkt).map(|h| h.ptype);
            let audio = ptype == Ok(PacketType::Audio);
            let (seq, pts) = protocol::audio_seq_pts(pkt);
            if let (Some(r), true) = (resender.as_mut(), audio) {
                r.history_mut().store(seq, pts, pkt);
            }
            let sync = (ptype == Ok(PacketType::Sync)).then_some(pkt);
            out(tx, pkt.len(), sync, wire);
            // A block's last packet is followed by its repair packets.
            if let (Some(f), true) = (fec.as_mut(), audio) {
                if f.source(seq, pkt) {
                    while let Some(n) = f.next_repair(tx) {
                        out(tx, n, None, wire);
                    }
                }
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
            // Subscriptions are always taken, so a Hello is always
            // answered: for this session, or for any (a unicast receiver
            // that knows the address, not the session).
            Packet::Hello(h) if h.stream_id == session || h.stream_id == protocol::ANY_SESSION => {
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
            Packet::Subscribe(sub) => {
                let valid = sub.stream_id == session
                    && self
                        .cookies
                        .check(t2_ns, session, sub.node_id, from, &sub.cookie);
                let leave = sub.flags & protocol::SUBSCRIBE_LEAVE != 0;
                self.fanout
                    .subscribe(t2_ns, from, sub.node_id, valid, leave);
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
        self.fanout.expire(now_ns);
        if let Some(out) = self.next_fan_copy(now_ns, wall_ns, buf) {
            return Some(out);
        }
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
                        offers: protocol::OFFER_SUBSCRIBE
                            | if self.resender.is_some() {
                                protocol::OFFER_NACK
                            } else {
                                0
                            },
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
            // Kept unsealed: each subscriber's copy is stamped as it leaves.
            self.keep_for_subscribers(sync_len, buf, true);
            let n = self.wire.seal(buf, sync_len, wall_ns)?;
            return Some((n, Dest::Group));
        }
        if now_ns >= self.next_status {
            self.next_status = now_ns + STATUS_PERIOD_NS;
            self.fanout.expire(now_ns);
            let repaired = self.resends().map_or(0, |c| c.resent);
            let len = self.sender.write_status(self.node_id, repaired, buf)?;
            let n = self.wire.seal(buf, len, wall_ns)?;
            self.keep_for_subscribers(n, buf, false);
            return Some((n, Dest::Group));
        }
        None
    }

    /// Keeps the group datagram of `n` bytes in `buf` for the subscribers,
    /// one per later `poll_transmit`: sealed, or (a sync message, `sync`)
    /// unsealed, to be re-stamped and sealed per copy.
    fn keep_for_subscribers(&mut self, n: usize, buf: &[u8], sync: bool) {
        if self.fanout.is_empty() {
            return;
        }
        if let Some(copy) = self.fan_copy.get_mut(..n) {
            copy.copy_from_slice(&buf[..n]);
            self.fan_pending = Some((n, 0));
            self.fan_sync = sync;
        }
    }

    /// The kept group datagram for the next subscriber still owed it.
    fn next_fan_copy(
        &mut self,
        now_ns: u64,
        wall_ns: u64,
        buf: &mut [u8],
    ) -> Option<(usize, Dest)> {
        let (len, from) = self.fan_pending.take()?;
        let (i, to) = (from..fanout::SLOTS).find_map(|i| self.fanout.slot(i).map(|a| (i, a)))?;
        buf.get_mut(..len)?.copy_from_slice(&self.fan_copy[..len]);
        self.fan_pending = Some((len, i + 1));
        let n = if self.fan_sync {
            protocol::restamp_sync(&mut buf[..len], now_ns);
            self.wire.seal_copy(buf, len, wall_ns)?
        } else {
            len
        };
        self.wire.counts.tx_fanout.add(n);
        Some((n, Dest::To(to)))
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
        let fan = if self.fan_pending.is_some() {
            now_ns
        } else {
            u64::MAX
        };
        self.next_status.min(sync).min(resend).min(fan)
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
    /// Unicast delivery asked of `cfg.sender` (`bark.sender`), or of a
    /// sender found later ([`ReceiverEndpoint::subscribe_to`]).
    subscription: Option<Subscription>,
    /// Seed of the subscriptions' Hello nonces.
    seed: u64,
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
        let seed = u64::from_le_bytes(seed);
        receiver.seed_repair(seed);
        let node_id = receiver.config().node_id;
        let subscription = receiver
            .config()
            .sender
            .map(|to| Subscription::new(to, node_id, seed.rotate_left(32) ^ 0x5ab5));
        Ok(ReceiverEndpoint {
            receiver,
            wire: Wire::new(key, false)?,
            next_status: 0,
            status_to_sender: false,
            group_status,
            subscription,
            seed,
        })
    }

    /// Subscribes to the sender at `to` (its address and control port),
    /// found after the start (DNS-SD, `bark.unicast`): as `bark.sender`
    /// would have at load. The same address again changes nothing; another
    /// one replaces the subscription (the old one's lease runs out).
    /// Does not allocate.
    pub fn subscribe_to(&mut self, to: SocketAddr) {
        if self.subscription.as_ref().is_some_and(|s| s.sender() == to) {
            return;
        }
        self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let node_id = self.receiver.config().node_id;
        self.subscription = Some(Subscription::new(
            to,
            node_id,
            self.seed.rotate_left(32) ^ 0x5ab5,
        ));
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
        if let Some(sub) = self.subscription.as_mut() {
            sub.heard(now_ns, from);
            if let (PacketType::Cookie, Ok(Packet::Cookie(c))) =
                (ptype, protocol::parse(&data[..n]))
            {
                sub.take_cookie(now_ns, from, &c);
            }
        }
        self.receiver
            .handle_packet(now_ns, &data[..n], from)
            .map_err(|e| self.wire.malformed(&e))?;
        Ok(ptype)
    }

    /// The subscription to `bark.sender`, if this receiver has one.
    pub fn subscription(&self) -> Option<&Subscription> {
        self.subscription.as_ref()
    }

    /// Ends the subscription (if any) with a leave at the next
    /// `poll_transmit`, rather than letting its lease run out: for a
    /// receiver that stops.
    pub fn leave(&mut self) {
        if let Some(s) = self.subscription.as_mut() {
            s.leave();
        }
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
        if let Some(sub) = self.subscription.as_mut() {
            if let Some(len) = sub.poll(now_ns, buf) {
                let to = sub.sender();
                let n = self.wire.seal(buf, len, wall_ns)?;
                return Some((n, Dest::To(to)));
            }
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
        let sub = self
            .subscription
            .as_ref()
            .map_or(u64::MAX, Subscription::next_ns);
        self.next_status
            .min(self.receiver.next_request_ns())
            .min(sub)
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
            s.push(now, &mut || now, 0, &samples, &mut |d, _| {
                pkts.push(d.to_vec())
            });
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

    /// Two receivers given the sender's address subscribe and get the
    /// stream unicast, and nothing goes to an address that has no
    /// subscription: a stranger replaying one receiver's Subscribe from its
    /// own address gets nothing; a receiver that leaves gets nothing more.
    #[test]
    fn unicast_subscribers_get_the_stream_and_only_they() {
        let s_cfg = SenderConfig {
            session_id: 77,
            ..Default::default()
        };
        let mut s = SenderEndpoint::new(s_cfg, None, false, 5).unwrap();
        let mut rs: Vec<ReceiverEndpoint> = (2..=3)
            .map(|i| {
                let cfg = ReceiverConfig {
                    node_id: 100 + i,
                    sender: Some(addr(1)),
                    ..Default::default()
                };
                ReceiverEndpoint::new(cfg, None, false).unwrap()
            })
            .collect();
        let rx_addr = |i: usize| addr(2 + i as u8);
        let mut buf = [0u8; TRANSMIT_BUF];
        let mut out = vec![0f32; 2 * 256];
        let samples = vec![0.25f32; 2 * 256];
        let mut to_group = 0;
        let mut to_stranger = 0;
        let mut to_leaver_after = 0;
        let mut stolen = None;
        let mut heard = [0.0f32; 2];
        let mut restamped = 0;
        const LEAVE_AT: u64 = 1000;
        for c in 0..2000u64 {
            let now = 1_000_000_000 + c * 5_333_333;
            if c == LEAVE_AT {
                rs[1].leave();
            }
            let mut pkts: Vec<(Vec<u8>, Dest)> = vec![];
            // A clock that moves 10 µs per read: each subscriber's copy of
            // a sync message carries the time it left, after the group's.
            let mut tick = now;
            let mut clock = || {
                tick += 10_000;
                tick
            };
            s.push(now, &mut clock, 0, &samples, &mut |d, to| {
                pkts.push((d.to_vec(), to))
            });
            let t3s: Vec<u64> = pkts
                .iter()
                .filter_map(|(p, _)| match parse(p) {
                    Ok(Packet::Sync(y)) => Some(y.t3),
                    _ => None,
                })
                .collect();
            if t3s.len() > 1 {
                assert!(t3s.windows(2).all(|w| w[0] < w[1]), "{t3s:?}");
                restamped += 1;
            }
            for k in 0..5u64 {
                let t = now + k * 1_000_000;
                while let Some((n, dest)) = s.poll_transmit(t, 0, &mut buf) {
                    pkts.push((buf[..n].to_vec(), dest));
                }
                for (mut p, dest) in pkts.drain(..) {
                    match dest {
                        Dest::Group => to_group += 1,
                        Dest::To(a) if a == addr(9) => to_stranger += 1,
                        Dest::To(a) => {
                            let i = (0..2).find(|&i| rx_addr(i) == a).expect("a receiver");
                            // Copies of the stream; time replies go on.
                            let copy = match parse(&p) {
                                Ok(Packet::Audio(au)) => !au.resent,
                                Ok(Packet::Sync(_) | Packet::Status(_)) => true,
                                _ => false,
                            };
                            if i == 1 && c > LEAVE_AT + 1 && copy {
                                to_leaver_after += 1;
                            }
                            let _ = rs[i].handle_datagram(t + 200_000, 0, &mut p, addr(1));
                        }
                    }
                }
                for (i, r) in rs.iter_mut().enumerate() {
                    while let Some((n, dest)) = r.poll_transmit(t, 0, &mut buf) {
                        // No group to send to: status goes to the sender.
                        assert_eq!(dest, Dest::To(addr(1)));
                        if i == 0 {
                            if let Ok(Packet::Subscribe(sub)) = parse(&buf[..n]) {
                                stolen = Some(sub);
                            }
                        }
                        let _ = s.handle_datagram(t + 100_000, 0, &mut buf[..n], rx_addr(i));
                    }
                    if k == 0 {
                        r.fill(now + 20_000_000, 1_000_000, &mut out);
                        heard[i] += out.iter().map(|v| v.abs()).sum::<f32>();
                    }
                }
                if let Some(sub) = stolen.take() {
                    let mut d = [0u8; protocol::SUBSCRIBE_LEN];
                    protocol::write_subscribe(&mut d, &sub).unwrap();
                    let _ = s.handle_datagram(t + 150_000, 0, &mut d, addr(9));
                }
            }
        }
        // The group copy goes out as always (to no one here).
        assert!(to_group > 2000, "{to_group}");
        assert_eq!(to_stranger, 0);
        assert_eq!(to_leaver_after, 0, "{:?}", s.fanout().counts());
        let f = s.fanout();
        assert_eq!(f.addrs().collect::<Vec<_>>(), vec![rx_addr(0)]);
        let fc = *f.counts();
        assert_eq!((fc.joined, fc.left), (2, 1), "{fc:?}");
        assert!(fc.refused_cookie >= 5, "{fc:?}");
        for (i, r) in rs.iter().enumerate() {
            assert_eq!(r.receiver().session(), Some(77), "rx{i}");
            assert!(
                r.receiver().counters().packets > 800,
                "rx{i}: {:?}",
                r.receiver().counters()
            );
            assert!(heard[i] > 1000.0, "rx{i} heard {}", heard[i]);
            // The one that left holds no subscription.
            let want = (i == 0).then_some(77);
            assert_eq!(r.subscription().unwrap().session(), want, "rx{i}");
        }
        // Copies are counted apart from the datagrams by type.
        let c = s.wire().counts();
        assert!(c.tx_fanout.packets > c.tx_audio.packets, "{c:?}");
        assert!(
            c.tx_sync.packets <= 2000,
            "sync copies not counted as syncs: {c:?}"
        );
        assert!(
            restamped > 100,
            "sync copies re-stamped in {restamped} cycles"
        );
    }

    /// `destination.ip` as a list: each listed address gets every audio
    /// packet, sync and status the group gets, and nothing else (no time
    /// reply, no resend meant for another).
    #[test]
    fn listed_destinations_get_a_copy_of_everything_sent_to_the_group() {
        let s_cfg = SenderConfig {
            session_id: 78,
            ..Default::default()
        };
        let mut s = SenderEndpoint::new(s_cfg, None, false, 5).unwrap();
        let listed = [
            SocketAddrV4::new([10, 0, 0, 20].into(), 1530),
            SocketAddrV4::new([10, 0, 0, 21].into(), 1530),
        ];
        s.list_destinations(&listed).unwrap();
        let samples = vec![0.25f32; 2 * 256];
        let mut buf = [0u8; TRANSMIT_BUF];
        // Per destination: (audio, sync, status, other) datagrams.
        let mut seen = std::collections::HashMap::<Dest, [u32; 4]>::new();
        for c in 0..400u64 {
            let now = 1_000_000_000 + c * 5_333_333;
            let mut pkts: Vec<(Vec<u8>, Dest)> = vec![];
            s.push(now, &mut || now, 0, &samples, &mut |d, to| {
                pkts.push((d.to_vec(), to))
            });
            while let Some((n, dest)) = s.poll_transmit(now + 1_000_000, 0, &mut buf) {
                pkts.push((buf[..n].to_vec(), dest));
            }
            for (p, dest) in pkts {
                let k = match parse(&p) {
                    Ok(Packet::Audio(_)) => 0,
                    Ok(Packet::Sync(_)) => 1,
                    Ok(Packet::Status(_)) => 2,
                    _ => 3,
                };
                seen.entry(dest).or_default()[k] += 1;
            }
        }
        let group = seen[&Dest::Group];
        assert!(
            group[0] >= 400 && group[1] > 100 && group[2] >= 1,
            "{group:?}"
        );
        for a in listed {
            assert_eq!(seen.get(&Dest::To(a.into())), Some(&group), "{a}");
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(s.fanout().len(), 0, "listed ones are not subscribers");
    }

    /// An idle sender's sync messages: each unicast copy leaves at its own
    /// `poll_transmit` and carries that call's time as t3, sealed anew
    /// (keyed), and only the group's copy counts as a sync message.
    #[test]
    fn idle_sync_copies_carry_the_time_each_left() {
        let s_cfg = SenderConfig {
            session_id: 79,
            ..Default::default()
        };
        let key = Key::from_bytes([7; 32]);
        let mut s = SenderEndpoint::new(s_cfg, Some(&key), false, 5).unwrap();
        let listed = [
            SocketAddrV4::new([10, 0, 0, 30].into(), 1530),
            SocketAddrV4::new([10, 0, 0, 31].into(), 1530),
        ];
        s.list_destinations(&listed).unwrap();
        // One opener per destination, as each receiver has its own.
        let mut openers: Vec<(Dest, Wire)> = vec![];
        let mut buf = [0u8; TRANSMIT_BUF];
        let mut syncs: Vec<(Dest, u64, u64)> = vec![];
        let wall = 1_700_000_000_000_000_000;
        for k in 0..20_000u64 {
            // 50 µs between calls: 1 s of an idle sender (a sync every
            // 100 ms).
            let now = 1_000_000_000 + k * 50_000;
            if let Some((n, dest)) = s.poll_transmit(now, wall + k * 50_000, &mut buf) {
                let i = match openers.iter().position(|o| o.0 == dest) {
                    Some(i) => i,
                    None => {
                        openers.push((dest, Wire::new(Some(&key), false).unwrap()));
                        openers.len() - 1
                    }
                };
                let opener = &mut openers[i].1;
                let (m, _) = opener
                    .open(&mut buf[..n], wall + k * 50_000)
                    .expect("sealed");
                if let Ok(Packet::Sync(y)) = parse(&buf[..m]) {
                    syncs.push((dest, y.t3, now));
                }
            }
        }
        let to_group = syncs.iter().filter(|s| s.0 == Dest::Group).count();
        assert!(to_group >= 5, "{syncs:?}");
        assert_eq!(syncs.len(), 3 * to_group, "{syncs:?}");
        for (dest, t3, now) in &syncs {
            assert_eq!(t3, now, "{dest:?}: t3 is the time its copy left");
        }
        assert_eq!(s.wire().counts().tx_sync.packets, to_group as u64);
    }
}

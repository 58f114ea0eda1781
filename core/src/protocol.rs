//! Wire protocol v1: a fixed 16-byte little-endian header followed by a
//! type-specific body. docs/PROTOCOL.md gives the byte tables; this module is
//! their one implementation.
//!
//! Parsers borrow from the datagram, never allocate and never panic: every
//! length is checked before use, and anything malformed is an
//! [`Error::Malformed`] naming what was wrong.

use crate::channels::ChannelMask;
use crate::format::{AudioFormat, SampleFormat, MAX_CHANNELS, MAX_RATE, MIN_RATE};
use crate::Error;

/// First four bytes of every datagram.
pub const MAGIC: [u8; 4] = *b"BARK";
/// Protocol version this code speaks.
pub const VERSION: u8 = 1;
/// Bytes of the common header.
pub const HEADER_LEN: usize = 16;
/// Bytes of the audio header (common header included) before the payload.
pub const AUDIO_HEADER_LEN: usize = 60;
/// Largest frame index an audio packet may carry (2^62: 3 million years
/// at 48 kHz), so that a frame index plus a packet's or a ring's frames
/// never overflows; a larger one is malformed.
pub const MAX_FRAME_INDEX: u64 = 1 << 62;
/// Bytes of a time request or reply (common header included).
pub const TIME_LEN: usize = 48;
/// Bytes of a sync message with its announcement (common header included).
pub const SYNC_LEN: usize = 40;
/// Bytes of a sync message from a sender before announcements: t3 only.
pub const SYNC_V0_LEN: usize = 32;
/// Fixed part of a status packet (common header included), before the strings.
pub const STATUS_FIXED_LEN: usize = 120;
/// Longest name, host or stream string in a status packet, bytes of UTF-8.
pub const MAX_STRING: usize = 63;
/// Largest datagram a status packet can need.
pub const MAX_STATUS_LEN: usize =
    STATUS_FIXED_LEN + 3 * (1 + MAX_STRING) + crate::command::MAX_SETTINGS_LEN;
/// IPv4 (20) plus UDP (8) header bytes, subtracted from the MTU.
pub const IP_UDP_OVERHEAD: usize = 28;
/// Default path MTU, bytes: safe on plain 1500-byte Ethernet.
pub const DEFAULT_MTU: usize = 1500;
/// Most frames one audio packet may carry, whatever the MTU.
pub const MAX_PACKET_FRAMES: usize = 4096;
/// Bytes of a NACK (common header included).
pub const NACK_LEN: usize = 64;
/// Bytes of a Hello (common header included): zero-padded to be longer
/// than the Cookie it asks for, so that a Hello with a spoofed source
/// makes the sender send less than it received.
pub const HELLO_LEN: usize = 64;
/// Bytes of a Cookie (common header included).
pub const COOKIE_LEN: usize = 56;
/// Packets one NACK can ask for: its base sequence number and the 64 of
/// its mask.
pub const NACK_SPAN: u64 = 65;
/// Audio byte 55, bit 0: this packet is a resend, answering a NACK
/// ([`AudioPacket::resent`]).
pub const AUDIO_RESENT: u8 = 1;
/// Audio byte 55, bit 1: the last packet of one sink buffer
/// ([`AudioPacket::last_of_buffer`]): a receiver whose newest packet lacks
/// it, and hears nothing more, knows the next one was lost without waiting
/// for the next buffer.
pub const AUDIO_LAST_OF_BUFFER: u8 = 2;
/// Bytes of a cookie's MAC.
pub const COOKIE_MAC_LEN: usize = 16;
/// Bytes of a Subscribe (common header included): as long as the Hello,
/// so that nothing a sender answers it with is longer.
pub const SUBSCRIBE_LEN: usize = 64;
/// Length of an FEC repair packet's header; its shard follows.
pub const FEC_HEADER_LEN: usize = 32;
/// Most source packets in an FEC block.
pub const FEC_MAX_K: usize = 16;
/// Most repair packets in an FEC block.
pub const FEC_MAX_M: usize = 4;
/// Longest FEC shard, bytes: a 2-byte length and an audio datagram of a
/// 1500-byte MTU (1472 bytes), rounded up to even. FEC needs
/// `net.mtu ≤ 1500`.
pub const FEC_MAX_SHARD: usize = 1474;
/// [`SubscribePacket::flags`] bit 0: the receiver leaves (ends its
/// subscription now rather than letting it run out).
pub const SUBSCRIBE_LEAVE: u32 = 1;
/// The session id of a Hello sent to a sender whose session the receiver
/// does not know yet (a unicast receiver's first Hello to the address it
/// was given): any session there answers, with its own id in the Cookie.
/// Senders never draw it.
pub const ANY_SESSION: u64 = u64::MAX;

/// Packet type, byte 5 of the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketType {
    /// Sender to group: audio frames with their presentation timestamp.
    Audio = 1,
    /// Receiver to sender: t1 of a PTP-style exchange.
    TimeRequest = 2,
    /// Sender to receiver: t1 echoed, t2 and t3.
    TimeReply = 3,
    /// Any node to group, about once a second: identity and counters.
    Status = 4,
    /// Sender to group, every few ms while streaming: t3 of a one-way
    /// exchange (PTP's one-step Sync, IEEE 1588-2019 §11.3).
    Sync = 5,
    /// Receiver to sender: audio packets it is missing, by sequence number
    /// (a generic NACK, RFC 4585 §6.2.1, widened to 64 bits).
    Nack = 6,
    /// Receiver to sender: asks for a cookie to put in its NACKs.
    Hello = 8,
    /// Sender to the Hello's source: a cookie bound to that address.
    Cookie = 9,
    /// Receiver to sender: send the stream to this address too (unicast),
    /// for a while; or leave.
    Subscribe = 10,
    /// Sender to group: one FEC repair packet of a block of audio packets
    /// (Reed–Solomon; [`crate::fec`]).
    Fec = 7,
    /// Controller to a node's command socket: change its settings
    /// ([`crate::command`]).
    Command = 11,
    /// Node to controller: the command's outcome and the settings now.
    CommandAck = 12,
}

impl PacketType {
    fn from_code(code: u8) -> Result<Self, Error> {
        match code {
            1 => Ok(PacketType::Audio),
            2 => Ok(PacketType::TimeRequest),
            3 => Ok(PacketType::TimeReply),
            4 => Ok(PacketType::Status),
            5 => Ok(PacketType::Sync),
            6 => Ok(PacketType::Nack),
            7 => Ok(PacketType::Fec),
            8 => Ok(PacketType::Hello),
            9 => Ok(PacketType::Cookie),
            10 => Ok(PacketType::Subscribe),
            11 => Ok(PacketType::Command),
            12 => Ok(PacketType::CommandAck),
            _ => Err(Error::Malformed("unknown packet type")),
        }
    }
}

/// The common header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Packet type.
    pub ptype: PacketType,
    /// Session id of the sender the packet is from (audio, reply, a sender's
    /// status) or addressed to (request, a receiver's status; 0 = none).
    /// A sender draws a new non-zero id at every start.
    pub stream_id: u64,
}

/// FNV-1a, 32 bit, of a stream name: the compact stream name carried in
/// every audio packet. (Fowler, Noll, Vo; parameters from the FNV reference,
/// offset basis 0x811c9dc5, prime 0x01000193.)
pub fn stream_hash(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Fields of an audio packet other than its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioHeader {
    /// Sender session id.
    pub stream_id: u64,
    /// Packet sequence number within the session, from 0.
    pub seq: u64,
    /// Index of the packet's first frame within the session, from 0.
    pub frame: u64,
    /// Presentation timestamp of the first frame: the sender-clock time (ns)
    /// at which it entered the sender. Receivers play it at `pts + latency`.
    pub pts: i64,
    /// Stream format.
    pub format: AudioFormat,
    /// The sender's target latency, µs.
    pub latency_us: u32,
    /// [`stream_hash`] of the stream name.
    pub name_hash: u32,
    /// Stream priority; higher wins.
    pub priority: i8,
    /// Frames in the payload.
    pub frames: u16,
    /// Speaker positions of the channels, which are on the wire in the
    /// mask's bit order (bytes 58–59); 0: the default layout for the
    /// channel count ([`ChannelMask::default_for`]), as senders before
    /// layouts sent.
    pub positions: ChannelMask,
}

/// A parsed audio packet borrowing its payload.
#[derive(Clone, Copy, Debug)]
pub struct AudioPacket<'a> {
    /// Header fields.
    pub header: AudioHeader,
    /// `frames * channels * sample.bytes()` bytes of interleaved samples,
    /// or one Opus packet of 1 to [`crate::opus::MAX_OPUS_PACKET`] bytes.
    pub payload: &'a [u8],
    /// Whether the sender sent this packet again because a receiver asked
    /// ([`AUDIO_RESENT`]; byte 55, which senders before repair left 0).
    pub resent: bool,
    /// Whether this is the last packet of a sink buffer
    /// ([`AUDIO_LAST_OF_BUFFER`]; never set by senders before repair).
    pub last_of_buffer: bool,
}

/// A cookie as a node carries it: the slot it was minted in and its MAC
/// (see [`crate::repair::cookie`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CookieTag {
    /// The sender's time slot when minted (its clock, ns, >> 36: 68.7 s).
    pub slot: u32,
    /// Keyed BLAKE2s of the slot, session, node id and address, truncated.
    pub mac: [u8; COOKIE_MAC_LEN],
}

/// A NACK: receiver `node_id` misses audio packets `base` and
/// `base + 1 + i` for every bit `i` set in `mask`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NackPacket {
    /// Session addressed.
    pub stream_id: u64,
    /// Node id of the receiver that asks.
    pub node_id: u64,
    /// The cookie the sender gave this receiver's address.
    pub cookie: CookieTag,
    /// First sequence number asked for.
    pub base: u64,
    /// Bit `i`: sequence number `base + 1 + i` is asked for too.
    pub mask: u64,
}

impl NackPacket {
    /// The sequence numbers asked for, lowest first (1 to [`NACK_SPAN`]).
    pub fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.base).chain(
            (0..64u64)
                .filter(|i| self.mask >> i & 1 != 0)
                .filter_map(|i| self.base.checked_add(1 + i)),
        )
    }
}

/// A Hello: receiver `node_id` asks session `stream_id`'s sender for a
/// cookie, echoing `nonce` so that only the answer to its own Hello is
/// taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloPacket {
    /// Session addressed.
    pub stream_id: u64,
    /// Node id of the receiver.
    pub node_id: u64,
    /// Random per Hello; echoed in the Cookie.
    pub nonce: u64,
}

/// A Cookie: the answer to a Hello, to be put in that receiver's NACKs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookiePacket {
    /// Session answering.
    pub stream_id: u64,
    /// Node id of the receiver, from its Hello.
    pub node_id: u64,
    /// The Hello's nonce.
    pub nonce: u64,
    /// The cookie.
    pub cookie: CookieTag,
    /// What the sender offers: bit 0 ([`OFFER_NACK`]) NACKs answered.
    pub offers: u32,
}

/// [`CookiePacket::offers`] bit 0: the sender keeps a history and answers
/// NACKs.
pub const OFFER_NACK: u32 = 1;
/// [`CookiePacket::offers`] bit 1: the sender takes subscriptions (sends
/// the stream unicast to receivers that ask).
pub const OFFER_SUBSCRIBE: u32 = 2;

/// A Subscribe: receiver `node_id` asks session `stream_id`'s sender to
/// send the stream (audio, syncs, status) to the address this came from
/// for the next [`crate::fanout::LEASE_NS`], or leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscribePacket {
    /// Session addressed.
    pub stream_id: u64,
    /// Node id of the receiver.
    pub node_id: u64,
    /// The cookie the sender gave this receiver's address.
    pub cookie: CookieTag,
    /// Bit 0: [`SUBSCRIBE_LEAVE`]; the others are 0.
    pub flags: u32,
}

/// An FEC repair packet: repair shard `index` of `m`, computed over the
/// `k` audio packets `base..base + k` of the session (their plain
/// datagrams, each with its length in front, zero-padded to the shard
/// length; [`crate::fec`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FecPacket<'a> {
    /// Session.
    pub stream_id: u64,
    /// Sequence number of the block's first audio packet, a multiple of
    /// `k`.
    pub base: u64,
    /// Source packets in the block, 2..=[`FEC_MAX_K`].
    pub k: u8,
    /// Repair packets of the block, 1..=[`FEC_MAX_M`].
    pub m: u8,
    /// Which repair packet this is, `0..m`.
    pub index: u8,
    /// The repair shard: even, 2..=[`FEC_MAX_SHARD`] bytes.
    pub shard: &'a [u8],
}

/// A time request (t2 = t3 = 0) or reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimePacket {
    /// Session addressed (request) or answering (reply).
    pub stream_id: u64,
    /// Node id of the receiver that asked.
    pub node_id: u64,
    /// Receiver clock when the request left, ns.
    pub t1: u64,
    /// Sender clock when the request arrived, ns.
    pub t2: u64,
    /// Sender clock when the reply left, ns.
    pub t3: u64,
}

impl TimePacket {
    /// The request receiver `node_id` sends to session `stream_id` at its
    /// local time `t1` (ns); t2 and t3 are the sender's to fill.
    pub fn request(stream_id: u64, node_id: u64, t1: u64) -> Self {
        TimePacket {
            stream_id,
            node_id,
            t1,
            ..Default::default()
        }
    }
}

/// A sync message: the sender clock at the moment it was sent. With the
/// receiver's arrival stamp t4 it gives one backward point of the clock
/// estimate (see [`crate::clock`]), for every receiver of the group at once.
/// It also announces the session, so that receivers can lock onto a sender
/// whose sink is idle and play its first frame when audio starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncPacket {
    /// Sender session id (non-zero).
    pub stream_id: u64,
    /// Per-session counter of sync messages, from 0: shows loss and
    /// duplicates.
    pub seq: u64,
    /// Sender clock when the message left, ns.
    pub t3: u64,
    /// The session's identity, for stream selection before any audio;
    /// `None` in a [`SYNC_V0_LEN`]-byte message of an older sender.
    pub announce: Option<Announce>,
}

/// What a sync message says about its session (bytes 32..40).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announce {
    /// [`stream_hash`] of the stream name, as in audio packets.
    pub name_hash: u32,
    /// Stream priority, as in audio packets.
    pub priority: i8,
    /// Whether audio is flowing (false: the sink is idle, and the sync
    /// message only keeps the receivers' clocks).
    pub streaming: bool,
    /// The session latency, ms (saturating at 65535), so that a receiver
    /// can plan its output before audio (which carries it in µs) arrives.
    pub latency_ms: u16,
}

/// [`Announce::streaming`] bit of the sync message's state byte.
pub const SYNC_STREAMING: u8 = 1;

/// Role of a node in a status packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sends a stream.
    Sender = 1,
    /// Plays a stream.
    Receiver = 2,
}

/// Counters and state a node reports about itself, about once a second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusCounters {
    /// Stream format (rate 0 when unknown).
    pub sample: u8,
    /// Channels (0 when unknown).
    pub channels: u8,
    /// Rate, Hz (0 when unknown).
    pub rate: u32,
    /// Target latency, µs.
    pub latency_us: u32,
    /// Receiver: estimated sender clock minus local clock, ns.
    pub clock_offset_ns: i64,
    /// Receiver: sender clock rate relative to local, parts per billion.
    pub rate_error_ppb: i32,
    /// Receiver: current playback error (late positive), ns.
    pub sync_error_ns: i32,
    /// Receiver: audio buffered ahead of the playback position, µs.
    pub buffer_us: u32,
    /// Audio packets received (sender: sent).
    pub packets: u64,
    /// Packets never received (sequence gaps).
    pub lost: u64,
    /// Packets that arrived after their frames were played.
    pub late: u64,
    /// Packets received more than once.
    pub duplicated: u64,
    /// Frames concealed (faded or silent) because their packet was missing.
    pub concealed_frames: u64,
    /// Times the playback position ran past the newest received frame.
    pub underruns: u64,
    /// Receiver: packets that arrived in time only because they were
    /// resent (repair). Sender: packets it resent. Carried as the low 32
    /// bits (bytes 116..120; 0 from nodes before repair).
    pub repaired: u64,
    /// Receiver: downstream latency of its output, µs: from the moment a
    /// frame leaves the receiver to the moment it is heard, as the audio
    /// server reports it (PipeWire: the stream's `pw_time.delay` and
    /// queued data; filters, DSP and the device itself).
    pub downstream_us: u32,
    /// Receiver: the least session latency at which it plays every frame
    /// in time, µs (downstream latency, one output quantum and a margin:
    /// see `receiver::NEED_MARGIN_NS`). Sender: its configured (base)
    /// latency, from which the session latency rises to cover receivers.
    pub need_us: u32,
    /// Receiver: the latency it actually plays at, µs: the session latency,
    /// or its own need when that is larger (it then plays late, out of
    /// sync with the others; flag bit 1). Sender: the most the session
    /// latency may rise to, µs (`bark.latency.max-msec`).
    pub play_latency_us: u32,
}

/// A parsed status packet borrowing its strings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StatusPacket<'a> {
    /// See [`Header::stream_id`].
    pub stream_id: u64,
    /// Random id of the reporting node, stable for its lifetime.
    pub node_id: u64,
    /// Sender or receiver.
    pub role: Role,
    /// Bit 0: playing (receiver) or streaming (sender). Bit 1
    /// ([`STATUS_LATE`]): the receiver plays later than the session
    /// latency, because its output needs more than that.
    pub flags: u8,
    /// The counters.
    pub counters: StatusCounters,
    /// `node.name` of the node.
    pub name: &'a str,
    /// Host name.
    pub host: &'a str,
    /// Stream name (`bark.stream`).
    pub stream: &'a str,
    /// The node's settings and command port ([`crate::command`]), from
    /// nodes that have a command socket.
    pub settings: Option<crate::command::SettingsBlock>,
}

/// [`StatusPacket::flags`] bit 0: playing (receiver), streaming (sender).
pub const STATUS_ACTIVE: u8 = 1;
/// [`StatusPacket::flags`] bit 1: the receiver plays late (see
/// [`StatusCounters::play_latency_us`]).
pub const STATUS_LATE: u8 = 2;

/// Any parsed packet.
#[derive(Clone, Copy, Debug)]
pub enum Packet<'a> {
    /// Audio.
    Audio(AudioPacket<'a>),
    /// Time request.
    TimeRequest(TimePacket),
    /// Time reply.
    TimeReply(TimePacket),
    /// Status.
    Status(StatusPacket<'a>),
    /// Sync message.
    Sync(SyncPacket),
    /// NACK.
    Nack(NackPacket),
    /// Hello.
    Hello(HelloPacket),
    /// Cookie.
    Cookie(CookiePacket),
    /// Subscribe.
    Subscribe(SubscribePacket),
    /// FEC repair packet.
    Fec(FecPacket<'a>),
    /// Command (to a node's command socket).
    Command(crate::command::CommandPacket),
    /// Command ack (to a controller).
    CommandAck(crate::command::AckPacket),
}

fn u16_at(d: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([d[at], d[at + 1]])
}
fn u32_at(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(d[at..at + 4].try_into().unwrap_or([0; 4]))
}
fn u64_at(d: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(d[at..at + 8].try_into().unwrap_or([0; 8]))
}

/// Parses the common header.
///
/// # Errors
/// [`Error::Malformed`] if shorter than [`HEADER_LEN`], the magic is wrong,
/// the version is not [`VERSION`], the type is unknown, or the datagram is
/// still sealed ([`crate::auth::FLAG_AUTH`] set; see [`crate::auth`]).
pub fn parse_header(d: &[u8]) -> Result<Header, Error> {
    if d.len() < HEADER_LEN {
        return Err(Error::Malformed("shorter than the header"));
    }
    if d[0..4] != MAGIC {
        return Err(Error::Malformed("bad magic"));
    }
    if d[4] != VERSION {
        return Err(Error::Malformed("unsupported protocol version"));
    }
    if u16_at(d, 6) & crate::auth::FLAG_AUTH != 0 {
        // A sealed datagram reaches the parser only if an adapter skipped
        // `auth::Opener`; its trailer would otherwise read as garbage.
        return Err(Error::Malformed("sealed datagram not opened"));
    }
    Ok(Header {
        ptype: PacketType::from_code(d[5])?,
        stream_id: u64_at(d, 8),
    })
}

fn write_header(out: &mut [u8], ptype: PacketType, stream_id: u64) {
    out[0..4].copy_from_slice(&MAGIC);
    out[4] = VERSION;
    out[5] = ptype as u8;
    out[6..8].copy_from_slice(&0u16.to_le_bytes());
    out[8..16].copy_from_slice(&stream_id.to_le_bytes());
}

/// Parses any packet.
///
/// # Errors
/// [`Error::Malformed`] for anything that does not follow docs/PROTOCOL.md.
pub fn parse(d: &[u8]) -> Result<Packet<'_>, Error> {
    let h = parse_header(d)?;
    match h.ptype {
        PacketType::Audio => parse_audio(d).map(Packet::Audio),
        PacketType::TimeRequest => parse_time(d).map(Packet::TimeRequest),
        PacketType::TimeReply => parse_time(d).map(Packet::TimeReply),
        PacketType::Status => parse_status(d).map(Packet::Status),
        PacketType::Sync => parse_sync(d).map(Packet::Sync),
        PacketType::Nack => parse_nack(d).map(Packet::Nack),
        PacketType::Hello => parse_hello(d).map(Packet::Hello),
        PacketType::Cookie => parse_cookie(d).map(Packet::Cookie),
        PacketType::Subscribe => parse_subscribe(d).map(Packet::Subscribe),
        PacketType::Fec => parse_fec(d).map(Packet::Fec),
        PacketType::Command => crate::command::parse_command(d).map(Packet::Command),
        PacketType::CommandAck => crate::command::parse_ack(d).map(Packet::CommandAck),
    }
}

fn parse_fec(d: &[u8]) -> Result<FecPacket<'_>, Error> {
    if d.len() < FEC_HEADER_LEN {
        return Err(Error::Malformed("FEC packet shorter than its header"));
    }
    let stream_id = u64_at(d, 8);
    if stream_id == 0 {
        return Err(Error::Malformed("FEC packet for stream id 0"));
    }
    if d[27] != 0 || u16_at(d, 30) != 0 {
        return Err(Error::Malformed("FEC packet with reserved bytes set"));
    }
    if d.len() != FEC_HEADER_LEN + usize::from(u16_at(d, 28)) {
        return Err(Error::Malformed("FEC shard length does not match"));
    }
    let f = FecPacket {
        stream_id,
        base: u64_at(d, 16),
        k: d[24],
        m: d[25],
        index: d[26],
        shard: &d[FEC_HEADER_LEN..],
    };
    match f.shape_error() {
        Some(why) => Err(Error::Malformed(why)),
        None => Ok(f),
    }
}

impl FecPacket<'_> {
    /// What is wrong with the block's shape, if anything: K outside
    /// 2..=[`FEC_MAX_K`], M outside 1..=[`FEC_MAX_M`], the index not below
    /// M, a shard of odd length or outside 2..=[`FEC_MAX_SHARD`] bytes, or
    /// a base that is not a multiple of K. The parser's checks, also for
    /// packets built by hand ([`crate::fec::FecDecoder::repair`]).
    pub fn shape_error(&self) -> Option<&'static str> {
        let (k, m) = (usize::from(self.k), usize::from(self.m));
        if !(2..=FEC_MAX_K).contains(&k) || !(1..=FEC_MAX_M).contains(&m) || self.index >= self.m {
            return Some("FEC block shape out of range");
        }
        let n = self.shard.len();
        if !(2..=FEC_MAX_SHARD).contains(&n) || !n.is_multiple_of(2) {
            return Some("FEC shard length out of range");
        }
        if !self.base.is_multiple_of(u64::from(self.k)) {
            return Some("FEC block not aligned to its size");
        }
        None
    }
}

/// Writes an FEC repair packet; returns its length, or `None` if `out` is
/// too small or the shard's length is odd or above [`FEC_MAX_SHARD`].
pub fn write_fec(out: &mut [u8], f: &FecPacket<'_>) -> Option<usize> {
    let n = FEC_HEADER_LEN + f.shard.len();
    if !f.shard.len().is_multiple_of(2) || f.shard.len() > FEC_MAX_SHARD {
        return None;
    }
    let out = out.get_mut(..n)?;
    write_header(out, PacketType::Fec, f.stream_id);
    out[16..24].copy_from_slice(&f.base.to_le_bytes());
    out[24] = f.k;
    out[25] = f.m;
    out[26] = f.index;
    out[27] = 0;
    out[28..30].copy_from_slice(&(f.shard.len() as u16).to_le_bytes());
    out[30..32].fill(0);
    out[FEC_HEADER_LEN..].copy_from_slice(f.shard);
    Some(n)
}

fn fixed(d: &[u8], len: usize, what: &'static str) -> Result<u64, Error> {
    if d.len() != len {
        return Err(Error::Malformed(what));
    }
    let stream_id = u64_at(d, 8);
    if stream_id == 0 {
        return Err(Error::Malformed("control packet for stream id 0"));
    }
    Ok(stream_id)
}

fn zeros(d: &[u8], what: &'static str) -> Result<(), Error> {
    if d.iter().any(|&b| b != 0) {
        return Err(Error::Malformed(what));
    }
    Ok(())
}

fn cookie_at(d: &[u8], at: usize) -> CookieTag {
    let mut mac = [0u8; COOKIE_MAC_LEN];
    mac.copy_from_slice(&d[at + 4..at + 4 + COOKIE_MAC_LEN]);
    CookieTag {
        slot: u32_at(d, at),
        mac,
    }
}

fn put_cookie(out: &mut [u8], at: usize, c: &CookieTag) {
    out[at..at + 4].copy_from_slice(&c.slot.to_le_bytes());
    out[at + 4..at + 4 + COOKIE_MAC_LEN].copy_from_slice(&c.mac);
}

fn parse_nack(d: &[u8]) -> Result<NackPacket, Error> {
    let stream_id = fixed(d, NACK_LEN, "NACK has the wrong length")?;
    zeros(&d[44..48], "NACK with reserved bytes set")?;
    Ok(NackPacket {
        stream_id,
        node_id: u64_at(d, 16),
        cookie: cookie_at(d, 24),
        base: u64_at(d, 48),
        mask: u64_at(d, 56),
    })
}

/// Writes a NACK. Returns [`NACK_LEN`], or `None` if `out` is too small.
pub fn write_nack(out: &mut [u8], n: &NackPacket) -> Option<usize> {
    let out = out.get_mut(..NACK_LEN)?;
    write_header(out, PacketType::Nack, n.stream_id);
    out[16..24].copy_from_slice(&n.node_id.to_le_bytes());
    put_cookie(out, 24, &n.cookie);
    out[44..48].fill(0);
    out[48..56].copy_from_slice(&n.base.to_le_bytes());
    out[56..64].copy_from_slice(&n.mask.to_le_bytes());
    Some(NACK_LEN)
}

fn parse_hello(d: &[u8]) -> Result<HelloPacket, Error> {
    let stream_id = fixed(d, HELLO_LEN, "Hello has the wrong length")?;
    zeros(&d[32..HELLO_LEN], "Hello with padding set")?;
    Ok(HelloPacket {
        stream_id,
        node_id: u64_at(d, 16),
        nonce: u64_at(d, 24),
    })
}

/// Writes a Hello, zero-padded. Returns [`HELLO_LEN`], or `None` if `out`
/// is too small.
pub fn write_hello(out: &mut [u8], h: &HelloPacket) -> Option<usize> {
    let out = out.get_mut(..HELLO_LEN)?;
    write_header(out, PacketType::Hello, h.stream_id);
    out[16..24].copy_from_slice(&h.node_id.to_le_bytes());
    out[24..32].copy_from_slice(&h.nonce.to_le_bytes());
    out[32..].fill(0);
    Some(HELLO_LEN)
}

fn parse_cookie(d: &[u8]) -> Result<CookiePacket, Error> {
    let stream_id = fixed(d, COOKIE_LEN, "Cookie has the wrong length")?;
    Ok(CookiePacket {
        stream_id,
        node_id: u64_at(d, 16),
        nonce: u64_at(d, 24),
        // Slot and MAC are not adjacent here: the offers sit between.
        cookie: CookieTag {
            slot: u32_at(d, 32),
            mac: cookie_at(d, 36).mac,
        },
        offers: u32_at(d, 36),
    })
}

/// Writes a Cookie. Returns [`COOKIE_LEN`], or `None` if `out` is too
/// small.
pub fn write_cookie(out: &mut [u8], c: &CookiePacket) -> Option<usize> {
    let out = out.get_mut(..COOKIE_LEN)?;
    write_header(out, PacketType::Cookie, c.stream_id);
    out[16..24].copy_from_slice(&c.node_id.to_le_bytes());
    out[24..32].copy_from_slice(&c.nonce.to_le_bytes());
    out[32..36].copy_from_slice(&c.cookie.slot.to_le_bytes());
    out[36..40].copy_from_slice(&c.offers.to_le_bytes());
    out[40..56].copy_from_slice(&c.cookie.mac);
    Some(COOKIE_LEN)
}

fn parse_subscribe(d: &[u8]) -> Result<SubscribePacket, Error> {
    let stream_id = fixed(d, SUBSCRIBE_LEN, "Subscribe has the wrong length")?;
    let flags = u32_at(d, 44);
    if flags & !SUBSCRIBE_LEAVE != 0 {
        return Err(Error::Malformed("Subscribe with unknown flags"));
    }
    zeros(&d[48..SUBSCRIBE_LEN], "Subscribe with padding set")?;
    Ok(SubscribePacket {
        stream_id,
        node_id: u64_at(d, 16),
        cookie: cookie_at(d, 24),
        flags,
    })
}

/// Writes a Subscribe, zero-padded. Returns [`SUBSCRIBE_LEN`], or `None`
/// if `out` is too small.
pub fn write_subscribe(out: &mut [u8], s: &SubscribePacket) -> Option<usize> {
    let out = out.get_mut(..SUBSCRIBE_LEN)?;
    write_header(out, PacketType::Subscribe, s.stream_id);
    out[16..24].copy_from_slice(&s.node_id.to_le_bytes());
    put_cookie(out, 24, &s.cookie);
    out[44..48].copy_from_slice(&s.flags.to_le_bytes());
    out[48..].fill(0);
    Some(SUBSCRIBE_LEN)
}

/// Sequence number and `pts` of a plain audio datagram (0 for anything
/// shorter than an audio header), without parsing the rest.
pub fn audio_seq_pts(d: &[u8]) -> (u64, i64) {
    if d.len() < AUDIO_HEADER_LEN {
        return (0, 0);
    }
    (u64_at(d, 16), u64_at(d, 32) as i64)
}

/// Marks the plain audio datagram `d` as a resend ([`AUDIO_RESENT`]) and
/// sets its latency field to `latency_us`: a resend carries the session
/// latency of when it leaves. Does nothing to a datagram that is not
/// audio.
pub fn mark_resent(d: &mut [u8], latency_us: u32) {
    if d.len() >= AUDIO_HEADER_LEN && d[5] == PacketType::Audio as u8 {
        d[44..48].copy_from_slice(&latency_us.to_le_bytes());
        d[55] |= AUDIO_RESENT;
    }
}

fn parse_audio(d: &[u8]) -> Result<AudioPacket<'_>, Error> {
    if d.len() < AUDIO_HEADER_LEN {
        return Err(Error::Malformed("audio packet shorter than its header"));
    }
    let rate = u32_at(d, 40);
    if !(MIN_RATE..=MAX_RATE).contains(&rate) {
        return Err(Error::Malformed("audio rate out of range"));
    }
    let channels = d[53];
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(Error::Malformed("audio channel count out of range"));
    }
    let sample = SampleFormat::from_code(d[52])?;
    let frames = u16_at(d, 56);
    if frames == 0 || frames as usize > MAX_PACKET_FRAMES {
        return Err(Error::Malformed("audio frame count out of range"));
    }
    let format = AudioFormat {
        sample,
        rate,
        channels,
    };
    if sample == SampleFormat::Opus {
        // One Opus packet (RFC 6716 §3.2.1: 1 to 1275 bytes); its TOC is
        // checked against `frames` by the decoder stage.
        if rate != crate::opus::OPUS_RATE || channels > crate::opus::OPUS_MAX_CHANNELS {
            return Err(Error::Malformed("Opus audio not 48 kHz mono or stereo"));
        }
        let len = d.len() - AUDIO_HEADER_LEN;
        if len == 0 || len > crate::opus::MAX_OPUS_PACKET {
            return Err(Error::Malformed("Opus payload length out of range"));
        }
    } else if d.len() != AUDIO_HEADER_LEN + frames as usize * format.frame_bytes() {
        return Err(Error::Malformed("audio payload length does not match"));
    }
    let stream_id = u64_at(d, 8);
    if stream_id == 0 {
        return Err(Error::Malformed("audio from stream id 0"));
    }
    if u64_at(d, 24) > MAX_FRAME_INDEX {
        return Err(Error::Malformed("audio frame index beyond 2^62"));
    }
    if d[55] & !(AUDIO_RESENT | AUDIO_LAST_OF_BUFFER) != 0 {
        return Err(Error::Malformed("audio with reserved flag bits set"));
    }
    let positions = ChannelMask(u16_at(d, 58));
    if positions.0 != 0 && positions.count() != u32::from(channels) {
        return Err(Error::Malformed(
            "audio channel positions do not match the channel count",
        ));
    }
    Ok(AudioPacket {
        header: AudioHeader {
            positions,
            stream_id,
            seq: u64_at(d, 16),
            frame: u64_at(d, 24),
            pts: u64_at(d, 32) as i64,
            format,
            latency_us: u32_at(d, 44),
            name_hash: u32_at(d, 48),
            priority: d[54] as i8,
            frames,
        },
        payload: &d[AUDIO_HEADER_LEN..],
        resent: d[55] & AUDIO_RESENT != 0,
        last_of_buffer: d[55] & AUDIO_LAST_OF_BUFFER != 0,
    })
}

/// Writes an audio packet: header, then `samples` (interleaved, exactly
/// `h.frames * channels` of them) encoded in `h.format.sample` (a PCM
/// format; Opus packets go through [`write_audio_payload`]). Returns the
/// datagram length, or `None` if `out` is too small.
pub fn write_audio(out: &mut [u8], h: &AudioHeader, samples: &[f32]) -> Option<usize> {
    let payload = h.frames as usize * h.format.frame_bytes();
    let len = AUDIO_HEADER_LEN + payload;
    if out.len() < len || samples.len() != h.frames as usize * h.format.channels as usize {
        return None;
    }
    write_audio_header(out, h);
    h.format
        .sample
        .encode(samples, &mut out[AUDIO_HEADER_LEN..len]);
    Some(len)
}

/// Writes an audio packet whose payload is `payload` as it is: an Opus
/// packet of `h.frames` decoded frames ([`SampleFormat::Opus`]). Returns
/// the datagram length, or `None` if `out` is too small.
pub fn write_audio_payload(out: &mut [u8], h: &AudioHeader, payload: &[u8]) -> Option<usize> {
    let len = AUDIO_HEADER_LEN + payload.len();
    if out.len() < len {
        return None;
    }
    write_audio_header(out, h);
    out[AUDIO_HEADER_LEN..len].copy_from_slice(payload);
    Some(len)
}

fn write_audio_header(out: &mut [u8], h: &AudioHeader) {
    write_header(out, PacketType::Audio, h.stream_id);
    out[16..24].copy_from_slice(&h.seq.to_le_bytes());
    out[24..32].copy_from_slice(&h.frame.to_le_bytes());
    out[32..40].copy_from_slice(&h.pts.to_le_bytes());
    out[40..44].copy_from_slice(&h.format.rate.to_le_bytes());
    out[44..48].copy_from_slice(&h.latency_us.to_le_bytes());
    out[48..52].copy_from_slice(&h.name_hash.to_le_bytes());
    out[52] = h.format.sample.code();
    out[53] = h.format.channels;
    out[54] = h.priority as u8;
    out[55] = 0;
    out[56..58].copy_from_slice(&h.frames.to_le_bytes());
    out[58..60].copy_from_slice(&h.positions.0.to_le_bytes());
}

/// Frames per audio packet that fit a path MTU of `mtu` bytes for `format`,
/// at least 1 and at most [`MAX_PACKET_FRAMES`].
pub fn frames_for_mtu(mtu: usize, format: &AudioFormat) -> usize {
    let room = mtu.saturating_sub(IP_UDP_OVERHEAD + AUDIO_HEADER_LEN);
    (room / format.frame_bytes()).clamp(1, MAX_PACKET_FRAMES)
}

fn parse_time(d: &[u8]) -> Result<TimePacket, Error> {
    if d.len() != TIME_LEN {
        return Err(Error::Malformed("time packet has the wrong length"));
    }
    Ok(TimePacket {
        stream_id: u64_at(d, 8),
        node_id: u64_at(d, 16),
        t1: u64_at(d, 24),
        t2: u64_at(d, 32),
        t3: u64_at(d, 40),
    })
}

/// Writes a time request (`reply == false`) or reply. Returns [`TIME_LEN`],
/// or `None` if `out` is too small.
pub fn write_time(out: &mut [u8], reply: bool, t: &TimePacket) -> Option<usize> {
    if out.len() < TIME_LEN {
        return None;
    }
    let ptype = if reply {
        PacketType::TimeReply
    } else {
        PacketType::TimeRequest
    };
    write_header(out, ptype, t.stream_id);
    out[16..24].copy_from_slice(&t.node_id.to_le_bytes());
    out[24..32].copy_from_slice(&t.t1.to_le_bytes());
    out[32..40].copy_from_slice(&t.t2.to_le_bytes());
    out[40..48].copy_from_slice(&t.t3.to_le_bytes());
    Some(TIME_LEN)
}

fn parse_sync(d: &[u8]) -> Result<SyncPacket, Error> {
    if d.len() != SYNC_LEN && d.len() != SYNC_V0_LEN {
        return Err(Error::Malformed("sync message has the wrong length"));
    }
    let stream_id = u64_at(d, 8);
    if stream_id == 0 {
        return Err(Error::Malformed("sync from stream id 0"));
    }
    let announce = if d.len() == SYNC_LEN {
        if d[37] & !SYNC_STREAMING != 0 {
            return Err(Error::Malformed("sync message with reserved bits set"));
        }
        Some(Announce {
            name_hash: u32_at(d, 32),
            priority: d[36] as i8,
            streaming: d[37] & SYNC_STREAMING != 0,
            latency_ms: u16_at(d, 38),
        })
    } else {
        None
    };
    Ok(SyncPacket {
        stream_id,
        seq: u64_at(d, 16),
        t3: u64_at(d, 24),
        announce,
    })
}

/// Sets the t3 (sender clock, ns) of the sync message in `d` (unsealed,
/// as [`write_sync`] wrote it): each unicast copy of one sync message
/// leaves at its own time. A `d` shorter than [`SYNC_V0_LEN`] is left
/// alone.
pub fn restamp_sync(d: &mut [u8], t3: u64) {
    if let Some(f) = d.get_mut(24..32) {
        f.copy_from_slice(&t3.to_le_bytes());
    }
}

/// Writes a sync message: [`SYNC_LEN`] bytes with its announcement,
/// [`SYNC_V0_LEN`] without. Returns the length, or `None` if `out` is too
/// small.
pub fn write_sync(out: &mut [u8], s: &SyncPacket) -> Option<usize> {
    let len = if s.announce.is_some() {
        SYNC_LEN
    } else {
        SYNC_V0_LEN
    };
    if out.len() < len {
        return None;
    }
    write_header(out, PacketType::Sync, s.stream_id);
    out[16..24].copy_from_slice(&s.seq.to_le_bytes());
    out[24..32].copy_from_slice(&s.t3.to_le_bytes());
    if let Some(a) = s.announce {
        out[32..36].copy_from_slice(&a.name_hash.to_le_bytes());
        out[36] = a.priority as u8;
        out[37] = if a.streaming { SYNC_STREAMING } else { 0 };
        out[38..40].copy_from_slice(&a.latency_ms.to_le_bytes());
    }
    Some(len)
}

fn parse_str<'a>(d: &'a [u8], at: &mut usize) -> Result<&'a str, Error> {
    let len = *d
        .get(*at)
        .ok_or(Error::Malformed("status string missing"))? as usize;
    if len > MAX_STRING {
        return Err(Error::Malformed("status string too long"));
    }
    let bytes = d
        .get(*at + 1..*at + 1 + len)
        .ok_or(Error::Malformed("status string truncated"))?;
    *at += 1 + len;
    core::str::from_utf8(bytes).map_err(|_| Error::Malformed("status string is not UTF-8"))
}

fn parse_status(d: &[u8]) -> Result<StatusPacket<'_>, Error> {
    if d.len() < STATUS_FIXED_LEN {
        return Err(Error::Malformed(
            "status packet shorter than its fixed part",
        ));
    }
    let role = match d[24] {
        1 => Role::Sender,
        2 => Role::Receiver,
        _ => return Err(Error::Malformed("unknown role")),
    };
    let counters = StatusCounters {
        sample: d[26],
        channels: d[27],
        rate: u32_at(d, 28),
        latency_us: u32_at(d, 32),
        clock_offset_ns: u64_at(d, 36) as i64,
        rate_error_ppb: u32_at(d, 44) as i32,
        sync_error_ns: u32_at(d, 48) as i32,
        buffer_us: u32_at(d, 52),
        packets: u64_at(d, 56),
        lost: u64_at(d, 64),
        late: u64_at(d, 72),
        duplicated: u64_at(d, 80),
        concealed_frames: u64_at(d, 88),
        underruns: u64_at(d, 96),
        downstream_us: u32_at(d, 104),
        need_us: u32_at(d, 108),
        play_latency_us: u32_at(d, 112),
        repaired: u32_at(d, 116) as u64,
    };
    let mut at = STATUS_FIXED_LEN;
    let name = parse_str(d, &mut at)?;
    let host = parse_str(d, &mut at)?;
    let stream = parse_str(d, &mut at)?;
    let settings = match d.get(at..) {
        Some(rest) if !rest.is_empty() => {
            let b = crate::command::parse_settings(rest)?;
            at += b.len;
            Some(b)
        }
        _ => None,
    };
    if at != d.len() {
        return Err(Error::Malformed("trailing bytes after status"));
    }
    Ok(StatusPacket {
        settings,
        stream_id: u64_at(d, 8),
        node_id: u64_at(d, 16),
        role,
        flags: d[25],
        counters,
        name,
        host,
        stream,
    })
}

/// Longest prefix of `s` of at most [`MAX_STRING`] bytes that ends on a
/// character boundary.
fn clip(s: &str) -> &str {
    let mut end = s.len().min(MAX_STRING);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Writes a status packet; strings longer than [`MAX_STRING`] bytes are cut
/// at a character boundary. Returns the length, or `None` if `out` is too
/// small ([`MAX_STATUS_LEN`] always suffices).
pub fn write_status(out: &mut [u8], s: &StatusPacket<'_>) -> Option<usize> {
    let (name, host, stream) = (clip(s.name), clip(s.host), clip(s.stream));
    let len = STATUS_FIXED_LEN + 3 + name.len() + host.len() + stream.len();
    if out.len() < len {
        return None;
    }
    write_header(out, PacketType::Status, s.stream_id);
    let c = &s.counters;
    out[16..24].copy_from_slice(&s.node_id.to_le_bytes());
    out[24] = s.role as u8;
    out[25] = s.flags;
    out[26] = c.sample;
    out[27] = c.channels;
    out[28..32].copy_from_slice(&c.rate.to_le_bytes());
    out[32..36].copy_from_slice(&c.latency_us.to_le_bytes());
    out[36..44].copy_from_slice(&c.clock_offset_ns.to_le_bytes());
    out[44..48].copy_from_slice(&c.rate_error_ppb.to_le_bytes());
    out[48..52].copy_from_slice(&c.sync_error_ns.to_le_bytes());
    out[52..56].copy_from_slice(&c.buffer_us.to_le_bytes());
    let counters = [
        c.packets,
        c.lost,
        c.late,
        c.duplicated,
        c.concealed_frames,
        c.underruns,
    ];
    for (i, v) in counters.iter().enumerate() {
        out[56 + 8 * i..64 + 8 * i].copy_from_slice(&v.to_le_bytes());
    }
    out[104..108].copy_from_slice(&c.downstream_us.to_le_bytes());
    out[108..112].copy_from_slice(&c.need_us.to_le_bytes());
    out[112..116].copy_from_slice(&c.play_latency_us.to_le_bytes());
    out[116..120].copy_from_slice(&(c.repaired as u32).to_le_bytes());
    let mut at = STATUS_FIXED_LEN;
    for part in [name, host, stream] {
        out[at] = part.len() as u8;
        out[at + 1..at + 1 + part.len()].copy_from_slice(part.as_bytes());
        at += 1 + part.len();
    }
    if let Some(b) = &s.settings {
        at += crate::command::write_settings(&mut out[at..], b.mask, &b.settings, b.port)?;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn audio_header(frames: u16, format: AudioFormat) -> AudioHeader {
        AudioHeader {
            positions: Default::default(),
            stream_id: 7,
            seq: 3,
            frame: 144,
            pts: 1_000_000,
            format,
            latency_us: 20_000,
            name_hash: stream_hash("default"),
            priority: -2,
            frames,
        }
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        // Reference values of 32-bit FNV-1a.
        assert_eq!(stream_hash(""), 0x811c_9dc5);
        assert_eq!(stream_hash("a"), 0xe40c_292c);
        assert_eq!(stream_hash("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn default_mtu_fits_ethernet() {
        let f = AudioFormat::default();
        let frames = frames_for_mtu(DEFAULT_MTU, &f);
        assert_eq!(frames, (1500 - 28 - 60) / 8);
        assert!(IP_UDP_OVERHEAD + AUDIO_HEADER_LEN + frames * f.frame_bytes() <= DEFAULT_MTU);
    }

    #[test]
    fn rejects_wrong_version_and_magic() {
        let mut buf = [0u8; TIME_LEN];
        let t = TimePacket {
            t2: 4,
            t3: 5,
            ..TimePacket::request(1, 2, 3)
        };
        write_time(&mut buf, true, &t).unwrap();
        assert!(matches!(parse(&buf), Ok(Packet::TimeReply(p)) if p == t));
        let mut bad = buf;
        bad[4] = 2;
        assert!(parse(&bad).is_err());
        let mut bad = buf;
        bad[0] = b'X';
        assert!(parse(&bad).is_err());
        assert!(parse(&buf[..TIME_LEN - 1]).is_err());
    }

    #[test]
    fn status_cuts_long_strings_on_char_boundary() {
        let long = "é".repeat(40); // 80 bytes
        let s = StatusPacket {
            stream_id: 0,
            node_id: 9,
            role: Role::Receiver,
            flags: 1,
            counters: StatusCounters::default(),
            name: &long,
            host: "h",
            stream: "",
            settings: None,
        };
        let mut buf = [0u8; MAX_STATUS_LEN];
        let n = write_status(&mut buf, &s).unwrap();
        match parse(&buf[..n]).unwrap() {
            Packet::Status(p) => {
                assert_eq!(p.name.len(), 62);
                assert_eq!(p.host, "h");
            }
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = parse(&data);
        }

        #[test]
        fn parse_never_panics_with_valid_header(mut data in proptest::collection::vec(any::<u8>(), 16..400), t in 0u8..11) {
            data[0..4].copy_from_slice(&MAGIC);
            data[4] = VERSION;
            data[5] = t;
            let _ = parse(&data);
        }

        #[test]
        fn audio_round_trips(frames in 1u16..100, channels in 1u8..=8, fmt in 0u8..3, seed in any::<u32>()) {
            let format = AudioFormat { sample: SampleFormat::from_code(fmt).unwrap(), rate: 44_100, channels };
            let h = audio_header(frames, format);
            let n = frames as usize * channels as usize;
            let samples: Vec<f32> = (0..n).map(|i| (((i as u32).wrapping_mul(seed) % 2001) as f32 - 1000.0) / 1000.0).collect();
            let mut buf = vec![0u8; 65536];
            let len = write_audio(&mut buf, &h, &samples).unwrap();
            let p = match parse(&buf[..len]).unwrap() { Packet::Audio(p) => p, _ => panic!() };
            prop_assert_eq!(p.header, h);
            let mut back = vec![0f32; n];
            format.sample.decode(p.payload, &mut back);
            for (a, b) in samples.iter().zip(&back) {
                prop_assert!((a - b).abs() < 1e-4);
            }
            // Any truncation is rejected.
            prop_assert!(parse(&buf[..len - 1]).is_err());
        }

        #[test]
        fn status_round_trips(node in any::<u64>(), lost in any::<u64>(), off in any::<i64>(), name in "\\PC{0,20}", host in "[a-z]{0,63}") {
            let s = StatusPacket {
                stream_id: 5, node_id: node, role: Role::Sender, flags: 1,
                counters: StatusCounters { lost, clock_offset_ns: off, rate: 48000, downstream_us: lost as u32, need_us: node as u32, play_latency_us: 7, repaired: (node >> 32), ..Default::default() },
                name: &name, host: &host, stream: "kitchen",
                settings: None,
            };
            let mut buf = [0u8; MAX_STATUS_LEN];
            let n = write_status(&mut buf, &s).unwrap();
            let expect = StatusPacket { name: clip(&name), ..s };
            match parse(&buf[..n]).unwrap() {
                Packet::Status(p) => prop_assert_eq!(p, expect),
                _ => prop_assert!(false),
            }
        }

        #[test]
        fn sync_round_trips(id in 1u64.., seq in any::<u64>(), t3 in any::<u64>(), cut in 0usize..SYNC_LEN, hash in any::<u32>(), prio in any::<i8>(), streaming in any::<bool>()) {
            for announce in [None, Some(Announce { name_hash: hash, priority: prio, streaming, latency_ms: hash as u16 })] {
                let s = SyncPacket { stream_id: id, seq, t3, announce };
                let len = if announce.is_some() { SYNC_LEN } else { SYNC_V0_LEN };
                let mut buf = [0u8; SYNC_LEN + 1];
                prop_assert_eq!(write_sync(&mut buf, &s), Some(len));
                match parse(&buf[..len]).unwrap() {
                    Packet::Sync(p) => prop_assert_eq!(p, s),
                    _ => prop_assert!(false),
                }
                // Any other length is rejected, as is session 0.
                if cut != SYNC_V0_LEN {
                    prop_assert!(parse(&buf[..cut]).is_err());
                }
                prop_assert!(parse(&buf).is_err());
                buf[8..16].fill(0);
                prop_assert!(parse(&buf[..len]).is_err());
            }
        }

        #[test]
        fn sync_reserved_bits_are_rejected(bit in 1u8..8) {
            let s = SyncPacket { stream_id: 1, seq: 0, t3: 0, announce: Some(Announce { name_hash: 0, priority: 0, streaming: true, latency_ms: 40 }) };
            let mut buf = [0u8; SYNC_LEN];
            write_sync(&mut buf, &s).unwrap();
            buf[37] |= 1 << bit;
            prop_assert!(parse(&buf).is_err());
        }

        #[test]
        fn control_round_trips(id in 1u64.., node in any::<u64>(), nonce in any::<u64>(), base in any::<u64>(), mask in any::<u64>(), slot in any::<u32>(), mac in any::<[u8; 16]>(), offers in any::<u32>(), cut in 0usize..64) {
            let cookie = CookieTag { slot, mac };
            let nack = NackPacket { stream_id: id, node_id: node, cookie, base, mask };
            let hello = HelloPacket { stream_id: id, node_id: node, nonce };
            let answer = CookiePacket { stream_id: id, node_id: node, nonce, cookie, offers };
            let mut buf = [0u8; 65];
            prop_assert_eq!(write_nack(&mut buf, &nack), Some(NACK_LEN));
            prop_assert!(matches!(parse(&buf[..NACK_LEN]), Ok(Packet::Nack(p)) if p == nack));
            prop_assert!(parse(&buf[..cut]).is_err());
            prop_assert!(parse(&buf).is_err());
            buf[44 + (cut % 4)] = 1;
            prop_assert!(parse(&buf[..NACK_LEN]).is_err(), "reserved bytes");
            prop_assert_eq!(write_hello(&mut buf, &hello), Some(HELLO_LEN));
            prop_assert!(matches!(parse(&buf[..HELLO_LEN]), Ok(Packet::Hello(p)) if p == hello));
            buf[32 + cut % 32] = 1;
            prop_assert!(parse(&buf[..HELLO_LEN]).is_err(), "padding");
            prop_assert_eq!(write_cookie(&mut buf, &answer), Some(COOKIE_LEN));
            prop_assert!(matches!(parse(&buf[..COOKIE_LEN]), Ok(Packet::Cookie(p)) if p == answer));
            prop_assert!(parse(&buf[..COOKIE_LEN + 1]).is_err());
            // Session 0 is nobody's.
            buf[8..16].fill(0);
            prop_assert!(parse(&buf[..COOKIE_LEN]).is_err());
            let sub = SubscribePacket { stream_id: id, node_id: node, cookie, flags: offers & SUBSCRIBE_LEAVE };
            prop_assert_eq!(write_subscribe(&mut buf, &sub), Some(SUBSCRIBE_LEN));
            prop_assert!(matches!(parse(&buf[..SUBSCRIBE_LEN]), Ok(Packet::Subscribe(p)) if p == sub));
            prop_assert!(parse(&buf[..SUBSCRIBE_LEN - 1 - cut % 8]).is_err());
            buf[44 + cut % 20] |= if cut % 20 == 0 { 2 } else { 1 };
            prop_assert!(parse(&buf[..SUBSCRIBE_LEN]).is_err(), "unknown flags or padding");
            // A NACK names its base and the mask's bits, in order.
            let seqs: Vec<u64> = nack.seqs().collect();
            prop_assert_eq!(seqs[0], base);
            prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(seqs.len() as u64 <= NACK_SPAN);
            if base < u64::MAX - 64 {
                prop_assert_eq!(seqs.len() as u32, 1 + mask.count_ones());
            }
        }

        #[test]
        fn a_resend_is_marked_and_parses_as_before(frames in 1u16..50, lat in any::<u32>(), bit in 1u8..8) {
            let h = audio_header(frames, AudioFormat::default());
            let samples = vec![0.25f32; frames as usize * 2];
            let mut buf = vec![0u8; 4096];
            let len = write_audio(&mut buf, &h, &samples).unwrap();
            let p = match parse(&buf[..len]).unwrap() { Packet::Audio(p) => p, _ => panic!() };
            prop_assert!(!p.resent);
            mark_resent(&mut buf[..len], lat);
            let p = match parse(&buf[..len]).unwrap() { Packet::Audio(p) => p, _ => panic!() };
            prop_assert!(p.resent);
            prop_assert_eq!(p.header, AudioHeader { latency_us: lat, ..h });
            buf[55] |= 1 << bit;
            prop_assert_eq!(parse(&buf[..len]).is_err(), bit >= 2);
        }

        #[test]
        fn time_round_trips(id in any::<u64>(), t1 in any::<u64>(), t2 in any::<u64>(), t3 in any::<u64>(), reply in any::<bool>()) {
            let t = TimePacket { stream_id: id, node_id: !id, t1, t2, t3 };
            let mut buf = [0u8; TIME_LEN];
            write_time(&mut buf, reply, &t).unwrap();
            match (parse(&buf).unwrap(), reply) {
                (Packet::TimeReply(p), true) | (Packet::TimeRequest(p), false) => prop_assert_eq!(p, t),
                _ => prop_assert!(false),
            }
        }
    }
}

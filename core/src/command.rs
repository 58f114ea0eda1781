//! Remote settings of a node: the Command datagram a controller (`bark
//! set`, `bark web`) sends to a node's command socket, the CommandAck the
//! node answers with, and the two sans-IO ends: [`Responder`] on the node
//! (applies each command once, rate-limited) and [`Controller`] (numbers
//! commands, matches acks). Bytes in docs/PROTOCOL.md, "Command".
//!
//! The command socket is not the data socket: adapters read it on their
//! main loop (PipeWire's, not the data thread), so a flood of commands
//! never competes with audio, and apply what [`Responder::handle`]
//! reports through the audio server's own controls (a PipeWire stream's
//! volume and mute), so the desktop shows the change.
//!
//! Both datagrams are sealed with the key when one is set
//! ([`crate::auth`]); a keyed node's opener refuses unsealed or replayed
//! ones before they get here. A Command is padded to [`COMMAND_LEN`]
//! bytes, never shorter than the ack it earns, so a node answering a
//! forged source address sends no more than it received (no amplifier).

use crate::auth::{Key, Opener, Sealer};
use crate::channels::Selection;
use crate::protocol::{self, PacketType, Role, HEADER_LEN, MAGIC, MAX_STRING, VERSION};
use crate::repair::bucket::TokenBucket;
use crate::Error;

/// [`Settings::volume`] is set.
pub const SET_VOLUME: u16 = 1;
/// [`Settings::mute`] is set.
pub const SET_MUTE: u16 = 2;
/// [`Settings::delay_ns`] is set.
pub const SET_DELAY: u16 = 4;
/// [`Settings::name`] is set.
pub const SET_NAME: u16 = 8;
/// [`Settings::stream`] is set.
pub const SET_STREAM: u16 = 16;
/// [`Settings::enabled`] is set.
pub const SET_ENABLED: u16 = 32;
/// [`Settings::priority`] is set.
pub const SET_PRIORITY: u16 = 64;
/// [`Settings::channels`] is set.
pub const SET_CHANNELS: u16 = 128;
/// What a receiver accepts.
pub const RECEIVER_FIELDS: u16 =
    SET_VOLUME | SET_MUTE | SET_DELAY | SET_NAME | SET_STREAM | SET_ENABLED | SET_CHANNELS;
/// What a sender accepts: its description, stream name and priority.
pub const SENDER_FIELDS: u16 = SET_NAME | SET_STREAM | SET_PRIORITY;

/// Bytes of the settings block (fixed part; two strings follow).
pub const SETTINGS_FIXED_LEN: usize = 20;
/// Longest settings block, bytes.
pub const MAX_SETTINGS_LEN: usize = SETTINGS_FIXED_LEN + 2 * (1 + MAX_STRING);
/// Bytes of a Command before its settings block: header, target node id,
/// controller id, sequence.
pub const COMMAND_FIXED_LEN: usize = HEADER_LEN + 24;
/// Bytes of a CommandAck before its settings block: header, node id,
/// controller id, sequence, result, role, two reserved.
pub const ACK_FIXED_LEN: usize = HEADER_LEN + 28;
/// Length of every Command datagram (before sealing), bytes: the longest
/// ack, so an ack is never larger than the command that asked for it.
pub const COMMAND_LEN: usize = ACK_FIXED_LEN + MAX_SETTINGS_LEN;
/// Largest volume, on the user's (cubic) scale: 150 %, as pavucontrol's
/// slider allows above 100 %.
pub const MAX_VOLUME: f32 = 1.5;
/// Largest |delay offset|, ns: the receiver's `bark.delay.msec` limit.
pub const MAX_DELAY_NS: i64 = crate::settings::MAX_LATENCY_NS as i64;
/// Commands a node takes per second, and at once (token bucket): far
/// above a hand on a slider (a browser sends at most ~20/s), far below a
/// flood.
pub const COMMANDS_PER_S: f64 = 50.0;
/// See [`COMMANDS_PER_S`].
pub const COMMAND_BURST: f64 = 25.0;
/// Controllers whose last sequence a node remembers (least recently heard
/// forgotten first): a retried command of one of them is acked, not
/// applied again.
pub const REMEMBERED_CONTROLLERS: usize = 16;

/// A string of at most [`MAX_STRING`] bytes held inline, so that settings
/// are `Copy` and move to a data thread without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Label {
    len: u8,
    bytes: [u8; MAX_STRING],
}

impl Label {
    /// `s` cut at a character boundary to at most [`MAX_STRING`] bytes.
    pub fn new(s: &str) -> Label {
        let mut end = s.len().min(MAX_STRING);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; MAX_STRING];
        bytes[..end].copy_from_slice(&s.as_bytes()[..end]);
        Label {
            len: end as u8,
            bytes,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Built only from whole characters of a `&str` (`new`) or checked
        // UTF-8 (`parse_settings`).
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for Label {
    fn default() -> Self {
        Label::new("")
    }
}

impl core::fmt::Debug for Label {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// What a controller can change on a node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// Volume on the user's scale, as pavucontrol and `wpctl` show it
    /// (1.0 = 100 %; the linear gain is its cube, PulseAudio's
    /// `pa_sw_volume_from_linear` mapping), 0..=[`MAX_VOLUME`].
    pub volume: f32,
    /// Muted.
    pub mute: bool,
    /// Receiver: delay offset, ns (`bark.delay.msec`), within
    /// ±[`MAX_DELAY_NS`]; positive plays later.
    pub delay_ns: i64,
    /// The room's name as people read it (`node.description`).
    pub name: Label,
    /// Receiver: the stream it follows (`bark.stream`; empty: the best
    /// one, [`crate::select`]). Sender: the stream name it sends under.
    pub stream: Label,
    /// Receiver: plays (true) or stays silent (false, "off for the
    /// evening"; it keeps its clock, so it plays again at once).
    pub enabled: bool,
    /// Sender: `bark.priority`.
    pub priority: i8,
    /// Receiver: which of the stream's channels it plays
    /// (`bark.channels`; [`crate::channels`]).
    pub channels: Selection,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            volume: 1.0,
            mute: false,
            delay_ns: 0,
            name: Label::default(),
            stream: Label::default(),
            enabled: true,
            priority: 0,
            channels: Selection::All,
        }
    }
}

impl Settings {
    /// The fields of `other` named in `mask` copied over these; returns
    /// the mask of those that changed.
    pub fn merge(&mut self, mask: u16, other: &Settings) -> u16 {
        let before = *self;
        if mask & SET_VOLUME != 0 {
            self.volume = other.volume;
        }
        if mask & SET_MUTE != 0 {
            self.mute = other.mute;
        }
        if mask & SET_DELAY != 0 {
            self.delay_ns = other.delay_ns;
        }
        if mask & SET_NAME != 0 {
            self.name = other.name;
        }
        if mask & SET_STREAM != 0 {
            self.stream = other.stream;
        }
        if mask & SET_ENABLED != 0 {
            self.enabled = other.enabled;
        }
        if mask & SET_PRIORITY != 0 {
            self.priority = other.priority;
        }
        if mask & SET_CHANNELS != 0 {
            self.channels = other.channels;
        }
        self.changed_from(&before)
    }

    /// Mask of the fields that differ from `other`.
    pub fn changed_from(&self, other: &Settings) -> u16 {
        let mut m = 0;
        if self.volume.to_bits() != other.volume.to_bits() {
            m |= SET_VOLUME;
        }
        if self.mute != other.mute {
            m |= SET_MUTE;
        }
        if self.delay_ns != other.delay_ns {
            m |= SET_DELAY;
        }
        if self.name != other.name {
            m |= SET_NAME;
        }
        if self.stream != other.stream {
            m |= SET_STREAM;
        }
        if self.enabled != other.enabled {
            m |= SET_ENABLED;
        }
        if self.priority != other.priority {
            m |= SET_PRIORITY;
        }
        if self.channels != other.channels {
            m |= SET_CHANNELS;
        }
        m
    }

    /// The linear gain the volume and mute give (the volume cubed; 0 when
    /// muted or disabled): what a node without an audio server's own
    /// volume (`bark receive`) multiplies its samples by.
    pub fn gain(&self) -> f32 {
        if self.mute || !self.enabled {
            0.0
        } else {
            self.volume * self.volume * self.volume
        }
    }

    /// What is wrong with the fields in `mask`, if anything: a volume
    /// outside 0..=[`MAX_VOLUME`] or not finite, a delay beyond
    /// ±[`MAX_DELAY_NS`], an empty name, a choice of more than eight
    /// channels.
    pub fn invalid(&self, mask: u16) -> Option<&'static str> {
        if mask & SET_VOLUME != 0 && !(0.0..=MAX_VOLUME).contains(&self.volume) {
            return Some("volume out of range (0..=150 %)");
        }
        if mask & SET_DELAY != 0 && self.delay_ns.unsigned_abs() > MAX_DELAY_NS as u64 {
            return Some("delay out of range (±2000 ms)");
        }
        if mask & SET_NAME != 0 && self.name.is_empty() {
            return Some("empty name");
        }
        if mask & SET_CHANNELS != 0
            && matches!(self.channels, Selection::Only(m) if m.count() > crate::format::MAX_CHANNELS as u32)
        {
            return Some("more channels than a stream has (8)");
        }
        None
    }
}

/// The module arguments each field of [`Settings`] is configured by, per
/// role.
const CONFIGURED_BY: [(crate::settings::Role, &str, u16); 7] = [
    (crate::settings::Role::Source, "node.description", SET_NAME),
    (crate::settings::Role::Source, "bark.channels", SET_CHANNELS),
    (crate::settings::Role::Source, "bark.stream", SET_STREAM),
    (crate::settings::Role::Source, "bark.delay.msec", SET_DELAY),
    (crate::settings::Role::Sink, "node.description", SET_NAME),
    (crate::settings::Role::Sink, "bark.stream", SET_STREAM),
    (crate::settings::Role::Sink, "bark.priority", SET_PRIORITY),
];

/// The fields (`SET_*`) that the configuration `r` of `role` gives
/// explicitly: they win over saved settings at load.
pub fn configured_mask(r: &crate::settings::Resolved, role: crate::settings::Role) -> u16 {
    CONFIGURED_BY
        .iter()
        .filter(|(ro, key, _)| *ro == role && r.given(key).is_some())
        .fold(0, |m, (_, _, bit)| m | bit)
}

fn u16_at(d: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([d[at], d[at + 1]])
}
fn u32_at(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}
fn u64_at(d: &[u8], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&d[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Flags byte of the settings block: bit 0 muted, bit 1 disabled.
const FLAG_MUTE: u8 = 1;
const FLAG_DISABLED: u8 = 2;

/// Writes a settings block (`mask`, the settings, the node's command
/// port, 0 if none) at the start of `out`; returns its length, or `None`
/// if `out` is shorter than it.
pub fn write_settings(out: &mut [u8], mask: u16, s: &Settings, port: u16) -> Option<usize> {
    let (name, stream) = (s.name.as_str(), s.stream.as_str());
    let len = SETTINGS_FIXED_LEN + 2 + name.len() + stream.len();
    let out = out.get_mut(..len)?;
    out[0..2].copy_from_slice(&mask.to_le_bytes());
    out[2] = if s.mute { FLAG_MUTE } else { 0 } | if s.enabled { 0 } else { FLAG_DISABLED };
    out[3] = s.priority as u8;
    let volume = (s.volume.clamp(0.0, MAX_VOLUME) * 10_000.0).round() as u32;
    out[4..8].copy_from_slice(&volume.to_le_bytes());
    out[8..16].copy_from_slice(&s.delay_ns.to_le_bytes());
    out[16..18].copy_from_slice(&port.to_le_bytes());
    out[18..20].copy_from_slice(&s.channels.to_wire().to_le_bytes());
    let mut at = SETTINGS_FIXED_LEN;
    for part in [name, stream] {
        out[at] = part.len() as u8;
        out[at + 1..at + 1 + part.len()].copy_from_slice(part.as_bytes());
        at += 1 + part.len();
    }
    Some(at)
}

fn parse_label(d: &[u8], at: &mut usize) -> Result<Label, Error> {
    let len = usize::from(
        *d.get(*at)
            .ok_or(Error::Malformed("settings string missing"))?,
    );
    if len > MAX_STRING {
        return Err(Error::Malformed("settings string too long"));
    }
    let bytes = d
        .get(*at + 1..*at + 1 + len)
        .ok_or(Error::Malformed("settings string truncated"))?;
    let s = core::str::from_utf8(bytes)
        .map_err(|_| Error::Malformed("settings string is not UTF-8"))?;
    *at += 1 + len;
    Ok(Label::new(s))
}

/// A parsed settings block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SettingsBlock {
    /// Which fields are set (a command) or meaningful (an ack, a status):
    /// `SET_*` bits.
    pub mask: u16,
    /// The values.
    pub settings: Settings,
    /// The node's command port (0: none, or in a command).
    pub port: u16,
    /// Bytes the block took.
    pub len: usize,
}

impl SettingsBlock {
    /// The block a node's status packets carry: the `fields` of its role,
    /// its settings and its command port; `None` without a command socket
    /// (`port` 0).
    pub fn reported(fields: u16, settings: &Settings, port: u16) -> Option<SettingsBlock> {
        (port != 0).then_some(SettingsBlock {
            mask: fields,
            settings: *settings,
            port,
            len: 0,
        })
    }
}

/// Parses a settings block at the start of `d` (trailing bytes are the
/// caller's).
///
/// # Errors
/// [`Error::Malformed`]: shorter than its fixed part, reserved bits set,
/// a volume above [`MAX_VOLUME`], a string too long, cut short
/// or not UTF-8.
pub fn parse_settings(d: &[u8]) -> Result<SettingsBlock, Error> {
    if d.len() < SETTINGS_FIXED_LEN {
        return Err(Error::Malformed("settings shorter than their fixed part"));
    }
    let mask = u16_at(d, 0);
    if mask & !(RECEIVER_FIELDS | SENDER_FIELDS) != 0 || d[2] & !(FLAG_MUTE | FLAG_DISABLED) != 0 {
        return Err(Error::Malformed("settings with reserved bits set"));
    }
    let volume = u32_at(d, 4);
    if volume > (MAX_VOLUME * 10_000.0) as u32 {
        return Err(Error::Malformed("volume above 150 %"));
    }
    let mut at = SETTINGS_FIXED_LEN;
    let name = parse_label(d, &mut at)?;
    let stream = parse_label(d, &mut at)?;
    Ok(SettingsBlock {
        mask,
        settings: Settings {
            volume: volume as f32 / 10_000.0,
            mute: d[2] & FLAG_MUTE != 0,
            delay_ns: u64_at(d, 8) as i64,
            name,
            stream,
            enabled: d[2] & FLAG_DISABLED == 0,
            priority: d[3] as i8,
            channels: Selection::from_wire(u16_at(d, 18)),
        },
        port: u16_at(d, 16),
        len: at,
    })
}

/// A Command: change `mask`'s fields of node `target` to `settings`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CommandPacket {
    /// The node it is for (its status packets' node id).
    pub target: u64,
    /// Random id of the controller, drawn at its start.
    pub controller: u64,
    /// The controller's sequence number: increasing, the same for a retry.
    pub seq: u64,
    /// The fields to set (`SET_*`; 0 asks for the settings only).
    pub mask: u16,
    /// The values of the fields in `mask`; the rest is ignored.
    pub settings: Settings,
}

/// Result code of a [`AckPacket`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckResult {
    /// Applied (or nothing to apply).
    Applied = 0,
    /// A retry of a command already applied: acked, not applied again.
    Repeated = 1,
    /// A value out of range, or a field this node's role does not have;
    /// nothing was applied.
    Invalid = 2,
    /// Not this node's id (it restarted since the controller listed it).
    WrongNode = 3,
}

/// A CommandAck: the node's settings after a command.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AckPacket {
    /// The answering node.
    pub node_id: u64,
    /// The command's controller id.
    pub controller: u64,
    /// The command's sequence.
    pub seq: u64,
    /// What became of it.
    pub result: AckResult,
    /// The node's role.
    pub role: Role,
    /// Its settings now (mask: the fields its role has).
    pub settings: SettingsBlock,
}

/// Writes a Command, padded to [`COMMAND_LEN`]; `None` if `out` is
/// shorter.
pub fn write_command(out: &mut [u8], c: &CommandPacket) -> Option<usize> {
    let out = out.get_mut(..COMMAND_LEN)?;
    out.fill(0);
    write_head(out, PacketType::Command);
    out[16..24].copy_from_slice(&c.target.to_le_bytes());
    out[24..32].copy_from_slice(&c.controller.to_le_bytes());
    out[32..40].copy_from_slice(&c.seq.to_le_bytes());
    write_settings(&mut out[COMMAND_FIXED_LEN..], c.mask, &c.settings, 0)?;
    Some(COMMAND_LEN)
}

fn write_head(out: &mut [u8], t: PacketType) {
    out[0..4].copy_from_slice(&MAGIC);
    out[4] = VERSION;
    out[5] = t as u8;
    out[6..16].fill(0);
}

/// Parses a Command (header already checked by [`protocol::parse`]).
///
/// # Errors
/// [`Error::Malformed`]: not [`COMMAND_LEN`] bytes, a bad settings block,
/// padding not zero.
pub fn parse_command(d: &[u8]) -> Result<CommandPacket, Error> {
    if d.len() != COMMAND_LEN {
        return Err(Error::Malformed("command not of its fixed length"));
    }
    let b = parse_settings(&d[COMMAND_FIXED_LEN..])?;
    if d[COMMAND_FIXED_LEN + b.len..].iter().any(|&x| x != 0) {
        return Err(Error::Malformed("command padding not zero"));
    }
    Ok(CommandPacket {
        target: u64_at(d, 16),
        controller: u64_at(d, 24),
        seq: u64_at(d, 32),
        mask: b.mask,
        settings: b.settings,
    })
}

/// Writes a CommandAck; `None` if `out` is too short.
pub fn write_ack(out: &mut [u8], a: &AckPacket) -> Option<usize> {
    if out.len() < ACK_FIXED_LEN {
        return None;
    }
    write_head(out, PacketType::CommandAck);
    out[16..24].copy_from_slice(&a.node_id.to_le_bytes());
    out[24..32].copy_from_slice(&a.controller.to_le_bytes());
    out[32..40].copy_from_slice(&a.seq.to_le_bytes());
    out[40] = a.result as u8;
    out[41] = a.role as u8;
    out[42..44].fill(0);
    let s = &a.settings;
    let n = write_settings(&mut out[ACK_FIXED_LEN..], s.mask, &s.settings, s.port)?;
    Some(ACK_FIXED_LEN + n)
}

/// Parses a CommandAck (header already checked).
///
/// # Errors
/// [`Error::Malformed`]: too short, unknown result or role, a bad settings
/// block, trailing bytes.
pub fn parse_ack(d: &[u8]) -> Result<AckPacket, Error> {
    if d.len() < ACK_FIXED_LEN {
        return Err(Error::Malformed("ack shorter than its fixed part"));
    }
    let result = match d[40] {
        0 => AckResult::Applied,
        1 => AckResult::Repeated,
        2 => AckResult::Invalid,
        3 => AckResult::WrongNode,
        _ => return Err(Error::Malformed("unknown ack result")),
    };
    let role = match d[41] {
        1 => Role::Sender,
        2 => Role::Receiver,
        _ => return Err(Error::Malformed("unknown role")),
    };
    let settings = parse_settings(&d[ACK_FIXED_LEN..])?;
    if ACK_FIXED_LEN + settings.len != d.len() {
        return Err(Error::Malformed("trailing bytes after ack"));
    }
    Ok(AckPacket {
        node_id: u64_at(d, 16),
        controller: u64_at(d, 24),
        seq: u64_at(d, 32),
        result,
        role,
        settings,
    })
}

/// What the command socket saw, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandCounts {
    /// Commands applied (including those that changed nothing).
    pub applied: u64,
    /// Retries acked without applying again.
    pub repeated: u64,
    /// Refused: out of range, or a field of the other role.
    pub invalid: u64,
    /// For another node id.
    pub wrong_node: u64,
    /// Dropped unanswered: over [`COMMANDS_PER_S`].
    pub limited: u64,
    /// Dropped: not a Command, malformed, or refused by the key check.
    pub dropped: u64,
}

/// What a datagram on the command socket came to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Handled {
    /// Applied: these fields (`SET_*`) changed; the adapter applies them
    /// to its platform ([`Responder::settings`] has the new values).
    Changed(u16),
    /// Answered; nothing changed.
    Unchanged,
    /// Dropped without an answer; says why (for a rate-limited log line).
    Dropped(&'static str),
}

/// The node's end: its settings, the controllers' last sequences, the
/// rate limit, the key. Sans-IO: the adapter feeds it datagrams from the
/// command socket and sends the ack it writes back to the source.
pub struct Responder {
    node_id: u64,
    role: Role,
    port: u16,
    settings: Settings,
    /// (controller id, last sequence applied, last heard ns).
    recent: [(u64, u64, u64); REMEMBERED_CONTROLLERS],
    bucket: TokenBucket,
    sealer: Sealer,
    opener: Opener,
    counts: CommandCounts,
}

impl Responder {
    /// A responder for node `node_id` of `role`, with its settings at
    /// start (its drop-in's and its state file's) and its command socket's
    /// `port`, sealing with `key` if one is set.
    ///
    /// # Errors
    /// [`Error::Config`]: no randomness for the sealer's epoch.
    pub fn new(
        node_id: u64,
        role: Role,
        settings: Settings,
        port: u16,
        key: Option<&Key>,
        now_ns: u64,
    ) -> Result<Responder, Error> {
        let (sealer, opener) = seal_pair(key)?;
        Ok(Responder {
            node_id,
            role,
            port,
            settings,
            recent: [(0, 0, 0); REMEMBERED_CONTROLLERS],
            bucket: TokenBucket::new(COMMANDS_PER_S, COMMAND_BURST, now_ns),
            sealer,
            opener,
            counts: CommandCounts::default(),
        })
    }

    /// The settings now.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The command port it reports.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The node's id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The node's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Counts so far.
    pub fn counts(&self) -> &CommandCounts {
        &self.counts
    }

    /// Datagrams the key check refused, by reason.
    pub fn auth(&self) -> &crate::auth::AuthCounters {
        self.opener.counters()
    }

    /// A change made on the node itself (the desktop's volume applet,
    /// `wpctl`): the settings reported from now on. Returns the mask of
    /// what changed.
    pub fn set_local(&mut self, mask: u16, s: &Settings) -> u16 {
        self.settings.merge(mask, s)
    }

    /// The fields this node's role has.
    pub fn fields(&self) -> u16 {
        match self.role {
            Role::Receiver => RECEIVER_FIELDS,
            Role::Sender => SENDER_FIELDS,
        }
    }

    /// The settings block this node reports (status, acks).
    pub fn block(&self) -> SettingsBlock {
        SettingsBlock {
            mask: self.fields(),
            settings: self.settings,
            port: self.port,
            len: 0,
        }
    }

    /// A datagram arrived on the command socket at `now_ns` (`wall_ns`:
    /// CLOCK_REALTIME, for the key check): opens it in place, applies a
    /// Command once, and writes the sealed ack into `ack` (≥
    /// [`ACK_BUF`] bytes), whose length comes back with the outcome
    /// (`None`: send nothing). Does not allocate.
    pub fn handle(
        &mut self,
        now_ns: u64,
        wall_ns: u64,
        data: &mut [u8],
        ack: &mut [u8],
    ) -> (Handled, Option<usize>) {
        let n = match self.opener.open(data, wall_ns) {
            Ok(n) => n,
            Err(_) => {
                self.counts.dropped += 1;
                return (Handled::Dropped("refused by the key check"), None);
            }
        };
        let c = match protocol::parse(&data[..n]) {
            Ok(protocol::Packet::Command(c)) => c,
            Ok(_) => {
                self.counts.dropped += 1;
                return (Handled::Dropped("not a command"), None);
            }
            Err(Error::Malformed(why)) => {
                self.counts.dropped += 1;
                return (Handled::Dropped(why), None);
            }
            Err(Error::Config(_)) => {
                self.counts.dropped += 1;
                return (Handled::Dropped("malformed"), None);
            }
        };
        if !self.bucket.take(now_ns, 1) {
            self.counts.limited += 1;
            return (Handled::Dropped("over the command rate limit"), None);
        }
        let (result, handled) = self.apply(now_ns, &c);
        let a = AckPacket {
            node_id: self.node_id,
            controller: c.controller,
            seq: c.seq,
            result,
            role: self.role,
            settings: self.block(),
        };
        let len = write_ack(ack, &a).and_then(|len| self.sealer.seal(ack, len, wall_ns));
        (handled, len)
    }

    fn apply(&mut self, now_ns: u64, c: &CommandPacket) -> (AckResult, Handled) {
        if c.target != self.node_id {
            self.counts.wrong_node += 1;
            return (AckResult::WrongNode, Handled::Unchanged);
        }
        let nameless_sender =
            self.role == Role::Sender && c.mask & SET_STREAM != 0 && c.settings.stream.is_empty();
        if c.mask & !self.fields() != 0 || c.settings.invalid(c.mask).is_some() || nameless_sender {
            self.counts.invalid += 1;
            return (AckResult::Invalid, Handled::Unchanged);
        }
        let slot = match self.recent.iter().position(|r| r.0 == c.controller) {
            Some(i) => {
                if c.seq <= self.recent[i].1 {
                    self.recent[i].2 = now_ns;
                    self.counts.repeated += 1;
                    return (AckResult::Repeated, Handled::Unchanged);
                }
                i
            }
            // The least recently heard controller's place.
            None => (0..REMEMBERED_CONTROLLERS)
                .min_by_key(|&i| self.recent[i].2)
                .unwrap_or(0),
        };
        self.recent[slot] = (c.controller, c.seq, now_ns);
        self.counts.applied += 1;
        match self.settings.merge(c.mask, &c.settings) {
            0 => (AckResult::Applied, Handled::Unchanged),
            m => (AckResult::Applied, Handled::Changed(m)),
        }
    }
}

/// Room an ack needs in a buffer, sealed, bytes.
pub const ACK_BUF: usize = COMMAND_LEN + crate::auth::OVERHEAD;

fn seal_pair(key: Option<&Key>) -> Result<(Sealer, Opener), Error> {
    match key {
        Some(k) => Ok((
            Sealer::new(k, false).map_err(|e| Error::Config(format!("no randomness: {e}")))?,
            Opener::new(k),
        )),
        None => Ok((Sealer::keyless(), Opener::keyless())),
    }
}

/// The controller's end (`bark set`, `bark web`): numbers commands, seals
/// them, opens and matches the acks.
pub struct Controller {
    id: u64,
    seq: u64,
    sealer: Sealer,
    opener: Opener,
}

impl Controller {
    /// A controller of random id `id` (non-zero), sealing with `key` if
    /// one is set.
    ///
    /// # Errors
    /// [`Error::Config`]: no randomness for the sealer's epoch.
    pub fn new(id: u64, key: Option<&Key>) -> Result<Controller, Error> {
        let (sealer, opener) = seal_pair(key)?;
        Ok(Controller {
            id,
            seq: 0,
            sealer,
            opener,
        })
    }

    /// Its id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Writes a new command for `target` into `out` (≥ [`ACK_BUF`]
    /// bytes), sealed; returns its length and sequence. A retry sends the
    /// same bytes again ([`Controller::reseal`] for a keyed one).
    pub fn command(
        &mut self,
        target: u64,
        mask: u16,
        settings: &Settings,
        wall_ns: u64,
        out: &mut [u8],
    ) -> Option<(usize, u64)> {
        self.seq += 1;
        let len = self.reseal(target, self.seq, mask, settings, wall_ns, out)?;
        Some((len, self.seq))
    }

    /// Writes command `seq` again (a retry: the node applies it once), with
    /// a fresh seal (a keyed node refuses a replayed datagram).
    pub fn reseal(
        &mut self,
        target: u64,
        seq: u64,
        mask: u16,
        settings: &Settings,
        wall_ns: u64,
        out: &mut [u8],
    ) -> Option<usize> {
        let c = CommandPacket {
            target,
            controller: self.id,
            seq,
            mask,
            settings: *settings,
        };
        let len = write_command(out, &c)?;
        self.sealer.seal(out, len, wall_ns)
    }

    /// Opens a datagram that arrived for this controller: the ack of one
    /// of its commands, or `None` (not an ack, not ours, refused by the
    /// key check).
    pub fn take_ack(&mut self, data: &mut [u8], wall_ns: u64) -> Option<AckPacket> {
        let n = self.opener.open(data, wall_ns).ok()?;
        match protocol::parse(&data[..n]) {
            Ok(protocol::Packet::CommandAck(a)) if a.controller == self.id => Some(a),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kitchen() -> Settings {
        Settings {
            volume: 0.4,
            mute: true,
            delay_ns: 12_500_000,
            name: Label::new("Kitchen"),
            stream: Label::new("livingroom"),
            enabled: true,
            priority: 0,
            channels: Selection::All,
        }
    }

    #[test]
    fn settings_round_trip() {
        let mut buf = [0u8; MAX_SETTINGS_LEN];
        let s = kitchen();
        let n = write_settings(&mut buf, RECEIVER_FIELDS, &s, 4711).unwrap();
        let b = parse_settings(&buf[..n]).unwrap();
        assert_eq!(b.settings, s);
        assert_eq!((b.mask, b.port, b.len), (RECEIVER_FIELDS, 4711, n));
        // Cut anywhere: refused, never a panic.
        for cut in 0..n {
            assert!(parse_settings(&buf[..cut]).is_err(), "{cut}");
        }
    }

    #[test]
    fn labels_cut_at_a_character_boundary() {
        let long = "é".repeat(40);
        let l = Label::new(&long);
        assert_eq!(l.as_str().len(), 62);
        assert!(long.starts_with(l.as_str()));
    }

    fn node(key: Option<&Key>) -> (Responder, Controller) {
        let r = Responder::new(9, Role::Receiver, Settings::default(), 4711, key, 0).unwrap();
        (r, Controller::new(77, key).unwrap())
    }

    fn send(
        r: &mut Responder,
        c: &mut Controller,
        bytes: &[u8],
        now: u64,
    ) -> (Handled, Option<AckPacket>) {
        let mut d = bytes.to_vec();
        let mut ack = [0u8; ACK_BUF];
        let (h, len) = r.handle(now, 1, &mut d, &mut ack);
        assert!(len.is_none_or(|n| n <= bytes.len()), "no amplification");
        (h, len.and_then(|n| c.take_ack(&mut ack[..n], 1)))
    }

    #[test]
    fn a_command_is_applied_once_and_acked_each_time() {
        let (mut r, mut c) = node(None);
        let mut out = [0u8; ACK_BUF];
        let (n, seq) = c
            .command(9, SET_VOLUME | SET_NAME, &kitchen(), 1, &mut out)
            .unwrap();
        assert_eq!(n, COMMAND_LEN);
        let (h, a) = send(&mut r, &mut c, &out[..n], 10);
        assert_eq!(h, Handled::Changed(SET_VOLUME | SET_NAME));
        let a = a.unwrap();
        assert_eq!((a.result, a.seq, a.node_id), (AckResult::Applied, seq, 9));
        assert_eq!(a.settings.settings.volume, 0.4);
        assert_eq!(a.settings.settings.name.as_str(), "Kitchen");
        assert!(!a.settings.settings.mute, "mute was not in the mask");
        // The retry (same sequence) is acked, not applied again: a change
        // made locally in between survives it.
        r.set_local(
            SET_VOLUME,
            &Settings {
                volume: 0.9,
                ..kitchen()
            },
        );
        let (h, a) = send(&mut r, &mut c, &out[..n], 20);
        assert_eq!(h, Handled::Unchanged);
        assert_eq!(a.unwrap().result, AckResult::Repeated);
        assert_eq!(r.settings().volume, 0.9);
        assert_eq!(r.counts().applied, 1);
        assert_eq!(r.counts().repeated, 1);
    }

    #[test]
    fn refuses_out_of_range_other_roles_fields_and_other_nodes() {
        let (mut r, mut c) = node(None);
        let mut out = [0u8; ACK_BUF];
        let loud = Settings {
            volume: 1.6,
            ..kitchen()
        };
        // The writer clamps; a hand-made block above 150 % is malformed.
        let (n, _) = c
            .command(
                9,
                SET_DELAY,
                &Settings {
                    delay_ns: 3_000_000_000,
                    ..loud
                },
                1,
                &mut out,
            )
            .unwrap();
        let (h, a) = send(&mut r, &mut c, &out[..n], 1);
        assert_eq!(
            (h, a.unwrap().result),
            (Handled::Unchanged, AckResult::Invalid)
        );
        let (n, _) = c.command(9, SET_PRIORITY, &kitchen(), 1, &mut out).unwrap();
        assert_eq!(
            send(&mut r, &mut c, &out[..n], 2).1.unwrap().result,
            AckResult::Invalid
        );
        let (n, _) = c.command(8, SET_MUTE, &kitchen(), 1, &mut out).unwrap();
        assert_eq!(
            send(&mut r, &mut c, &out[..n], 3).1.unwrap().result,
            AckResult::WrongNode
        );
        assert_eq!(*r.settings(), Settings::default());
        let mut bad = out;
        bad[COMMAND_FIXED_LEN + 4..COMMAND_FIXED_LEN + 8].copy_from_slice(&15_001u32.to_le_bytes());
        assert!(matches!(
            send(&mut r, &mut c, &bad[..n], 4).0,
            Handled::Dropped(_)
        ));
    }

    #[test]
    fn a_flood_is_cut_to_the_rate_limit() {
        let (mut r, mut c) = node(None);
        let mut out = [0u8; ACK_BUF];
        let mut answered = 0;
        // 10 s of a command every ms.
        for ms in 0..10_000u64 {
            let (n, _) = c.command(9, SET_MUTE, &kitchen(), 1, &mut out).unwrap();
            if send(&mut r, &mut c, &out[..n], ms * 1_000_000).1.is_some() {
                answered += 1;
            }
        }
        assert!(answered <= 25 + 500, "{answered}");
        assert!(answered >= 490, "{answered}");
        assert_eq!(r.counts().limited, 10_000 - answered);
    }

    #[test]
    fn a_keyed_node_refuses_unkeyed_and_replayed_commands() {
        let key = Key::from_bytes([7; 32]);
        let (mut r, mut c) = node(Some(&key));
        let (_, mut open) = node(None);
        let mut out = [0u8; ACK_BUF];
        let (n, _) = open.command(9, SET_MUTE, &kitchen(), 1, &mut out).unwrap();
        let (h, _) = send(&mut r, &mut open, &out[..n], 1);
        assert!(matches!(h, Handled::Dropped(_)));
        let (n, _) = c.command(9, SET_MUTE, &kitchen(), 1, &mut out).unwrap();
        let (h, a) = send(&mut r, &mut c, &out[..n], 2);
        assert_eq!(h, Handled::Changed(SET_MUTE));
        assert_eq!(a.unwrap().result, AckResult::Applied);
        // The same sealed bytes again: a replay, dropped by the key check.
        let (h, a) = send(&mut r, &mut c, &out[..n], 3);
        assert!(matches!(h, Handled::Dropped(_)) && a.is_none());
        assert_eq!(r.auth().replayed, 1);
        assert!(r.settings().mute);
    }

    #[test]
    fn gain_is_the_cube_and_zero_when_muted_or_disabled() {
        let s = Settings {
            volume: 0.5,
            ..Settings::default()
        };
        assert_eq!(s.gain(), 0.125);
        assert_eq!(Settings { mute: true, ..s }.gain(), 0.0);
        assert_eq!(
            Settings {
                enabled: false,
                ..s
            }
            .gain(),
            0.0
        );
    }
}

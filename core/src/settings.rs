//! Every setting of Bark's two roles, once: its PipeWire module key, its
//! role, type, default, unit, limits and doc line, and its names in
//! bark-pulse (flag and TOML key) and in the `bark` CLI.
//!
//! The front ends parse with this table or are checked against it: the
//! PipeWire modules' arguments and their `module.usage`, bark-pulse's flags
//! and TOML keys are generated from it; the CLI's clap flags use its
//! parsers and a test compares their names and defaults with it. So all of
//! them accept and refuse the same values with the same message, and the
//! core ([`crate::Sender::new`], [`crate::Receiver::new`],
//! [`crate::AudioFormat::validate`]) checks its configs against the same
//! entries. A refusal names what was given and why:
//!
//! ```text
//! bark.delay.msec = 3000: must be within -2000..=2000 ms     (module argument, core)
//! --delay-msec 3000: must be within -2000..=2000 ms          (bark-pulse flag)
//! source.delay-msec = 3000: must be within -2000..=2000 ms   (bark-pulse TOML)
//! invalid value '3000' for '--delay-msec <MS>': must be within -2000..=2000 ms   (bark CLI)
//! ```

use crate::format::{SampleFormat, MAX_CHANNELS, MAX_RATE, MIN_RATE};
use crate::protocol::{AUDIO_HEADER_LEN, DEFAULT_MTU, IP_UDP_OVERHEAD};
use crate::Error;
use std::borrow::Cow;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Default multicast group: organization-local scope (239.255.0.0/16,
/// RFC 2365), which routers keep inside the site. "66" is for "BB" (Bark).
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 66, 66);
/// [`DEFAULT_GROUP`] as text (the default of `destination.ip`, a list).
pub const DEFAULT_GROUP_TEXT: &str = "239.255.66.66";
/// Default UDP port of the group.
pub const DEFAULT_PORT: u16 = 1530;
/// Default multicast TTL, hops: 1 keeps packets on the local link.
pub const DEFAULT_TTL: u32 = 1;
/// Default stream rate, Hz.
pub const DEFAULT_RATE: u32 = 48_000;
/// Default channel count (stereo).
pub const DEFAULT_CHANNELS: u8 = 2;
/// Smallest `net.mtu`, bytes (168): IP and UDP headers, the audio header,
/// one frame of the widest format (8 channels of F32) and the
/// authentication trailer, so that every format fits at least one frame
/// per packet, sealed or not.
pub const MIN_MTU: usize =
    IP_UDP_OVERHEAD + AUDIO_HEADER_LEN + 4 * MAX_CHANNELS as usize + crate::auth::OVERHEAD;
/// Largest `net.mtu`, bytes: 65 507, the largest UDP payload IPv4 carries.
pub const MAX_MTU: usize = 65_507;
/// Largest latency, ns (2 s), as a base (`sess.latency.msec`), as the most
/// the session latency may rise to (`bark.latency.max-msec`) and as a
/// receiver's override: a receiver's ring holds 2.5 s of audio
/// ([`crate::receiver`]), the latency plus headroom for late packets, so
/// no receiver can play later than this. `bark.delay.msec` is limited to
/// ± the same.
pub const MAX_LATENCY_NS: u64 = 2_000_000_000;
const MAX_LATENCY_MS: f64 = (MAX_LATENCY_NS / 1_000_000) as f64;

/// The two roles a setting can belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The sender: `libpipewire-module-bark-sink`, `bark-pulse sink`,
    /// `bark stream`.
    Sink,
    /// The receiver: `libpipewire-module-bark-source`, `bark-pulse source`,
    /// `bark receive`.
    Source,
}

impl Role {
    /// `sink` or `source`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Sink => "sink",
            Role::Source => "source",
        }
    }
}

/// [`Setting::roles`] of a sender-only setting.
pub const SINK: &[Role] = &[Role::Sink];
/// [`Setting::roles`] of a receiver-only setting.
pub const SOURCE: &[Role] = &[Role::Source];
/// [`Setting::roles`] of a setting both roles have.
pub const BOTH: &[Role] = &[Role::Sink, Role::Source];

/// What to do with an IPv4 address setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpUse {
    /// Any address (a local address to bind to).
    Any,
    /// Datagrams go to it: not 0.0.0.0, not the broadcast address.
    Send,
    /// A group to join or a local address to listen on: not broadcast.
    Listen,
}

/// The type of a setting, with its limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// Text. With a default it must not be empty; without one, empty is
    /// the same as unset.
    Text,
    /// A whole number within `min..=max`.
    Int {
        /// Smallest accepted.
        min: i64,
        /// Largest accepted.
        max: i64,
    },
    /// Milliseconds, a decimal number within `min..=max`; kept as ns.
    Msec {
        /// Smallest accepted, ms.
        min: f64,
        /// Largest accepted, ms.
        max: f64,
    },
    /// `true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Bool,
    /// An IPv4 address; empty is the same as unset.
    Ipv4(IpUse),
    /// One of these words, in any case; kept in the spelling listed.
    Choice(&'static [&'static str]),
    /// A wire sample format ([`SampleFormat::parse`]).
    Sample,
    /// A unicast IPv4 address and port (`192.168.1.10:4010`) to send to,
    /// kept as text; empty is the same as unset.
    Ipv4Port,
    /// Where a sender sends: one to `1 + MAX_LISTED` IPv4 addresses,
    /// blank- or comma-separated (a PipeWire array's `[ ]` and quotes
    /// allowed), at most one of them a multicast group; kept as text, the
    /// group first ([`destinations`]); empty is the default.
    Destinations,
    /// Which of a stream's channels a receiver plays
    /// ([`crate::channels::Selection`]: `all`, `mono`, `[ FL ]`); kept as
    /// text in its canonical spelling; empty is the default.
    Channels,
}

/// `pub fn NAME(&self) -> Option<T>`: the value of variant `VARIANT(T)`.
macro_rules! accessors {
    ($($(#[$doc:meta])* $name:ident: $variant:ident($t:ty);)*) => {$(
        $(#[$doc])*
        pub fn $name(&self) -> Option<$t> {
            match self {
                Value::$variant(v) => Some(*v),
                _ => None,
            }
        }
    )*};
}

/// A setting's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Not set, and no default: the setting's [`Setting::unset`] applies.
    Unset,
    /// Text, or the listed spelling of a [`Kind::Choice`].
    Text(Cow<'static, str>),
    /// A whole number.
    Int(i64),
    /// A duration given in ms, ns.
    Ns(i64),
    /// A truth value.
    Bool(bool),
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// A wire sample format.
    Sample(SampleFormat),
}

impl Value {
    /// The text, if any.
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }
    /// A duration of `ns` (saturating: anything past `i64::MAX` is out of
    /// every limit anyway).
    pub fn ns_u64(ns: u64) -> Value {
        Value::Ns(i64::try_from(ns).unwrap_or(i64::MAX))
    }
    accessors! {
        /// The whole number, if this is one.
        int: Int(i64);
        /// The duration, ns, if this is one.
        ns: Ns(i64);
        /// The truth value, if this is one.
        bool: Bool(bool);
        /// The address, if this is one.
        ipv4: Ipv4(Ipv4Addr);
        /// The sample format, if this is one.
        sample: Sample(SampleFormat);
    }
}

/// As a user writes it: durations in ms, formats as `F32`; unset is empty.
impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Unset => Ok(()),
            Value::Text(t) => f.write_str(t),
            Value::Int(i) => write!(f, "{i}"),
            Value::Ns(n) => write!(f, "{}", *n as f64 / 1e6),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Ipv4(a) => write!(f, "{a}"),
            Value::Sample(s) => f.write_str(s.name().trim_end_matches("LE")),
        }
    }
}

/// One setting of one or both roles.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    /// The PipeWire module argument (`bark.delay.msec`); the setting's
    /// name in core messages. Settings of one front end only (bark-pulse's
    /// `server`) use that front end's name.
    pub key: &'static str,
    /// The roles that have it.
    pub roles: &'static [Role],
    /// Type and limits.
    pub kind: Kind,
    /// The value when none is given ([`Value::Unset`]: none).
    pub default: Value,
    /// What no value means when there is no default ("follow the sender").
    pub unset: &'static str,
    /// Unit of numbers, shown after the limits (`ms`, `Hz`); may be empty.
    pub unit: &'static str,
    /// One line saying what it does, lower case, no full stop.
    pub doc: &'static str,
    /// bark-pulse's flag (`--NAME`) and TOML key (`[sink]`/`[source]`
    /// `NAME = ...`), where it has the setting.
    pub pulse: Option<&'static str>,
    /// The `bark` CLI's flag (`--NAME`) in `bark stream` (sink) or
    /// `bark receive` (source), where it has the setting.
    pub cli: Option<&'static str>,
}

impl Setting {
    /// A setting with key, roles, kind, default and doc; no unit, no
    /// front-end names (the builders below add them).
    pub const fn new(
        key: &'static str,
        roles: &'static [Role],
        kind: Kind,
        default: Value,
        doc: &'static str,
    ) -> Setting {
        Setting {
            key,
            roles,
            kind,
            default,
            unset: "",
            unit: "",
            doc,
            pulse: None,
            cli: None,
        }
    }

    /// The same setting with `unit`.
    pub const fn unit(mut self, unit: &'static str) -> Self {
        self.unit = unit;
        self
    }
    /// The same setting, meaning `unset` when not given (no default).
    pub const fn unset(mut self, unset: &'static str) -> Self {
        self.unset = unset;
        self
    }
    /// The same setting with bark-pulse's name `name`.
    pub const fn pulse(mut self, name: &'static str) -> Self {
        self.pulse = Some(name);
        self
    }
    /// The same setting with the CLI's flag name `name`.
    pub const fn cli(mut self, name: &'static str) -> Self {
        self.cli = Some(name);
        self
    }

    /// Whether `role` has this setting.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The limits as users read them: `-2000..=2000 ms`; empty for kinds
    /// without limits.
    pub fn limits(&self) -> String {
        let unit = if self.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", self.unit)
        };
        match self.kind {
            Kind::Int { min, max } => format!("{min}..={max}{unit}"),
            Kind::Msec { min, max } => format!("{min}..={max}{unit}"),
            Kind::Choice(c) => c.join(", "),
            Kind::Sample => "F32, S24, S16, OPUS".into(),
            _ => String::new(),
        }
    }

    /// One line of help: doc, limits, default
    /// (`extra delay of this receiver, may be negative; -2000..=2000 ms;
    /// default 0`).
    pub fn help(&self) -> String {
        let mut h = self.doc.to_owned();
        match (self.kind, self.limits()) {
            (_, l) if l.is_empty() => {}
            (Kind::Choice(_) | Kind::Sample, l) => h += &format!("; one of {l}"),
            (_, l) => h += &format!("; {l}"),
        }
        match &self.default {
            Value::Unset => h += &format!("; default {}", self.unset),
            Value::Text(t) if self.kind == Kind::Text => h += &format!("; default {t:?}"),
            d => h += &format!("; default {d}"),
        }
        h
    }

    /// Parses `text` as given for this setting and checks it: the value, or
    /// why it is refused (`must be within -2000..=2000 ms`). Surrounding
    /// blanks are ignored. Empty text is the default for addresses and for
    /// text without a default, and refused otherwise.
    ///
    /// # Errors
    /// The reason, to follow what was given in a message (see [`Given`]).
    pub fn parse(&self, text: &str) -> Result<Value, String> {
        let t = text.trim();
        if t.is_empty() {
            return match (self.kind, &self.default) {
                (Kind::Ipv4(_) | Kind::Ipv4Port | Kind::Destinations | Kind::Channels, d)
                | (Kind::Text, d @ Value::Unset) => Ok(d.clone()),
                (Kind::Text, _) => Err("must not be empty".into()),
                _ => Err(self.expected()),
            };
        }
        let v = match self.kind {
            Kind::Text => Value::Text(Cow::Owned(t.to_owned())),
            Kind::Int { .. } => Value::Int(t.parse().map_err(|_| self.expected())?),
            Kind::Msec { .. } => {
                let ms: f64 = t.parse().map_err(|_| self.expected())?;
                if !ms.is_finite() {
                    return Err(self.expected());
                }
                // Saturates far outside any limit, which then refuses it.
                Value::Ns((ms * 1e6).round() as i64)
            }
            Kind::Bool => match t.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Value::Bool(true),
                "false" | "0" | "no" | "off" => Value::Bool(false),
                _ => return Err(self.expected()),
            },
            Kind::Ipv4(_) => Value::Ipv4(t.parse().map_err(|_| self.expected())?),
            Kind::Choice(words) => words
                .iter()
                .find(|w| w.eq_ignore_ascii_case(t))
                .map(|w| Value::Text(Cow::Borrowed(w)))
                .ok_or_else(|| self.expected())?,
            Kind::Sample => Value::Sample(SampleFormat::parse(t).map_err(|_| self.expected())?),
            Kind::Ipv4Port => {
                let a: SocketAddrV4 = t.parse().map_err(|_| self.expected())?;
                let ip = a.ip();
                if a.port() == 0 || ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
                    return Err(self.expected());
                }
                Value::Text(Cow::Owned(a.to_string()))
            }
            Kind::Channels => Value::Text(Cow::Owned(
                crate::channels::Selection::parse(t)
                    .map_err(|e| e.trim_start_matches("bark.channels: ").to_owned())?
                    .to_string(),
            )),
            Kind::Destinations => {
                let (first, more) = destinations(t)?;
                let all: Vec<String> = std::iter::once(first)
                    .chain(more)
                    .map(|a| a.to_string())
                    .collect();
                Value::Text(Cow::Owned(all.join(" ")))
            }
        };
        self.check(&v).map(|()| v)
    }

    /// Checks a value of this setting against its limits.
    ///
    /// # Errors
    /// Why it is refused (`must be within -2000..=2000 ms`).
    pub fn check(&self, v: &Value) -> Result<(), String> {
        let within = || Err(format!("must be within {}", self.limits()));
        match (self.kind, v) {
            (Kind::Int { min, max }, Value::Int(i)) if !(min..=max).contains(i) => within(),
            (Kind::Msec { min, max }, Value::Ns(n))
                if (*n as f64) < min * 1e6 || (*n as f64) > max * 1e6 =>
            {
                within()
            }
            (Kind::Ipv4(IpUse::Send), Value::Ipv4(a)) if a.is_unspecified() || a.is_broadcast() => {
                Err("cannot be sent to: want a multicast group or a unicast address".into())
            }
            (Kind::Ipv4(IpUse::Listen), Value::Ipv4(a)) if a.is_broadcast() => {
                Err("must be a multicast group or a local address".into())
            }
            _ => Ok(()),
        }
    }

    /// Checks a value the core was configured with; the message names the
    /// setting as a module argument.
    ///
    /// # Errors
    /// [`Error::Config`]: `bark.delay.msec = 3000: must be within
    /// -2000..=2000 ms`.
    pub fn validate(&self, v: Value) -> Result<(), Error> {
        self.check(&v)
            .map_err(|why| Error::Config(format!("{} = {v}: {why}", self.key)))
    }

    /// Why text that does not parse is refused.
    fn expected(&self) -> String {
        match self.kind {
            Kind::Int { .. } | Kind::Msec { .. } => {
                format!("must be a number within {}", self.limits())
            }
            Kind::Bool => "must be true or false".into(),
            Kind::Ipv4(_) | Kind::Destinations => {
                "must be an IPv4 address (Bark speaks IPv4 only)".into()
            }
            Kind::Ipv4Port => {
                "must be a unicast IPv4 address and a port other than 0, e.g. 192.168.1.10:4010"
                    .into()
            }
            Kind::Choice(_) | Kind::Sample => format!("must be one of {}", self.limits()),
            Kind::Text => "must not be empty".into(),
            Kind::Channels => "must be all, mono or a list of positions such as [ FL ]".into(),
        }
    }
}

/// Parses a `destination.ip` list: the address sent to as the stream's
/// destination (the multicast group if one is listed, else the first) and
/// the unicast addresses sent copies, in the order given. Entries are
/// separated by blanks or commas; `[`, `]` and quotes are ignored, so a
/// PipeWire array (`[ 239.255.66.66 192.168.1.20 ]`) reads as written.
///
/// # Errors
/// Nothing listed; an entry that is not an IPv4 address, or is 0.0.0.0 or
/// 255.255.255.255; two multicast groups; an address listed twice; more
/// than `1 + MAX_LISTED` entries.
pub fn destinations(text: &str) -> Result<(Ipv4Addr, Vec<Ipv4Addr>), String> {
    use crate::fanout::MAX_LISTED;
    let mut all: Vec<Ipv4Addr> = Vec::new();
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '[' | ']' | '"' | '\''))
        .filter(|w| !w.is_empty())
        .collect();
    // A list names the entry it refuses; a single address is the setting.
    let which = |w: &str| {
        if words.len() > 1 {
            format!(" ({w})")
        } else {
            String::new()
        }
    };
    for &word in &words {
        let a: Ipv4Addr = word.parse().map_err(|_| {
            format!(
                "must be an IPv4 address (Bark speaks IPv4 only){}",
                which(word)
            )
        })?;
        if a.is_unspecified() || a.is_broadcast() {
            return Err(format!(
                "cannot be sent to: want a multicast group or a unicast address{}",
                which(word)
            ));
        }
        if all.contains(&a) {
            return Err(format!("{a} is listed twice"));
        }
        all.push(a);
    }
    if all.len() > 1 + MAX_LISTED {
        return Err(format!(
            "{} addresses: at most {} (one destination and {MAX_LISTED} more)",
            all.len(),
            1 + MAX_LISTED
        ));
    }
    let groups = all.iter().filter(|a| a.is_multicast()).count();
    if groups > 1 {
        return Err("at most one multicast group".into());
    }
    let first = all.iter().position(Ipv4Addr::is_multicast).unwrap_or(0);
    if all.is_empty() {
        return Err("must be an IPv4 address (Bark speaks IPv4 only)".into());
    }
    let group = all.remove(first);
    Ok((group, all))
}

const fn setting(
    key: &'static str,
    roles: &'static [Role],
    kind: Kind,
    default: Value,
    doc: &'static str,
) -> Setting {
    Setting::new(key, roles, kind, default, doc)
}

/// A duration default, from ns.
pub const fn ms(ns: u64) -> Value {
    Value::Ns(ns as i64)
}

/// A text default.
pub const fn text(t: &'static str) -> Value {
    Value::Text(Cow::Borrowed(t))
}

const PORT: Kind = Kind::Int {
    min: 1,
    max: 65_535,
};

const LATENCY: Kind = Kind::Msec {
    min: 0.0,
    max: MAX_LATENCY_MS,
};

/// Every setting the PipeWire modules take, with bark-pulse's and the CLI's
/// names for it. A key the two roles use differently has one entry per
/// role.
#[rustfmt::skip]
pub static TABLE: &[Setting] = &[
    setting("node.name", SINK, Kind::Text, text("bark_sink"), "node name (the sink's name)")
        .pulse("name")
        .cli("node-name"),
    setting("node.name", SOURCE, Kind::Text, text("bark_source"), "node name (the stream's name)")
        .pulse("name")
        .cli("node-name"),
    setting("node.description", SINK, Kind::Text, text("Bark Network"), "name shown to users (pavucontrol)")
        .pulse("description"),
    setting("node.description", SOURCE, Kind::Text, text("Bark Receiver"), "name shown to users (pavucontrol)")
        .pulse("description"),
    setting("media.class", SOURCE, Kind::Choice(&["Stream/Output/Audio", "Audio/Source"]), text("Stream/Output/Audio"),
        "a playback stream linked to the default sink, or a virtual source programs can record"),
    setting("audio.format", SINK, Kind::Sample, Value::Sample(SampleFormat::F32), "sample format on the wire (F32 is lossless; OPUS is 1/13 of its bandwidth at 160 kbit/s, 48 kHz, 1 or 2 channels)")
        .pulse("format")
        .cli("format"),
    setting("audio.rate", BOTH, Kind::Int { min: MIN_RATE as i64, max: MAX_RATE as i64 }, Value::Int(DEFAULT_RATE as i64),
        "sample rate of the sink and its stream (sender), of the output (receiver)")
        .unit("Hz")
        .pulse("rate")
        .cli("rate"),
    setting("audio.channels", BOTH, Kind::Int { min: 1, max: MAX_CHANNELS as i64 }, Value::Int(DEFAULT_CHANNELS as i64),
        "channels of the sink and its stream (sender), of the output (receiver)")
        .pulse("channels")
        .cli("channels"),
    setting("audio.position", BOTH, Kind::Text, Value::Unset, "channel map, e.g. [ FL FR ]")
        .unset("by channel count: [ FL FR ] for stereo"),
    setting("destination.ip", SINK, Kind::Destinations, Value::Text(Cow::Borrowed(DEFAULT_GROUP_TEXT)),
        "where audio and status go: a multicast group or a receiver's unicast IPv4, or a list of them (at most one group and 8 more, blank-separated): each gets every packet")
        .pulse("group")
        .cli("destination-ip"),
    setting("destination.port", SINK, PORT, Value::Int(DEFAULT_PORT as i64), "UDP port to send to")
        .pulse("port")
        .cli("port"),
    setting("source.ip", SINK, Kind::Ipv4(IpUse::Any), Value::Unset, "local IPv4 to send from")
        .unset("any, as the routing table says")
        .pulse("source-ip")
        .cli("source-ip"),
    setting("source.ip", SOURCE, Kind::Ipv4(IpUse::Listen), Value::Ipv4(DEFAULT_GROUP),
        "multicast group to join, or this host's IPv4 when the sender sends unicast to it")
        .pulse("group")
        .cli("source-ip"),
    setting("source.port", SOURCE, PORT, Value::Int(DEFAULT_PORT as i64), "UDP port to listen on")
        .pulse("port")
        .cli("port"),
    setting("bark.control.port", SINK, Kind::Int { min: 0, max: 65_535 }, Value::Int(0),
        "UDP port the sender takes time requests, NACKs and subscriptions on; 0 picks a free one (a receiver's bark.sender needs a fixed one)")
        .pulse("control-port")
        .cli("control-port"),
    setting("bark.command.port", BOTH, Kind::Int { min: 0, max: 65_535 }, Value::Int(0),
        "UDP port the node takes commands on (bark set, bark web: volume, mute, delay, name, stream); 0 picks a free one, which its status packets report")
        .pulse("command-port")
        .cli("command-port"),
    setting("bark.unicast", SOURCE, Kind::Bool, Value::Bool(false),
        "receive the stream unicast (Wi-Fi) from the sender of bark.stream found with DNS-SD: no address to give (bark.sender, when given, wins)")
        .pulse("unicast")
        .cli("unicast"),
    setting("bark.discovery", BOTH, Kind::Bool, Value::Bool(true),
        "advertise this node with DNS-SD (_bark._udp, mDNS) on the interface its audio uses, so that bark ls, bark set and bark web find it with no address given")
        .pulse("discovery")
        .cli("discovery"),
    setting("bark.sender", SOURCE, Kind::Ipv4Port, Value::Unset,
        "have the sender at this IPv4:port (its bark.control.port) send the stream to this receiver alone, unicast (Wi-Fi); a multicast source.ip is then not joined")
        .unset("none: listen on source.ip")
        .pulse("sender")
        .cli("sender"),
    setting("local.ifname", BOTH, Kind::Text, Value::Unset, "interface multicast leaves by (sender) or joins on (receiver), e.g. eth0")
        .unset("the routing table's choice")
        .pulse("interface")
        .cli("local-ifname"),
    setting("net.mtu", SINK, Kind::Int { min: MIN_MTU as i64, max: MAX_MTU as i64 }, Value::Int(DEFAULT_MTU as i64),
        "path MTU; no packet exceeds it (the least fits one 8-channel F32 frame, sealed)")
        .unit("bytes")
        .pulse("mtu")
        .cli("mtu"),
    setting("net.ttl", SINK, Kind::Int { min: 0, max: 255 }, Value::Int(DEFAULT_TTL as i64),
        "multicast TTL: 1 keeps packets on the local link, 0 on this host")
        .unit("hops")
        .pulse("ttl")
        .cli("ttl"),
    setting("net.loop", SINK, Kind::Bool, Value::Bool(true), "loop multicast back to receivers on this host")
        .pulse("loop")
        .cli("multicast-loop"),
    setting("sess.latency.msec", SINK, LATENCY, ms(crate::sender::DEFAULT_LATENCY_NS),
        "receivers play each frame this long after it entered the sink (at most 2 s: what a receiver's buffer holds)")
        .unit("ms")
        .pulse("latency-msec")
        .cli("latency-msec"),
    setting("sess.latency.msec", SOURCE, LATENCY, Value::Unset,
        "play this long after the sender instead of the sender's latency (at most 2 s: what a receiver's buffer holds)")
        .unit("ms")
        .unset("follow the sender")
        .pulse("latency-msec")
        .cli("latency-msec"),
    setting("bark.latency.min-msec", SOURCE, LATENCY, Value::Unset,
        "the least latency this receiver asks of the session; the sender raises every receiver's to it (up to its bark.latency.max-msec), so all stay in sync")
        .unit("ms")
        .unset("none; 250 with bark.profile = wifi")
        .pulse("latency-min-msec")
        .cli("latency-min-msec"),
    setting("bark.profile", SOURCE, Kind::Choice(&["lan", "wifi"]), text("lan"),
        "wifi: a latency that rides out Wi-Fi's 100-200 ms stalls (bark.latency.min-msec 250); give bark.sender too, for unicast")
        .pulse("profile")
        .cli("profile"),
    setting("bark.latency.max-msec", SINK, LATENCY, ms(crate::sender::DEFAULT_MAX_LATENCY_NS),
        "the most the latency may rise to so that every receiver plays in time; equal to sess.latency.msec pins it (at most 2 s: what a receiver's buffer holds)")
        .unit("ms")
        .cli("latency-max-msec"),
    setting("bark.stream", SINK, Kind::Text, text("default"), "stream name; receivers may follow only it")
        .pulse("stream")
        .cli("stream"),
    setting("bark.stream", SOURCE, Kind::Text, Value::Unset, "follow only the stream of this name")
        .unset("the highest-priority, newest stream")
        .pulse("stream")
        .cli("stream"),
    setting("bark.priority", SINK, Kind::Int { min: i8::MIN as i64, max: i8::MAX as i64 }, Value::Int(0),
        "stream priority; receivers follow the highest")
        .pulse("priority")
        .cli("priority"),
    setting("bark.channels", SOURCE, Kind::Channels, text("all"),
        "which of the stream's channels to play: all (mixed to this output's audio.position), mono (a downmix of all), or a list such as [ FL ] (one side of a stereo pair) or [ RL RR ] (the rears of a surround set)")
        .pulse("play-channels")
        .cli("play-channels"),
    setting("bark.delay.msec", SOURCE, Kind::Msec { min: -MAX_LATENCY_MS, max: MAX_LATENCY_MS }, ms(0),
        "extra delay of this receiver, may be negative (speakers, DSPs, room distance)")
        .unit("ms")
        .pulse("delay-msec")
        .cli("delay-msec"),
    setting("bark.resampler", SOURCE, Kind::Choice(&["core", "pipewire"]), text("core"),
        "drift control through Bark's interpolator or PipeWire's adapter resampler"),
    setting("bark.key-file", BOTH, Kind::Text, Value::Unset,
        "pre-shared key file (bark keygen), mode 0600: seal every datagram, accept only sealed ones")
        .unset("none: open, see docs/SECURITY.md")
        .pulse("key-file")
        .cli("key-file"),
    setting("bark.encrypt", SINK, Kind::Bool, Value::Bool(false), "also encrypt the audio; needs bark.key-file")
        .pulse("encrypt")
        .cli("encrypt"),
    setting("bark.repair", BOTH, Kind::Bool, Value::Bool(true), "resend lost packets on request: the sink keeps its recent packets, the source asks for what it misses (docs/design/REPAIR.md)")
        .pulse("repair")
        .cli("repair"),
    setting("bark.fec", SINK, Kind::Choice(crate::fec::FEC_CHOICES), text("off"),
        "FEC for multicast to many: k:m sends m repair packets per k audio packets (4:1 adds 25 % and fits a 40 ms latency; longer blocks need more latency; net.mtu ≤ 1500)")
        .pulse("fec")
        .cli("fec"),
    setting("bark.fec", SOURCE, Kind::Bool, Value::Bool(false),
        "rebuild lost packets from the sender's FEC repair packets (bark.fec on the sink); the codec's tables take 8 MiB, so off unless the sink sends them")
        .pulse("fec")
        .cli("fec"),
    setting("bark.opus.bitrate", SINK, Kind::Int { min: 6, max: 510 }, Value::Int(crate::opus::DEFAULT_OPUS_KBPS as i64),
        "Opus bitrate with audio.format = OPUS (160 is near-transparent stereo music, 1/13 of F32 on the wire)")
        .unit("kbit/s")
        .pulse("opus-bitrate")
        .cli("opus-bitrate"),
    setting("bark.opus.frame-msec", SINK, Kind::Choice(&["2.5", "5", "10", "20"]), text("10"),
        "Opus frame with audio.format = OPUS: shorter frames leave sooner but cost more header bytes (10 fits a 40 ms latency with 160 kbit/s at 1/13 of F32)")
        .unit("ms")
        .pulse("opus-frame-msec")
        .cli("opus-frame-msec"),
    setting("stream.props", BOTH, Kind::Text, Value::Unset, "extra stream properties, e.g. { node.latency = 256/48000 }")
        .unset("none"),
];

/// The session latency a Wi-Fi receiver asks for, ns (250 ms): Wi-Fi
/// stalls last 20–200 ms (power save until the next DTIM beacon, a scan,
/// retries under interference); 250 ms rides them out and leaves about
/// 50 ms to repair a 150 ms outage (docs/design/REPAIR.md §5).
pub const WIFI_LATENCY_FLOOR_NS: u64 = 250_000_000;

/// A receiver's latency floor, ns: `min_ns` (`bark.latency.min-msec`) if
/// given, else [`WIFI_LATENCY_FLOOR_NS`] for `profile` `wifi`, else 0.
pub fn latency_floor_ns(min_ns: Option<u64>, profile: &str) -> u64 {
    match (min_ns, profile) {
        (Some(ns), _) => ns,
        (None, "wifi") => WIFI_LATENCY_FLOOR_NS,
        _ => 0,
    }
}

/// Where a receiver listens and for whom ([`Resolved::listen`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen {
    /// The socket's address: the group, or any local address when the
    /// receiver subscribes for unicast ([`listen_addr`]).
    pub group: SocketAddrV4,
    /// It finds its sender by stream name (`bark.unicast` without
    /// `bark.sender`).
    pub unicast: bool,
    /// `source.ip` and `source.port` as configured.
    pub configured_group: SocketAddrV4,
    /// The sender it subscribes to (`bark.sender`).
    pub sender: Option<SocketAddrV4>,
}

/// Where a receiver listens: `source_ip`:`port`, except that a unicast
/// one (`unicast`: a `bark.sender`, or `bark.unicast`; delivery by
/// subscription, [`crate::subscribe`]) joins no group: a multicast
/// `source_ip` becomes any local address. (The subscribed stream arrives
/// on the receiver's control socket, where its Subscribe came from; this
/// socket then only hears unicast sent to `port`.)
pub fn listen_addr(source_ip: Ipv4Addr, port: u16, unicast: bool) -> SocketAddrV4 {
    if unicast && source_ip.is_multicast() {
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)
    } else {
        SocketAddrV4::new(source_ip, port)
    }
}

/// Where a user gives settings, which decides how a message names one:
/// `net.ttl` in a PipeWire module's arguments, `ttl` in bark-pulse's flags
/// and file, `--ttl` on the `bark` command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontEnd {
    /// PipeWire module arguments ([`Setting::key`]).
    PipeWire,
    /// bark-pulse's flags and TOML keys ([`Setting::pulse`]).
    Pulse,
    /// The `bark` CLI's flags ([`Setting::cli`]).
    Cli,
}

impl FrontEnd {
    /// How this front end names the setting `key` of `role`: the key, the
    /// bark-pulse name or `--FLAG`, falling back to the key where this
    /// front end lacks the setting.
    ///
    /// # Panics
    /// If the table has no such setting (see [`find`]).
    pub fn name(self, role: Role, key: &str) -> String {
        let s = find(role, key);
        match self {
            FrontEnd::Pulse => s.pulse.unwrap_or(s.key).to_owned(),
            FrontEnd::Cli => s.cli.map_or_else(|| s.key.to_owned(), |f| format!("--{f}")),
            FrontEnd::PipeWire => s.key.to_owned(),
        }
    }
}

/// The entry of `key` for `role` in [`TABLE`].
///
/// # Panics
/// If there is none: a key the code names, not one users give.
pub fn find(role: Role, key: &str) -> &'static Setting {
    find_in(TABLE, role, key).unwrap_or_else(|| panic!("no setting {key} for the {role:?}"))
}

fn find_in(table: &'static [Setting], role: Role, key: &str) -> Option<&'static Setting> {
    table.iter().find(|s| s.key == key && s.has(role))
}

/// A value as given, and how the user named it: a flag (`--delay-msec`)
/// or a key (`bark.delay.msec`, `source.delay-msec`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Given {
    /// The text given.
    pub text: String,
    /// The flag (starting with `--`) or key it was given as.
    pub name: String,
}

impl Given {
    /// What was given, as a message begins: `--delay-msec 3000` for a
    /// flag, `bark.delay.msec = 3000` for a key (quoted when empty or
    /// holding blanks).
    pub fn shown(&self) -> String {
        let t = self.text.trim();
        let v = if t.is_empty() || t.contains(char::is_whitespace) {
            format!("{t:?}")
        } else {
            t.to_owned()
        };
        if self.name.starts_with("--") {
            format!("{} {v}", self.name)
        } else {
            format!("{} = {v}", self.name)
        }
    }
}

/// `pub fn NAME(&self, key) -> T`: the value of `key`, which has a
/// default, by [`Value`]'s accessor of the same name.
macro_rules! getters {
    ($($(#[$doc:meta])* $name:ident -> $t:ty;)*) => {$(
        $(#[$doc])*
        pub fn $name(&self, key: &str) -> $t {
            self.typed(key, Value::$name)
        }
    )*};
}

/// Where and how a sender's datagrams go: `destination.ip` and
/// `destination.port`, `source.ip`, `local.ifname`, `net.ttl` (hops) and
/// `net.loop`, as every front end's sender opens its socket from them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendPath {
    /// Where audio and status packets go: a multicast group or one
    /// receiver's unicast address (`destination.ip`'s first entry).
    pub destination: SocketAddrV4,
    /// Unicast addresses sent a copy of each (`destination.ip`'s further
    /// entries; [`crate::endpoint::SenderEndpoint::list_destinations`]),
    /// at most [`crate::fanout::MAX_LISTED`].
    pub copies: Vec<SocketAddrV4>,
    /// Local address to bind and send multicast from; `None`: any.
    pub source_ip: Option<Ipv4Addr>,
    /// Interface multicast leaves by; `None`: the routing table's choice.
    pub ifname: Option<String>,
    /// Multicast TTL (IP TTL to a unicast destination), hops.
    pub ttl: u32,
    /// Port to bind, where receivers send time requests, NACKs and
    /// subscriptions (`bark.control.port`); 0: any free one.
    pub control_port: u16,
    /// Whether multicast loops back to receivers on this host.
    pub multicast_loop: bool,
}

impl SendPath {
    /// Where the stream goes, for a log line: `239.255.66.66:1530`, or
    /// `239.255.66.66:1530 and 10.0.0.5:1530, 10.0.0.6:1530` with copies.
    pub fn targets(&self) -> String {
        let copies: Vec<String> = self.copies.iter().map(ToString::to_string).collect();
        if copies.is_empty() {
            self.destination.to_string()
        } else {
            format!("{} and {}", self.destination, copies.join(", "))
        }
    }
}

/// One role's settings, each given or defaulted and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    entries: Vec<(&'static Setting, Value, Option<Given>)>,
}

/// Resolves every setting of `role` in `tables` ([`TABLE`], and a front
/// end's own settings): what `given` returns for it, parsed and checked,
/// else its default.
///
/// # Errors
/// The first refusal: `bark.delay.msec = 3000: must be within
/// -2000..=2000 ms` (named as `given` named it).
pub fn resolve(
    role: Role,
    tables: &[&'static [Setting]],
    given: impl Fn(&Setting) -> Option<Given>,
) -> Result<Resolved, String> {
    let mut entries = Vec::new();
    for s in tables.iter().flat_map(|t| t.iter()).filter(|s| s.has(role)) {
        let g = given(s);
        let value = match &g {
            None => s.default.clone(),
            Some(g) => s
                .parse(&g.text)
                .map_err(|why| format!("{}: {why}", g.shown()))?,
        };
        entries.push((s, value, g));
    }
    Ok(Resolved { entries })
}

impl Resolved {
    fn value(&self, key: &str) -> &Value {
        self.entries
            .iter()
            .find(|(s, ..)| s.key == key)
            .map(|(_, v, _)| v)
            .unwrap_or_else(|| panic!("setting {key} was not resolved"))
    }

    fn typed<T>(&self, key: &str, get: impl Fn(&Value) -> Option<T>) -> T {
        get(self.value(key)).unwrap_or_else(|| panic!("setting {key} is not of that type"))
    }

    /// Text with a default (or a choice).
    pub fn text(&self, key: &str) -> String {
        self.typed(key, |v| v.text().map(str::to_owned))
    }
    /// Text without a default: `None` when not given.
    pub fn opt_text(&self, key: &str) -> Option<String> {
        self.value(key).text().map(str::to_owned)
    }
    /// A whole number, in the type it is kept in (its limits fit).
    pub fn int<T: TryFrom<i64>>(&self, key: &str) -> T {
        self.typed(key, |v| v.int().and_then(|i| T::try_from(i).ok()))
    }
    getters! {
        /// A duration with a default, ns.
        ns -> i64;
        /// A truth value.
        bool -> bool;
        /// An address with a default.
        ipv4 -> Ipv4Addr;
        /// A sample format.
        sample -> SampleFormat;
    }
    /// A setting without a default, by `get` ([`Value::ns`],
    /// [`Value::ipv4`]): `None` when not given.
    pub fn opt<T>(&self, key: &str, get: fn(&Value) -> Option<T>) -> Option<T> {
        get(self.value(key))
    }
    /// A sender's [`SendPath`] from its network settings.
    ///
    /// # Panics
    /// If these are not a sender's settings (a programming error).
    pub fn send_path(&self) -> SendPath {
        let port = self.int("destination.port");
        let (first, more) =
            destinations(&self.text("destination.ip")).expect("checked when it was parsed");
        SendPath {
            destination: SocketAddrV4::new(first, port),
            copies: more
                .into_iter()
                .map(|a| SocketAddrV4::new(a, port))
                .collect(),
            source_ip: self.opt("source.ip", Value::ipv4),
            ifname: self.opt_text("local.ifname"),
            ttl: self.int("net.ttl"),
            control_port: self.int("bark.control.port"),
            multicast_loop: self.bool("net.loop"),
        }
    }
    /// A receiver's latency floor, ns: `bark.latency.min-msec`, or what its
    /// `bark.profile` implies ([`latency_floor_ns`]).
    ///
    /// # Panics
    /// If these are not a receiver's settings (a programming error).
    pub fn latency_floor_ns(&self) -> u64 {
        latency_floor_ns(
            self.opt("bark.latency.min-msec", Value::ns)
                .map(|n| n.max(0) as u64),
            &self.text("bark.profile"),
        )
    }
    /// A sender's `bark.fec` as `(k, m)`; `None`: off.
    ///
    /// # Panics
    /// If these are not a sender's settings (a programming error).
    pub fn fec(&self) -> Option<(u8, u8)> {
        crate::fec::parse_shape(&self.text("bark.fec"))
    }
    /// A sender's Opus encoder settings (`bark.opus.bitrate`,
    /// `bark.opus.frame-msec`), used with `audio.format = OPUS`.
    ///
    /// # Panics
    /// If these are not a sender's settings (a programming error).
    pub fn opus(&self) -> crate::opus::OpusConfig {
        crate::opus::OpusConfig::new(
            self.int("bark.opus.bitrate"),
            &self.text("bark.opus.frame-msec"),
        )
    }
    /// A receiver's `bark.fec`: whether it rebuilds from repair packets.
    ///
    /// # Panics
    /// If these are not a receiver's settings (a programming error).
    pub fn fec_receive(&self) -> bool {
        self.bool("bark.fec")
    }
    /// A receiver's `bark.sender`, if given (checked when parsed).
    ///
    /// # Panics
    /// If these are not a receiver's settings (a programming error).
    pub fn sender(&self) -> Option<SocketAddrV4> {
        self.opt_text("bark.sender").and_then(|t| t.parse().ok())
    }
    /// A receiver's listening ([`Listen`]), one reading of `source.ip`,
    /// `source.port`, `bark.sender` and `bark.unicast` for every front end.
    ///
    /// # Panics
    /// If these are not a receiver's settings (a programming error).
    pub fn listen(&self) -> Listen {
        let (ip, port) = (self.ipv4("source.ip"), self.int("source.port"));
        let sender = self.sender();
        let unicast = self.bool("bark.unicast");
        Listen {
            group: listen_addr(ip, port, sender.is_some() || unicast),
            unicast: sender.is_none() && unicast,
            configured_group: SocketAddrV4::new(ip, port),
            sender,
        }
    }
    /// How `key` was given, if it was (for a front end's own follow-up
    /// checks to name it).
    pub fn given(&self, key: &str) -> Option<&Given> {
        self.entries
            .iter()
            .find(|(s, ..)| s.key == key)
            .and_then(|(_, _, g)| g.as_ref())
    }

    /// Every setting with its value as `name` names it (settings it names
    /// `None` are left out): `group=239.255.66.66 port=1530 ...`, unset ones
    /// by what that means.
    pub fn describe(&self, name: impl Fn(&Setting) -> Option<&'static str>) -> String {
        let mut out = Vec::new();
        for (s, v, _) in &self.entries {
            if let Some(n) = name(s) {
                let v = match v {
                    Value::Unset => format!("({})", s.unset),
                    Value::Text(t) if t.contains(char::is_whitespace) => format!("{t:?}"),
                    v => v.to_string(),
                };
                out.push(format!("{n}={v}"));
            }
        }
        out.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_once_per_role_with_consistent_defaults() {
        for role in [Role::Sink, Role::Source] {
            let mut keys: Vec<&str> = TABLE
                .iter()
                .filter(|s| s.has(role))
                .map(|s| s.key)
                .collect();
            let n = keys.len();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), n, "a key twice for the {role:?}");
        }
        for s in TABLE {
            assert!(!s.roles.is_empty() && !s.doc.is_empty(), "{}", s.key);
            // A default passes its own check; no default says what unset means.
            match &s.default {
                Value::Unset => assert!(!s.unset.is_empty(), "{}", s.key),
                d => {
                    s.check(d).unwrap_or_else(|e| panic!("{}: {e}", s.key));
                    assert_eq!(&s.parse(&d.to_string()).unwrap(), d, "{}", s.key);
                }
            }
        }
    }

    #[test]
    fn refusals_name_the_limits() {
        let delay = find(Role::Source, "bark.delay.msec");
        assert_eq!(delay.parse("-1.5"), Ok(Value::Ns(-1_500_000)));
        assert_eq!(
            delay.parse("3000").unwrap_err(),
            "must be within -2000..=2000 ms"
        );
        assert_eq!(
            delay.parse("soon").unwrap_err(),
            "must be a number within -2000..=2000 ms"
        );
        assert_eq!(
            delay.validate(Value::Ns(3_000_000_000)).unwrap_err(),
            Error::Config("bark.delay.msec = 3000: must be within -2000..=2000 ms".into())
        );
        let rate = find(Role::Sink, "audio.rate");
        assert_eq!(
            rate.parse("1000").unwrap_err(),
            "must be within 8000..=192000 Hz"
        );
        let fmt = find(Role::Sink, "audio.format");
        assert_eq!(fmt.parse("s16le"), Ok(Value::Sample(SampleFormat::S16)));
        assert_eq!(fmt.parse("opus"), Ok(Value::Sample(SampleFormat::Opus)));
        assert_eq!(
            fmt.parse("U8").unwrap_err(),
            "must be one of F32, S24, S16, OPUS"
        );
        let class = find(Role::Source, "media.class");
        assert_eq!(class.parse("audio/source"), Ok(text("Audio/Source")));
        let dst = find(Role::Sink, "destination.ip");
        assert!(dst
            .parse("0.0.0.0")
            .unwrap_err()
            .contains("cannot be sent to"));
        assert_eq!(dst.parse(" "), Ok(text(DEFAULT_GROUP_TEXT)));
        // A list: the group first, the copies in the order given.
        assert_eq!(
            dst.parse("[ 10.0.0.5, 239.255.66.67 \"10.0.0.6\" ]"),
            Ok(text("239.255.66.67 10.0.0.5 10.0.0.6"))
        );
        assert!(dst
            .parse("239.1.1.1 239.1.1.2")
            .unwrap_err()
            .contains("one multicast group"));
        assert!(dst
            .parse("10.0.0.5 10.0.0.5")
            .unwrap_err()
            .contains("twice"));
        assert!(dst
            .parse("10.0.0.1 10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5 10.0.0.6 10.0.0.7 10.0.0.8 10.0.0.9 10.0.0.10")
            .unwrap_err()
            .contains("at most 9"));
        assert!(dst
            .parse("10.0.0.5 0.0.0.0")
            .unwrap_err()
            .contains("cannot be sent to"));
        assert!(dst.parse("::1").unwrap_err().contains("IPv4 only"));
        let name = find(Role::Sink, "node.name");
        assert_eq!(name.parse("").unwrap_err(), "must not be empty");
        assert_eq!(
            find(Role::Source, "bark.stream").parse(""),
            Ok(Value::Unset)
        );
        let lp = find(Role::Sink, "net.loop");
        assert_eq!(lp.parse("Off"), Ok(Value::Bool(false)));
        assert_eq!(lp.parse("maybe").unwrap_err(), "must be true or false");
        let mtu = find(Role::Sink, "net.mtu");
        assert_eq!(
            mtu.parse("50").unwrap_err(),
            "must be within 168..=65507 bytes"
        );
    }

    #[test]
    fn the_latency_limits_agree_across_roles() {
        // A receiver cannot hold more than 2 s: no sender may ask for more.
        for (role, key) in [
            (Role::Sink, "sess.latency.msec"),
            (Role::Sink, "bark.latency.max-msec"),
            (Role::Source, "sess.latency.msec"),
        ] {
            let s = find(role, key);
            assert!(s.parse("2000").is_ok());
            assert_eq!(
                s.parse("2000.001").unwrap_err(),
                "must be within 0..=2000 ms",
                "{key}"
            );
        }
    }

    #[test]
    fn resolve_names_what_was_given() {
        let given = |s: &Setting| match s.key {
            "bark.stream" => Some(Given {
                text: "kitchen".into(),
                name: "--stream".into(),
            }),
            "bark.delay.msec" => Some(Given {
                text: "-1.5".into(),
                name: "source.delay-msec".into(),
            }),
            _ => None,
        };
        let r = resolve(Role::Source, &[TABLE], given).unwrap();
        assert_eq!(r.opt_text("bark.stream").as_deref(), Some("kitchen"));
        assert_eq!(r.ns("bark.delay.msec"), -1_500_000);
        assert_eq!(r.opt("sess.latency.msec", Value::ns), None);
        assert_eq!(r.int::<u32>("audio.rate"), 48_000);
        assert_eq!(r.ipv4("source.ip"), DEFAULT_GROUP);
        assert_eq!(r.given("bark.stream").unwrap().shown(), "--stream kitchen");
        let d = r.describe(|s| s.pulse);
        assert!(
            d.starts_with("name=bark_source description=\"Bark Receiver\" rate=48000"),
            "{d}"
        );
        assert!(
            d.contains(" delay-msec=-1.5 ") && !d.contains("media.class"),
            "{d}"
        );
        let e = resolve(Role::Source, &[TABLE], |s| {
            (s.key == "audio.channels").then(|| Given {
                text: "9".into(),
                name: "audio.channels".into(),
            })
        })
        .unwrap_err();
        assert_eq!(e, "audio.channels = 9: must be within 1..=8");
    }
}

//! Module arguments: parsing and validation of what users write in
//! `context.modules = [ { name = libpipewire-module-bark-... args = { ... } } ]`.
//!
//! The arguments, their defaults, limits and refusals, and the
//! `module.usage` text all come from the settings table,
//! [`bark_core::settings`], which bark-pulse and the `bark` CLI share.
//! Everything is checked here, before any socket or stream exists, so that
//! bad arguments give one clear error and a failed load leaves nothing behind.

use crate::format;
use bark_core::format::AudioFormat;
use bark_core::settings::{self, Given, Resolved, Role, SendPath, Value};
use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::OnceLock;

pub use bark_core::settings::{DEFAULT_GROUP, DEFAULT_PORT, DEFAULT_TTL};

/// Where argument values come from (PipeWire properties, or a map in tests).
pub trait Lookup {
    /// The value of `key`, if set.
    fn get(&self, key: &str) -> Option<&str>;
    /// All keys that are set.
    fn keys(&self) -> Vec<String>;
}

impl Lookup for crate::ffi::Properties {
    fn get(&self, key: &str) -> Option<&str> {
        crate::ffi::Properties::get(self, key)
    }
    fn keys(&self) -> Vec<String> {
        crate::ffi::Properties::keys(self)
    }
}

impl Lookup for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        HashMap::get(self, key).map(String::as_str)
    }
    fn keys(&self) -> Vec<String> {
        HashMap::keys(self).cloned().collect()
    }
}

/// Arguments of `libpipewire-module-bark-sink` (the sender).
#[derive(Clone, Debug, PartialEq)]
pub struct SinkArgs {
    /// `node.name`.
    pub node_name: String,
    /// `node.description`: what pavucontrol and `pactl list sinks` show.
    pub node_description: String,
    /// Wire format (`audio.format`), rate in Hz (`audio.rate`) and channels
    /// (`audio.channels`); the sink takes F32 at this rate and channel count.
    pub format: AudioFormat,
    /// SPA channel positions (`audio.position`), one per channel.
    pub positions: Vec<u32>,
    /// Where audio and status packets go and how (`destination.ip`,
    /// `destination.port`, `source.ip`, `local.ifname`, `net.ttl`,
    /// `net.loop`).
    pub net: SendPath,
    /// Path MTU, bytes (`net.mtu`).
    pub mtu: usize,
    /// Target latency, ns (`sess.latency.msec`).
    pub latency_ns: u64,
    /// The most the session latency may rise to so that every receiver
    /// plays in time, ns (`bark.latency.max-msec`; equal to
    /// `sess.latency.msec` pins it).
    pub max_latency_ns: u64,
    /// Stream name (`bark.stream`).
    pub stream: String,
    /// Stream priority (`bark.priority`).
    pub priority: i8,
    /// Extra stream properties, SPA-JSON object text (`stream.props`).
    pub stream_props: Option<String>,
    /// Pre-shared key file (`bark.key-file`): seal every datagram, accept
    /// only sealed ones. `None`: open (docs/SECURITY.md).
    pub key_file: Option<PathBuf>,
    /// Also encrypt the audio payload (`bark.encrypt`; needs a key file).
    pub encrypt: bool,
    /// Keep recent packets and resend them on request (`bark.repair`).
    pub repair: bool,
    /// FEC blocks `(k, m)` (`bark.fec`); `None`: off.
    pub fec: Option<(u8, u8)>,
    /// Opus encoder settings, with `audio.format = OPUS`
    /// (`bark.opus.bitrate`, `bark.opus.frame-msec`).
    pub opus: bark_core::opus::OpusConfig,
    /// UDP port for commands (`bark.command.port`; 0: any).
    pub command_port: u16,
    /// The settings a controller can change that the arguments give
    /// explicitly (`SET_*`): they win over the saved ones.
    pub given: u16,
    /// Advertise with DNS-SD (`bark.discovery`).
    pub discovery: bool,
}

/// How the receiver shows up in the graph (`media.class`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceClass {
    /// `Stream/Output/Audio`: a playback stream linked to the default sink.
    Playback,
    /// `Audio/Source`: a virtual source that programs can record.
    VirtualSource,
}

impl SourceClass {
    /// The `media.class` value.
    pub fn media_class(self) -> &'static str {
        match self {
            SourceClass::Playback => "Stream/Output/Audio",
            SourceClass::VirtualSource => "Audio/Source",
        }
    }
}

/// Which resampler applies the drift controller's rate (`bark.resampler`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resampler {
    /// Bark's own band-limited interpolator in the core slews the read
    /// position; the stream runs at a fixed rate (the default).
    Core,
    /// PipeWire's adapter resampler, steered through `SPA_IO_RateMatch`
    /// (as `module-rtp-source` does); the core renders at the nominal ratio
    /// against a smooth virtual clock and a rate-match loop keeps the real
    /// output on it. See [`bark_core::ratematch`].
    PipeWire,
}

impl Resampler {
    /// The argument value.
    pub fn name(self) -> &'static str {
        match self {
            Resampler::Core => "core",
            Resampler::PipeWire => "pipewire",
        }
    }
}

/// Arguments of `libpipewire-module-bark-source` (the receiver).
#[derive(Clone, Debug, PartialEq)]
pub struct SourceArgs {
    /// Group (or local unicast address) and port to listen on
    /// (`source.ip`, `source.port`; any local address instead of a group
    /// with `bark.sender`, see [`settings::listen_addr`]).
    pub group: SocketAddrV4,
    /// Sender to subscribe to for unicast delivery (`bark.sender`).
    pub sender: Option<SocketAddrV4>,
    /// Find the sender of its stream with DNS-SD and subscribe to it
    /// (`bark.unicast`, without `bark.sender`).
    pub unicast: bool,
    /// `source.ip`:`source.port` as given (where DNS-SD browses from:
    /// the interface of its route).
    pub configured_group: SocketAddrV4,
    /// The least latency it asks of the session, ns
    /// (`bark.latency.min-msec`, `bark.profile`).
    pub latency_floor_ns: u64,
    /// Interface to join the group on (`local.ifname`).
    pub ifname: Option<String>,
    /// Target latency override, ns (`sess.latency.msec`); `None` follows
    /// the sender.
    pub latency_ns: Option<u64>,
    /// Stream to follow (`bark.stream`); `None` follows the best one.
    pub stream: Option<String>,
    /// Extra per-receiver delay, ns, may be negative (`bark.delay.msec`).
    pub delay_ns: i64,
    /// `node.name`.
    pub node_name: String,
    /// `node.description`.
    pub node_description: String,
    /// `media.class`.
    pub class: SourceClass,
    /// Output rate, Hz (`audio.rate`).
    pub rate: u32,
    /// Output channels (`audio.channels`).
    pub channels: u8,
    /// SPA channel positions (`audio.position`).
    pub positions: Vec<u32>,
    /// Which of the stream's channels to play (`bark.channels`).
    pub selection: bark_core::channels::Selection,
    /// Extra stream properties, SPA-JSON object text (`stream.props`).
    pub stream_props: Option<String>,
    /// Drift control through the core's resampler or PipeWire's
    /// (`bark.resampler`).
    pub resampler: Resampler,
    /// Pre-shared key file (`bark.key-file`): accept only datagrams sealed
    /// with this key, and seal our own. `None`: open.
    pub key_file: Option<PathBuf>,
    /// Ask for lost packets again (`bark.repair`).
    pub repair: bool,
    /// Rebuild lost packets from FEC repair packets (`bark.fec`).
    pub fec: bool,
    /// UDP port for commands (`bark.command.port`; 0: any).
    pub command_port: u16,
    /// The settings a controller can change that the arguments give
    /// explicitly (`SET_*` of [`bark_core::command`]): they win over the
    /// saved ones ([`bark_io::state`]).
    pub given: u16,
    /// Advertise with DNS-SD (`bark.discovery`).
    pub discovery: bool,
}

/// Documentation of a role's arguments (`module.usage`): one
/// `( key=<doc; limits; default> )` per setting of the table.
pub fn usage(role: Role) -> &'static str {
    static USAGE: [OnceLock<String>; 2] = [OnceLock::new(), OnceLock::new()];
    USAGE[role as usize].get_or_init(|| {
        let args: Vec<String> = settings::TABLE
            .iter()
            .filter(|s| s.has(role))
            .map(|s| format!("( {}=<{}> )", s.key, s.help()))
            .collect();
        args.join(" ")
    })
}

/// Keys that are not arguments of this module, to warn about (typos).
pub fn unknown_keys(l: &dyn Lookup, sink: bool) -> Vec<String> {
    let role = if sink { Role::Sink } else { Role::Source };
    let known = |k: &str| settings::TABLE.iter().any(|s| s.key == k && s.has(role));
    let mut v: Vec<String> = l.keys().into_iter().filter(|k| !known(k)).collect();
    v.sort();
    v
}

/// Every setting of `role`: as given in `l`, else its default.
fn resolve(l: &dyn Lookup, role: Role) -> Result<Resolved, String> {
    settings::resolve(role, &[settings::TABLE], |s| {
        l.get(s.key).map(|t| Given {
            text: t.to_owned(),
            name: s.key.to_owned(),
        })
    })
}

impl SinkArgs {
    /// Parses and checks the sink's arguments.
    ///
    /// # Errors
    /// A message naming the bad argument and why.
    pub fn parse(l: &dyn Lookup) -> Result<SinkArgs, String> {
        let v = resolve(l, Role::Sink)?;
        let key_file = v.opt_text("bark.key-file").map(PathBuf::from);
        let encrypt = v.bool("bark.encrypt");
        if encrypt && key_file.is_none() {
            return Err(
                "bark.encrypt = true needs bark.key-file (make one with `bark keygen FILE`)".into(),
            );
        }
        let channels = v.int("audio.channels");
        Ok(SinkArgs {
            node_name: v.text("node.name"),
            node_description: v.text("node.description"),
            format: AudioFormat {
                sample: v.sample("audio.format"),
                rate: v.int("audio.rate"),
                channels,
            },
            positions: format::parse_positions(v.opt_text("audio.position").as_deref(), channels)?,
            net: v.send_path(),
            mtu: v.int("net.mtu"),
            latency_ns: v.ns("sess.latency.msec") as u64,
            max_latency_ns: v.ns("bark.latency.max-msec") as u64,
            stream: v.text("bark.stream"),
            priority: v.int("bark.priority"),
            stream_props: v.opt_text("stream.props"),
            key_file,
            encrypt,
            repair: v.bool("bark.repair"),
            fec: v.fec(),
            opus: v.opus(),
            command_port: v.int("bark.command.port"),
            given: bark_core::command::configured_mask(&v, Role::Sink),
            discovery: v.bool("bark.discovery"),
        })
    }
}

impl SourceArgs {
    /// Parses and checks the source's arguments.
    ///
    /// # Errors
    /// A message naming the bad argument and why.
    pub fn parse(l: &dyn Lookup) -> Result<SourceArgs, String> {
        let v = resolve(l, Role::Source)?;
        let channels = v.int("audio.channels");
        let class = v.text("media.class");
        let resampler = v.text("bark.resampler");
        let l = v.listen();
        Ok(SourceArgs {
            group: l.group,
            unicast: l.unicast,
            configured_group: l.configured_group,
            sender: l.sender,
            latency_floor_ns: v.latency_floor_ns(),
            ifname: v.opt_text("local.ifname"),
            latency_ns: v.opt("sess.latency.msec", Value::ns).map(|n| n as u64),
            stream: v.opt_text("bark.stream"),
            delay_ns: v.ns("bark.delay.msec"),
            node_name: v.text("node.name"),
            node_description: v.text("node.description"),
            class: [SourceClass::Playback, SourceClass::VirtualSource]
                .into_iter()
                .find(|c| c.media_class() == class)
                .unwrap_or(SourceClass::Playback),
            rate: v.int("audio.rate"),
            channels,
            positions: format::parse_positions(v.opt_text("audio.position").as_deref(), channels)?,
            selection: bark_core::channels::Selection::parse(&v.text("bark.channels"))?,
            repair: v.bool("bark.repair"),
            fec: v.fec_receive(),
            stream_props: v.opt_text("stream.props"),
            resampler: [Resampler::Core, Resampler::PipeWire]
                .into_iter()
                .find(|r| r.name() == resampler)
                .unwrap_or(Resampler::Core),
            key_file: v.opt_text("bark.key-file").map(PathBuf::from),
            command_port: v.int("bark.command.port"),
            given: bark_core::command::configured_mask(&v, Role::Source),
            discovery: v.bool("bark.discovery"),
        })
    }
}

/// What each role starts from: a fresh random id (the sender's session id,
/// the receiver's node id; never 0) and `bark.key-file` loaded, if set.
///
/// # Errors
/// The key file's problem, naming the file and the fix (permissions,
/// owner, format); the key's bytes never reach a message.
pub fn id_and_key(
    path: Option<&std::path::Path>,
) -> Result<(u64, Option<bark_core::auth::Key>), String> {
    let key = path
        .map(|p| bark_io::keyfile::load_key_file(p).map_err(|e| format!("bark.key-file: {e}")))
        .transpose()?;
    Ok((bark_io::node::random_nonzero_u64(), key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bark_core::SampleFormat;

    fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sink_defaults() {
        let a = SinkArgs::parse(&map(&[])).unwrap();
        assert_eq!(a.node_name, "bark_sink");
        assert_eq!(a.node_description, "Bark Network");
        assert_eq!(a.format, AudioFormat::default());
        assert_eq!(
            a.net.destination,
            SocketAddrV4::new(DEFAULT_GROUP, DEFAULT_PORT)
        );
        assert_eq!(a.mtu, 1500);
        assert_eq!(a.net.ttl, 1);
        assert!(a.net.multicast_loop);
        assert_eq!(a.latency_ns, bark_core::sender::DEFAULT_LATENCY_NS);
        assert_eq!(a.stream, "default");
        assert_eq!(a.priority, 0);
        assert_eq!(a.positions.len(), 2);
        assert_eq!((a.key_file, a.encrypt), (None, false));
        let k = SinkArgs::parse(&map(&[("bark.key-file", "/k"), ("bark.encrypt", "on")])).unwrap();
        assert_eq!(
            (k.key_file.as_deref(), k.encrypt),
            (Some(std::path::Path::new("/k")), true)
        );
        let r = SourceArgs::parse(&map(&[("bark.key-file", " /k ")])).unwrap();
        assert_eq!(r.key_file.as_deref(), Some(std::path::Path::new("/k")));
        let e = id_and_key(Some(std::path::Path::new("/nonexistent/bark.key"))).unwrap_err();
        assert!(
            e.contains("bark.key-file") && e.contains("/nonexistent/bark.key"),
            "{e}"
        );
    }

    #[test]
    fn sink_values() {
        let a = SinkArgs::parse(&map(&[
            ("audio.format", "s16"),
            ("audio.rate", "44100"),
            ("audio.channels", "1"),
            ("audio.position", "[ MONO ]"),
            ("destination.ip", "127.0.0.1"),
            ("destination.port", "4000"),
            ("net.loop", "false"),
            ("sess.latency.msec", "12.5"),
            ("bark.priority", "-3"),
        ]))
        .unwrap();
        assert_eq!(
            a.format,
            AudioFormat {
                sample: SampleFormat::S16,
                rate: 44_100,
                channels: 1
            }
        );
        assert_eq!(a.net.destination, "127.0.0.1:4000".parse().unwrap());
        assert!(!a.net.multicast_loop);
        assert_eq!(a.latency_ns, 12_500_000);
        assert_eq!(a.priority, -3);
        assert!(a.net.copies.is_empty());
        // A list, as a PipeWire array: the group first, copies on its port.
        let a = SinkArgs::parse(&map(&[(
            "destination.ip",
            "[ 192.168.1.20 239.255.66.67 192.168.1.21 ]",
        )]))
        .unwrap();
        assert_eq!(a.net.destination, "239.255.66.67:1530".parse().unwrap());
        assert_eq!(
            a.net.copies,
            vec![
                "192.168.1.20:1530".parse().unwrap(),
                "192.168.1.21:1530".parse().unwrap()
            ]
        );
    }

    #[test]
    fn sink_rejects_bad_values() {
        for (k, v, needle) in [
            ("audio.format", "U8", "audio.format"),
            ("audio.rate", "0", "audio.rate"),
            ("audio.rate", "fast", "audio.rate"),
            ("audio.channels", "0", "audio.channels"),
            ("audio.channels", "300", "audio.channels"),
            ("destination.ip", "300.1.1.1", "destination.ip"),
            ("destination.ip", "::1", "IPv4"),
            ("destination.ip", "0.0.0.0", "destination.ip"),
            ("destination.port", "0", "destination.port"),
            ("net.ttl", "256", "net.ttl"),
            ("net.loop", "maybe", "net.loop"),
            ("sess.latency.msec", "-1", "sess.latency.msec"),
            ("bark.priority", "200", "bark.priority"),
            ("node.name", "", "node.name"),
            ("audio.position", "[ FL ]", "audio.position"),
            ("bark.encrypt", "true", "bark.key-file"),
            ("bark.encrypt", "sometimes", "bark.encrypt"),
        ] {
            let e = SinkArgs::parse(&map(&[(k, v)])).unwrap_err();
            assert!(e.contains(needle), "{k}={v}: {e}");
        }
    }

    #[test]
    fn source_defaults_and_values() {
        let a = SourceArgs::parse(&map(&[])).unwrap();
        assert_eq!(a.group, SocketAddrV4::new(DEFAULT_GROUP, DEFAULT_PORT));
        assert_eq!(a.class, SourceClass::Playback);
        assert_eq!(
            (a.rate, a.channels, a.delay_ns, a.latency_ns),
            (48_000, 2, 0, None)
        );
        assert_eq!(a.stream, None);
        assert_eq!(a.resampler, Resampler::Core);
        let b = SourceArgs::parse(&map(&[
            ("media.class", "Audio/Source"),
            ("bark.delay.msec", "-1.5"),
            ("sess.latency.msec", "80"),
            ("bark.stream", "kitchen"),
            ("source.ip", "127.0.0.1"),
            ("bark.resampler", "PipeWire"),
        ]))
        .unwrap();
        assert_eq!(b.resampler, Resampler::PipeWire);
        assert!(SourceArgs::parse(&map(&[("bark.resampler", "soxr")])).is_err());
        assert_eq!(b.class, SourceClass::VirtualSource);
        assert_eq!(b.delay_ns, -1_500_000);
        assert_eq!(b.latency_ns, Some(80_000_000));
        assert_eq!(b.stream.as_deref(), Some("kitchen"));
        assert!(SourceArgs::parse(&map(&[("media.class", "Video/Source")])).is_err());
        assert!(SourceArgs::parse(&map(&[("audio.rate", "0")])).is_err());
        assert!(SourceArgs::parse(&map(&[("source.port", "x")])).is_err());
    }

    #[test]
    fn usage_lists_each_argument_with_limits_and_default() {
        let sink = usage(Role::Sink);
        for part in [
            "( sess.latency.msec=<",
            "; 0..=2000 ms; default 40> )",
            "( audio.format=<",
            "; one of F32, S24, S16, OPUS; default F32> )",
            "( destination.ip=<",
            "default 239.255.66.66> )",
            "( bark.priority=<stream priority; receivers follow the highest; -128..=127; default 0> )",
        ] {
            assert!(sink.contains(part), "sink usage lacks {part:?}: {sink}");
        }
        let source = usage(Role::Source);
        assert!(
            source.contains("; -2000..=2000 ms; default 0> )") && !source.contains("net.mtu"),
            "{source}"
        );
        // Every argument the parser takes is documented, and no other.
        for (role, sink) in [(Role::Sink, true), (Role::Source, false)] {
            let m: HashMap<String, String> = settings::TABLE
                .iter()
                .filter(|s| s.has(role))
                .map(|s| (s.key.to_owned(), String::new()))
                .collect();
            assert!(unknown_keys(&m, sink).is_empty());
            assert_eq!(usage(role).matches("( ").count(), m.len());
        }
    }

    #[test]
    fn reports_unknown_keys() {
        let m = map(&[("audio.rat", "1"), ("node.name", "x")]);
        assert_eq!(unknown_keys(&m, true), vec!["audio.rat".to_string()]);
    }
}

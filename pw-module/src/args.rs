//! Module arguments: parsing and validation of what users write in
//! `context.modules = [ { name = libpipewire-module-bark-... args = { ... } } ]`.
//!
//! Everything is checked here, before any socket or stream exists, so that
//! bad arguments give one clear error and a failed load leaves nothing behind.

use crate::format;
use bark_core::format::AudioFormat;
use bark_core::SampleFormat;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::str::FromStr;

/// Default multicast group: organization-local scope (239.255.0.0/16,
/// RFC 2365), which routers keep inside the site. "66" is for "BB" (Bark).
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 66, 66);
/// Default UDP port of the group.
pub const DEFAULT_PORT: u16 = 1530;
/// Default multicast TTL: 1 keeps packets on the local link.
pub const DEFAULT_TTL: u32 = 1;

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
    /// Where audio and status packets go (`destination.ip`, `destination.port`).
    pub destination: SocketAddrV4,
    /// Local address to bind and send multicast from (`source.ip`).
    pub source_ip: Option<Ipv4Addr>,
    /// Interface for multicast (`local.ifname`).
    pub ifname: Option<String>,
    /// Path MTU, bytes (`net.mtu`).
    pub mtu: usize,
    /// Multicast TTL, hops (`net.ttl`).
    pub ttl: u32,
    /// Whether multicast loops back to receivers on this host (`net.loop`).
    pub multicast_loop: bool,
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
    /// (`source.ip`, `source.port`).
    pub group: SocketAddrV4,
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
    /// Extra stream properties, SPA-JSON object text (`stream.props`).
    pub stream_props: Option<String>,
    /// Drift control through the core's resampler or PipeWire's
    /// (`bark.resampler`).
    pub resampler: Resampler,
    /// Pre-shared key file (`bark.key-file`): accept only datagrams sealed
    /// with this key, and seal our own. `None`: open.
    pub key_file: Option<PathBuf>,
}

/// Documentation of the sink's arguments (`module.usage`).
pub const SINK_USAGE: &str = "( node.name=<node name, default bark_sink> ) \
( node.description=<name shown to users, default \"Bark Network\"> ) \
( audio.format=<wire format F32|S24|S16, default F32> ) \
( audio.rate=<Hz, 8000..192000, default 48000> ) \
( audio.channels=<1..8, default 2> ) \
( audio.position=<channel map, default [ FL FR ]> ) \
( destination.ip=<multicast group or unicast IPv4, default 239.255.66.66> ) \
( destination.port=<UDP port, default 1530> ) \
( source.ip=<local IPv4 to send from, default any> ) \
( local.ifname=<interface for multicast, default by route> ) \
( net.mtu=<path MTU bytes, default 1500> ) \
( net.ttl=<multicast TTL, default 1> ) \
( net.loop=<loop multicast back to this host, default true> ) \
( sess.latency.msec=<playback latency ms, default 40> ) \
( bark.latency.max-msec=<rise at most to this to cover slow receivers, ms, default 1000> ) \
( bark.stream=<stream name, default \"default\"> ) \
( bark.priority=<-128..127, higher wins, default 0> ) \
( bark.key-file=<pre-shared key file (bark keygen), default none: open> ) \
( bark.encrypt=<also encrypt audio, needs bark.key-file, default false> ) \
( stream.props=<extra stream properties, e.g. { node.latency=256/48000 }> )";

/// Documentation of the source's arguments (`module.usage`).
pub const SOURCE_USAGE: &str =
    "( source.ip=<multicast group or local IPv4, default 239.255.66.66> ) \
( source.port=<UDP port, default 1530> ) \
( local.ifname=<interface to join the group on, default by route> ) \
( sess.latency.msec=<override the sender's latency, ms, default: follow sender> ) \
( bark.stream=<stream name to follow, default: the best stream> ) \
( bark.delay.msec=<extra delay for this receiver, ms, may be negative, default 0> ) \
( bark.key-file=<pre-shared key file (bark keygen), default none: open> ) \
( node.name=<node name, default bark_source> ) \
( node.description=<name shown to users, default \"Bark Receiver\"> ) \
( media.class=<Stream/Output/Audio (default) or Audio/Source> ) \
( audio.rate=<output Hz, default 48000> ) \
( audio.channels=<output channels, default 2> ) \
( audio.position=<output channel map, default [ FL FR ]> ) \
( bark.resampler=<drift control through core (default) or pipewire> ) \
( stream.props=<extra stream properties, e.g. { node.latency=256/48000 }> )";

const SINK_KEYS: &[&str] = &[
    "node.name",
    "node.description",
    "audio.format",
    "audio.rate",
    "audio.channels",
    "audio.position",
    "destination.ip",
    "destination.port",
    "source.ip",
    "local.ifname",
    "net.mtu",
    "net.ttl",
    "net.loop",
    "sess.latency.msec",
    "bark.latency.max-msec",
    "bark.stream",
    "bark.priority",
    "bark.key-file",
    "bark.encrypt",
    "stream.props",
];

const SOURCE_KEYS: &[&str] = &[
    "source.ip",
    "source.port",
    "local.ifname",
    "sess.latency.msec",
    "bark.stream",
    "bark.delay.msec",
    "bark.key-file",
    "node.name",
    "node.description",
    "media.class",
    "audio.rate",
    "audio.channels",
    "audio.position",
    "bark.resampler",
    "stream.props",
];

/// Keys that are not arguments of this module, to warn about (typos).
pub fn unknown_keys(l: &dyn Lookup, sink: bool) -> Vec<String> {
    let known = if sink { SINK_KEYS } else { SOURCE_KEYS };
    let mut v: Vec<String> = l
        .keys()
        .into_iter()
        .filter(|k| !known.contains(&k.as_str()))
        .collect();
    v.sort();
    v
}

fn string(l: &dyn Lookup, key: &str, default: &str) -> Result<String, String> {
    match l.get(key) {
        None => Ok(default.to_owned()),
        Some(v) if v.trim().is_empty() => Err(format!("{key} must not be empty")),
        Some(v) => Ok(v.to_owned()),
    }
}

fn opt_string(l: &dyn Lookup, key: &str) -> Option<String> {
    l.get(key)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn num<T: FromStr>(l: &dyn Lookup, key: &str, default: T, what: &str) -> Result<T, String> {
    match l.get(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{key} = {v:?} is not {what}")),
    }
}

fn boolean(l: &dyn Lookup, key: &str, default: bool) -> Result<bool, String> {
    match l.get(key).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) => match v.as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(format!("{key} = {v:?} is not true or false")),
        },
    }
}

fn ipv4(l: &dyn Lookup, key: &str) -> Result<Option<Ipv4Addr>, String> {
    match l.get(key).map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| format!("{key} = {v:?} is not an IPv4 address (Bark speaks IPv4 only)")),
    }
}

fn port(l: &dyn Lookup, key: &str) -> Result<u16, String> {
    let p: u16 = num(l, key, DEFAULT_PORT, "a UDP port (1..65535)")?;
    if p == 0 {
        return Err(format!("{key} must not be 0"));
    }
    Ok(p)
}

/// Milliseconds (float) to ns, within `range_ms`.
fn msec(
    l: &dyn Lookup,
    key: &str,
    range_ms: std::ops::RangeInclusive<f64>,
) -> Result<Option<i64>, String> {
    let Some(v) = l.get(key) else { return Ok(None) };
    let ms: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("{key} = {v:?} is not a number of milliseconds"))?;
    if !ms.is_finite() || !range_ms.contains(&ms) {
        return Err(format!(
            "{key} = {ms} is outside {}..={} ms",
            range_ms.start(),
            range_ms.end()
        ));
    }
    Ok(Some((ms * 1e6).round() as i64))
}

fn rate_channels(l: &dyn Lookup) -> Result<(u32, u8, Vec<u32>), String> {
    let rate: u32 = num(l, "audio.rate", 48_000, "a rate in Hz")?;
    let channels: u8 = num(l, "audio.channels", 2, "a channel count (1..8)")?;
    AudioFormat {
        rate,
        channels,
        ..Default::default()
    }
    .validate()
    .map_err(|e| e.to_string())?;
    let positions = format::parse_positions(l.get("audio.position"), channels)?;
    Ok((rate, channels, positions))
}

impl SinkArgs {
    /// Parses and checks the sink's arguments.
    ///
    /// # Errors
    /// A message naming the bad argument and why.
    pub fn parse(l: &dyn Lookup) -> Result<SinkArgs, String> {
        let sample = match l.get("audio.format") {
            None => SampleFormat::F32,
            Some(v) => SampleFormat::parse(v.trim())
                .map_err(|_| format!("audio.format = {v:?}: must be one of F32, S24, S16"))?,
        };
        let (rate, channels, positions) = rate_channels(l)?;
        let ip = ipv4(l, "destination.ip")?.unwrap_or(DEFAULT_GROUP);
        if ip.is_unspecified() || ip.is_broadcast() {
            return Err(format!("destination.ip = {ip} cannot be sent to"));
        }
        let ttl: u32 = num(l, "net.ttl", DEFAULT_TTL, "a TTL (0..255)")?;
        if ttl > 255 {
            return Err(format!("net.ttl = {ttl} is outside 0..=255"));
        }
        let latency = msec(l, "sess.latency.msec", 0.0..=10_000.0)?;
        let max_latency = msec(l, "bark.latency.max-msec", 0.0..=10_000.0)?;
        let key_file = opt_string(l, "bark.key-file").map(PathBuf::from);
        let encrypt = boolean(l, "bark.encrypt", false)?;
        if encrypt && key_file.is_none() {
            return Err(
                "bark.encrypt = true needs bark.key-file (make one with `bark keygen FILE`)".into(),
            );
        }
        Ok(SinkArgs {
            node_name: string(l, "node.name", "bark_sink")?,
            node_description: string(l, "node.description", "Bark Network")?,
            format: AudioFormat {
                sample,
                rate,
                channels,
            },
            positions,
            destination: SocketAddrV4::new(ip, port(l, "destination.port")?),
            source_ip: ipv4(l, "source.ip")?,
            ifname: opt_string(l, "local.ifname"),
            mtu: num(
                l,
                "net.mtu",
                bark_core::protocol::DEFAULT_MTU,
                "an MTU in bytes",
            )?,
            ttl,
            multicast_loop: boolean(l, "net.loop", true)?,
            latency_ns: latency.map_or(bark_core::sender::DEFAULT_LATENCY_NS, |v| v as u64),
            max_latency_ns: max_latency
                .map_or(bark_core::sender::DEFAULT_MAX_LATENCY_NS, |v| v as u64),
            stream: string(l, "bark.stream", "default")?,
            priority: num(l, "bark.priority", 0, "a priority (-128..127)")?,
            stream_props: opt_string(l, "stream.props"),
            key_file,
            encrypt,
        })
    }
}

impl SourceArgs {
    /// Parses and checks the source's arguments.
    ///
    /// # Errors
    /// A message naming the bad argument and why.
    pub fn parse(l: &dyn Lookup) -> Result<SourceArgs, String> {
        let ip = ipv4(l, "source.ip")?.unwrap_or(DEFAULT_GROUP);
        if ip.is_broadcast() {
            return Err(format!("source.ip = {ip} is not a group or local address"));
        }
        let class = match l.get("media.class").map(str::trim) {
            None | Some("Stream/Output/Audio") => SourceClass::Playback,
            Some("Audio/Source") => SourceClass::VirtualSource,
            Some(v) => {
                return Err(format!(
                    "media.class = {v:?}: must be Stream/Output/Audio or Audio/Source"
                ))
            }
        };
        let (rate, channels, positions) = rate_channels(l)?;
        let resampler = match l
            .get("bark.resampler")
            .map(|v| v.trim().to_ascii_lowercase())
        {
            None => Resampler::Core,
            Some(v) if v == "core" => Resampler::Core,
            Some(v) if v == "pipewire" => Resampler::PipeWire,
            Some(v) => return Err(format!("bark.resampler = {v:?}: must be core or pipewire")),
        };
        Ok(SourceArgs {
            group: SocketAddrV4::new(ip, port(l, "source.port")?),
            ifname: opt_string(l, "local.ifname"),
            latency_ns: msec(l, "sess.latency.msec", 0.0..=10_000.0)?.map(|v| v as u64),
            stream: opt_string(l, "bark.stream"),
            delay_ns: msec(l, "bark.delay.msec", -10_000.0..=10_000.0)?.unwrap_or(0),
            node_name: string(l, "node.name", "bark_source")?,
            node_description: string(l, "node.description", "Bark Receiver")?,
            class,
            rate,
            channels,
            positions,
            stream_props: opt_string(l, "stream.props"),
            resampler,
            key_file: opt_string(l, "bark.key-file").map(PathBuf::from),
        })
    }
}

/// Loads `bark.key-file`, if set: the key, or a message naming the file
/// and the fix (permissions, owner, format). The key's bytes never reach
/// a message.
pub fn load_key(path: Option<&std::path::Path>) -> Result<Option<bark_core::auth::Key>, String> {
    path.map(|p| bark_io::keyfile::load_key_file(p).map_err(|e| format!("bark.key-file: {e}")))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            a.destination,
            SocketAddrV4::new(DEFAULT_GROUP, DEFAULT_PORT)
        );
        assert_eq!(a.mtu, 1500);
        assert_eq!(a.ttl, 1);
        assert!(a.multicast_loop);
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
        let e = load_key(Some(std::path::Path::new("/nonexistent/bark.key"))).unwrap_err();
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
        assert_eq!(a.destination, "127.0.0.1:4000".parse().unwrap());
        assert!(!a.multicast_loop);
        assert_eq!(a.latency_ns, 12_500_000);
        assert_eq!(a.priority, -3);
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
    fn reports_unknown_keys() {
        let m = map(&[("audio.rat", "1"), ("node.name", "x")]);
        assert_eq!(unknown_keys(&m, true), vec!["audio.rat".to_string()]);
    }
}

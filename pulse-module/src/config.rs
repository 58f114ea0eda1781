//! Settings: command-line flags over an optional TOML file over defaults,
//! checked before anything connects, each error naming the flag or key.
//!
//! The settings mirror the PipeWire modules' arguments (same meanings, same
//! defaults, same ranges):
//!
//! | flag / TOML key      | PipeWire argument                        |
//! |----------------------|------------------------------------------|
//! | `group`              | `destination.ip` (sink), `source.ip` (source) |
//! | `port`               | `destination.port`, `source.port`        |
//! | `interface`          | `local.ifname`                           |
//! | `source-ip`          | `source.ip` (sink)                       |
//! | `latency-msec`       | `sess.latency.msec`                      |
//! | `stream`             | `bark.stream`                            |
//! | `priority`           | `bark.priority`                          |
//! | `delay-msec`         | `bark.delay.msec`                        |
//! | `format`             | `audio.format`                           |
//! | `rate`, `channels`   | `audio.rate`, `audio.channels`           |
//! | `mtu`, `ttl`, `loop` | `net.mtu`, `net.ttl`, `net.loop`         |
//! | `name`               | `node.name` (the sink's name, the stream's) |
//! | `description`        | `node.description`                       |
//!
//! | `key-file`           | `bark.key-file`                          |
//! | `encrypt` (sink)     | `bark.encrypt`                           |
//!
//! PulseAudio-only: `server` (a `PULSE_SERVER` string), and for the
//! receiver `sink` (where to play; default: the default sink) and
//! `buffer-msec` (the playback stream's target buffer).
//!
//! The file has a `[sink]` and a `[source]` table; see
//! `conf/bark-pulse.toml`. Without `--config`, `$XDG_CONFIG_HOME/bark/pulse.toml`
//! (or `~/.config/bark/pulse.toml`) is read if it exists.

use bark_core::format::AudioFormat;
use bark_core::SampleFormat;
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

/// Default multicast group (the PipeWire modules' default): organization-
/// local scope, 239.255.0.0/16 (RFC 2365).
pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 66, 66);
/// Default UDP port of the group.
pub const DEFAULT_PORT: u16 = 1530;
/// Default multicast TTL, hops: 1 keeps packets on the local link.
pub const DEFAULT_TTL: u32 = 1;
/// Default playback buffer of the receiver's stream, ms. It must stay
/// below the latency (40 ms by default) with room for the network: a frame
/// has to be in the jitter buffer when it is written, this long before it
/// is heard.
pub const DEFAULT_BUFFER_MSEC: f64 = 20.0;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "bark-pulse",
    version,
    about = "Bark on PulseAudio: the \"Bark Network\" sink (sender) and the synchronized receiver",
    long_about = "Bark on PulseAudio: the \"Bark Network\" sink (sender) and the synchronized \
receiver, interoperable with Bark's PipeWire modules.\n\nSettings come from flags, then the \
[sink] or [source] table of a TOML file (--config, else $XDG_CONFIG_HOME/bark/pulse.toml if it \
exists), then defaults. Logging: RUST_LOG=debug or -v."
)]
pub struct Cli {
    /// TOML settings file (must exist when given).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Read no settings file, not even the default one.
    #[arg(long, global = true)]
    pub no_config: bool,
    /// More logging (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Check and print the settings, then exit.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// What to run.
    #[command(subcommand)]
    pub role: Role,
}

/// The two roles.
#[derive(Subcommand, Debug)]
pub enum Role {
    /// The sender: a "Bark Network" null sink whose monitor goes to the network.
    Sink(SinkFlags),
    /// The receiver: plays the network stream in sync into a sink.
    Source(SourceFlags),
    /// Write the man pages (bark-pulse.1, bark-pulse-sink.1,
    /// bark-pulse-source.1) into a directory; used by the meson install.
    #[command(hide = true)]
    Man(ManArgs),
}

/// Flags of the hidden `bark-pulse man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// Writes the man pages, generated from this command line definition by
/// clap_mangen, into `dir`: one page for `bark-pulse` and one per visible
/// subcommand, so they list exactly the flags the binary accepts.
///
/// # Errors
/// If the directory or a page cannot be written.
pub fn write_man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), dir)
}

/// Flags of `bark-pulse sink`.
#[derive(Args, Debug, Default)]
pub struct SinkFlags {
    /// PulseAudio server to connect to (default: the usual lookup).
    #[arg(long)]
    pub server: Option<String>,
    /// Multicast group or unicast IPv4 to send to [239.255.66.66].
    #[arg(long)]
    pub group: Option<String>,
    /// UDP port [1530].
    #[arg(long)]
    pub port: Option<String>,
    /// Interface to send multicast on [by route].
    #[arg(long)]
    pub interface: Option<String>,
    /// Local IPv4 to send from [any].
    #[arg(long)]
    pub source_ip: Option<String>,
    /// Playback latency the receivers keep, ms [40].
    #[arg(long)]
    pub latency_msec: Option<String>,
    /// Stream name [default].
    #[arg(long)]
    pub stream: Option<String>,
    /// Stream priority, -128..127, higher wins [0].
    #[arg(long, allow_hyphen_values = true)]
    pub priority: Option<String>,
    /// Wire format: F32, S24 or S16 [F32].
    #[arg(long)]
    pub format: Option<String>,
    /// Sample rate of the sink, Hz [48000].
    #[arg(long)]
    pub rate: Option<String>,
    /// Channels of the sink [2].
    #[arg(long)]
    pub channels: Option<String>,
    /// Path MTU, bytes [1500].
    #[arg(long)]
    pub mtu: Option<String>,
    /// Multicast TTL [1].
    #[arg(long)]
    pub ttl: Option<String>,
    /// Loop multicast back to receivers on this host: true or false [true].
    #[arg(long = "loop")]
    pub multicast_loop: Option<String>,
    /// Sink name [bark_sink].
    #[arg(long)]
    pub name: Option<String>,
    /// Sink description, shown in pavucontrol [Bark Network].
    #[arg(long)]
    pub description: Option<String>,
    /// Pre-shared key file (`bark keygen`): seal every datagram; mode 0600
    /// [none: open, see docs/SECURITY.md].
    #[arg(long)]
    pub key_file: Option<String>,
    /// Also encrypt the audio: true or false; needs a key file [false].
    #[arg(long)]
    pub encrypt: Option<String>,
}

/// Flags of `bark-pulse source`.
#[derive(Args, Debug, Default)]
pub struct SourceFlags {
    /// PulseAudio server to connect to (default: the usual lookup).
    #[arg(long)]
    pub server: Option<String>,
    /// Multicast group (or local unicast IPv4) to listen on [239.255.66.66].
    #[arg(long)]
    pub group: Option<String>,
    /// UDP port [1530].
    #[arg(long)]
    pub port: Option<String>,
    /// Interface to join the group on [by route].
    #[arg(long)]
    pub interface: Option<String>,
    /// Override the sender's latency, ms [follow the sender].
    #[arg(long)]
    pub latency_msec: Option<String>,
    /// Stream to follow [the best one].
    #[arg(long)]
    pub stream: Option<String>,
    /// Extra delay of this receiver, ms, may be negative [0].
    #[arg(long, allow_hyphen_values = true)]
    pub delay_msec: Option<String>,
    /// Output rate, Hz [48000].
    #[arg(long)]
    pub rate: Option<String>,
    /// Output channels [2].
    #[arg(long)]
    pub channels: Option<String>,
    /// Sink to play to [the default sink].
    #[arg(long)]
    pub sink: Option<String>,
    /// Target buffer of the playback stream, ms [20].
    #[arg(long)]
    pub buffer_msec: Option<String>,
    /// Stream (application) name [bark_source].
    #[arg(long)]
    pub name: Option<String>,
    /// Stream description, shown in pavucontrol [Bark Receiver].
    #[arg(long)]
    pub description: Option<String>,
    /// Pre-shared key file (`bark keygen`): accept only datagrams sealed
    /// with it; mode 0600 [none: open, see docs/SECURITY.md].
    #[arg(long)]
    pub key_file: Option<String>,
}

/// A scalar TOML value, read as text and parsed like a flag.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Value {
    /// `key = "text"`
    Str(String),
    /// `key = 12`
    Int(i64),
    /// `key = 12.5`
    Float(f64),
    /// `key = true`
    Bool(bool),
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Bool(b) => b.to_string(),
        }
    }
}

/// `[sink]` table of the file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SinkFile {
    server: Option<Value>,
    group: Option<Value>,
    port: Option<Value>,
    interface: Option<Value>,
    source_ip: Option<Value>,
    latency_msec: Option<Value>,
    stream: Option<Value>,
    priority: Option<Value>,
    format: Option<Value>,
    rate: Option<Value>,
    channels: Option<Value>,
    mtu: Option<Value>,
    ttl: Option<Value>,
    #[serde(rename = "loop")]
    multicast_loop: Option<Value>,
    name: Option<Value>,
    description: Option<Value>,
    key_file: Option<Value>,
    encrypt: Option<Value>,
}

/// `[source]` table of the file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SourceFile {
    server: Option<Value>,
    group: Option<Value>,
    port: Option<Value>,
    interface: Option<Value>,
    latency_msec: Option<Value>,
    stream: Option<Value>,
    delay_msec: Option<Value>,
    rate: Option<Value>,
    channels: Option<Value>,
    sink: Option<Value>,
    buffer_msec: Option<Value>,
    name: Option<Value>,
    description: Option<Value>,
    key_file: Option<Value>,
}

/// The whole file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    sink: Option<SinkFile>,
    source: Option<SourceFile>,
}

impl ConfigFile {
    /// Parses TOML text; `origin` names it in errors.
    ///
    /// # Errors
    /// A message with the file name and what is wrong where.
    pub fn parse(text: &str, origin: &str) -> Result<ConfigFile, String> {
        toml::from_str(text).map_err(|e| format!("{origin}: {e}"))
    }

    /// Reads `--config`, or the default file if it exists, or nothing.
    ///
    /// # Errors
    /// An unreadable or malformed file.
    pub fn load(
        explicit: Option<&Path>,
        none: bool,
    ) -> Result<(ConfigFile, Option<PathBuf>), String> {
        let path = match (explicit, none) {
            (Some(p), _) => Some(p.to_path_buf()),
            (None, true) => None,
            (None, false) => default_path().filter(|p| p.exists()),
        };
        let Some(path) = path else {
            return Ok((ConfigFile::default(), None));
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read settings file {}: {e}", path.display()))?;
        let f = Self::parse(&text, &path.display().to_string())?;
        Ok((f, Some(path)))
    }
}

/// `$XDG_CONFIG_HOME/bark/pulse.toml`, else `~/.config/bark/pulse.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("bark").join("pulse.toml"))
}

/// One setting as given: its text and where it came from (for errors).
struct Given {
    text: String,
    from: String,
}

/// Flag first, then the file's key.
fn pick(flag: &Option<String>, file: &Option<Value>, flag_name: &str, key: &str) -> Option<Given> {
    if let Some(v) = flag {
        return Some(Given {
            text: v.clone(),
            from: format!("--{flag_name} {v:?}"),
        });
    }
    file.as_ref().map(|v| Given {
        text: v.text(),
        from: format!("{key} = {:?}", v.text()),
    })
}

fn parse_num<T: std::str::FromStr>(g: &Given, what: &str) -> Result<T, String> {
    g.text
        .trim()
        .parse()
        .map_err(|_| format!("{}: not {what}", g.from))
}

fn ipv4(g: Option<Given>) -> Result<Option<Ipv4Addr>, String> {
    match g {
        None => Ok(None),
        Some(g) if g.text.trim().is_empty() => Ok(None),
        Some(g) => parse_num::<Ipv4Addr>(&g, "an IPv4 address (Bark speaks IPv4 only)").map(Some),
    }
}

fn port(g: Option<Given>) -> Result<u16, String> {
    match g {
        None => Ok(DEFAULT_PORT),
        Some(g) => {
            let p: u16 = parse_num(&g, "a UDP port (1..65535)")?;
            if p == 0 {
                return Err(format!("{}: the port must not be 0", g.from));
            }
            Ok(p)
        }
    }
}

fn msec(g: Option<Given>, range: std::ops::RangeInclusive<f64>) -> Result<Option<i64>, String> {
    let Some(g) = g else { return Ok(None) };
    let ms: f64 = parse_num(&g, "a number of milliseconds")?;
    if !ms.is_finite() || !range.contains(&ms) {
        return Err(format!(
            "{}: outside {}..={} ms",
            g.from,
            range.start(),
            range.end()
        ));
    }
    Ok(Some((ms * 1e6).round() as i64))
}

fn text(g: Option<Given>, default: &str) -> Result<String, String> {
    match g {
        None => Ok(default.to_owned()),
        Some(g) if g.text.trim().is_empty() => Err(format!("{}: must not be empty", g.from)),
        Some(g) => Ok(g.text),
    }
}

fn opt_text(g: Option<Given>) -> Option<String> {
    g.map(|g| g.text.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn boolean(g: Option<Given>, default: bool) -> Result<bool, String> {
    let Some(g) = g else { return Ok(default) };
    match g.text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{}: not true or false", g.from)),
    }
}

fn rate_channels(rate: Option<Given>, channels: Option<Given>) -> Result<(u32, u8), String> {
    let r = match &rate {
        None => 48_000,
        Some(g) => parse_num(g, "a rate in Hz")?,
    };
    let c = match &channels {
        None => 2,
        Some(g) => parse_num(g, "a channel count (1..8)")?,
    };
    AudioFormat {
        rate: r,
        channels: c,
        ..Default::default()
    }
    .validate()
    .map_err(|e| {
        let from: Vec<&str> = [&rate, &channels]
            .iter()
            .filter_map(|g| g.as_ref().map(|g| g.from.as_str()))
            .collect();
        format!("{} ({})", e, from.join(", "))
    })?;
    Ok((r, c))
}

/// PulseAudio names: sink and stream names must be plain identifiers, as
/// `module-null-sink` rejects anything else in `sink_name`.
fn pa_name(v: String, from: &str) -> Result<String, String> {
    if v.len() > 128
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "{from}: a name may hold only letters, digits, '_', '-' and '.' (at most 128)"
        ));
    }
    Ok(v)
}

/// Resolved settings of the sender.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkConfig {
    /// PulseAudio server, `None` for the default lookup.
    pub server: Option<String>,
    /// Where audio and status packets go.
    pub destination: SocketAddrV4,
    /// Interface for multicast.
    pub interface: Option<String>,
    /// Local address to bind and send from.
    pub source_ip: Option<Ipv4Addr>,
    /// Target latency, ns.
    pub latency_ns: u64,
    /// Stream name.
    pub stream: String,
    /// Stream priority.
    pub priority: i8,
    /// Wire format, rate (Hz) and channels; the sink runs at this rate and
    /// channel count in float32.
    pub format: AudioFormat,
    /// Path MTU, bytes.
    pub mtu: usize,
    /// Multicast TTL, hops.
    pub ttl: u32,
    /// Loop multicast back to this host.
    pub multicast_loop: bool,
    /// Sink name (`sink_name` of the null sink).
    pub name: String,
    /// Sink description (`device.description`).
    pub description: String,
    /// Pre-shared key file, `None`: open.
    pub key_file: Option<PathBuf>,
    /// Encrypt audio payloads (needs `key_file`).
    pub encrypt: bool,
}

/// Resolved settings of the receiver.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceConfig {
    /// PulseAudio server, `None` for the default lookup.
    pub server: Option<String>,
    /// Group (or local unicast address) and port to listen on.
    pub group: SocketAddrV4,
    /// Interface to join the group on.
    pub interface: Option<String>,
    /// Latency override, ns; `None` follows the sender.
    pub latency_ns: Option<u64>,
    /// Stream to follow; `None` follows the best.
    pub stream: Option<String>,
    /// Extra delay of this receiver, ns (may be negative).
    pub delay_ns: i64,
    /// Output rate, Hz.
    pub rate: u32,
    /// Output channels.
    pub channels: u8,
    /// Sink to play to; `None` for the default sink.
    pub sink: Option<String>,
    /// Target buffer of the playback stream (`tlength`), ns.
    pub buffer_ns: u64,
    /// Stream name (`application.id`-like, and the stream's name).
    pub name: String,
    /// Stream description (`media.name`).
    pub description: String,
    /// Pre-shared key file, `None`: open.
    pub key_file: Option<PathBuf>,
}

impl SinkConfig {
    /// Flags over the file's `[sink]` over defaults.
    ///
    /// # Errors
    /// A message naming the bad flag or key and why.
    pub fn resolve(f: &SinkFlags, file: &ConfigFile) -> Result<SinkConfig, String> {
        let d = SinkFile::default();
        let t = file.sink.as_ref().unwrap_or(&d);
        let sample = match pick(&f.format, &t.format, "format", "sink.format") {
            None => SampleFormat::F32,
            Some(g) => SampleFormat::parse(g.text.trim())
                .map_err(|_| format!("{}: must be one of F32, S24, S16", g.from))?,
        };
        let (rate, channels) = rate_channels(
            pick(&f.rate, &t.rate, "rate", "sink.rate"),
            pick(&f.channels, &t.channels, "channels", "sink.channels"),
        )?;
        let gg = pick(&f.group, &t.group, "group", "sink.group");
        let gfrom = gg.as_ref().map(|g| g.from.clone());
        let ip = ipv4(gg)?.unwrap_or(DEFAULT_GROUP);
        if ip.is_unspecified() || ip.is_broadcast() {
            return Err(format!("{}: cannot be sent to", gfrom.unwrap_or_default()));
        }
        let ttl = match pick(&f.ttl, &t.ttl, "ttl", "sink.ttl") {
            None => DEFAULT_TTL,
            Some(g) => {
                let v: u32 = parse_num(&g, "a TTL (0..255)")?;
                if v > 255 {
                    return Err(format!("{}: outside 0..=255", g.from));
                }
                v
            }
        };
        let mtu = match pick(&f.mtu, &t.mtu, "mtu", "sink.mtu") {
            None => bark_core::protocol::DEFAULT_MTU,
            Some(g) => parse_num(&g, "an MTU in bytes")?,
        };
        let priority = match pick(&f.priority, &t.priority, "priority", "sink.priority") {
            None => 0,
            Some(g) => parse_num(&g, "a priority (-128..127)")?,
        };
        let latency = msec(
            pick(
                &f.latency_msec,
                &t.latency_msec,
                "latency-msec",
                "sink.latency-msec",
            ),
            0.0..=10_000.0,
        )?;
        let name_g = pick(&f.name, &t.name, "name", "sink.name");
        let name_from = name_g.as_ref().map_or(String::new(), |g| g.from.clone());
        let cfg = SinkConfig {
            server: opt_text(pick(&f.server, &t.server, "server", "sink.server")),
            destination: SocketAddrV4::new(ip, port(pick(&f.port, &t.port, "port", "sink.port"))?),
            interface: opt_text(pick(
                &f.interface,
                &t.interface,
                "interface",
                "sink.interface",
            )),
            source_ip: ipv4(pick(
                &f.source_ip,
                &t.source_ip,
                "source-ip",
                "sink.source-ip",
            ))?,
            latency_ns: latency.map_or(bark_core::sender::DEFAULT_LATENCY_NS, |v| v as u64),
            stream: text(
                pick(&f.stream, &t.stream, "stream", "sink.stream"),
                "default",
            )?,
            priority,
            format: AudioFormat {
                sample,
                rate,
                channels,
            },
            mtu,
            ttl,
            multicast_loop: boolean(
                pick(&f.multicast_loop, &t.multicast_loop, "loop", "sink.loop"),
                true,
            )?,
            name: pa_name(text(name_g, "bark_sink")?, &name_from)?,
            description: text(
                pick(
                    &f.description,
                    &t.description,
                    "description",
                    "sink.description",
                ),
                "Bark Network",
            )?,
            key_file: opt_text(pick(&f.key_file, &t.key_file, "key-file", "sink.key-file"))
                .map(PathBuf::from),
            encrypt: boolean(
                pick(&f.encrypt, &t.encrypt, "encrypt", "sink.encrypt"),
                false,
            )?,
        };
        if cfg.encrypt && cfg.key_file.is_none() {
            return Err("encrypt = true needs key-file (make one with `bark keygen FILE`)".into());
        }
        // Refuse a bad key file now, before connecting.
        crate::keyed::load(cfg.key_file.as_deref()).map_err(|e| e.to_string())?;
        // The core checks the rest (MTU against the frame size, latency):
        // build a sender config once to report it here, before connecting.
        bark_core::Sender::new(cfg.sender_config(1, String::new()))
            .map_err(|e| format!("{e} (settings: {})", cfg.summary()))?;
        Ok(cfg)
    }

    /// The core's configuration for a session `session_id` on `host`.
    pub fn sender_config(&self, session_id: u64, host: String) -> bark_core::SenderConfig {
        bark_core::SenderConfig {
            format: self.format,
            stream: self.stream.clone(),
            priority: self.priority,
            latency_ns: self.latency_ns,
            max_latency_ns: bark_core::sender::DEFAULT_MAX_LATENCY_NS,
            // The endpoint takes the authentication trailer off this.
            mtu: self.mtu,
            session_id,
            node_name: self.name.clone(),
            host,
            sync_interval_ns: bark_core::sender::SYNC_INTERVAL_NS,
            // pipewire-pulse's timing reports scatter by up to a quantum:
            // keep the 20 ms default, filter rather than restart.
            input_step_ns: bark_core::dll::RESET_NS,
        }
    }

    /// One line for logs and `--dry-run`.
    pub fn summary(&self) -> String {
        format!(
            "sink {} ({:?}) {} {} Hz {} ch -> {}{}{}, ttl {}, loop {}, mtu {}, latency {} ms, stream {:?}, priority {}, server {}, {}",
            self.name,
            self.description,
            self.format.sample.name(),
            self.format.rate,
            self.format.channels,
            self.destination,
            self.interface.as_deref().map(|i| format!(" on {i}")).unwrap_or_default(),
            self.source_ip.map(|i| format!(" from {i}")).unwrap_or_default(),
            self.ttl,
            self.multicast_loop,
            self.mtu,
            self.latency_ns as f64 / 1e6,
            self.stream,
            self.priority,
            self.server.as_deref().unwrap_or("(default)"),
            match (&self.key_file, self.encrypt) {
                (Some(k), true) => format!("authenticated and encrypted with {}", k.display()),
                (Some(k), false) => format!("authenticated with {}", k.display()),
                (None, _) => "open (no key-file)".to_owned(),
            },
        )
    }
}

impl SourceConfig {
    /// Flags over the file's `[source]` over defaults.
    ///
    /// # Errors
    /// A message naming the bad flag or key and why.
    pub fn resolve(f: &SourceFlags, file: &ConfigFile) -> Result<SourceConfig, String> {
        let d = SourceFile::default();
        let t = file.source.as_ref().unwrap_or(&d);
        let gg = pick(&f.group, &t.group, "group", "source.group");
        let gfrom = gg.as_ref().map(|g| g.from.clone());
        let ip = ipv4(gg)?.unwrap_or(DEFAULT_GROUP);
        if ip.is_broadcast() {
            return Err(format!(
                "{}: not a group or local address",
                gfrom.unwrap_or_default()
            ));
        }
        let (rate, channels) = rate_channels(
            pick(&f.rate, &t.rate, "rate", "source.rate"),
            pick(&f.channels, &t.channels, "channels", "source.channels"),
        )?;
        let latency = msec(
            pick(
                &f.latency_msec,
                &t.latency_msec,
                "latency-msec",
                "source.latency-msec",
            ),
            0.0..=(bark_core::receiver::MAX_LATENCY_NS / 1_000_000) as f64,
        )?;
        let delay = msec(
            pick(
                &f.delay_msec,
                &t.delay_msec,
                "delay-msec",
                "source.delay-msec",
            ),
            -2000.0..=2000.0,
        )?;
        let buffer = msec(
            pick(
                &f.buffer_msec,
                &t.buffer_msec,
                "buffer-msec",
                "source.buffer-msec",
            ),
            2.0..=1000.0,
        )?;
        let name_g = pick(&f.name, &t.name, "name", "source.name");
        let name_from = name_g.as_ref().map_or(String::new(), |g| g.from.clone());
        let cfg = SourceConfig {
            server: opt_text(pick(&f.server, &t.server, "server", "source.server")),
            group: SocketAddrV4::new(ip, port(pick(&f.port, &t.port, "port", "source.port"))?),
            interface: opt_text(pick(
                &f.interface,
                &t.interface,
                "interface",
                "source.interface",
            )),
            latency_ns: latency.map(|v| v as u64),
            stream: opt_text(pick(&f.stream, &t.stream, "stream", "source.stream")),
            delay_ns: delay.unwrap_or(0),
            rate,
            channels,
            sink: opt_text(pick(&f.sink, &t.sink, "sink", "source.sink")),
            buffer_ns: buffer.map_or((DEFAULT_BUFFER_MSEC * 1e6) as u64, |v| v as u64),
            name: pa_name(text(name_g, "bark_source")?, &name_from)?,
            description: text(
                pick(
                    &f.description,
                    &t.description,
                    "description",
                    "source.description",
                ),
                "Bark Receiver",
            )?,
            key_file: opt_text(pick(
                &f.key_file,
                &t.key_file,
                "key-file",
                "source.key-file",
            ))
            .map(PathBuf::from),
        };
        crate::keyed::load(cfg.key_file.as_deref()).map_err(|e| e.to_string())?;
        bark_core::Receiver::new(cfg.receiver_config(1, String::new()))
            .map_err(|e| format!("{e} (settings: {})", cfg.summary()))?;
        Ok(cfg)
    }

    /// The core's configuration for node `node_id` on `host`.
    pub fn receiver_config(&self, node_id: u64, host: String) -> bark_core::ReceiverConfig {
        bark_core::ReceiverConfig {
            rate: self.rate,
            channels: self.channels,
            latency_ns: self.latency_ns,
            delay_ns: self.delay_ns,
            stream: self.stream.clone(),
            node_id,
            node_name: self.name.clone(),
            host,
        }
    }

    /// One line for logs and `--dry-run`.
    pub fn summary(&self) -> String {
        format!(
            "source {} ({:?}) listening on {}{}, output {} Hz {} ch to {}, buffer {} ms, latency {}, delay {} ms, stream {}, server {}, {}",
            self.name,
            self.description,
            self.group,
            self.interface.as_deref().map(|i| format!(" on {i}")).unwrap_or_default(),
            self.rate,
            self.channels,
            self.sink.as_deref().unwrap_or("(default sink)"),
            self.buffer_ns as f64 / 1e6,
            self.latency_ns.map_or("from sender".to_owned(), |l| format!("{} ms", l as f64 / 1e6)),
            self.delay_ns as f64 / 1e6,
            self.stream.as_deref().unwrap_or("(best)"),
            self.server.as_deref().unwrap_or("(default)"),
            match &self.key_file {
                Some(k) => format!("authenticated with {}", k.display()),
                None => "open (no key-file)".to_owned(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_cover_both_roles_and_their_flags() {
        let dir = tempfile::tempdir().unwrap();
        write_man_pages(dir.path()).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        // The hidden `man` subcommand gets no page.
        assert_eq!(
            names,
            ["bark-pulse-sink.1", "bark-pulse-source.1", "bark-pulse.1"]
        );
        let source = std::fs::read_to_string(dir.path().join("bark-pulse-source.1")).unwrap();
        // roff escapes "-" as "\-".
        for flag in ["delay\\-msec", "buffer\\-msec", "group"] {
            assert!(source.contains(flag), "bark-pulse-source.1 lacks {flag}");
        }
    }

    fn sink(flags: SinkFlags, toml: &str) -> Result<SinkConfig, String> {
        SinkConfig::resolve(&flags, &ConfigFile::parse(toml, "test.toml")?)
    }

    fn source(flags: SourceFlags, toml: &str) -> Result<SourceConfig, String> {
        SourceConfig::resolve(&flags, &ConfigFile::parse(toml, "test.toml")?)
    }

    #[test]
    fn key_file_from_flag_or_file_is_checked_before_connecting() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir();
        let key = dir.join("bark.key");
        bark_io::keyfile::write_key_file(&key, &bark_core::auth::Key::generate().unwrap()).unwrap();
        let toml = format!(
            "[sink]\nkey-file = {:?}\nencrypt = true\n[source]\nkey-file = {:?}\n",
            key, key
        );
        let c = sink(SinkFlags::default(), &toml).unwrap();
        assert_eq!(
            (c.key_file.as_deref(), c.encrypt),
            (Some(key.as_path()), true)
        );
        // The trailer's bytes come out of the packet: 170 frames, not 176.
        let k = crate::keyed::load(c.key_file.as_deref()).unwrap().unwrap();
        let s = bark_core::endpoint::SenderEndpoint::new(
            c.sender_config(1, String::new()),
            Some(&k),
            c.encrypt,
            1,
        )
        .unwrap();
        assert_eq!(s.sender().packet_frames(), 170);
        assert!(c.summary().contains("authenticated and encrypted"));
        let r = source(SourceFlags::default(), &toml).unwrap();
        assert_eq!(r.key_file.as_deref(), Some(key.as_path()));
        let e = sink(
            SinkFlags {
                encrypt: Some("true".into()),
                ..Default::default()
            },
            "",
        )
        .unwrap_err();
        assert!(e.contains("needs key-file"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = source(SourceFlags::default(), &toml).unwrap_err();
        assert!(e.contains("chmod 600") && e.contains("bark.key"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "bark-pulse-config-{}-{}",
            std::process::id(),
            bark_io::node::random_nonzero_u64()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sink_defaults_mirror_the_pipewire_module() {
        let c = sink(SinkFlags::default(), "").unwrap();
        assert_eq!(c.destination, SocketAddrV4::new(DEFAULT_GROUP, 1530));
        assert_eq!(c.name, "bark_sink");
        assert_eq!(c.description, "Bark Network");
        assert_eq!(c.format, AudioFormat::default());
        assert_eq!((c.mtu, c.ttl, c.multicast_loop), (1500, 1, true));
        assert_eq!(c.latency_ns, 40_000_000);
        assert_eq!((c.stream.as_str(), c.priority), ("default", 0));
        assert_eq!(c.server, None);
    }

    #[test]
    fn flags_win_over_the_file() {
        let toml = r#"
            [sink]
            group = "239.1.2.3"
            port = 4000
            latency-msec = 12.5
            format = "s16"
            loop = false
            priority = -3
            description = "Living room"
        "#;
        let c = sink(
            SinkFlags {
                port: Some("5000".into()),
                ..Default::default()
            },
            toml,
        )
        .unwrap();
        assert_eq!(c.destination, "239.1.2.3:5000".parse().unwrap());
        assert_eq!(c.latency_ns, 12_500_000);
        assert_eq!(c.format.sample, SampleFormat::S16);
        assert!(!c.multicast_loop);
        assert_eq!(c.priority, -3);
        assert_eq!(c.description, "Living room");
    }

    #[test]
    fn bad_values_name_their_flag_or_key() {
        for (flags, toml, needle) in [
            (
                SinkFlags {
                    port: Some("0".into()),
                    ..Default::default()
                },
                "",
                "--port",
            ),
            (
                SinkFlags {
                    group: Some("::1".into()),
                    ..Default::default()
                },
                "",
                "IPv4",
            ),
            (
                SinkFlags {
                    group: Some("0.0.0.0".into()),
                    ..Default::default()
                },
                "",
                "--group",
            ),
            (
                SinkFlags {
                    format: Some("U8".into()),
                    ..Default::default()
                },
                "",
                "F32, S24, S16",
            ),
            (
                SinkFlags {
                    rate: Some("1".into()),
                    ..Default::default()
                },
                "",
                "--rate",
            ),
            (
                SinkFlags {
                    ttl: Some("300".into()),
                    ..Default::default()
                },
                "",
                "--ttl",
            ),
            (
                SinkFlags {
                    multicast_loop: Some("maybe".into()),
                    ..Default::default()
                },
                "",
                "--loop",
            ),
            (
                SinkFlags {
                    priority: Some("200".into()),
                    ..Default::default()
                },
                "",
                "--priority",
            ),
            (
                SinkFlags {
                    mtu: Some("60".into()),
                    ..Default::default()
                },
                "",
                "net.mtu",
            ),
            (
                SinkFlags {
                    name: Some("bad name".into()),
                    ..Default::default()
                },
                "",
                "--name",
            ),
            (
                SinkFlags::default(),
                "[sink]\nlatency-msec = -1\n",
                "sink.latency-msec",
            ),
            (
                SinkFlags::default(),
                "[sink]\nchannels = 9\n",
                "sink.channels",
            ),
            (SinkFlags::default(), "[sink]\nprot = 1\n", "prot"),
            (SinkFlags::default(), "[sinks]\n", "sinks"),
        ] {
            let e = sink(flags, toml).unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn source_defaults_and_values() {
        let c = source(SourceFlags::default(), "").unwrap();
        assert_eq!(c.group, SocketAddrV4::new(DEFAULT_GROUP, 1530));
        assert_eq!(
            (c.rate, c.channels, c.delay_ns, c.latency_ns),
            (48_000, 2, 0, None)
        );
        assert_eq!(c.buffer_ns, 20_000_000);
        assert_eq!((c.sink.as_deref(), c.stream.as_deref()), (None, None));
        let toml = r#"
            [source]
            delay-msec = -1.5
            latency-msec = 80
            stream = "kitchen"
            group = "127.0.0.1"
            sink = "speaker"
            buffer-msec = 30
        "#;
        let c = source(SourceFlags::default(), toml).unwrap();
        assert_eq!(c.delay_ns, -1_500_000);
        assert_eq!(c.latency_ns, Some(80_000_000));
        assert_eq!(c.stream.as_deref(), Some("kitchen"));
        assert_eq!(c.sink.as_deref(), Some("speaker"));
        assert_eq!(c.buffer_ns, 30_000_000);
        for (flags, needle) in [
            (
                SourceFlags {
                    port: Some("x".into()),
                    ..Default::default()
                },
                "--port",
            ),
            (
                SourceFlags {
                    delay_msec: Some("-5000".into()),
                    ..Default::default()
                },
                "--delay-msec",
            ),
            (
                SourceFlags {
                    buffer_msec: Some("0".into()),
                    ..Default::default()
                },
                "--buffer-msec",
            ),
            (
                SourceFlags {
                    latency_msec: Some("3000".into()),
                    ..Default::default()
                },
                "--latency-msec",
            ),
            (
                SourceFlags {
                    group: Some("255.255.255.255".into()),
                    ..Default::default()
                },
                "--group",
            ),
        ] {
            let e = source(flags, "").unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn file_errors_say_where() {
        let e = ConfigFile::parse("[source]\nport = \n", "/etc/x.toml").unwrap_err();
        assert!(e.starts_with("/etc/x.toml"), "{e}");
        let e = ConfigFile::load(Some(Path::new("/nonexistent/bark.toml")), false).unwrap_err();
        assert!(e.contains("/nonexistent/bark.toml"), "{e}");
        let (f, p) = ConfigFile::load(None, true).unwrap();
        assert!(p.is_none() && f.sink.is_none());
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../../conf/bark-pulse.toml");
        let f = ConfigFile::parse(text, "conf/bark-pulse.toml").unwrap();
        SinkConfig::resolve(&SinkFlags::default(), &f).unwrap();
        SourceConfig::resolve(&SourceFlags::default(), &f).unwrap();
    }
}

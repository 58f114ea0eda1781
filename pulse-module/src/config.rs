//! Settings: command-line flags over an optional TOML file
//! (`conf/bark-pulse.toml`) over defaults, checked before anything
//! connects, each error naming the flag or key. They are the PipeWire
//! modules' arguments from the shared table [`bark_core::settings`] (same
//! defaults, limits and refusals): each one bark-pulse has is a flag
//! `--NAME` and a key `NAME` of the file's `[sink]` or `[source]`, `NAME`
//! being the table's `pulse` name (`group` = `destination.ip`), plus
//! [`PULSE_ONLY`].

use bark_core::format::AudioFormat;
use bark_core::settings::Role::{Sink, Source};
use bark_core::settings::{self, Given, Kind, Resolved, SendPath, Setting, Value, BOTH, SOURCE};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

use crate::flags::pulse_settings;
pub use crate::flags::{SinkFlags, SourceFlags};
pub use bark_core::settings::{DEFAULT_GROUP, DEFAULT_PORT, DEFAULT_TTL};

/// bark-pulse's own settings, in the table's shape (their keys are their
/// flag names).
#[rustfmt::skip]
pub static PULSE_ONLY: &[Setting] = &[
    Setting::new("server", BOTH, Kind::Text, Value::Unset, "PulseAudio server to connect to (a PULSE_SERVER string)")
        .unset("the usual lookup")
        .pulse("server"),
    Setting::new("sink", SOURCE, Kind::Text, Value::Unset, "sink to play to")
        .unset("the default sink")
        .pulse("sink"),
    // Below the latency (40 ms by default) with room for the network: a
    // frame must be in the jitter buffer this long before it is heard.
    Setting::new("buffer-msec", SOURCE, Kind::Msec { min: 2.0, max: 1000.0 }, settings::ms(20_000_000),
        "target buffer of the playback stream; keep it below the latency")
        .unit("ms")
        .pulse("buffer-msec"),
];

/// The whole file: a `[sink]` and a `[source]` table of settings by name.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    sink: Option<BTreeMap<String, toml::Value>>,
    source: Option<BTreeMap<String, toml::Value>>,
}

impl ConfigFile {
    /// Parses TOML text; `origin` names it in errors.
    ///
    /// # Errors
    /// A message with the file name and what is wrong where.
    pub fn parse(text: &str, origin: &str) -> Result<ConfigFile, String> {
        let f: ConfigFile = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        for (role, t) in [(Sink, &f.sink), (Source, &f.source)] {
            let known: Vec<&str> = pulse_settings(role).map(|(_, n)| n).collect();
            let mut keys = t.iter().flat_map(|t| t.keys());
            if let Some(k) = keys.find(|k| !known.contains(&k.as_str())) {
                let (r, known) = (role.name(), known.join(", "));
                return Err(format!("{origin}: [{r}] has no key {k:?} (it has {known})"));
            }
        }
        Ok(f)
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

/// Every setting of `role`: its flag, else its key in `file`, else its
/// default.
fn resolve(
    role: settings::Role,
    flags: &BTreeMap<String, String>,
    file: Option<&BTreeMap<String, toml::Value>>,
) -> Result<Resolved, String> {
    settings::resolve(role, &[settings::TABLE, PULSE_ONLY], |s| {
        let name = s.pulse?;
        if let Some(t) = flags.get(name) {
            return Some(Given {
                text: t.clone(),
                name: format!("--{name}"),
            });
        }
        // A TOML value is read as text and parsed like a flag.
        file?.get(name).map(|v| Given {
            text: match v {
                toml::Value::String(s) => s.clone(),
                v => v.to_string(),
            },
            name: format!("{}.{name}", role.name()),
        })
    })
}

/// `node.name`, which must be a PulseAudio name: sink and stream names are
/// plain identifiers, as `module-null-sink` rejects anything else in
/// `sink_name`.
fn pa_name(v: &Resolved) -> Result<String, String> {
    let name = v.text("node.name");
    if name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        let who = v.given("node.name").map(Given::shown).unwrap_or_default();
        return Err(format!(
            "{who}: a name may hold only letters, digits, '_', '-' and '.' (at most 128)"
        ));
    }
    Ok(name)
}

/// Resolved settings of the sender.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkConfig {
    /// PulseAudio server, `None` for the default lookup.
    pub server: Option<String>,
    /// Where audio and status packets go and how (group/port,
    /// source-ip, interface, ttl, loop).
    pub net: SendPath,
    /// Target latency, ns.
    pub latency_ns: u64,
    /// Stream name.
    pub stream: String,
    /// Stream priority.
    pub priority: i8,
    /// Wire format, rate (Hz) and channels of the sink and the stream.
    pub format: AudioFormat,
    /// Path MTU, bytes.
    pub mtu: usize,
    /// Sink name (`sink_name` of the null sink).
    pub name: String,
    /// Sink description (`device.description`).
    pub description: String,
    /// Pre-shared key file, `None`: open.
    pub key_file: Option<PathBuf>,
    /// Encrypt audio payloads (needs `key_file`).
    pub encrypt: bool,
    /// Keep recent packets and resend them on request (`bark.repair`).
    pub repair: bool,
    /// FEC blocks `(k, m)` (`bark.fec`); `None`: off.
    pub fec: Option<(u8, u8)>,
    /// Opus encoder settings, with `format = OPUS` (`opus-bitrate`,
    /// `opus-frame-msec`).
    pub opus: bark_core::opus::OpusConfig,
    /// UDP port for commands (`command-port`; 0: any).
    pub command_port: u16,
    /// Advertise with DNS-SD (`discovery`).
    pub discovery: bool,
    /// Every setting as resolved, for [`SinkConfig::summary`].
    pub settings: Resolved,
}

/// Resolved settings of the receiver.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceConfig {
    /// PulseAudio server, `None` for the default lookup.
    pub server: Option<String>,
    /// Group (or local unicast address) and port to listen on (any local
    /// address instead of a group with `sender`).
    pub group: SocketAddrV4,
    /// Sender to subscribe to for unicast delivery (`bark.sender`).
    pub sender: Option<SocketAddrV4>,
    /// The least latency it asks of the session, ns
    /// (`bark.latency.min-msec`, `bark.profile`).
    pub latency_floor_ns: u64,
    /// Which of the stream's channels it plays (`bark.channels`).
    pub selection: bark_core::channels::Selection,
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
    /// Ask for lost packets again (`bark.repair`).
    pub repair: bool,
    /// Rebuild lost packets from FEC repair packets (`bark.fec`).
    pub fec: bool,
    /// UDP port for commands (`command-port`; 0: any).
    pub command_port: u16,
    /// Advertise with DNS-SD (`discovery`).
    pub discovery: bool,
    /// Find the sender of its stream with DNS-SD and subscribe to it
    /// (`unicast`, without `sender`).
    pub unicast: bool,
    /// `source-ip`:`port` as given (DNS-SD browses on its route's
    /// interface).
    pub configured_group: SocketAddrV4,
    /// Every setting as resolved, for [`SourceConfig::summary`].
    pub settings: Resolved,
}

impl SinkConfig {
    /// Flags over the file's `[sink]` over defaults.
    ///
    /// # Errors
    /// A message naming the bad flag or key and why.
    pub fn resolve(f: &SinkFlags, file: &ConfigFile) -> Result<SinkConfig, String> {
        let v = resolve(Sink, &f.0, file.sink.as_ref())?;
        let cfg = SinkConfig {
            server: v.opt_text("server"),
            net: v.send_path(),
            latency_ns: v.ns("sess.latency.msec") as u64,
            stream: v.text("bark.stream"),
            priority: v.int("bark.priority"),
            format: AudioFormat {
                sample: v.sample("audio.format"),
                rate: v.int("audio.rate"),
                channels: v.int("audio.channels"),
            },
            mtu: v.int("net.mtu"),
            name: pa_name(&v)?,
            description: v.text("node.description"),
            key_file: v.opt_text("bark.key-file").map(PathBuf::from),
            encrypt: v.bool("bark.encrypt"),
            repair: v.bool("bark.repair"),
            fec: v.fec(),
            opus: v.opus(),
            command_port: v.int("bark.command.port"),
            discovery: v.bool("bark.discovery"),
            settings: v,
        };
        if cfg.encrypt && cfg.key_file.is_none() {
            return Err("encrypt = true needs key-file (make one with `bark keygen FILE`)".into());
        }
        // An Opus stream's rate and channels (the table checks each alone).
        cfg.format.validate().map_err(|e| e.to_string())?;
        // Refuse a bad key file now, before connecting. (The table's
        // limits are the core's: it has nothing left to refuse.)
        crate::keyed::load(cfg.key_file.as_deref()).map_err(|e| e.to_string())?;
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
            repair: self.repair,
            fec: self.fec,
            // The monitor is recorded in the default layout of its channel
            // count (`session::channel_map`).
            layout: None,
            opus: self.opus,
        }
    }

    /// One line for logs and `--dry-run`: every setting by its flag name.
    pub fn summary(&self) -> String {
        format!("sink {}", self.settings.describe(|s| s.pulse))
    }
}

impl SourceConfig {
    /// Flags over the file's `[source]` over defaults.
    ///
    /// # Errors
    /// A message naming the bad flag or key and why.
    pub fn resolve(f: &SourceFlags, file: &ConfigFile) -> Result<SourceConfig, String> {
        let v = resolve(Source, &f.0, file.source.as_ref())?;
        let l = v.listen();
        let cfg = SourceConfig {
            server: v.opt_text("server"),
            group: l.group,
            unicast: l.unicast,
            configured_group: l.configured_group,
            sender: l.sender,
            latency_floor_ns: v.latency_floor_ns(),
            interface: v.opt_text("local.ifname"),
            latency_ns: v.opt("sess.latency.msec", Value::ns).map(|n| n as u64),
            stream: v.opt_text("bark.stream"),
            delay_ns: v.ns("bark.delay.msec"),
            selection: bark_core::channels::Selection::parse(&v.text("bark.channels"))?,
            rate: v.int("audio.rate"),
            channels: v.int("audio.channels"),
            sink: v.opt_text("sink"),
            buffer_ns: v.ns("buffer-msec") as u64,
            name: pa_name(&v)?,
            description: v.text("node.description"),
            key_file: v.opt_text("bark.key-file").map(PathBuf::from),
            repair: v.bool("bark.repair"),
            fec: v.fec_receive(),
            command_port: v.int("bark.command.port"),
            discovery: v.bool("bark.discovery"),
            settings: v,
        };
        crate::keyed::load(cfg.key_file.as_deref()).map_err(|e| e.to_string())?;
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
            repair: self.repair,
            fec: self.fec,
            sender: self.sender.map(std::net::SocketAddr::V4),
            latency_floor_ns: self.latency_floor_ns,
            // The stream bark-pulse plays has the default layout of its
            // channel count (`session::channel_map`).
            layout: None,
            selection: self.selection,
        }
    }

    /// One line for logs and `--dry-run`: every setting by its flag name.
    pub fn summary(&self) -> String {
        format!("source {}", self.settings.describe(|s| s.pulse))
    }

    /// The settings a controller can change that the configuration gives
    /// explicitly (`SET_*`): they win over the saved ones.
    pub fn given(&self) -> u16 {
        bark_core::command::configured_mask(&self.settings, bark_core::settings::Role::Source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::{Cli, Role};
    use clap::Parser;

    /// `bark-pulse ARGS` with `toml` as the settings file: the sink's or
    /// the source's settings.
    fn run(args: &str, toml: &str) -> Result<(Option<SinkConfig>, Option<SourceConfig>), String> {
        let file = ConfigFile::parse(toml, "test.toml")?;
        match Cli::try_parse_from(format!("bark-pulse {args}").split_whitespace()).map(|c| c.role) {
            Ok(Role::Sink(f)) => Ok((Some(SinkConfig::resolve(&f, &file)?), None)),
            Ok(Role::Source(f)) => Ok((None, Some(SourceConfig::resolve(&f, &file)?))),
            r => panic!("{r:?}"),
        }
    }
    fn sink(args: &str, toml: &str) -> SinkConfig {
        run(&format!("sink {args}"), toml).unwrap().0.unwrap()
    }
    fn source(args: &str, toml: &str) -> SourceConfig {
        run(&format!("source {args}"), toml).unwrap().1.unwrap()
    }

    #[test]
    fn key_file_from_flag_or_file_is_checked_before_connecting() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("bark.key");
        bark_io::keyfile::write_key_file(&key, &bark_core::auth::Key::generate().unwrap()).unwrap();
        let toml =
            format!("[sink]\nkey-file = {key:?}\nencrypt = true\n[source]\nkey-file = {key:?}");
        let c = sink("", &toml);
        assert_eq!(
            (c.key_file.as_deref(), c.encrypt),
            (Some(key.as_path()), true)
        );
        // The trailer's bytes come out of the packet: 170 frames, not 176.
        let k = crate::keyed::load(c.key_file.as_deref()).unwrap().unwrap();
        let cfg = c.sender_config(1, String::new());
        let s = bark_core::endpoint::SenderEndpoint::new(cfg, Some(&k), c.encrypt, 1).unwrap();
        assert_eq!(s.sender().packet_frames(), 170);
        assert!(c.summary().contains(" encrypt=true"), "{}", c.summary());
        assert_eq!(source("", &toml).key_file.as_deref(), Some(key.as_path()));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = run("source", &toml).unwrap_err();
        assert!(e.contains("chmod 600") && e.contains("bark.key"), "{e}");
    }

    #[test]
    fn defaults_are_the_tables() {
        assert_eq!(
            sink("", "").summary(),
            "sink name=bark_sink description=\"Bark Network\" format=F32 rate=48000 channels=2 \
             group=239.255.66.66 port=1530 source-ip=(any, as the routing table says) \
             control-port=0 command-port=0 discovery=true interface=(the routing table's choice) mtu=1500 ttl=1 loop=true latency-msec=40 \
             stream=default priority=0 key-file=(none: open, see docs/SECURITY.md) encrypt=false \
             repair=true fec=off opus-bitrate=160 opus-frame-msec=10 server=(the usual lookup)"
        );
        assert_eq!(
            source("", "").summary(),
            "source name=bark_source description=\"Bark Receiver\" rate=48000 channels=2 \
             group=239.255.66.66 port=1530 command-port=0 unicast=false discovery=true \
             sender=(none: listen on source.ip) \
             interface=(the routing table's choice) latency-msec=(follow the sender) \
             latency-min-msec=(none; 250 with bark.profile = wifi) profile=lan stream=(the highest-priority, newest stream) \
             play-channels=all delay-msec=0 key-file=(none: open, see docs/SECURITY.md) repair=true \
             fec=false server=(the usual lookup) \
             sink=(the default sink) buffer-msec=20"
        );
    }

    /// Every flag reaches its typed setting: another valid value changes
    /// it. (The key file is loaded at once: see the test above.)
    #[test]
    fn every_flag_is_used() {
        let typed = |r: (Option<SinkConfig>, Option<SourceConfig>)| {
            let d = format!("{r:?}");
            d[..d.find(", settings:").unwrap()].to_owned()
        };
        for (role, cmd) in [(Sink, "sink"), (Source, "source")] {
            let base = typed(run(cmd, "").unwrap());
            for (s, name) in pulse_settings(role)
                .filter(|(s, _)| !matches!(s.key, "bark.key-file" | "bark.encrypt"))
            {
                let other = match (s.kind, &s.default) {
                    (Kind::Int { max, .. }, Value::Int(d)) if *d == max => "1".to_owned(),
                    (Kind::Int { max, .. }, _) => max.to_string(),
                    (Kind::Msec { max, .. }, _) => max.to_string(),
                    (Kind::Bool, Value::Bool(d)) => (!d).to_string(),
                    (Kind::Ipv4(_), _) => "127.0.0.1".into(),
                    (Kind::Ipv4Port, _) => "127.0.0.1:4010".into(),
                    (Kind::Destinations, _) => "127.0.0.1,127.0.0.2".into(),
                    (Kind::Channels, _) => "FL".into(),
                    (Kind::Sample, _) => "S16".into(),
                    (Kind::Choice(words), d) => words
                        .iter()
                        .find(|w| d.text() != Some(**w))
                        .expect("a choice of two or more")
                        .to_string(),
                    _ => "x1".into(),
                };
                let c = typed(run(&format!("{cmd} --{name} {other}"), "").unwrap());
                assert_ne!(c, base, "--{name} {other} changed nothing");
            }
        }
        // Flags win over the file; values keep their units.
        let toml = "[sink]\nport = 4000\nlatency-msec = 12.5\nloop = false";
        let c = sink("--port 5000 --priority -4", toml);
        assert_eq!((c.net.destination.port(), c.latency_ns), (5000, 12_500_000));
        assert_eq!((c.priority, c.net.multicast_loop), (-4, false));
        let c = source(
            "--delay-msec -2.5",
            "[source]\ndelay-msec = -1.5\nbuffer-msec = 30",
        );
        assert_eq!((c.delay_ns, c.buffer_ns), (-2_500_000, 30_000_000));
    }

    /// The refusals the shared table does not make: bark-pulse's own
    /// settings and checks, and the file's shape. (Out-of-range values of
    /// shared settings: cli/tests/settings.rs, against all front ends.)
    #[test]
    fn bad_values_name_their_flag_or_key() {
        for case in [
            "sink --name a/b | | --name a/b: a name may hold only letters, digits, '_', '-' and '.'",
            "sink | [sink]\nname = \"a b\" | sink.name = \"a b\": a name may hold only",
            "sink --encrypt true | | encrypt = true needs key-file (make one with `bark keygen",
            "sink | [sink]\nprot = 1 | test.toml: [sink] has no key \"prot\" (it has name, ",
            "sink | [sinks] | test.toml: TOML parse error",
            "source --buffer-msec 0 | | --buffer-msec 0: must be within 2..=1000 ms",
            "source | [source]\nbuffer-msec = \"x\" | source.buffer-msec = x: must be a number",
        ] {
            let parts: Vec<&str> = case.split('|').map(str::trim).collect();
            let e = run(parts[0], parts[1]).unwrap_err();
            assert!(e.starts_with(parts[2]), "{case}: {e}");
        }
    }

    #[test]
    fn file_errors_say_where() {
        let e = ConfigFile::load(Some(Path::new("/nonexistent/bark.toml")), false).unwrap_err();
        assert!(e.contains("/nonexistent/bark.toml"), "{e}");
        let (f, p) = ConfigFile::load(None, true).unwrap();
        assert!(p.is_none() && f.sink.is_none());
        let text = include_str!("../../conf/bark-pulse.toml");
        let f = ConfigFile::parse(text, "conf/bark-pulse.toml").unwrap();
        SinkConfig::resolve(&SinkFlags::default(), &f).unwrap();
        SourceConfig::resolve(&SourceFlags::default(), &f).unwrap();
    }
}

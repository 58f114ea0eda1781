//! Command-line interface: every subcommand and flag, with units and
//! defaults in the help text (which is also what the man pages show).
//!
//! Flags mirror the PipeWire module arguments (`destination.ip` →
//! `--destination-ip`, `sess.latency.msec` → `--latency-msec`, ...): the
//! settings table ([`bark_core::settings`], its `cli` names) parses their
//! values, with the modules' and bark-pulse's limits and refusals, and a
//! test checks their names and defaults against it, so a set-up tried with
//! the CLI carries over to the modules.

use bark_core::settings::{self, Role, Value};
use bark_core::SampleFormat;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

pub use bark_core::settings::{DEFAULT_GROUP, DEFAULT_PORT, DEFAULT_TTL};

/// bark: live stats, headless stream and receive, and diagnostics for Bark
/// (synchronized multi-room audio over a LAN).
#[derive(Parser, Debug)]
#[command(
    name = "bark",
    version,
    propagate_version = true,
    after_help = "Logging: set RUST_LOG=debug (or info, warn) for more detail on stderr."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show every Bark sender and receiver on the group, live, from the
    /// status packets each node sends about once a second.
    Stats(StatsArgs),
    /// List every Bark node on the group: role, room name, stream,
    /// volume, mute, delay, sync error, when it was last heard.
    Ls(LsArgs),
    /// Change a node's settings through its command socket, e.g.
    /// `bark set Kitchen volume=40% mute=off delay=12.5ms name=Kitchen
    /// stream=livingroom enabled=on` (senders: name, stream, priority).
    /// The node is named by its room name, node.name, name@host, host,
    /// or node id (4 hex digits or more). Exit codes: 0 applied, 2 no
    /// such node (or several), 3 no ack, 4 refused.
    Set(SetArgs),
    /// Zones: the receivers that follow one stream. Without a name, list
    /// them; `bark zone livingroom volume=50% mute=off` moves every
    /// member's volume in proportion (the loudest to 50 %) and mutes or
    /// unmutes them all. A room leaves a zone by following another stream
    /// (`bark set ROOM stream=...`) or being switched off (`enabled=off`).
    Zone(ZoneArgs),
    /// A local web page and JSON API for every room: volume, mute, delay,
    /// name, stream and zone volume, live (docs/API.md). Listens on
    /// 127.0.0.1:9531; on another address only with --key-file (commands
    /// then need the token it prints) or --open.
    Web(WebArgs),
    /// Headless sender: stream an audio file (or stdin) to the group in
    /// real time.
    Stream(StreamArgs),
    /// Headless receiver: run the full receive path against a simulated
    /// output clock and write what it would play, with timestamps.
    Receive(ReceiveArgs),
    /// Check what usually breaks multicast audio, and say how to fix it.
    ///
    /// Checks the interface, the multicast route, joining the group, the
    /// firewall (test datagrams that never leave this host), the TTL,
    /// socket buffers and the installation. Then it asks the audio server:
    /// the PipeWire version (the daemon's and the library's) with its known
    /// issues for Bark and their workarounds, the Bark nodes loaded, and
    /// for each receiver where its audio goes and the latency PipeWire
    /// reports on the way (WARN when a loopback or filter there delays it
    /// uncounted). Exit code 1 if any check failed.
    Doctor(DoctorArgs),
    /// Write a new random pre-shared key file (mode 0600) for --key-file,
    /// bark.key-file and bark-pulse's key-file, and print its key id.
    Keygen(KeygenArgs),
    /// Write the man pages (bark.1, bark-stats.1, ...) into a directory.
    #[command(hide = true)]
    Man(ManArgs),
}

/// A clap value parser for the setting `key` of `role` in the settings
/// table: its parsing, limits and refusal (`must be within -2000..=2000
/// ms`), the value taken out by `get`.
fn table<T: 'static>(
    role: Role,
    key: &'static str,
    get: fn(&Value) -> Option<T>,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    let s = settings::find(role, key);
    move |t: &str| s.parse(t).map(|v| get(&v).expect("the table's type"))
}

/// A whole number from the table, in the type it is kept in.
fn int<T: TryFrom<i64>>(v: &Value) -> Option<T> {
    v.int()?.try_into().ok()
}

/// Text from the table (a list, kept as text there).
fn owned_text(v: &Value) -> Option<String> {
    v.text().map(str::to_owned)
}

/// An IPv4 address and port from the table (kept as text there).
fn ipv4_port(v: &Value) -> Option<SocketAddrV4> {
    v.text()?.parse().ok()
}

/// A boolean from the table.
fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

/// A word of a choice from the table, in its listed spelling.
fn word(v: &Value) -> Option<String> {
    v.text().map(str::to_owned)
}

/// Milliseconds from the table (kept as ns there).
fn msec(v: &Value) -> Option<f64> {
    Some(v.ns()? as f64 / 1e6)
}

/// A parser of a finite number within `lo..=hi`, in `unit` (its symbol
/// `sym` in messages).
fn range_parser(
    lo: f64,
    hi: f64,
    unit: &'static str,
    sym: &'static str,
) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |s: &str| {
        let v: f64 = s
            .parse()
            .map_err(|_| format!("{s:?} is not a number of {unit}"))?;
        if !v.is_finite() || v < lo || v > hi {
            return Err(format!("{v} {sym} is outside {lo}..={hi} {sym}"));
        }
        Ok(v)
    }
}

fn ms_parser(lo: f64, hi: f64) -> impl Fn(&str) -> Result<f64, String> + Clone {
    range_parser(lo, hi, "milliseconds", "ms")
}

fn secs_parser(lo: f64, hi: f64) -> impl Fn(&str) -> Result<f64, String> + Clone {
    range_parser(lo, hi, "seconds", "s")
}

/// Where listening roles (stats, receive) find the group.
#[derive(Args, Debug, Clone)]
pub struct ListenNet {
    /// Multicast group to join and listen on, or a local unicast IPv4
    /// address (the module's source.ip). Stats needs a group: status packets
    /// are multicast.
    #[arg(long, visible_alias = "group", value_name = "IPV4", default_value_t = DEFAULT_GROUP, value_parser = table(Role::Source, "source.ip", Value::ipv4))]
    pub source_ip: Ipv4Addr,
    /// UDP port of the group (source.port).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_PORT, value_parser = table(Role::Source, "source.port", int::<u16>))]
    pub port: u16,
    /// Interface to join the group on (local.ifname), e.g. eth0; default:
    /// the one the routing table picks for the group.
    #[arg(long, value_name = "IFNAME")]
    pub local_ifname: Option<String>,
}

/// `--key-file`, shared by every command that sends or receives.
#[derive(Args, Debug, Clone, Default)]
pub struct KeyArgs {
    /// Pre-shared key file (as `bark keygen` writes it; the modules'
    /// bark.key-file): seal every datagram sent and accept only datagrams
    /// sealed with this key. Must be mode 0600 and owned by you. Without
    /// it, Bark is open: see docs/SECURITY.md.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

/// `bark keygen`.
#[derive(Args, Debug, Clone)]
pub struct KeygenArgs {
    /// Where to write the key; an existing file is never overwritten.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `bark stats`.
#[derive(Args, Debug, Clone)]
pub struct StatsArgs {
    #[command(flatten)]
    pub net: ListenNet,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Listen for --wait-sec, print one plain table (or one JSON snapshot
    /// with --json) and exit.
    #[arg(long)]
    pub once: bool,
    /// Print machine-readable snapshots instead of the live view: one JSON
    /// object per line every --interval-msec (one only with --once).
    #[arg(long)]
    pub json: bool,
    /// Serve the same figures as Prometheus metrics over HTTP at
    /// http://ADDR/metrics (e.g. 0.0.0.0:9530). Without a terminal and
    /// without --once/--json, bark only serves.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// How long --once listens before printing, seconds (status packets
    /// come about once a second).
    #[arg(long, value_name = "SECONDS", default_value_t = 2.5, value_parser = secs_parser(0.1, 600.0))]
    pub wait_sec: f64,
    /// Refresh period of the live view and of --json snapshots, ms
    /// (the default refreshes 4 times a second).
    #[arg(long, value_name = "MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub interval_msec: u64,
    /// A node not heard from for this long is marked quiet, seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0, value_parser = secs_parser(0.5, 3600.0))]
    pub quiet_sec: f64,
    /// A node not heard from for this long is dropped from the view,
    /// seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0, value_parser = secs_parser(1.0, 86_400.0))]
    pub drop_sec: f64,
    /// Stop after this many refreshes (live view or --json); 0 runs until
    /// q, Ctrl-C or SIGTERM.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub count: u64,
}

/// `bark ls`.
#[derive(Args, Debug, Clone)]
pub struct LsArgs {
    #[command(flatten)]
    pub net: ListenNet,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Print the nodes as one JSON array.
    #[arg(long)]
    pub json: bool,
    /// How long to listen before listing, seconds (status packets come
    /// about once a second).
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0, value_parser = secs_parser(0.1, 600.0))]
    pub wait_sec: f64,
}

/// `bark set`.
#[derive(Args, Debug, Clone)]
pub struct SetArgs {
    #[command(flatten)]
    pub net: ListenNet,
    #[command(flatten)]
    pub key: KeyArgs,
    /// The node: room name, node.name, name@host, host, or node id.
    pub target: String,
    /// FIELD=VALUE: volume=40% (0..150 %), mute=on|off, delay=12.5ms,
    /// name=Kitchen, stream=livingroom (* for the best one),
    /// enabled=on|off; senders: name, stream, priority=N.
    #[arg(required = true, value_name = "FIELD=VALUE")]
    pub assignments: Vec<String>,
    /// Print the ack as JSON.
    #[arg(long)]
    pub json: bool,
    /// How long to look for the node on the group, seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0, value_parser = secs_parser(0.1, 600.0))]
    pub wait_sec: f64,
    /// How long to wait for the ack (four tries in that time), ms.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(4..=60_000))]
    pub timeout_msec: u64,
}

/// `bark zone`.
#[derive(Args, Debug, Clone)]
pub struct ZoneArgs {
    #[command(flatten)]
    pub net: ListenNet,
    #[command(flatten)]
    pub key: KeyArgs,
    /// The zone (its stream's name); none lists the zones.
    pub zone: Option<String>,
    /// volume=50% (the loudest member; the others in proportion),
    /// mute=on|off.
    #[arg(value_name = "FIELD=VALUE")]
    pub assignments: Vec<String>,
    /// Print the zones as JSON.
    #[arg(long)]
    pub json: bool,
    /// How long to listen for the rooms first, seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.5, value_parser = secs_parser(0.1, 600.0))]
    pub wait_sec: f64,
    /// How long to wait for each room's ack, ms.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(4..=60_000))]
    pub timeout_msec: u64,
}

/// `bark web`.
#[derive(Args, Debug, Clone)]
pub struct WebArgs {
    #[command(flatten)]
    pub net: ListenNet,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Address to serve on. Anything but a loopback address needs
    /// --key-file (then commands need the token printed at start) or
    /// --open.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9531")]
    pub listen: SocketAddr,
    /// Serve a non-loopback address without a key: anyone who reaches it
    /// can change every room.
    #[arg(long)]
    pub open: bool,
}

/// Network settings of the sender (the sink module's arguments).
#[derive(Args, Debug, Clone)]
pub struct SendNet {
    /// Where audio and status go: a multicast group, or a receiver's
    /// unicast IPv4 address, or a list of them (blank- or
    /// comma-separated, at most one group and 8 more): each gets every
    /// packet (destination.ip).
    #[arg(long, visible_alias = "group", value_name = "IPV4[,IPV4...]", default_value = settings::DEFAULT_GROUP_TEXT, value_parser = table(Role::Sink, "destination.ip", owned_text))]
    pub destination_ip: String,
    /// UDP port to send to (destination.port).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_PORT, value_parser = table(Role::Sink, "destination.port", int::<u16>))]
    pub port: u16,
    /// Local IPv4 address to send from (source.ip); default: any, as the
    /// routing table says.
    #[arg(long, value_name = "IPV4", value_parser = table(Role::Sink, "source.ip", Value::ipv4))]
    pub source_ip: Option<Ipv4Addr>,
    /// Interface multicast leaves by (local.ifname), e.g. eth0; default:
    /// the routing table's choice.
    #[arg(long, value_name = "IFNAME")]
    pub local_ifname: Option<String>,
    /// UDP port to take time requests, NACKs and subscriptions on
    /// (bark.control.port); 0 picks a free one. A receiver's --sender
    /// needs a fixed one.
    #[arg(long, value_name = "PORT", default_value_t = 0, value_parser = table(Role::Sink, "bark.control.port", int::<u16>))]
    pub control_port: u16,
    /// Multicast TTL, hops (net.ttl): 1 keeps packets on the local link, 0
    /// on this host.
    #[arg(long, value_name = "HOPS", default_value_t = DEFAULT_TTL, value_parser = table(Role::Sink, "net.ttl", int::<u32>))]
    pub ttl: u32,
    /// Whether multicast loops back to listeners on this host (net.loop;
    /// --loop repeats the input instead).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, value_parser = table(Role::Sink, "net.loop", Value::bool))]
    pub multicast_loop: bool,
    /// Path MTU, bytes (net.mtu); no packet exceeds it. At least 168: one
    /// frame of any format, with the authentication trailer.
    #[arg(long, value_name = "BYTES", default_value_t = bark_core::protocol::DEFAULT_MTU, value_parser = table(Role::Sink, "net.mtu", int::<usize>))]
    pub mtu: usize,
}

/// `bark stream`.
/// What `bark stream` and `bark receive` leave behind for tests and
/// labs.
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// At exit, write counters (packets and bytes by kind, CPU time; a
    /// receiver's final status figures) as JSON to this file.
    #[arg(long, value_name = "FILE.json")]
    pub summary: Option<PathBuf>,
    /// Test only: pretend the local clock is off by OFFSET_NS and runs PPM
    /// fast ("OFFSET_NS,PPM"; a receiver's simulated output clock runs on
    /// it); also read from BARK_TEST_CLOCK.
    #[arg(
        long,
        value_name = "OFFSET_NS,PPM",
        hide = true,
        allow_hyphen_values = true
    )]
    pub test_clock: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct StreamArgs {
    /// Audio to send: a file (WAV, FLAC, Ogg Vorbis, MP3), or - for stdin.
    /// It is decoded, its channels mapped and resampled to --rate/--channels.
    #[arg(long, short = 'i', value_name = "FILE|-")]
    pub input: String,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Also encrypt the audio payload (bark.encrypt); needs --key-file.
    #[arg(long, requires = "key_file")]
    pub encrypt: bool,
    /// Keep recent packets and resend them to receivers that ask
    /// (bark.repair).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, value_parser = table(Role::Sink, "bark.repair", boolean))]
    pub repair: bool,
    /// FEC for multicast to many: K:M sends M repair packets per K audio
    /// packets (bark.fec; off, 4:1, 6:1, 8:2, 12:2).
    #[arg(long, value_name = "K:M", default_value = "off", value_parser = table(Role::Sink, "bark.fec", word))]
    pub fec: String,
    /// Start over at the end of the input, forever (or until --seconds).
    /// Needs a file, not stdin.
    #[arg(long = "loop")]
    pub repeat: bool,
    /// Stop after this many seconds of audio; default: at the end of the
    /// input.
    #[arg(long, value_name = "SECONDS", value_parser = secs_parser(0.001, 1e7))]
    pub seconds: Option<f64>,
    #[command(flatten)]
    pub net: SendNet,
    /// Receivers play each frame this long after it was sent, ms
    /// (sess.latency.msec), at most 2000.
    #[arg(long, value_name = "MS", default_value_t = bark_core::sender::DEFAULT_LATENCY_NS as f64 / 1e6, value_parser = table(Role::Sink, "sess.latency.msec", msec))]
    pub latency_msec: f64,
    /// The most the session latency may rise to, ms
    /// (bark.latency.max-msec): receivers report what their output needs,
    /// and the latency rises up to this so that every receiver plays every
    /// frame in time. Equal to --latency-msec (or below it) pins the
    /// latency: a receiver that needs more then plays late and says so. At
    /// most 2000, what a receiver can hold.
    #[arg(long, value_name = "MS", default_value_t = bark_core::sender::DEFAULT_MAX_LATENCY_NS as f64 / 1e6, value_parser = table(Role::Sink, "bark.latency.max-msec", msec))]
    pub latency_max_msec: f64,
    /// Announce the session for this long before the first audio packet,
    /// ms: sync messages (10 a second) let receivers that have never heard
    /// this sender lock their clocks first, so that they play its first
    /// frame at its instant rather than join late. 0 starts the audio at
    /// once.
    #[arg(long, value_name = "MS", default_value_t = 500.0, value_parser = ms_parser(0.0, 10_000.0))]
    pub lead_in_msec: f64,
    /// Stream name (bark.stream); receivers with --stream follow only it.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub stream: String,
    /// Stream priority, -128..127 (bark.priority); receivers follow the
    /// highest.
    #[arg(long, value_name = "N", default_value_t = 0, allow_negative_numbers = true, value_parser = table(Role::Sink, "bark.priority", int::<i8>))]
    pub priority: i8,
    /// Sample format on the wire (audio.format): F32 (lossless), S24, S16,
    /// OPUS (48 kHz, 1 or 2 channels).
    #[arg(long, value_name = "FORMAT", default_value = "F32", value_parser = table(Role::Sink, "audio.format", Value::sample))]
    pub format: SampleFormat,
    /// Opus bitrate, kbit/s, 6..=510 (bark.opus.bitrate), with --format
    /// OPUS.
    #[arg(long, value_name = "KBIT/S", default_value_t = bark_core::opus::DEFAULT_OPUS_KBPS, value_parser = table(Role::Sink, "bark.opus.bitrate", int::<u32>))]
    pub opus_bitrate: u32,
    /// Opus frame, ms: 2.5, 5, 10 or 20 (bark.opus.frame-msec), with
    /// --format OPUS.
    #[arg(long, value_name = "MS", default_value = "10", value_parser = table(Role::Sink, "bark.opus.frame-msec", word))]
    pub opus_frame_msec: String,
    /// Stream rate, Hz (audio.rate), 8000..=192000; the input is resampled
    /// to it.
    #[arg(long, value_name = "HZ", default_value_t = settings::DEFAULT_RATE, value_parser = table(Role::Sink, "audio.rate", int::<u32>))]
    pub rate: u32,
    /// Stream channels (audio.channels), 1..=8. Mono input is copied to
    /// every channel; otherwise channel c plays input channel c (wrapping),
    /// except that stereo to mono averages.
    #[arg(long, value_name = "N", default_value_t = settings::DEFAULT_CHANNELS, value_parser = table(Role::Sink, "audio.channels", int::<u8>))]
    pub channels: u8,
    /// Frames handed to the sender at a time, like a sink's quantum: the
    /// pacing step of the simulated input clock. Default: the frames of one
    /// full packet at --mtu (176 for stereo F32 at 1500 bytes, 3.7 ms at
    /// 48 kHz), so that every cycle sends one packet.
    #[arg(long, value_name = "FRAMES", value_parser = clap::value_parser!(u32).range(16..=8192))]
    pub quantum: Option<u32>,
    /// Node name shown by `bark stats` (node.name).
    #[arg(long, value_name = "NAME", default_value = "bark_stream")]
    pub node_name: String,
    /// Also write what was sent as a WAV file (F32) with a timestamp sidecar
    /// FILE.ts.csv (CLOCK_MONOTONIC ns at which each buffer entered the
    /// sender): the reference for lab measurements.
    #[arg(long, value_name = "FILE.wav")]
    pub record: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
    /// UDP port for commands (`bark set`: stream name, priority, name); 0
    /// picks a free one, which the status packets report.
    #[arg(long, value_name = "PORT", default_value_t = 0, value_parser = table(Role::Sink, "bark.command.port", int::<u16>))]
    pub command_port: u16,
    /// Advertise this node with DNS-SD (_bark._udp) on the interface its
    /// audio uses (bark.discovery).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, value_parser = table(Role::Sink, "bark.discovery", boolean))]
    pub discovery: bool,
}

/// Where `bark receive` writes what it would play.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputTarget {
    /// Nowhere (`null`): run the receive path only.
    Null,
    /// A WAV file plus its `.ts.csv` timestamp sidecar.
    Wav(PathBuf),
}

fn parse_output(s: &str) -> Result<OutputTarget, String> {
    if s == "null" {
        return Ok(OutputTarget::Null);
    }
    let p = PathBuf::from(s);
    match p.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("wav") => Ok(OutputTarget::Wav(p)),
        _ => Err(format!("{s:?}: want a FILE.wav or null")),
    }
}

/// `bark receive`.
#[derive(Args, Debug, Clone)]
pub struct ReceiveArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// Ask the sender again for packets lost on the way (bark.repair).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, value_parser = table(Role::Source, "bark.repair", boolean))]
    pub repair: bool,
    /// Rebuild lost packets from the sender's FEC repair packets
    /// (bark.fec; the codec's tables take 8 MiB).
    #[arg(long, value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set, value_parser = table(Role::Source, "bark.fec", boolean))]
    pub fec: bool,
    /// Have the sender at IPV4:PORT (its --control-port) send the stream
    /// to this receiver alone, unicast (bark.sender); a multicast
    /// --source-ip is then not joined.
    #[arg(long, value_name = "IPV4:PORT", value_parser = table(Role::Source, "bark.sender", ipv4_port))]
    pub sender: Option<SocketAddrV4>,
    /// What to do with the audio: write it to FILE.wav (F32, at --rate and
    /// --channels) plus FILE.ts.csv (CLOCK_MONOTONIC ns at which each
    /// buffer's first frame would be heard), or null to discard it.
    #[arg(long, short = 'o', value_name = "FILE.wav|null", default_value = "null", value_parser = parse_output)]
    pub output: OutputTarget,
    /// Stop after this many seconds; default: run until Ctrl-C or SIGTERM.
    #[arg(long, value_name = "SECONDS", value_parser = secs_parser(0.001, 1e7))]
    pub seconds: Option<f64>,
    #[command(flatten)]
    pub net: ListenNet,
    /// Multicast TTL of this receiver's status packets, hops (0 keeps them
    /// on this host).
    #[arg(long, value_name = "HOPS", default_value_t = DEFAULT_TTL, value_parser = table(Role::Sink, "net.ttl", int::<u32>))]
    pub ttl: u32,
    /// Play this long after the sender, ms, instead of the sender's latency
    /// (sess.latency.msec); at most 2000, what a receiver can hold.
    #[arg(long, value_name = "MS", value_parser = table(Role::Source, "sess.latency.msec", msec))]
    pub latency_msec: Option<f64>,
    /// The least latency this receiver asks of the session, ms
    /// (bark.latency.min-msec): the sender raises every receiver's to it,
    /// up to its --latency-max-msec. Default: none, or 250 with
    /// --profile wifi.
    #[arg(long, value_name = "MS", value_parser = table(Role::Source, "bark.latency.min-msec", msec))]
    pub latency_min_msec: Option<f64>,
    /// lan, or wifi: a latency that rides out Wi-Fi's 100–200 ms stalls
    /// (bark.profile; --latency-min-msec 250). Give --sender too, for
    /// unicast.
    #[arg(long, value_name = "PROFILE", default_value = "lan", value_parser = table(Role::Source, "bark.profile", word))]
    pub profile: String,
    /// Extra delay of this receiver, ms, may be negative (bark.delay.msec),
    /// within ±2000.
    #[arg(long, value_name = "MS", default_value_t = 0.0, allow_negative_numbers = true, value_parser = table(Role::Source, "bark.delay.msec", msec))]
    pub delay_msec: f64,
    /// Follow only the stream of this name (bark.stream); default: the
    /// highest-priority, newest stream.
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
    /// Output rate, Hz (audio.rate), 8000..=192000.
    #[arg(long, value_name = "HZ", default_value_t = settings::DEFAULT_RATE, value_parser = table(Role::Source, "audio.rate", int::<u32>))]
    pub rate: u32,
    /// Output channels (audio.channels), 1..=8.
    #[arg(long, value_name = "N", default_value_t = settings::DEFAULT_CHANNELS, value_parser = table(Role::Source, "audio.channels", int::<u8>))]
    pub channels: u8,
    /// Which of the stream's channels to play (bark.channels): all (mixed
    /// to the output's channels), mono (a downmix of all), or positions
    /// such as [ FL ] (one side of a stereo pair) or "RL,RR".
    #[arg(long, value_name = "CHANNELS", default_value = "all", value_parser = table(Role::Source, "bark.channels", owned_text))]
    pub play_channels: String,
    /// Frames per output buffer of the simulated output clock (its
    /// quantum); one is filled every FRAMES/rate seconds.
    #[arg(long, value_name = "FRAMES", default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..=8192))]
    pub quantum: u32,
    /// Time from filling a buffer to hearing its first frame, ms, as an
    /// audio device's latency; default: one quantum. It is this receiver's
    /// downstream latency: reported in its status (`bark stats`), and with
    /// one quantum and a 6 ms margin the latency it needs, which its sender
    /// raises the session latency to cover (up to the sender's
    /// --latency-max-msec; beyond it this receiver plays late).
    #[arg(long, value_name = "MS", value_parser = ms_parser(0.0, 1000.0))]
    pub output_delay_msec: Option<f64>,
    /// Node name shown by `bark stats` (node.name).
    #[arg(long, value_name = "NAME", default_value = "bark_receive")]
    pub node_name: String,
    /// UDP port for commands (`bark set`, `bark web`); 0 picks a free one,
    /// which the status packets report.
    #[arg(long, value_name = "PORT", default_value_t = 0, value_parser = table(Role::Source, "bark.command.port", int::<u16>))]
    pub command_port: u16,
    /// Advertise this node with DNS-SD (_bark._udp) on the interface its
    /// audio uses (bark.discovery).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, value_parser = table(Role::Source, "bark.discovery", boolean))]
    pub discovery: bool,
    /// Receive unicast from the sender of --stream found with DNS-SD (no
    /// address needed; --sender wins) (bark.unicast).
    #[arg(long, value_name = "BOOL", default_value_t = false, action = clap::ArgAction::Set, value_parser = table(Role::Source, "bark.unicast", boolean))]
    pub unicast: bool,
    /// Test only: drop this share of the datagrams received, percent, at
    /// random (each its own draw, seeded by the node id): a lossy link to
    /// this receiver alone, for labs with more receivers than user-space
    /// impairment relays can serve.
    #[arg(long, value_name = "PERCENT", hide = true, value_parser = range_parser(0.0, 100.0, "percent", "%"))]
    pub test_loss: Option<f64>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Output style of `bark doctor`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoctorOutput {
    /// Human-readable lines.
    Text,
    /// One JSON document.
    Json,
}

/// `bark doctor`.
#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub net: ListenNet,
    /// The TTL the sender uses (net.ttl), hops: checked for what it reaches.
    #[arg(long, value_name = "HOPS", default_value_t = DEFAULT_TTL, value_parser = table(Role::Sink, "net.ttl", int::<u32>))]
    pub ttl: u32,
    /// Skip the checks that ask the audio server (pw-dump, pactl): Bark
    /// nodes and receivers. The PipeWire library version is still read.
    #[arg(long)]
    pub no_audio: bool,
    /// Output style: text (lines for people) or json (one document for
    /// scripts).
    #[arg(long, value_name = "STYLE", default_value = "text")]
    pub output: DoctorOutput,
}

/// `bark man`.
#[derive(Args, Debug, Clone)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// The clap command, for man pages and tests.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bark_core::settings::Kind;

    #[test]
    fn clap_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn defaults_match_the_modules() {
        let c = Cli::try_parse_from(["bark", "stream", "--input", "x.wav"]).unwrap();
        let Command::Stream(s) = c.command else {
            panic!()
        };
        assert_eq!(s.net.destination_ip, settings::DEFAULT_GROUP_TEXT);
        assert_eq!(s.net.port, 1530);
        assert_eq!(s.net.ttl, 1);
        assert!(s.net.multicast_loop);
        assert_eq!(s.net.mtu, 1500);
        assert_eq!(s.latency_msec, 40.0);
        assert_eq!(s.latency_max_msec, 1000.0);
        assert_eq!(s.lead_in_msec, 500.0);
        assert_eq!(s.format, SampleFormat::F32);
        assert_eq!((s.rate, s.channels, s.priority), (48_000, 2, 0));
        assert!(!s.repeat);
        let c = Cli::try_parse_from(["bark", "receive", "--delay-msec", "-1.5"]).unwrap();
        let Command::Receive(r) = c.command else {
            panic!()
        };
        assert_eq!(r.output, OutputTarget::Null);
        assert_eq!(r.delay_msec, -1.5);
        assert_eq!(r.latency_msec, None);
        assert_eq!(r.net.source_ip, DEFAULT_GROUP);
    }

    #[test]
    fn bad_values_name_the_flag_and_the_range() {
        for (args, needle) in [
            (vec!["stream", "-i", "x", "--rate", "4000"], "8000..=192000"),
            (vec!["stream", "-i", "x", "--format", "U8"], "F32, S24, S16"),
            (vec!["stream", "-i", "x", "--priority", "200"], "--priority"),
            (vec!["stream", "-i", "x", "--port", "0"], "1..=65535"),
            (vec!["stream", "-i", "x", "--ttl", "256"], "--ttl"),
            (
                vec!["stream", "-i", "x", "--destination-ip", "::1"],
                "--destination-ip",
            ),
            (
                vec!["stream", "-i", "x", "--lead-in-msec=-1"],
                "0..=10000 ms",
            ),
            (
                vec!["stream", "-i", "x", "--latency-max-msec", "20000"],
                "0..=2000 ms",
            ),
            (vec!["receive", "--output", "x.mp3"], "FILE.wav or null"),
            (vec!["receive", "--latency-msec", "5000"], "0..=2000 ms"),
            (vec!["receive", "--channels", "9"], "--channels"),
            (vec!["stats", "--interval-msec", "10"], "--interval-msec"),
        ] {
            let mut v = vec!["bark"];
            v.extend(args.iter().copied());
            let e = Cli::try_parse_from(&v).unwrap_err().to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    /// Every setting the CLI has (the table's `cli` names) is a flag of
    /// `bark stream` (sender) or `bark receive` (receiver) with the table's
    /// default, that takes the table's bounds and refuses one step beyond
    /// them, and bad text, with the table's message.
    #[test]
    fn flags_follow_the_settings_table() {
        let cmd = command();
        let mut checked = 0;
        for s in settings::TABLE {
            let Some(flag) = s.cli else { continue };
            for role in s.roles {
                let (sub, pre) = match role {
                    Role::Sink => ("stream", &["-i", "x"][..]),
                    Role::Source => ("receive", &[][..]),
                };
                let arg = cmd
                    .find_subcommand(sub)
                    .and_then(|c| c.get_arguments().find(|a| a.get_long() == Some(flag)))
                    .unwrap_or_else(|| panic!("bark {sub} has no --{flag} ({})", s.key));
                if !arg.get_action().takes_values() {
                    // A switch (--encrypt): off unless given.
                    assert_eq!(s.default, Value::Bool(false), "bark {sub} --{flag}");
                    checked += 1;
                    continue;
                }
                let default: Vec<_> = arg.get_default_values().iter().collect();
                match (&s.default, &default[..]) {
                    (Value::Unset, []) => {}
                    // The CLI's nodes have names of their own (bark_stream,
                    // bark_receive), so that `bark stats` tells them apart.
                    (_, [_]) if s.key == "node.name" => {}
                    (d, [cli]) => {
                        let cli = s.parse(&cli.to_string_lossy()).unwrap();
                        assert_eq!(&cli, d, "bark {sub} --{flag}: default");
                    }
                    (d, cli) => panic!("bark {sub} --{flag}: default {cli:?}, table {d:?}"),
                }
                let probes: Vec<String> = match s.kind {
                    Kind::Int { min, max } => {
                        [min - 1, min, max, max + 1].map(|v| v.to_string()).into()
                    }
                    Kind::Msec { min, max } => [min - 0.5, min, max, max + 0.5]
                        .map(|v| v.to_string())
                        .into(),
                    Kind::Bool => vec!["maybe".into(), "off".into()],
                    Kind::Ipv4(_) => vec![
                        "300.1.2.3".into(),
                        "0.0.0.0".into(),
                        "255.255.255.255".into(),
                    ],
                    Kind::Destinations => vec![
                        "300.1.2.3".into(),
                        "0.0.0.0".into(),
                        "239.1.1.1,239.1.1.2".into(),
                        "10.0.0.1,10.0.0.1".into(),
                        "239.1.1.1,10.0.0.1".into(),
                    ],
                    Kind::Sample => vec!["U8".into(), "s24".into()],
                    Kind::Channels => vec!["[ XX ]".into(), "[ FL FL ]".into(), "left".into()],
                    Kind::Ipv4Port => vec![
                        "10.0.0.1".into(),
                        "10.0.0.1:0".into(),
                        "0.0.0.0:4010".into(),
                        "239.255.66.66:4010".into(),
                        "10.0.0.1:4010".into(),
                    ],
                    Kind::Text | Kind::Choice(_) => vec![],
                };
                for p in probes {
                    let value = format!("--{flag}={p}");
                    let argv = [&["bark", sub][..], pre, &[&value]].concat();
                    let got = Cli::try_parse_from(argv).map_err(|e| e.to_string());
                    match (s.parse(&p), got) {
                        (Ok(_), Ok(_)) => {}
                        (Err(why), Err(e)) => assert!(
                            e.contains(&format!("invalid value '{p}' for '--{flag} <"))
                                && e.contains(&format!(">': {why}\n")),
                            "{value}: {e}"
                        ),
                        (want, got) => panic!("bark {sub} {value}: table {want:?}, CLI {got:?}"),
                    }
                }
                checked += 1;
            }
        }
        assert!(checked >= 20, "{checked} flags checked");
    }

    #[test]
    fn every_flag_has_help() {
        fn walk(c: &clap::Command) {
            for a in c.get_arguments() {
                if a.is_hide_set() || a.get_id() == "help" || a.get_id() == "version" {
                    continue;
                }
                let h = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                assert!(h.len() > 15, "{} --{}: no help", c.get_name(), a.get_id());
            }
            for s in c.get_subcommands() {
                walk(s);
            }
        }
        walk(&command());
    }
}

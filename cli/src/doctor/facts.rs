//! What `bark doctor` observed, before any judgement: plain data that
//! [`super::probe`] fills on this host and tests fill by hand.
//!
//! Files and command outputs are kept as the text they were, so that a
//! test can feed a sample of /proc/net/igmp or `pw-dump` straight to
//! [`super::judge()`], and the parsers are exercised by the same tests.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

/// Everything the checks are judged on.
#[derive(Clone, Debug)]
pub struct Facts {
    /// The group (or unicast address) and port under test.
    pub group: SocketAddrV4,
    /// `--local-ifname`, if given.
    pub ifname: Option<String>,
    /// The sender's multicast TTL under test, hops.
    pub ttl: u32,
    /// IPv4 interfaces of this host.
    pub ifaces: Vec<Iface>,
    /// What the routing table says about the group.
    pub route: Route,
    /// /proc/net/igmp before doctor joined the group (`None`: unreadable).
    pub igmp: Option<String>,
    /// Joining the group: `None` when not tried (unicast, or no route).
    pub join: Option<Result<(), String>>,
    /// A TTL-0 datagram to the group, looped back to a listener here
    /// (`None`: not tried).
    pub multicast_probe: Option<Probe>,
    /// A datagram to an ephemeral port on this host's own address, and
    /// that address (`None`: not tried).
    pub unicast_probe: Option<(Ipv4Addr, Probe)>,
    /// `nft list ruleset` output (`None`: nft missing or not allowed).
    pub nft_ruleset: Option<String>,
    /// /proc/sys/net/core/rmem_max (`None`: unreadable).
    pub rmem_max: Option<String>,
    /// Bark module files found in PipeWire's module directories.
    pub module_files: Vec<PathBuf>,
    /// pipewire.conf.d drop-ins (`*.conf`) and their text.
    pub dropins: Vec<(PathBuf, String)>,
    /// Audio daemons running on this host.
    pub daemons: Vec<Daemon>,
    /// The uid doctor runs as.
    pub uid: u32,
    /// `pw-cli --version` output (`None`: did not run).
    pub pw_cli_version: Option<String>,
    /// `pipewire --version` output (`None`: did not run).
    pub pipewire_version: Option<String>,
    /// What the audio server said (`None`: `--no-audio`).
    pub audio: Option<AudioFacts>,
}

impl Facts {
    /// Facts about `group` with nothing observed yet: no interfaces, no
    /// route, no files, no daemons. Tests start from here.
    pub fn new(group: SocketAddrV4) -> Facts {
        Facts {
            group,
            ifname: None,
            ttl: 1,
            ifaces: Vec::new(),
            route: Route::default(),
            igmp: None,
            join: None,
            multicast_probe: None,
            unicast_probe: None,
            nft_ruleset: None,
            rmem_max: None,
            module_files: Vec::new(),
            dropins: Vec::new(),
            daemons: Vec::new(),
            uid: 1000,
            pw_cli_version: None,
            pipewire_version: None,
            audio: None,
        }
    }
}

/// An IPv4 interface as `getifaddrs` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    /// Name, e.g. "eth0".
    pub name: String,
    /// Its first IPv4 address, if any.
    pub ip: Option<Ipv4Addr>,
    /// Prefix length of that address, bits.
    pub prefix: u32,
    /// IFF_UP.
    pub up: bool,
    /// IFF_MULTICAST.
    pub multicast: bool,
    /// IFF_LOOPBACK.
    pub loopback: bool,
}

/// What the routing table says about the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The source address the kernel picks for the group by the table
    /// alone, or why there is none.
    pub by_table: Result<Ipv4Addr, String>,
    /// `ip -o route get <group>` output (`None`: did not run).
    pub ip_route_get: Option<String>,
    /// With `--local-ifname` and an address on it: the source address for
    /// the group through that interface, or why there is none.
    pub via_ifname: Option<Result<Ipv4Addr, String>>,
}

impl Default for Route {
    fn default() -> Route {
        Route {
            by_table: Err("not probed".into()),
            ip_route_get: None,
            via_ifname: None,
        }
    }
}

/// How a test datagram fared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// It reached the listener.
    Arrived,
    /// It never arrived within the wait (700 ms).
    Lost,
    /// The probe could not be made.
    Error(String),
}

/// A running audio daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Daemon {
    /// Process name: pipewire, pipewire-pulse, wireplumber or pulseaudio.
    pub name: String,
    /// Its real uid (`u32::MAX` when unreadable).
    pub uid: u32,
}

/// What the user's audio server said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AudioFacts {
    /// `pw-dump` output: `None` when not asked (no PipeWire of this user),
    /// `Some(Err)` when it failed or timed out.
    pub pw_dump: Option<Result<String, String>>,
    /// `pactl list short modules` output, when PulseAudio (not PipeWire)
    /// is this user's server.
    pub pactl_modules: Option<String>,
    /// What Bark receivers on this host say about themselves in their
    /// status packets, matched to PipeWire nodes by host and `node.name`.
    pub receiver_reports: Vec<ReceiverReport>,
}

/// One receiver's report about itself.
///
/// While the other probes run, doctor listens on the group for
/// [`super::probe::STATUS_LISTEN`] (when the audio server is asked and the
/// group can be joined) and fills one of these per receiver on this host
/// (status packets carry `host` and `node.name`); the `receiver` check
/// shows it beside what PipeWire reports. Receivers with a key file seal
/// their status, which doctor (without a key) cannot read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverReport {
    /// `node.name` the receiver reports (matches the PipeWire node).
    pub node_name: String,
    /// The receiver's downstream latency, µs: the status packets'
    /// `downstream_us` (core/src/protocol.rs, `StatusCounters`); `None`
    /// until the receiver has filled an output buffer.
    pub downstream_us: Option<u32>,
}

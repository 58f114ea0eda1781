//! Looks at this host and fills [`Facts`]: interfaces, routes, test
//! datagrams, /proc and /sys, files, and the audio server's own tools.
//! Nothing here decides whether what it finds is good.
//!
//! Every probe stays on this host: test datagrams go out with TTL 0 and the
//! multicast loop on (the kernel delivers the loop copy to local listeners,
//! through the firewall's input path, and never transmits it), and the
//! unicast probe goes to one of this host's own addresses.

use super::facts::{AudioFacts, Daemon, Facts, Iface, Probe, ReceiverReport, Route};
use super::parse;
use crate::cli::DoctorArgs;
use crate::net;
use anyhow::Result;
use nix::net::if_::InterfaceFlags;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bark's PipeWire module files.
const MODULE_FILES: [&str; 2] = [
    "libpipewire-module-bark-sink.so",
    "libpipewire-module-bark-source.so",
];

/// The daemons doctor looks for in /proc.
const DAEMONS: [&str; 4] = ["pipewire", "pipewire-pulse", "wireplumber", "pulseaudio"];

/// How long doctor listens on the group for the receivers' status packets
/// (each node sends one a second, `bark_core::endpoint::STATUS_PERIOD_NS`).
pub const STATUS_LISTEN: Duration = Duration::from_millis(1500);

/// Observes everything the checks need, for the group and options in `a`.
pub fn gather(a: &DoctorArgs) -> Facts {
    let group = SocketAddrV4::new(a.net.source_ip, a.net.port);
    let mut f = Facts::new(group);
    f.ifname = a.net.local_ifname.clone();
    f.ttl = a.ttl;
    f.ifaces = interfaces();
    f.uid = nix::unistd::getuid().as_raw();
    if group.ip().is_multicast() {
        f.route = route(group, f.ifname.as_deref(), &f.ifaces);
    }
    // The address the group is sent from, when there is a route at all:
    // through --local-ifname if given, else by the table.
    let source = match &f.route.via_ifname {
        Some(r) => r.as_ref().ok().copied(),
        None if f.ifname.is_none() => f.route.by_table.as_ref().ok().copied(),
        None => None,
    };
    // The receivers on this host report their own downstream latency in
    // their status packets: listened for on the group while the other
    // probes run (it takes a status period), when the audio server is
    // asked and the group can be joined.
    let mut listener = None;
    if group.ip().is_multicast() && source.is_some() {
        f.igmp = std::fs::read_to_string("/proc/net/igmp").ok();
        let joined = net::group_socket(group, f.ifname.as_deref());
        f.join = Some(joined.as_ref().map(|_| ()).map_err(|e| format!("{e:#}")));
        if let (Ok(sock), false) = (joined, a.no_audio) {
            let host = bark_io::node::hostname();
            listener = std::thread::Builder::new()
                .name("bark-doctor-status".into())
                .spawn(move || receiver_reports(sock, &host, STATUS_LISTEN))
                .ok();
        }
        f.multicast_probe = Some(probe_result(probe_multicast(
            group,
            f.ifname.as_deref(),
            source,
        )));
    }
    if let Some(ip) = source.filter(|ip| !ip.is_unspecified()) {
        f.unicast_probe = Some((ip, probe_result(probe_unicast(ip))));
    }
    f.nft_ruleset = run_cmd("nft", &["list", "ruleset"], Duration::from_secs(2)).map(|(_, s)| s);
    f.rmem_max = std::fs::read_to_string("/proc/sys/net/core/rmem_max").ok();
    f.module_files = module_dirs()
        .iter()
        .flat_map(|d| MODULE_FILES.iter().map(move |m| d.join(m)))
        .filter(|p| p.exists())
        .collect();
    f.dropins = dropins();
    f.daemons = daemons();
    f.pw_cli_version = run_cmd("pw-cli", &["--version"], Duration::from_secs(2)).map(|(_, s)| s);
    f.pipewire_version =
        run_cmd("pipewire", &["--version"], Duration::from_secs(2)).map(|(_, s)| s);
    if !a.no_audio {
        let mut audio = audio(&f);
        audio.receiver_reports = listener.and_then(|l| l.join().ok()).unwrap_or_default();
        f.audio = Some(audio);
    }
    f
}

/// Listens on `sock` (joined to the group) for `wait` and returns what
/// each receiver on `host` (by its status packets' host name) says about
/// itself, one report per `node.name` (the latest). Only open status
/// packets are read: doctor has no key, so receivers with a key file stay
/// silent here.
pub fn receiver_reports(
    mut sock: net::UdpSocket,
    host: &str,
    wait: Duration,
) -> Vec<ReceiverReport> {
    use bark_core::protocol::{self, Packet, Role};
    let mut by_name: BTreeMap<String, Option<u32>> = BTreeMap::new();
    let end = Instant::now() + wait;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        net::wait_readable(&[&sock], left.as_nanos() as u64);
        // Audio on the group is skipped; bounded so the deadline holds
        // under a flood.
        sock.drain(1024, |data, _, _| {
            let Ok(Packet::Status(st)) = protocol::parse(data) else {
                return;
            };
            if st.role == Role::Receiver && st.host == host {
                // The need is 0 until the receiver has filled an output
                // buffer: until then its downstream latency is unknown.
                let c = st.counters;
                let down = (c.need_us > 0).then_some(c.downstream_us);
                by_name.insert(st.name.to_owned(), down);
            }
        });
    }
    by_name
        .into_iter()
        .map(|(node_name, downstream_us)| ReceiverReport {
            node_name,
            downstream_us,
        })
        .collect()
}

/// Asks this user's audio server: PipeWire through `pw-dump`, else
/// PulseAudio through `pactl`.
fn audio(f: &Facts) -> AudioFacts {
    let mine = |n: &str| f.daemons.iter().any(|d| d.name == n && d.uid == f.uid);
    // `receiver_reports` come from the group, filled by `gather`.
    let mut a = AudioFacts::default();
    if mine("pipewire") {
        a.pw_dump = Some(match run_cmd("pw-dump", &[], Duration::from_secs(5)) {
            Some((true, out)) => Ok(out),
            Some((false, _)) => Err("pw-dump failed".into()),
            None => Err("pw-dump did not answer within 5 s".into()),
        });
    } else if mine("pulseaudio") {
        a.pactl_modules = run_cmd(
            "pactl",
            &["list", "short", "modules"],
            Duration::from_secs(3),
        )
        .and_then(|(ok, s)| ok.then_some(s));
    }
    a
}

fn interfaces() -> Vec<Iface> {
    let mut by_name: BTreeMap<String, Iface> = BTreeMap::new();
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    for a in list {
        let e = by_name
            .entry(a.interface_name.clone())
            .or_insert_with(|| Iface {
                name: a.interface_name.clone(),
                ip: None,
                prefix: 0,
                up: false,
                multicast: false,
                loopback: false,
            });
        e.up |= a.flags.contains(InterfaceFlags::IFF_UP);
        e.multicast |= a.flags.contains(InterfaceFlags::IFF_MULTICAST);
        e.loopback |= a.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
            if e.ip.is_none() {
                e.ip = Some(sin.ip());
                e.prefix = a
                    .netmask
                    .as_ref()
                    .and_then(|m| m.as_sockaddr_in())
                    .map_or(0, |m| u32::from(m.ip()).count_ones());
            }
        }
    }
    by_name.into_values().collect()
}

fn route(group: SocketAddrV4, ifname: Option<&str>, ifaces: &[Iface]) -> Route {
    let ifa = ifname.and_then(|n| ifaces.iter().find(|i| i.name == n)?.ip);
    Route {
        by_table: route_source(group, None).map_err(|e| e.to_string()),
        ip_route_get: run_cmd(
            "ip",
            &["-o", "route", "get", &group.ip().to_string()],
            Duration::from_secs(2),
        )
        .and_then(|(ok, out)| ok.then_some(out)),
        via_ifname: ifa.map(|ifa| route_source(group, Some(ifa)).map_err(|e| e.to_string())),
    }
}

/// The local address the kernel would send `group` from, with `ifa` as
/// the multicast interface if given.
fn route_source(group: SocketAddrV4, ifa: Option<Ipv4Addr>) -> std::io::Result<Ipv4Addr> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(ifa) = ifa {
        s.set_multicast_if_v4(&ifa)?;
    }
    // connect() on UDP sends nothing: it only resolves the route.
    s.connect(&SockAddr::from(group))?;
    Ok(s.local_addr()?
        .as_socket_ipv4()
        .map_or(Ipv4Addr::UNSPECIFIED, |a| *a.ip()))
}

fn probe_result(r: Result<bool>) -> Probe {
    match r {
        Ok(true) => Probe::Arrived,
        Ok(false) => Probe::Lost,
        Err(e) => Probe::Error(format!("{e:#}")),
    }
}

/// Sends one datagram to `group` with TTL 0 and loop on (so it never leaves
/// the host) and waits for it on a joined socket.
fn probe_multicast(
    group: SocketAddrV4,
    ifname: Option<&str>,
    ifa: Option<Ipv4Addr>,
) -> Result<bool> {
    let mut rx = net::group_socket(group, ifname)?;
    let tx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(ifa) = ifa {
        tx.set_multicast_if_v4(&ifa)?;
    }
    tx.set_multicast_ttl_v4(0)?;
    tx.set_multicast_loop_v4(true)?;
    let token = format!("bark-doctor-{}", bark_io::node::random_nonzero_u64());
    tx.send_to(token.as_bytes(), &SockAddr::from(group))?;
    wait_for(&mut rx, token.as_bytes())
}

fn probe_unicast(ip: Ipv4Addr) -> Result<bool> {
    let mut rx = net::group_socket(SocketAddrV4::new(ip, 0), None)?;
    let to = rx.local_addr()?;
    let tx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let token = format!("bark-doctor-{}", bark_io::node::random_nonzero_u64());
    tx.send_to(token.as_bytes(), &SockAddr::from(to))?;
    wait_for(&mut rx, token.as_bytes())
}

fn wait_for(rx: &mut net::UdpSocket, token: &[u8]) -> Result<bool> {
    let end = Instant::now() + Duration::from_millis(700);
    let mut buf = [0u8; 256];
    while Instant::now() < end {
        net::wait_readable(&[rx], 50_000_000);
        // Other traffic on the group (a live stream) is skipped.
        while let Some(d) = rx.recv(&mut buf)? {
            if &buf[..d.len] == token {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Runs a command with a time limit, stdin empty and stderr discarded.
///
/// Returns (exit success, stdout) if it ran to the end; `None` if it
/// could not start or was killed at `limit`.
pub fn run_cmd(prog: &str, args: &[&str], limit: Duration) -> Option<(bool, String)> {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // Read while waiting: pw-dump prints more than a pipe holds, and
    // would block on a full pipe until the time limit.
    let mut out = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let end = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some((st.success(), reader.join().unwrap_or_default())),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                // Our own child, by its handle; its exit closes the pipe
                // and ends the reader.
                let _ = child.kill();
                let _ = child.wait();
                let _ = reader.join();
                return None;
            }
        }
    }
}

fn module_dirs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = Vec::new();
    if let Ok(d) = std::env::var("PIPEWIRE_MODULE_DIR") {
        v.extend(d.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    if let Some((true, out)) = run_cmd(
        "pkg-config",
        &["--variable=moduledir", "libpipewire-0.3"],
        Duration::from_secs(2),
    ) {
        let p = out.trim();
        if !p.is_empty() {
            v.push(PathBuf::from(p));
        }
    }
    for d in [
        "/usr/lib/x86_64-linux-gnu/pipewire-0.3",
        "/usr/lib/aarch64-linux-gnu/pipewire-0.3",
        "/usr/lib64/pipewire-0.3",
        "/usr/lib/pipewire-0.3",
        "/usr/local/lib/pipewire-0.3",
    ] {
        v.push(PathBuf::from(d));
    }
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|d| seen.insert(d.clone()));
    v
}

fn dropins() -> Vec<(PathBuf, String)> {
    let mut dirs = Vec::new();
    let cfg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")));
    if let Some(c) = cfg {
        dirs.push(c.join("pipewire/pipewire.conf.d"));
    }
    dirs.push(PathBuf::from("/etc/pipewire/pipewire.conf.d"));
    dirs.push(PathBuf::from("/usr/share/pipewire/pipewire.conf.d"));
    let mut out = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        files.sort();
        for p in files {
            if let Ok(t) = std::fs::read_to_string(&p) {
                out.push((p, t));
            }
        }
    }
    out
}

/// Audio daemons running on this host, from /proc/PID/comm and status.
fn daemons() -> Vec<Daemon> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        let comm = comm.trim();
        if DAEMONS.contains(&comm) {
            let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| parse::status_uid(&s))
                .unwrap_or(u32::MAX);
            v.push(Daemon {
                name: comm.to_string(),
                uid,
            });
        }
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

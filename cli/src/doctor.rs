//! `bark doctor`: checks what usually breaks multicast audio and says how
//! to fix it.
//!
//! Every probe stays on this host: test datagrams go out with TTL 0 and the
//! multicast loop on (the kernel delivers the loop copy to local listeners,
//! through the firewall's input path, and never transmits it), and the
//! unicast probe goes to one of this host's own addresses.

use crate::cli::{DoctorArgs, DoctorOutput};
use crate::net;
use anyhow::Result;
use nix::net::if_::InterfaceFlags;
use serde::Serialize;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Worth knowing; not an error.
    Info,
    /// Likely to cause trouble.
    Warn,
    /// Broken: Bark cannot work like this.
    Fail,
}

/// One check's result.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Short name, e.g. "route".
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// How to fix it, if anything needs fixing.
    pub fix: Option<String>,
}

fn check(name: &'static str, status: Status, detail: String, fix: Option<String>) -> Check {
    Check {
        name,
        status,
        detail,
        fix,
    }
}

/// An IPv4 interface as `getifaddrs` shows it.
#[derive(Clone, Debug)]
struct Iface {
    name: String,
    ip: Option<Ipv4Addr>,
    prefix: u32,
    up: bool,
    multicast: bool,
    loopback: bool,
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

fn iface_of(ifaces: &[Iface], ip: Ipv4Addr) -> Option<&Iface> {
    ifaces.iter().find(|i| i.ip == Some(ip))
}

fn check_interface(a: &DoctorArgs, ifaces: &[Iface]) -> Check {
    if let Some(name) = &a.net.local_ifname {
        let Some(i) = ifaces.iter().find(|i| &i.name == name) else {
            let names: Vec<&str> = ifaces.iter().map(|i| i.name.as_str()).collect();
            return check(
                "interface",
                Status::Fail,
                format!(
                    "--local-ifname {name}: no such interface (have: {})",
                    names.join(", ")
                ),
                Some("pick one of the interfaces above (`ip -br addr`)".into()),
            );
        };
        if !i.up {
            return check(
                "interface",
                Status::Fail,
                format!("{name} is down"),
                Some(format!("sudo ip link set {name} up")),
            );
        }
        let Some(ip) = i.ip else {
            return check(
                "interface",
                Status::Fail,
                format!("{name} has no IPv4 address (Bark speaks IPv4 only)"),
                Some("give it an address (DHCP, or `ip addr add`)".into()),
            );
        };
        if i.loopback {
            return check(
                "interface",
                Status::Info,
                format!(
                    "{name} ({ip}) is the loopback: multicast stays on this host (fine for tests)"
                ),
                None,
            );
        }
        if !i.multicast {
            return check(
                "interface",
                Status::Fail,
                format!("{name} ({ip}/{}) has multicast turned off", i.prefix),
                Some(format!("sudo ip link set {name} multicast on")),
            );
        }
        return check(
            "interface",
            Status::Ok,
            format!("{name} is up, multicast, {ip}/{}", i.prefix),
            None,
        );
    }
    let good: Vec<String> = ifaces
        .iter()
        .filter(|i| i.up && i.multicast && !i.loopback && i.ip.is_some())
        .map(|i| {
            format!(
                "{} ({}/{})",
                i.name,
                i.ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                i.prefix
            )
        })
        .collect();
    if good.is_empty() {
        check(
            "interface",
            Status::Fail,
            "no interface is up with multicast and an IPv4 address".into(),
            Some("connect to the LAN (`ip -br addr` shows what there is)".into()),
        )
    } else {
        check(
            "interface",
            Status::Ok,
            format!("multicast-capable: {}", good.join(", ")),
            None,
        )
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

fn check_route(a: &DoctorArgs, ifaces: &[Iface], group: SocketAddrV4) -> (Check, Option<Ipv4Addr>) {
    if !group.ip().is_multicast() {
        return (
            check(
                "route",
                Status::Info,
                format!(
                    "{} is unicast: no multicast route needed (and `bark stats` sees nothing)",
                    group.ip()
                ),
                None,
            ),
            None,
        );
    }
    let wanted = a.net.local_ifname.as_deref();
    let ifa = wanted.and_then(|n| net::interface_ipv4(n).ok());
    let by_table = route_source(group, None);
    // The routing table's device: `ip route get` names it even when the
    // route has no source address; else the interface owning the source.
    let table_dev = run_cmd(
        "ip",
        &["-o", "route", "get", &group.ip().to_string()],
        Duration::from_secs(2),
    )
    .and_then(|(ok, out)| {
        let mut w = out.split_whitespace();
        ok.then(|| {
            w.find(|t| *t == "dev")
                .and_then(|_| w.next())
                .map(String::from)
        })
        .flatten()
    });
    let name_of = |ip: Ipv4Addr| {
        table_dev
            .clone()
            .or_else(|| iface_of(ifaces, ip).map(|i| i.name.clone()))
            .unwrap_or_else(|| "?".to_string())
    };
    let fix_dev = wanted
        .map(str::to_string)
        .or_else(|| {
            ifaces
                .iter()
                .find(|i| i.up && i.multicast && !i.loopback && i.ip.is_some())
                .map(|i| i.name.clone())
        })
        .unwrap_or_else(|| "eth0".into());
    match (&by_table, wanted, ifa) {
        (Err(e), None, _) => (
            check(
                "route",
                Status::Fail,
                format!("no route for {}: {e} (no default route and no multicast route)", group.ip()),
                Some(format!(
                    "sudo ip route add 224.0.0.0/4 dev {fix_dev}   (or pass --local-ifname / local.ifname)"
                )),
            ),
            None,
        ),
        (_, Some(name), Some(ifa)) => match route_source(group, Some(ifa)) {
            Ok(src) => {
                let table = by_table.as_ref().ok().map(|ip| name_of(*ip));
                let note = match table {
                    Some(t) if t != name => format!(
                        "; without local.ifname the routing table would pick {t}, so give every node --local-ifname/local.ifname {name}"
                    ),
                    None => "; without local.ifname nothing would be routed: give every node local.ifname".into(),
                    _ => String::new(),
                };
                let status = if note.is_empty() { Status::Ok } else { Status::Warn };
                (
                    check(
                        "route",
                        status,
                        format!("{} goes out via {name} from {src}{note}", group.ip()),
                        None,
                    ),
                    Some(ifa),
                )
            }
            Err(e) => (
                check(
                    "route",
                    Status::Fail,
                    format!("cannot send to {} via {name}: {e}", group.ip()),
                    Some(format!("sudo ip route add 224.0.0.0/4 dev {name}")),
                ),
                Some(ifa),
            ),
        },
        (_, Some(name), None) => (
            check(
                "route",
                Status::Fail,
                format!("--local-ifname {name} has no IPv4 address to route from"),
                None,
            ),
            None,
        ),
        (Ok(src), None, _) => {
            let dev = name_of(*src);
            let lo = ifaces.iter().any(|i| i.name == dev && i.loopback);
            if lo {
                (
                    check(
                        "route",
                        Status::Warn,
                        format!("{} is routed to the loopback ({src}): other machines will hear nothing", group.ip()),
                        Some(format!("sudo ip route add 224.0.0.0/4 dev {fix_dev}, or --local-ifname")),
                    ),
                    Some(*src),
                )
            } else {
                (
                    check(
                        "route",
                        Status::Ok,
                        format!("{} goes out via {dev} from {src}", group.ip()),
                        None,
                    ),
                    Some(*src),
                )
            }
        }
    }
}

/// Interfaces (by name) on which `group` is joined, from /proc/net/igmp.
fn igmp_joined(group: Ipv4Addr) -> Option<Vec<(String, u32)>> {
    let text = std::fs::read_to_string("/proc/net/igmp").ok()?;
    let mut dev = String::new();
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        if !line.starts_with('\t') {
            // "1\tlo        :     1      V3"
            dev = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .trim_end_matches(':')
                .to_string();
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(hex), Some(users)) = (f.next(), f.next()) else {
            continue;
        };
        // The kernel prints the network-order address as a host integer.
        let Ok(v) = u32::from_str_radix(hex, 16) else {
            continue;
        };
        if Ipv4Addr::from(v.to_ne_bytes()) == group {
            out.push((dev.clone(), users.parse().unwrap_or(0)));
        }
    }
    Some(out)
}

fn check_membership(a: &DoctorArgs, group: SocketAddrV4) -> Check {
    if !group.ip().is_multicast() {
        return check(
            "group",
            Status::Info,
            "unicast: nothing to join".into(),
            None,
        );
    }
    let before = igmp_joined(*group.ip());
    let join = net::group_socket(group, a.net.local_ifname.as_deref());
    let joined_here = match &before {
        Some(v) if !v.is_empty() => format!(
            "; already joined on this host on {} (a receiver or `bark stats` running here)",
            v.iter()
                .map(|(d, n)| format!("{d} by {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(_) => "; no process on this host has joined it now (no receiver running here)".into(),
        None => String::new(),
    };
    match join {
        Ok(_) => check(
            "group",
            Status::Ok,
            format!("joining {group} works{joined_here}"),
            None,
        ),
        Err(e) => check(
            "group",
            Status::Fail,
            format!("cannot join {group}: {e:#}"),
            Some(
                "fix the route first; with many groups, raise net.ipv4.igmp_max_memberships".into(),
            ),
        ),
    }
}

fn firewall_fix(port: u16) -> String {
    format!(
        "allow UDP port {port} and replies to senders' time ports, e.g. `sudo nft add rule inet filter input udp dport {port} accept`, \
         `sudo iptables -I INPUT -p udp --dport {port} -j ACCEPT`, `sudo ufw allow {port}/udp` or \
         `sudo firewall-cmd --add-port={port}/udp`; time requests go to each sender's ephemeral port, so also accept UDP from the LAN subnet"
    )
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
    let token = format!("bark-doctor-{}", crate::util::random_nonzero_u64());
    tx.send_to(token.as_bytes(), &SockAddr::from(group))?;
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

fn probe_unicast(ip: Ipv4Addr) -> Result<bool> {
    let mut rx = net::group_socket(SocketAddrV4::new(ip, 0), None)?;
    let to = rx.local_addr()?;
    let tx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let token = format!("bark-doctor-{}", crate::util::random_nonzero_u64());
    tx.send_to(token.as_bytes(), &SockAddr::from(to))?;
    wait_for(&mut rx, token.as_bytes())
}

fn check_firewall(a: &DoctorArgs, group: SocketAddrV4, ifa: Option<Ipv4Addr>) -> Vec<Check> {
    let mut out = Vec::new();
    if group.ip().is_multicast() {
        match probe_multicast(group, a.net.local_ifname.as_deref(), ifa) {
            Ok(true) => out.push(check(
                "firewall",
                Status::Ok,
                format!("a test datagram to {group} (TTL 0, this host only) reached a listener here"),
                None,
            )),
            Ok(false) => out.push(check(
                "firewall",
                Status::Fail,
                format!("a test datagram to {group} (TTL 0, this host only) never arrived: a firewall probably drops UDP port {}", group.port()),
                Some(firewall_fix(group.port())),
            )),
            Err(e) => out.push(check(
                "firewall",
                Status::Warn,
                format!("could not probe {group}: {e:#}"),
                None,
            )),
        }
    }
    if let Some(ip) = ifa.filter(|ip| !ip.is_unspecified()) {
        match probe_unicast(ip) {
            Ok(true) => out.push(check(
                "unicast",
                Status::Ok,
                format!("unicast UDP to an ephemeral port on {ip} arrives (time requests and replies use it)"),
                None,
            )),
            Ok(false) => out.push(check(
                "unicast",
                Status::Fail,
                format!("unicast UDP to an ephemeral port on {ip} was dropped: receivers' time requests would be too"),
                Some(firewall_fix(group.port())),
            )),
            Err(e) => out.push(check("unicast", Status::Warn, format!("could not probe {ip}: {e:#}"), None)),
        }
    }
    // What the rules say, when we can read them (root): a drop policy is
    // only a hint, the probes above are the test.
    if let Some((_, rules)) = run_cmd("nft", &["list", "ruleset"], Duration::from_secs(2)) {
        let drop_input = rules
            .lines()
            .any(|l| l.contains("hook input") && l.contains("policy drop"));
        let port_rule = format!("dport {}", group.port());
        if let Some(l) = rules
            .lines()
            .find(|l| l.contains(&port_rule) && (l.contains("drop") || l.contains("reject")))
        {
            out.push(check(
                "firewall-rules",
                Status::Warn,
                format!("an nftables rule drops the port: `{}`", l.trim()),
                Some(firewall_fix(group.port())),
            ));
        }
        if drop_input {
            let port_ok = rules.contains(&format!("dport {}", group.port()));
            out.push(check(
                "firewall-rules",
                if port_ok { Status::Info } else { Status::Warn },
                format!(
                    "nftables drops input by default{}",
                    if port_ok {
                        format!(" (a rule mentions port {})", group.port())
                    } else {
                        format!(" and no rule mentions UDP port {}", group.port())
                    }
                ),
                (!port_ok).then(|| firewall_fix(group.port())),
            ));
        }
    }
    out
}

fn check_ttl(a: &DoctorArgs) -> Check {
    match a.ttl {
        0 => check(
            "ttl",
            Status::Warn,
            "TTL 0: multicast never leaves this host; other machines hear nothing".into(),
            Some("use --ttl 1 (net.ttl = 1, the default) for a LAN".into()),
        ),
        1 => check(
            "ttl",
            Status::Ok,
            "TTL 1: reaches every host on this LAN segment, not across routers".into(),
            None,
        ),
        n => check(
            "ttl",
            Status::Info,
            format!("TTL {n}: crosses up to {} routers if they forward multicast (239.255.0.0/16 is meant to stay inside the site)", n - 1),
            None,
        ),
    }
}

fn check_buffers() -> Option<Check> {
    let max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(if max < 1 << 20 {
        check(
            "buffers",
            Status::Info,
            format!("net.core.rmem_max is {max} bytes: receivers ask for 1 MiB and get less, so a busy host may drop packets"),
            Some("sudo sysctl -w net.core.rmem_max=1048576".into()),
        )
    } else {
        check(
            "buffers",
            Status::Ok,
            format!("net.core.rmem_max {max} bytes"),
            None,
        )
    })
}

/// Runs a command with a time limit; (exit success, stdout) if it ran.
fn run_cmd(prog: &str, args: &[&str], limit: Duration) -> Option<(bool, String)> {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let end = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                let mut s = String::new();
                if let Some(mut o) = child.stdout.take() {
                    let _ = std::io::Read::read_to_string(&mut o, &mut s);
                }
                return Some((st.success(), s));
            }
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                // Our own child, by its handle.
                let _ = child.kill();
                let _ = child.wait();
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
    v.dedup();
    v
}

fn conf_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    let cfg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")));
    if let Some(c) = cfg {
        v.push(c.join("pipewire/pipewire.conf.d"));
    }
    v.push(PathBuf::from("/etc/pipewire/pipewire.conf.d"));
    v.push(PathBuf::from("/usr/share/pipewire/pipewire.conf.d"));
    v
}

fn check_install() -> Vec<Check> {
    let mut out = Vec::new();
    let mut found = Vec::new();
    for d in module_dirs() {
        for m in [
            "libpipewire-module-bark-sink.so",
            "libpipewire-module-bark-source.so",
        ] {
            let p = d.join(m);
            if p.exists() {
                found.push(p.display().to_string());
            }
        }
    }
    out.push(if found.is_empty() {
        check(
            "modules",
            Status::Info,
            "the PipeWire modules (libpipewire-module-bark-sink/-source.so) are not installed in PipeWire's module directory".into(),
            Some("make modules, then install them into `pkg-config --variable=moduledir libpipewire-0.3` (or set PIPEWIRE_MODULE_DIR)".into()),
        )
    } else {
        check("modules", Status::Ok, format!("installed: {}", found.join(", ")), None)
    });
    let mut confs = Vec::new();
    for d in conf_dirs() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "conf") {
                if let Ok(t) = std::fs::read_to_string(&p) {
                    for role in ["bark-sink", "bark-source"] {
                        if t.contains(&format!("libpipewire-module-{role}")) {
                            confs.push(format!("{} ({role})", p.display()));
                        }
                    }
                }
            }
        }
    }
    out.push(if confs.is_empty() {
        check(
            "config",
            Status::Info,
            "no pipewire.conf.d drop-in loads a Bark module".into(),
            Some("copy conf/bark-sink.conf (sender) or conf/bark-source.conf (receiver) to ~/.config/pipewire/pipewire.conf.d/ and restart PipeWire (systemctl --user restart pipewire)".into()),
        )
    } else {
        check("config", Status::Ok, format!("drop-ins: {}", confs.join(", ")), None)
    });
    out
}

/// Audio daemons running on this host: name → owners' uids.
fn daemons() -> BTreeMap<String, Vec<u32>> {
    let mut m: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return m;
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
        if ["pipewire", "pipewire-pulse", "wireplumber", "pulseaudio"].contains(&comm) {
            let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("Uid:"))
                        .and_then(|l| l.split_whitespace().nth(1).and_then(|u| u.parse().ok()))
                })
                .unwrap_or(u32::MAX);
            m.entry(comm.to_string()).or_default().push(uid);
        }
    }
    m
}

fn check_audio(a: &DoctorArgs) -> Vec<Check> {
    let mut out = Vec::new();
    let d = daemons();
    let version = run_cmd("pipewire", &["--version"], Duration::from_secs(2)).and_then(|(_, s)| {
        s.lines()
            .find(|l| l.contains("libpipewire"))
            .and_then(|l| l.split_whitespace().last())
            .map(|v| format!("PipeWire {v} installed"))
    });
    let list = |n: &str| d.get(n).map(|v| v.len()).unwrap_or(0);
    let running: Vec<String> = d
        .iter()
        .map(|(n, uids)| format!("{n} ×{}", uids.len()))
        .collect();
    let me = nix::unistd::getuid().as_raw();
    let mine = |n: &str| d.get(n).is_some_and(|v| v.contains(&me));
    out.push(if running.is_empty() {
        check(
            "audio-server",
            Status::Warn,
            format!("no PipeWire or PulseAudio is running{}", version.map(|v| format!(" ({v} installed)")).unwrap_or_default()),
            Some("start it for your user: systemctl --user start pipewire pipewire-pulse wireplumber".into()),
        )
    } else {
        let kind = if list("pipewire") > 0 && list("pipewire-pulse") > 0 {
            "PipeWire with its PulseAudio server"
        } else if list("pipewire") > 0 {
            "PipeWire"
        } else {
            "PulseAudio"
        };
        let status = if list("pipewire") > 0 && list("pulseaudio") > 0 {
            Status::Warn
        } else {
            Status::Ok
        };
        check(
            "audio-server",
            status,
            format!(
                "{kind}: {}{}{}",
                running.join(", "),
                version.map(|v| format!("; {v}")).unwrap_or_default(),
                if status == Status::Warn {
                    "; PulseAudio and pipewire-pulse compete for the same clients"
                } else {
                    ""
                }
            ),
            (status == Status::Warn)
                .then(|| "run one: systemctl --user mask pulseaudio.socket pulseaudio.service".into()),
        )
    });
    if a.no_audio {
        return out;
    }
    if mine("pipewire") {
        match run_cmd("pw-cli", &["ls", "Node"], Duration::from_secs(3)) {
            Some((true, nodes)) => {
                let mut bark = Vec::new();
                let mut cur = String::new();
                for l in nodes.lines() {
                    if let Some(v) = l.split("node.name = \"").nth(1) {
                        cur = v.trim_end_matches('"').to_string();
                    }
                    if l.contains("media.class") && cur.to_ascii_lowercase().contains("bark") {
                        let class = l.split('"').nth(1).unwrap_or("");
                        bark.push(format!("{cur} ({class})"));
                    }
                }
                let mods = run_cmd("pw-cli", &["ls", "Module"], Duration::from_secs(3))
                    .map(|(_, s)| {
                        s.lines()
                            .filter_map(|l| l.split("module.name = \"").nth(1))
                            .filter(|n| n.contains("bark"))
                            .map(|n| n.trim_end_matches('"').to_string())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                out.push(if bark.is_empty() && mods.is_empty() {
                    check(
                        "bark-node",
                        Status::Info,
                        "PipeWire has no Bark node loaded".into(),
                        Some("add conf/bark-sink.conf or conf/bark-source.conf to ~/.config/pipewire/pipewire.conf.d/ and restart PipeWire; `journalctl --user -u pipewire` shows load errors".into()),
                    )
                } else {
                    check(
                        "bark-node",
                        Status::Ok,
                        format!("loaded: modules [{}], nodes [{}]", mods.join(", "), bark.join(", ")),
                        None,
                    )
                });
            }
            _ => out.push(check(
                "bark-node",
                Status::Info,
                "could not ask PipeWire (pw-cli failed or timed out; is XDG_RUNTIME_DIR set for this user?)".into(),
                None,
            )),
        }
    } else if mine("pulseaudio") {
        if let Some((true, mods)) = run_cmd(
            "pactl",
            &["list", "short", "modules"],
            Duration::from_secs(3),
        ) {
            let bark: Vec<&str> = mods.lines().filter(|l| l.contains("bark")).collect();
            out.push(if bark.is_empty() {
                check(
                    "bark-node",
                    Status::Info,
                    "PulseAudio has no Bark module loaded".into(),
                    None,
                )
            } else {
                check(
                    "bark-node",
                    Status::Ok,
                    format!("PulseAudio: {}", bark.join("; ")),
                    None,
                )
            });
        }
    }
    out
}

/// Runs every check.
pub fn checks(a: &DoctorArgs) -> Vec<Check> {
    let group = SocketAddrV4::new(a.net.source_ip, a.net.port);
    let ifaces = interfaces();
    let mut v = vec![check_interface(a, &ifaces)];
    let (route, ifa) = check_route(a, &ifaces, group);
    let route_failed = route.status == Status::Fail;
    v.push(route);
    if !route_failed {
        v.push(check_membership(a, group));
        v.extend(check_firewall(a, group, ifa));
    }
    v.push(check_ttl(a));
    v.extend(check_buffers());
    v.extend(check_install());
    v.extend(check_audio(a));
    v
}

/// Runs `bark doctor`; exit code 1 if anything failed.
///
/// # Errors
/// Only output errors.
pub fn run(a: &DoctorArgs) -> Result<i32> {
    let group = SocketAddrV4::new(a.net.source_ip, a.net.port);
    let v = checks(a);
    let failed = v.iter().filter(|c| c.status == Status::Fail).count();
    match a.output {
        DoctorOutput::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "group": group.to_string(),
                    "failed": failed,
                    "checks": v,
                }))?
            );
        }
        DoctorOutput::Text => {
            println!("bark doctor: group {group}");
            for c in &v {
                let tag = match c.status {
                    Status::Ok => " ok ",
                    Status::Info => "info",
                    Status::Warn => "WARN",
                    Status::Fail => "FAIL",
                };
                println!("[{tag}] {:<14} {}", c.name, c.detail);
                if let Some(f) = &c.fix {
                    println!("       {:<14} fix: {f}", "");
                }
            }
            match failed {
                0 => println!("no problem found."),
                1 => println!("1 problem found."),
                n => println!("{n} problems found."),
            }
        }
    }
    Ok(i32::from(failed > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_igmp_memberships() {
        // Whatever this host has joined, the parser must at least find the
        // all-hosts group on every multicast interface that lists it.
        let v = igmp_joined(Ipv4Addr::new(224, 0, 0, 1)).unwrap();
        assert!(!v.is_empty());
    }

    #[test]
    fn runs_commands_with_a_time_limit() {
        let t = Instant::now();
        assert!(run_cmd("sleep", &["5"], Duration::from_millis(200)).is_none());
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(
            run_cmd("echo", &["hi"], Duration::from_secs(2)),
            Some((true, "hi\n".to_string()))
        );
        assert!(run_cmd("/nonexistent/x", &[], Duration::from_secs(1)).is_none());
    }
}

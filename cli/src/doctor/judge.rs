//! The network and installation checks: from [`Facts`] to [`Check`]s.
//! Pure: same facts, same verdicts.

use super::facts::{Facts, Iface, Probe};
use super::{audio, check, parse, Check, Status};
use std::net::Ipv4Addr;

/// Decides every check from `f`, in the order they are shown.
pub fn judge(f: &Facts) -> Vec<Check> {
    let mut v = vec![interface(f)];
    let route = route(f);
    let route_failed = route.status == Status::Fail;
    v.push(route);
    if !route_failed {
        v.extend(membership(f));
        v.extend(firewall(f));
    }
    v.push(ttl(f));
    v.extend(buffers(f));
    v.extend(install(f));
    v.extend(audio::judge(f));
    v
}

fn usable(i: &Iface) -> bool {
    i.up && i.multicast && !i.loopback && i.ip.is_some()
}

fn interface(f: &Facts) -> Check {
    let Some(name) = &f.ifname else {
        let good: Vec<String> = f
            .ifaces
            .iter()
            .filter(|i| usable(i))
            .map(|i| {
                let ip = i.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
                format!("{} ({ip}/{})", i.name, i.prefix)
            })
            .collect();
        return if good.is_empty() {
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
        };
    };
    let Some(i) = f.ifaces.iter().find(|i| &i.name == name) else {
        let names: Vec<&str> = f.ifaces.iter().map(|i| i.name.as_str()).collect();
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
    let Some(ip) = i.ip.filter(|_| i.up) else {
        return if i.up {
            check(
                "interface",
                Status::Fail,
                format!("{name} has no IPv4 address (Bark speaks IPv4 only)"),
                Some("give it an address (DHCP, or `ip addr add`)".into()),
            )
        } else {
            check(
                "interface",
                Status::Fail,
                format!("{name} is down"),
                Some(format!("sudo ip link set {name} up")),
            )
        };
    };
    if i.loopback {
        check(
            "interface",
            Status::Info,
            format!("{name} ({ip}) is the loopback: multicast stays on this host (fine for tests)"),
            None,
        )
    } else if !i.multicast {
        check(
            "interface",
            Status::Fail,
            format!("{name} ({ip}/{}) has multicast turned off", i.prefix),
            Some(format!("sudo ip link set {name} multicast on")),
        )
    } else {
        check(
            "interface",
            Status::Ok,
            format!("{name} is up, multicast, {ip}/{}", i.prefix),
            None,
        )
    }
}

fn route(f: &Facts) -> Check {
    let group = f.group.ip();
    if !group.is_multicast() {
        return check(
            "route",
            Status::Info,
            format!(
                "{group} is unicast: no multicast route needed (and `bark stats` sees nothing)"
            ),
            None,
        );
    }
    // The routing table's device: `ip route get` names it even when the
    // route has no source address; else the interface owning the source.
    let table_dev = f.route.ip_route_get.as_deref().and_then(parse::route_dev);
    let name_of = |ip: Ipv4Addr| {
        table_dev
            .clone()
            .or_else(|| {
                f.ifaces
                    .iter()
                    .find(|i| i.ip == Some(ip))
                    .map(|i| i.name.clone())
            })
            .unwrap_or_else(|| "?".to_string())
    };
    let fix_dev = f
        .ifname
        .clone()
        .or_else(|| f.ifaces.iter().find(|i| usable(i)).map(|i| i.name.clone()))
        .unwrap_or_else(|| "eth0".into());
    let Some(name) = &f.ifname else {
        return match &f.route.by_table {
            Err(e) => check(
                "route",
                Status::Fail,
                format!("no route for {group}: {e} (no default route and no multicast route)"),
                Some(format!(
                    "sudo ip route add 224.0.0.0/4 dev {fix_dev}   (or pass --local-ifname / local.ifname)"
                )),
            ),
            Ok(src) => {
                let dev = name_of(*src);
                if f.ifaces.iter().any(|i| i.name == dev && i.loopback) {
                    check(
                        "route",
                        Status::Warn,
                        format!("{group} is routed to the loopback ({src}): other machines will hear nothing"),
                        Some(format!("sudo ip route add 224.0.0.0/4 dev {fix_dev}, or --local-ifname")),
                    )
                } else {
                    check(
                        "route",
                        Status::Ok,
                        format!("{group} goes out via {dev} from {src}"),
                        None,
                    )
                }
            }
        };
    };
    match &f.route.via_ifname {
        None => check(
            "route",
            Status::Fail,
            format!("--local-ifname {name} has no IPv4 address to route from"),
            None,
        ),
        Some(Err(e)) => check(
            "route",
            Status::Fail,
            format!("cannot send to {group} via {name}: {e}"),
            Some(format!("sudo ip route add 224.0.0.0/4 dev {name}")),
        ),
        Some(Ok(src)) => {
            let note = match f.route.by_table.as_ref().ok().map(|ip| name_of(*ip)) {
                Some(t) if &t != name => format!(
                    "; without local.ifname the routing table would pick {t}, so give every node --local-ifname/local.ifname {name}"
                ),
                None => "; without local.ifname nothing would be routed: give every node local.ifname".into(),
                _ => String::new(),
            };
            let status = if note.is_empty() {
                Status::Ok
            } else {
                Status::Warn
            };
            check(
                "route",
                status,
                format!("{group} goes out via {name} from {src}{note}"),
                None,
            )
        }
    }
}

fn membership(f: &Facts) -> Option<Check> {
    let group = f.group;
    if !group.ip().is_multicast() {
        return Some(check(
            "group",
            Status::Info,
            "unicast: nothing to join".into(),
            None,
        ));
    }
    let joined = f
        .igmp
        .as_deref()
        .map(|t| parse::igmp_joined(t, *group.ip()));
    let joined_here = match joined {
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
    Some(match f.join.as_ref()? {
        Ok(()) => check(
            "group",
            Status::Ok,
            format!("joining {group} works{joined_here}"),
            None,
        ),
        Err(e) => check(
            "group",
            Status::Fail,
            format!("cannot join {group}: {e}"),
            Some(
                "fix the route first; with many groups, raise net.ipv4.igmp_max_memberships".into(),
            ),
        ),
    })
}

fn firewall_fix(port: u16) -> String {
    format!(
        "allow UDP port {port} and replies to senders' time ports, e.g. `sudo nft add rule inet filter input udp dport {port} accept`, \
         `sudo iptables -I INPUT -p udp --dport {port} -j ACCEPT`, `sudo ufw allow {port}/udp` or \
         `sudo firewall-cmd --add-port={port}/udp`; time requests go to each sender's ephemeral port, so also accept UDP from the LAN subnet"
    )
}

fn firewall(f: &Facts) -> Vec<Check> {
    let (group, port) = (f.group, f.group.port());
    let mut out = Vec::new();
    match &f.multicast_probe {
        Some(Probe::Arrived) => out.push(check(
            "firewall",
            Status::Ok,
            format!("a test datagram to {group} (TTL 0, this host only) reached a listener here"),
            None,
        )),
        Some(Probe::Lost) => out.push(check(
            "firewall",
            Status::Fail,
            format!("a test datagram to {group} (TTL 0, this host only) never arrived: a firewall probably drops UDP port {port}"),
            Some(firewall_fix(port)),
        )),
        Some(Probe::Error(e)) => out.push(check(
            "firewall",
            Status::Warn,
            format!("could not probe {group}: {e}"),
            None,
        )),
        None => {}
    }
    match &f.unicast_probe {
        Some((ip, Probe::Arrived)) => out.push(check(
            "unicast",
            Status::Ok,
            format!("unicast UDP to an ephemeral port on {ip} arrives (time requests and replies use it)"),
            None,
        )),
        Some((ip, Probe::Lost)) => out.push(check(
            "unicast",
            Status::Fail,
            format!("unicast UDP to an ephemeral port on {ip} was dropped: receivers' time requests would be too"),
            Some(firewall_fix(port)),
        )),
        Some((ip, Probe::Error(e))) => out.push(check(
            "unicast",
            Status::Warn,
            format!("could not probe {ip}: {e}"),
            None,
        )),
        None => {}
    }
    // What the rules say, when we can read them (root): a drop policy is
    // only a hint, the probes above are the test.
    if let Some(rules) = &f.nft_ruleset {
        let port_rule = format!("dport {port}");
        if let Some(l) = rules
            .lines()
            .find(|l| l.contains(&port_rule) && (l.contains("drop") || l.contains("reject")))
        {
            out.push(check(
                "firewall-rules",
                Status::Warn,
                format!("an nftables rule drops the port: `{}`", l.trim()),
                Some(firewall_fix(port)),
            ));
        }
        let drop_input = rules
            .lines()
            .any(|l| l.contains("hook input") && l.contains("policy drop"));
        if drop_input {
            let port_ok = rules.contains(&port_rule);
            out.push(check(
                "firewall-rules",
                if port_ok { Status::Info } else { Status::Warn },
                if port_ok {
                    format!("nftables drops input by default (a rule mentions port {port})")
                } else {
                    format!("nftables drops input by default and no rule mentions UDP port {port}")
                },
                (!port_ok).then(|| firewall_fix(port)),
            ));
        }
    }
    out
}

fn ttl(f: &Facts) -> Check {
    match f.ttl {
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

fn buffers(f: &Facts) -> Option<Check> {
    let max: usize = f.rmem_max.as_deref()?.trim().parse().ok()?;
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

fn install(f: &Facts) -> Vec<Check> {
    let modules = if f.module_files.is_empty() {
        check(
            "modules",
            Status::Info,
            "the PipeWire modules (libpipewire-module-bark-sink/-source.so) are not installed in PipeWire's module directory".into(),
            Some("make modules, then install them into `pkg-config --variable=moduledir libpipewire-0.3` (or set PIPEWIRE_MODULE_DIR)".into()),
        )
    } else {
        let found: Vec<String> = f
            .module_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        check(
            "modules",
            Status::Ok,
            format!("installed: {}", found.join(", ")),
            None,
        )
    };
    let confs: Vec<String> = f
        .dropins
        .iter()
        .flat_map(|(p, text)| {
            ["bark-sink", "bark-source"]
                .into_iter()
                .filter(|role| text.contains(&format!("libpipewire-module-{role}")))
                .map(move |role| format!("{} ({role})", p.display()))
        })
        .collect();
    let config = if confs.is_empty() {
        check(
            "config",
            Status::Info,
            "no pipewire.conf.d drop-in loads a Bark module".into(),
            Some("copy conf/bark-sink.conf (sender) or conf/bark-source.conf (receiver) to ~/.config/pipewire/pipewire.conf.d/ and restart PipeWire (systemctl --user restart pipewire)".into()),
        )
    } else {
        check(
            "config",
            Status::Ok,
            format!("drop-ins: {}", confs.join(", ")),
            None,
        )
    };
    vec![modules, config]
}

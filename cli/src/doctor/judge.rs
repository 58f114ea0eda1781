//! The network and installation checks: from [`Facts`] to [`Check`]s.
//! Pure: same facts, same verdicts.

use super::facts::{Facts, Iface, Probe};
use super::{audio, parse, Check, Status};
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
        return found("interface", "multicast-capable", &good).unwrap_or_else(|| {
            Check::new(
                "interface",
                Status::Fail,
                "no interface is up with multicast and an IPv4 address",
            )
            .with_fix("connect to the LAN (`ip -br addr` shows what there is)")
        });
    };
    let Some(i) = f.ifaces.iter().find(|i| &i.name == name) else {
        let names: Vec<&str> = f.ifaces.iter().map(|i| i.name.as_str()).collect();
        return Check::new(
            "interface",
            Status::Fail,
            format!(
                "--local-ifname {name}: no such interface (have: {})",
                names.join(", ")
            ),
        )
        .with_fix("pick one of the interfaces above (`ip -br addr`)");
    };
    let Some(ip) = i.ip.filter(|_| i.up) else {
        return if i.up {
            Check::new(
                "interface",
                Status::Fail,
                format!("{name} has no IPv4 address (Bark speaks IPv4 only)"),
            )
            .with_fix("give it an address (DHCP, or `ip addr add`)")
        } else {
            Check::new("interface", Status::Fail, format!("{name} is down"))
                .with_fix(format!("sudo ip link set {name} up"))
        };
    };
    if i.loopback {
        Check::new(
            "interface",
            Status::Info,
            format!("{name} ({ip}) is the loopback: multicast stays on this host (fine for tests)"),
        )
    } else if !i.multicast {
        Check::new(
            "interface",
            Status::Fail,
            format!("{name} ({ip}/{}) has multicast turned off", i.prefix),
        )
        .with_fix(format!("sudo ip link set {name} multicast on"))
    } else {
        Check::new(
            "interface",
            Status::Ok,
            format!("{name} is up, multicast, {ip}/{}", i.prefix),
        )
    }
}

fn route(f: &Facts) -> Check {
    let group = f.group.ip();
    if !group.is_multicast() {
        return Check::new(
            "route",
            Status::Info,
            format!(
                "{group} is unicast: no multicast route needed (and `bark stats` sees nothing)"
            ),
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
            Err(e) => Check::new(
                "route",
                Status::Fail,
                format!("no route for {group}: {e} (no default route and no multicast route)"),
            )
            .with_fix(format!(
                "sudo ip route add 224.0.0.0/4 dev {fix_dev}   (or pass --local-ifname / local.ifname)"
            )),
            Ok(src) => {
                let dev = name_of(*src);
                if f.ifaces.iter().any(|i| i.name == dev && i.loopback) {
                    Check::new(
                        "route",
                        Status::Warn,
                        format!("{group} is routed to the loopback ({src}): other machines will hear nothing"),
                    )
                    .with_fix(format!(
                        "sudo ip route add 224.0.0.0/4 dev {fix_dev}, or --local-ifname"
                    ))
                } else {
                    Check::new(
                        "route",
                        Status::Ok,
                        format!("{group} goes out via {dev} from {src}"),
                    )
                }
            }
        };
    };
    match &f.route.via_ifname {
        None => Check::new(
            "route",
            Status::Fail,
            format!("--local-ifname {name} has no IPv4 address to route from"),
        ),
        Some(Err(e)) => Check::new(
            "route",
            Status::Fail,
            format!("cannot send to {group} via {name}: {e}"),
        )
        .with_fix(format!("sudo ip route add 224.0.0.0/4 dev {name}")),
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
            Check::new(
                "route",
                status,
                format!("{group} goes out via {name} from {src}{note}"),
            )
        }
    }
}

fn membership(f: &Facts) -> Option<Check> {
    let group = f.group;
    if !group.ip().is_multicast() {
        return Some(Check::new(
            "group",
            Status::Info,
            "unicast: nothing to join",
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
        Ok(()) => Check::new(
            "group",
            Status::Ok,
            format!("joining {group} works{joined_here}"),
        ),
        Err(e) => Check::new("group", Status::Fail, format!("cannot join {group}: {e}"))
            .with_fix("fix the route first; with many groups, raise net.ipv4.igmp_max_memberships"),
    })
}

fn firewall_fix(port: u16) -> String {
    format!(
        "allow UDP port {port} and replies to senders' time ports, e.g. `sudo nft add rule inet filter input udp dport {port} accept`, \
         `sudo iptables -I INPUT -p udp --dport {port} -j ACCEPT`, `sudo ufw allow {port}/udp` or \
         `sudo firewall-cmd --add-port={port}/udp`; time requests go to each sender's ephemeral port, so also accept UDP from the LAN subnet"
    )
}

/// The check `name` of a probe that `sent` a datagram to `to`: ok if it
/// `arrived`, failed (with the firewall fix for `port`) if `lost`, a
/// warning if it could not be sent.
fn probe_check(
    name: &'static str,
    probe: &Probe,
    to: &dyn std::fmt::Display,
    sent: &str,
    arrived: &str,
    lost: &str,
    port: u16,
) -> Check {
    match probe {
        Probe::Arrived => Check::new(name, Status::Ok, format!("{sent} {arrived}")),
        Probe::Lost => {
            Check::new(name, Status::Fail, format!("{sent} {lost}")).with_fix(firewall_fix(port))
        }
        Probe::Error(e) => Check::new(name, Status::Warn, format!("could not probe {to}: {e}")),
    }
}

fn firewall(f: &Facts) -> Vec<Check> {
    let (group, port) = (f.group, f.group.port());
    let mut out = Vec::new();
    out.extend(f.multicast_probe.as_ref().map(|probe| {
        let sent = format!("a test datagram to {group} (TTL 0, this host only)");
        let lost = format!("never arrived: a firewall probably drops UDP port {port}");
        let arrived = "reached a listener here";
        probe_check("firewall", probe, &group, &sent, arrived, &lost, port)
    }));
    out.extend(f.unicast_probe.as_ref().map(|(ip, probe)| {
        let sent = format!("unicast UDP to an ephemeral port on {ip}");
        let arrived = "arrives (time requests and replies use it)";
        let lost = "was dropped: receivers' time requests would be too";
        probe_check("unicast", probe, ip, &sent, arrived, lost, port)
    }));
    // What the rules say, when we can read them (root): a drop policy is
    // only a hint, the probes above are the test.
    if let Some(rules) = &f.nft_ruleset {
        let port_rule = format!("dport {port}");
        if let Some(l) = rules
            .lines()
            .find(|l| l.contains(&port_rule) && (l.contains("drop") || l.contains("reject")))
        {
            out.push(
                Check::new(
                    "firewall-rules",
                    Status::Warn,
                    format!("an nftables rule drops the port: `{}`", l.trim()),
                )
                .with_fix(firewall_fix(port)),
            );
        }
        let drop_input = rules
            .lines()
            .any(|l| l.contains("hook input") && l.contains("policy drop"));
        if drop_input {
            let port_ok = rules.contains(&port_rule);
            out.push(
                Check::new(
                    "firewall-rules",
                    if port_ok { Status::Info } else { Status::Warn },
                    if port_ok {
                        format!("nftables drops input by default (a rule mentions port {port})")
                    } else {
                        format!(
                            "nftables drops input by default and no rule mentions UDP port {port}"
                        )
                    },
                )
                .with_fix_opt((!port_ok).then(|| firewall_fix(port))),
            );
        }
    }
    out
}

fn ttl(f: &Facts) -> Check {
    match f.ttl {
        0 => Check::new(
            "ttl",
            Status::Warn,
            "TTL 0: multicast never leaves this host; other machines hear nothing",
        )
        .with_fix("use --ttl 1 (net.ttl = 1, the default) for a LAN"),
        1 => Check::new(
            "ttl",
            Status::Ok,
            "TTL 1: reaches every host on this LAN segment, not across routers",
        ),
        n => Check::new(
            "ttl",
            Status::Info,
            format!("TTL {n}: crosses up to {} routers if they forward multicast (239.255.0.0/16 is meant to stay inside the site)", n - 1),
        ),
    }
}

fn buffers(f: &Facts) -> Option<Check> {
    let max: usize = f.rmem_max.as_deref()?.trim().parse().ok()?;
    Some(if max < 1 << 20 {
        Check::new(
            "buffers",
            Status::Info,
            format!("net.core.rmem_max is {max} bytes: receivers ask for 1 MiB and get less, so a busy host may drop packets"),
        )
        .with_fix("sudo sysctl -w net.core.rmem_max=1048576")
    } else {
        Check::new(
            "buffers",
            Status::Ok,
            format!("net.core.rmem_max {max} bytes"),
        )
    })
}

/// An ok check `name` listing the `items` found (after `what`), if any.
fn found(name: &'static str, what: &str, items: &[String]) -> Option<Check> {
    (!items.is_empty())
        .then(|| Check::new(name, Status::Ok, format!("{what}: {}", items.join(", "))))
}

fn install(f: &Facts) -> Vec<Check> {
    let files: Vec<String> = f
        .module_files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let modules = found("modules", "installed", &files).unwrap_or_else(|| {
        Check::new(
            "modules",
            Status::Info,
            "the PipeWire modules (libpipewire-module-bark-sink/-source.so) are not installed in PipeWire's module directory",
        )
        .with_fix("make modules, then install them into `pkg-config --variable=moduledir libpipewire-0.3` (or set PIPEWIRE_MODULE_DIR)")
    });
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
    let config = found("config", "drop-ins", &confs).unwrap_or_else(|| {
        Check::new(
            "config",
            Status::Info,
            "no pipewire.conf.d drop-in loads a Bark module",
        )
        .with_fix("copy conf/bark-sink.conf (sender) or conf/bark-source.conf (receiver) to ~/.config/pipewire/pipewire.conf.d/ and restart PipeWire (systemctl --user restart pipewire)")
    });
    vec![modules, config]
}

//! The audio-server checks: which daemons run, the PipeWire version and
//! its known issues, Bark's nodes, and where each receiver's audio goes.
//! Pure: same facts, same verdicts.

use super::facts::{AudioFacts, Facts};
use super::pwdump::{Graph, Node};
use super::versions::{self, PwVersion};
use super::{parse, Check, Status};
use std::collections::BTreeMap;

/// The audio checks, in the order they are shown.
pub fn judge(f: &Facts) -> Vec<Check> {
    let graph = f.audio.as_ref().and_then(|a| a.pw_dump.as_ref()).map(|d| {
        d.as_ref().map_err(String::clone).and_then(|json| {
            Graph::parse(json).map_err(|e| format!("pw-dump output not understood: {e}"))
        })
    });
    let mut v = vec![audio_server(f)];
    let version = pipewire(f, graph.as_ref().and_then(|g| g.as_ref().ok()));
    let pw_version = version.as_ref().and_then(|(_, v)| *v);
    v.extend(version.map(|(c, _)| c));
    if let Some(a) = &f.audio {
        match &graph {
            Some(Ok(g)) => {
                v.push(bark_nodes(g));
                v.extend(
                    g.bark_nodes()
                        .filter(|n| n.is_receiver())
                        .map(|n| receiver(g, n, a, pw_version)),
                );
            }
            Some(Err(e)) => v.push(Check::new(
                "bark-node",
                Status::Info,
                format!("could not ask PipeWire ({e}; is XDG_RUNTIME_DIR set for this user?)"),
            )),
            None => v.extend(pulse_modules(a)),
        }
    }
    v
}

fn audio_server(f: &Facts) -> Check {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &f.daemons {
        *counts.entry(d.name.as_str()).or_default() += 1;
    }
    let count = |n: &str| counts.get(n).copied().unwrap_or(0);
    let running: Vec<String> = counts.iter().map(|(n, c)| format!("{n} ×{c}")).collect();
    if running.is_empty() {
        return Check::new(
            "audio-server",
            Status::Warn,
            "no PipeWire or PulseAudio is running",
        )
        .with_fix(
            "start it for your user: systemctl --user start pipewire pipewire-pulse wireplumber",
        );
    }
    let (pw, pulse) = (count("pipewire") > 0, count("pulseaudio") > 0);
    let kind = match (pw, count("pipewire-pulse") > 0) {
        (true, true) => "PipeWire with its PulseAudio server",
        (true, false) => "PipeWire",
        _ => "PulseAudio",
    };
    if pw && pulse {
        Check::new(
            "audio-server",
            Status::Warn,
            format!(
                "{kind}: {}; PulseAudio and pipewire-pulse compete for the same clients",
                running.join(", ")
            ),
        )
        .with_fix("run one: systemctl --user mask pulseaudio.socket pulseaudio.service")
    } else {
        Check::new(
            "audio-server",
            Status::Ok,
            format!("{kind}: {}", running.join(", ")),
        )
    }
}

/// The PipeWire version check, and the version the other checks judge by
/// (the daemon's, else the library's).
fn pipewire(f: &Facts, g: Option<&Graph>) -> Option<(Check, Option<PwVersion>)> {
    let library = f
        .pw_cli_version
        .as_deref()
        .and_then(parse::linked_version)
        .or_else(|| {
            f.pipewire_version
                .as_deref()
                .and_then(parse::linked_version)
        });
    let daemon = g.and_then(|g| g.version.clone());
    let shown = daemon.clone().or_else(|| library.clone())?;
    let mismatch = match (&daemon, &library) {
        (Some(d), Some(l)) if d != l => Some((d, l)),
        _ => None,
    };
    let which = match (mismatch, &daemon) {
        (Some((d, l)), _) => format!("daemon {d}, library {l}"),
        (None, Some(_)) => "the running daemon".to_string(),
        (None, None) => "the installed library; the daemon was not asked".to_string(),
    };
    let Ok(v) = shown.parse::<PwVersion>() else {
        let c = Check::new(
            "pipewire",
            Status::Info,
            format!("PipeWire {shown:?} ({which}): not a version doctor understands"),
        );
        return Some((c, None));
    };
    let tested = if versions::LAB_TESTED.contains(&v) {
        ", tested in Bark's lab"
    } else {
        ""
    };
    let mut c = if v < versions::TESTED_MIN {
        Check::new(
            "pipewire",
            Status::Warn,
            format!(
                "PipeWire {v} ({which}): older than {}, the oldest Bark is tested on",
                versions::TESTED_MIN
            ),
        )
        .with_fix(format!(
            "upgrade PipeWire to {} or later",
            versions::TESTED_MIN
        ))
    } else if let Some((d, l)) = mismatch {
        Check::new(
            "pipewire",
            Status::Warn,
            format!("the running daemon is PipeWire {d} but the installed library is {l}: the daemon was not restarted after an upgrade"),
        )
        .with_fix("restart it: systemctl --user restart pipewire pipewire-pulse wireplumber")
    } else {
        Check::new(
            "pipewire",
            Status::Ok,
            format!("PipeWire {v} ({which}): supported{tested}"),
        )
    };
    c.notes = versions::issues(v).map(ToString::to_string).collect();
    Some((c, Some(v)))
}

fn bark_nodes(g: &Graph) -> Check {
    let mods: Vec<&str> = g.bark_modules().map(|m| m.name.as_str()).collect();
    let nodes: Vec<String> = g
        .bark_nodes()
        .map(|n| format!("{} ({}, {})", n.name, n.media_class, n.state))
        .collect();
    if mods.is_empty() && nodes.is_empty() {
        return Check::new(
            "bark-node",
            Status::Info,
            "PipeWire has no Bark node loaded",
        )
        .with_fix("add conf/bark-sink.conf or conf/bark-source.conf to ~/.config/pipewire/pipewire.conf.d/ and restart PipeWire; `journalctl --user -u pipewire` shows load errors");
    }
    Check::new(
        "bark-node",
        Status::Ok,
        format!(
            "loaded: modules [{}], nodes [{}]",
            mods.join(", "),
            nodes.join(", ")
        ),
    )
}

fn pulse_modules(a: &AudioFacts) -> Option<Check> {
    let mods = a.pactl_modules.as_deref()?;
    let bark: Vec<&str> = mods.lines().filter(|l| l.contains("bark")).collect();
    Some(if bark.is_empty() {
        Check::new(
            "bark-node",
            Status::Info,
            "PulseAudio has no Bark module loaded",
        )
    } else {
        Check::new(
            "bark-node",
            Status::Ok,
            format!("PulseAudio: {}", bark.join("; ")),
        )
    })
}

/// `bark.delay.msec` of the receiver module that made node `n` (matched by
/// `node.name`, default "bark_source"), ms; 0 when not set.
fn delay_msec(g: &Graph, n: &Node) -> f64 {
    g.bark_modules()
        .filter(|m| m.name.ends_with("bark-source"))
        .map(|m| parse::module_args(&m.args))
        .find(|a| a.get("node.name").map_or("bark_source", String::as_str) == n.name)
        .and_then(|a| a.get("bark.delay.msec")?.parse().ok())
        .unwrap_or(0.0)
}

/// The receiver's own downstream latency, µs, from its status packets
/// (`StatusCounters::downstream_us`, gathered into
/// [`AudioFacts::receiver_reports`] by the probe).
fn own_downstream_us(a: &AudioFacts, node_name: &str) -> Option<u32> {
    a.receiver_reports
        .iter()
        .find(|r| r.node_name == node_name)?
        .downstream_us
}

fn ms(ns: f64) -> String {
    format!("{:.1} ms", ns / 1e6)
}

/// One receiver: where its audio goes, what PipeWire reports about the
/// latency on the way, and whether a loopback or filter there goes
/// uncounted.
fn receiver(g: &Graph, n: &Node, a: &AudioFacts, v: Option<PwVersion>) -> Check {
    let name = &n.name;
    if n.state == "error" {
        return Check::new(
            "receiver",
            Status::Warn,
            format!("{name}: error: {}", n.error.as_deref().unwrap_or("?")),
        )
        .with_fix(
            "`journalctl --user -u pipewire` says why; check its stream.props (target.object)",
        );
    }
    let path = g.downstream(n.id);
    if path.is_empty() {
        return if n.media_class == "Audio/Source" {
            Check::new(
                "receiver",
                Status::Info,
                format!("{name} is a virtual source (Audio/Source): programs that record it add their own latency"),
            )
        } else {
            Check::new(
                "receiver",
                Status::Warn,
                format!("{name} is not linked to any sink: nothing plays here"),
            )
            .with_fix("is WirePlumber running (`wpctl status`)? Or name a sink in its args: stream.props = { target.object = <sink node.name> }")
        };
    }
    let mut detail = format!(
        "{name} → {}",
        path.iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(" → ")
    );
    let reported = g.reported_downstream(n.id);
    match reported {
        Some((ns, q)) if q > 0.0 => {
            detail += &format!(
                "; PipeWire reports {} + {q} quantum downstream",
                ms(ns as f64)
            )
        }
        Some((ns, _)) => detail += &format!("; PipeWire reports {} downstream", ms(ns as f64)),
        None => detail += "; PipeWire reports no downstream latency",
    }
    let delay = delay_msec(g, n);
    if delay != 0.0 {
        detail += &format!("; bark.delay.msec = {delay}");
    }
    if let Some(us) = own_downstream_us(a, name) {
        detail += &format!(
            "; the receiver reports {} downstream",
            ms(f64::from(us) * 1e3)
        );
    }
    // A device behind the loopback may report its own latency; what
    // matters is whether the loopback reports its delay.
    let Some(filter) = path
        .iter()
        .find(|p| p.is_filter() && !g.filter_reports_delay(p))
        .filter(|_| delay == 0.0)
    else {
        return Check::new("receiver", Status::Ok, detail);
    };
    let can_report = v.is_some_and(|v| v >= versions::LOOPBACK_REPORTS);
    detail += &format!(
        "; {} is a loopback or filter whose delay PipeWire does not count{}",
        filter.name,
        if can_report {
            ""
        } else {
            " (this PipeWire cannot report a loopback's delay)"
        }
    );
    let fix = if can_report {
        format!(
            "if {} delays the audio by D ms, have it report that: `pw-cli set-param {} Props '{{ \"latencyOffsetNsec\": <D × 1000000> }}'` (Bark then counts it), or set bark.delay.msec = -D in this receiver's args",
            filter.name, filter.id
        )
    } else {
        format!(
            "if {} delays the audio by D ms, set bark.delay.msec = -D in this receiver's args (the session latency must exceed D)",
            filter.name
        )
    };
    Check::new("receiver", Status::Warn, detail).with_fix(fix)
}

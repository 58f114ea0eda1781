//! `bark ls` and `bark set`: every node heard on the group (from its
//! status packets, as `bark stats` hears them), and changing one node's
//! settings through its command socket ([`bark_core::command`]).
//!
//! Exit codes of `bark set` ([`Exit`]): 0 applied; 2 no such node (or
//! more than one); 3 no ack; 4 refused by the node.

use crate::cli::{LsArgs, SetArgs, ZoneArgs};
use crate::stats::model::{NodeView, Snapshot};
use crate::stats::Collector;
use anyhow::{anyhow, bail, Result};
use bark_core::channels::Selection;
use bark_core::command::Label;
use bark_core::command::{
    AckPacket, AckResult, Controller, Settings, SettingsBlock, ACK_BUF, MAX_VOLUME, SET_CHANNELS,
    SET_DELAY, SET_ENABLED, SET_MUTE, SET_NAME, SET_PRIORITY, SET_STREAM, SET_VOLUME,
};
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

/// `bark set`'s exit codes beyond 0 (applied) and 1 (any other error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// No node of that name or id (or several).
    UnknownNode = 2,
    /// The node did not answer within `--timeout-msec`.
    NoAck = 3,
    /// The node refused the command (a value out of range, a field its
    /// role does not have, or it restarted under a new id).
    Refused = 4,
}

/// Every node a controller can know of: those whose status packets it
/// hears on the group (with their figures and settings), and those only
/// advertised with DNS-SD (unicast receivers, whose status goes to their
/// sender alone).
pub struct Directory {
    collector: Collector,
    /// Nodes advertised with DNS-SD, kept by a thread that takes mDNS's
    /// events as they come (its channel is short).
    found: std::sync::Arc<std::sync::Mutex<Vec<bark_io::discovery::Found>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Directory {
    /// Listens on the group of `net` and browses DNS-SD on the interface
    /// the group's route goes through (a failure there only leaves
    /// DNS-SD out, with a warning). Nodes advertised with another key id
    /// than `key`'s (or one where there is none, or none where there is
    /// one) are left out, as their status packets are.
    ///
    /// # Errors
    /// Not a multicast group; socket set-up; the key file.
    pub fn start(net: &crate::cli::ListenNet, key: &crate::cli::KeyArgs) -> Result<Directory> {
        let group = SocketAddrV4::new(net.source_ip, net.port);
        if !group.ip().is_multicast() {
            bail!("{group} is not a multicast group: nodes' status packets are multicast");
        }
        let auth = crate::keyed::Auth::new(key.key_file.as_deref(), false)?;
        let key_id = auth.key().map(|k| k.id().to_string());
        let collector = Collector::start(
            group,
            net.local_ifname.as_deref(),
            3_000_000_000,
            30_000_000_000,
            auth,
        )?;
        let found = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ifname = net.local_ifname.as_deref();
        let browser = if bark_io::discovery::enabled(true) {
            bark_io::discovery::local_addr(group, ifname, crate::net::NAMES)
                .map_err(|e| e.to_string())
                .and_then(bark_io::discovery::Browser::start)
                .map_err(|e| log::warn!("DNS-SD left out: {e}"))
                .ok()
        } else {
            None
        };
        let thread = match browser {
            Some(mut b) => {
                let (f, s) = (std::sync::Arc::clone(&found), std::sync::Arc::clone(&stop));
                Some(
                    std::thread::Builder::new()
                        .name("bark-dnssd".into())
                        .spawn(move || {
                            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                                let now: Vec<_> = b
                                    .poll()
                                    .iter()
                                    .filter(|x| x.key_id == key_id)
                                    .cloned()
                                    .collect();
                                *f.lock().unwrap_or_else(|p| p.into_inner()) = now;
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        })
                        .map_err(|e| anyhow!("starting the DNS-SD thread: {e}"))?,
                )
            }
            None => None,
        };
        Ok(Directory {
            collector,
            found,
            stop,
            thread,
        })
    }

    /// A directory that hears nothing (tests of its users).
    #[cfg(test)]
    pub fn idle() -> Directory {
        Directory {
            collector: Collector::idle(),
            found: Default::default(),
            stop: Default::default(),
            thread: None,
        }
    }

    /// The nodes now: heard ones first (as `bark stats` orders them),
    /// then those only advertised.
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = self.collector.snapshot();
        for f in self.found.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let id = format!("{:016x}", f.node_id);
            if !snap.nodes.iter().any(|n| n.node_id == id) {
                snap.nodes.push(NodeView::discovered(f));
            }
        }
        snap
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `bark ls` and `bark zone` listen `secs` before they answer (status
/// packets come once a second; the DNS-SD thread takes its events
/// meanwhile).
fn listen(d: &Directory, secs: f64) -> Snapshot {
    std::thread::sleep(Duration::from_secs_f64(secs));
    d.snapshot()
}

/// Why nothing was found, when datagrams were refused by the key check.
fn key_hint(s: &Snapshot) -> String {
    if s.auth_dropped > 0 {
        format!(
            "; {} datagram(s) on the group were refused by the key check (--key-file: give the nodes' key)",
            s.auth_dropped
        )
    } else {
        String::new()
    }
}

/// Runs `bark ls`.
///
/// # Errors
/// Socket set-up failures.
pub fn ls(a: &LsArgs) -> Result<i32> {
    let c = Directory::start(&a.net, &a.key)?;
    let snap = listen(&c, a.wait_sec);
    if a.json {
        println!("{}", serde_json::to_string(&snap.nodes)?);
        return Ok(0);
    }
    if snap.nodes.is_empty() {
        println!("no Bark node heard on {}{}", snap.group, key_hint(&snap));
        return Ok(0);
    }
    println!(
        "{:<8} {:<16} {:<24} {:<12} {:>7} {:>5} {:>9} {:>9} {:>6}  ID",
        "ROLE", "ROOM", "NODE", "STREAM", "VOLUME", "MUTE", "DELAY", "SYNC", "SEEN"
    );
    for n in &snap.nodes {
        println!("{}", ls_line(n));
    }
    Ok(0)
}

fn ls_line(n: &NodeView) -> String {
    let advertised_only = n.via == "dns-sd";
    let (room, volume, mute, delay) = match &n.control {
        // Its settings travel in its status only.
        Some(c) if advertised_only => (c.room.clone(), "?".into(), "?".into(), "?".into()),
        Some(c) => (
            c.room.clone(),
            format!("{:.0}%", c.volume_pct),
            if c.mute { "on" } else { "off" }.to_string(),
            format!("{:.1}ms", c.delay_ms),
        ),
        None => ("-".into(), "-".into(), "-".into(), "-".into()),
    };
    let off = n.control.as_ref().is_some_and(|c| !c.enabled);
    let plays = match &n.control {
        Some(c) if n.role == "receiver" && !advertised_only && c.channels != "all" => {
            format!("  plays {}", c.channels)
        }
        _ => String::new(),
    };
    let sync = if n.role == "receiver" && n.playing {
        format!("{:.1}µs", n.sync_error_us)
    } else {
        "-".into()
    };
    let seen = if advertised_only {
        "dns-sd".to_string()
    } else {
        format!("{:.1}s", n.last_heard_s)
    };
    format!(
        "{:<8} {:<16} {:<24} {:<12} {:>7} {:>5} {:>9} {:>9} {:>6}  {}{}{}",
        n.role,
        room,
        format!("{}@{}", n.name, n.host),
        if n.stream.is_empty() { "*" } else { &n.stream },
        volume,
        mute,
        delay,
        sync,
        seen,
        n.node_id,
        if off { "  (off)" } else { "" },
        plays
    )
}

/// The nodes `target` names: its room name, `node.name`, `name@host` or
/// host (case-insensitive), or a prefix of its node id (4 hex digits or
/// more).
pub fn find<'a>(nodes: &'a [NodeView], target: &str) -> Vec<&'a NodeView> {
    let t = target.to_lowercase();
    let by_name: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| {
            n.control
                .as_ref()
                .is_some_and(|c| c.room.to_lowercase() == t)
                || n.name.to_lowercase() == t
                || format!("{}@{}", n.name, n.host).to_lowercase() == t
        })
        .collect();
    if !by_name.is_empty() {
        return by_name;
    }
    let by_host: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| n.host.to_lowercase() == t)
        .collect();
    if !by_host.is_empty() {
        return by_host;
    }
    if t.len() >= 4 && t.chars().all(|c| c.is_ascii_hexdigit()) {
        return nodes.iter().filter(|n| n.node_id.starts_with(&t)).collect();
    }
    Vec::new()
}

/// Parses `FIELD=VALUE` assignments into a mask and the values.
///
/// # Errors
/// An unknown field or a value that does not parse, saying which.
pub fn parse_assignments(items: &[String]) -> Result<(u16, Settings)> {
    let mut mask = 0;
    let mut s = Settings::default();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| anyhow!("{item:?}: expected FIELD=VALUE (e.g. volume=40%)"))?;
        let v = v.trim();
        match k.trim() {
            "volume" => {
                s.volume = parse_volume(v)
                    .ok_or_else(|| anyhow!("volume={v}: expected 0..150% (e.g. 40%)"))?;
                mask |= SET_VOLUME;
            }
            "mute" => {
                s.mute = parse_switch(v).ok_or_else(|| anyhow!("mute={v}: expected on or off"))?;
                mask |= SET_MUTE;
            }
            "enabled" | "enable" => {
                s.enabled =
                    parse_switch(v).ok_or_else(|| anyhow!("enabled={v}: expected on or off"))?;
                mask |= SET_ENABLED;
            }
            "delay" => {
                let ms = v.strip_suffix("ms").unwrap_or(v).trim();
                let ms: f64 = ms
                    .parse()
                    .ok()
                    .filter(|m: &f64| m.is_finite() && m.abs() <= 2000.0)
                    .ok_or_else(|| anyhow!("delay={v}: expected milliseconds within ±2000 (e.g. 12.5ms)"))?;
                s.delay_ns = (ms * 1e6).round() as i64;
                mask |= SET_DELAY;
            }
            "name" => {
                if v.is_empty() || v.len() > bark_core::protocol::MAX_STRING {
                    bail!("name={v:?}: expected 1 to 63 bytes");
                }
                s.name = Label::new(v);
                mask |= SET_NAME;
            }
            "stream" => {
                if v.len() > bark_core::protocol::MAX_STRING {
                    bail!("stream={v:?}: at most 63 bytes");
                }
                // "*" or empty: follow the best stream.
                s.stream = Label::new(if v == "*" { "" } else { v });
                mask |= SET_STREAM;
            }
            "priority" => {
                s.priority = v
                    .parse()
                    .map_err(|_| anyhow!("priority={v}: expected -128..127"))?;
                mask |= SET_PRIORITY;
            }
            "channels" => {
                s.channels = Selection::parse(v).map_err(|e| {
                    anyhow!("channels={v}: {e}; expected all, mono or positions (e.g. FL or RL,RR)")
                })?;
                mask |= SET_CHANNELS;
            }
            other => bail!(
                "unknown field {other:?}: volume, mute, delay, name, stream, enabled, channels (receivers); name, stream, priority (senders)"
            ),
        }
    }
    Ok((mask, s))
}

/// A volume in percent ("40%" or "40"), as a fraction of full volume.
fn parse_volume(v: &str) -> Option<f32> {
    let pct: f32 = v.strip_suffix('%').unwrap_or(v).trim().parse().ok()?;
    let x = pct / 100.0;
    (x.is_finite() && (0.0..=MAX_VOLUME).contains(&x)).then_some(x)
}

fn parse_switch(v: &str) -> Option<bool> {
    match v.to_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// Sends one command and waits for its ack: `tries` sends, `per_try`
/// apart (a retry carries the same sequence, so it is applied once).
///
/// # Errors
/// Socket failures.
pub fn send_command(
    ctl: &mut Controller,
    to: SocketAddr,
    target: u64,
    mask: u16,
    settings: &Settings,
    tries: u32,
    per_try: Duration,
) -> Result<Option<(AckPacket, Duration)>> {
    let mut sock = bark_io::net::command_socket(0)?;
    let mut out = [0u8; ACK_BUF];
    let mut rx = [0u8; ACK_BUF + 64];
    let start = Instant::now();
    let keyed_wall = || crate::clock::realtime_ns();
    let (n, seq) = ctl
        .command(target, mask, settings, keyed_wall(), &mut out)
        .ok_or_else(|| anyhow!("command does not fit"))?;
    let mut len = n;
    for attempt in 0..tries {
        if attempt > 0 {
            len = ctl
                .reseal(target, seq, mask, settings, keyed_wall(), &mut out)
                .ok_or_else(|| anyhow!("command does not fit"))?;
        }
        sock.send_to(&out[..len], to)
            .map_err(|e| anyhow!("sending to {to}: {e}"))?;
        let deadline = Instant::now() + per_try;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            bark_io::net::wait_readable(&[&sock], left.as_nanos() as u64);
            while let Some(d) = sock.recv(&mut rx)? {
                if d.truncated {
                    continue;
                }
                if let Some(a) = ctl.take_ack(&mut rx[..d.len], keyed_wall()) {
                    if a.seq == seq {
                        return Ok(Some((a, start.elapsed())));
                    }
                }
            }
        }
    }
    Ok(None)
}

/// What became of a command to a node.
pub enum Sent {
    /// Acked, after this long.
    Acked(AckPacket, Duration),
    /// No ack within the time, from this address.
    NoAck(SocketAddr),
    /// The node reports no command socket.
    NoSocket,
}

/// Sends `mask`/`settings` to `node` (as `bark ls` lists it) and waits up
/// to `timeout` for its ack (four tries).
///
/// # Errors
/// Socket failures; a node view with a malformed id or address.
pub fn command_node(
    ctl: &mut Controller,
    node: &NodeView,
    mask: u16,
    settings: &Settings,
    timeout: Duration,
) -> Result<Sent> {
    let Some(control) = &node.control else {
        return Ok(Sent::NoSocket);
    };
    let to: SocketAddr = control.command_addr.parse()?;
    let target = u64::from_str_radix(&node.node_id, 16)?;
    let per_try = (timeout / 4).max(Duration::from_millis(1));
    Ok(
        match send_command(ctl, to, target, mask, settings, 4, per_try)? {
            Some((ack, rtt)) => Sent::Acked(ack, rtt),
            None => Sent::NoAck(to),
        },
    )
}

/// An ack's settings in display units (`to`: where the command went).
pub fn ack_view(ack: &AckPacket, to: &str) -> crate::stats::model::ControlView {
    let from = to
        .parse::<SocketAddrV4>()
        .unwrap_or_else(|_| SocketAddrV4::new([0, 0, 0, 0].into(), 0));
    crate::stats::model::ControlView::new(&ack.settings, from)
}

/// One line about a node's settings as an ack reports them.
pub fn describe(b: &SettingsBlock) -> String {
    let s = &b.settings;
    format!(
        "volume {:.0}%, {}, delay {:.1} ms, stream {}, {}, plays {}",
        s.volume * 100.0,
        if s.mute { "muted" } else { "not muted" },
        s.delay_ns as f64 / 1e6,
        if s.stream.is_empty() {
            "*"
        } else {
            s.stream.as_str()
        },
        if s.enabled { "on" } else { "off" },
        s.channels
    )
}

/// Runs `bark set`.
///
/// # Errors
/// Bad assignments, socket failures.
pub fn set(a: &SetArgs) -> Result<i32> {
    let (mask, settings) = parse_assignments(&a.assignments)?;
    let auth = crate::keyed::Auth::new(a.key.key_file.as_deref(), false)?;
    let c = Directory::start(&a.net, &a.key)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(a.wait_sec);
    // The node is looked for until it is heard (status comes about once
    // a second), not for the whole wait; by a name, for a full status
    // period first, so that a second node of that name is not missed.
    let by_id = a.target.len() >= 4 && a.target.chars().all(|c| c.is_ascii_hexdigit());
    let settle = if by_id {
        Duration::ZERO
    } else {
        Duration::from_millis(1100)
    };
    let (node, snap) = loop {
        std::thread::sleep(Duration::from_millis(50));
        let snap = c.snapshot();
        let found: Vec<NodeView> = find(&snap.nodes, &a.target).into_iter().cloned().collect();
        let now = Instant::now();
        if (found.len() == 1 && now >= start + settle) || now >= deadline {
            break (found, snap);
        }
    };
    drop(c);
    let node = match node.as_slice() {
        [n] => n.clone(),
        [] => {
            let known: Vec<String> = snap
                .nodes
                .iter()
                .map(|n| {
                    n.control
                        .as_ref()
                        .map_or_else(|| n.name.clone(), |c| c.room.clone())
                })
                .collect();
            eprintln!(
                "bark set: no node {:?} heard on {} within {:.1} s (known: {}){}",
                a.target,
                snap.group,
                a.wait_sec,
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
                key_hint(&snap)
            );
            return Ok(Exit::UnknownNode as i32);
        }
        many => {
            let ids: Vec<String> = many
                .iter()
                .map(|n| format!("{}@{} {}", n.name, n.host, n.node_id))
                .collect();
            eprintln!(
                "bark set: {:?} names {} nodes ({}): give a node id",
                a.target,
                many.len(),
                ids.join(", ")
            );
            return Ok(Exit::UnknownNode as i32);
        }
    };
    let mut ctl = Controller::new(bark_io::node::random_nonzero_u64(), auth.key())
        .map_err(|e| anyhow!("{e}"))?;
    let timeout = Duration::from_millis(a.timeout_msec);
    let (ack, rtt) = match command_node(&mut ctl, &node, mask, &settings, timeout)? {
        Sent::Acked(ack, rtt) => (ack, rtt),
        Sent::NoSocket => {
            eprintln!(
                "bark set: {}@{} has no command socket (a Bark older than this one?)",
                node.name, node.host
            );
            return Ok(Exit::UnknownNode as i32);
        }
        Sent::NoAck(to) => {
            eprintln!(
                "bark set: no ack from {}@{} at {to} within {} ms{}",
                node.name,
                node.host,
                a.timeout_msec,
                if auth.key().is_none() {
                    " (if the node has a key, bark.key-file, pass the same with --key-file)"
                } else {
                    " (a node with another key, or none, drops what this key seals)"
                }
            );
            return Ok(Exit::NoAck as i32);
        }
    };
    let to = node
        .control
        .as_ref()
        .map(|c| c.command_addr.clone())
        .unwrap_or_default();
    let who = format!(
        "{} ({}@{})",
        ack.settings.settings.name.as_str(),
        node.name,
        node.host
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "node_id": node.node_id,
                "result": format!("{:?}", ack.result).to_lowercase(),
                "ack_ms": rtt.as_secs_f64() * 1e3,
                "settings": ack_view(&ack, &to),
            })
        );
    }
    match ack.result {
        AckResult::Applied | AckResult::Repeated => {
            if !a.json {
                println!(
                    "{who}: {} (acked in {:.1} ms)",
                    describe(&ack.settings),
                    rtt.as_secs_f64() * 1e3
                );
            }
            Ok(0)
        }
        AckResult::Invalid => {
            eprintln!(
                "bark set: {who} refused the command: a value out of range or a field a {} does not have",
                if ack.role == bark_core::protocol::Role::Sender { "sender" } else { "receiver" }
            );
            Ok(Exit::Refused as i32)
        }
        AckResult::WrongNode => {
            eprintln!("bark set: {who} restarted under a new id; try again");
            Ok(Exit::Refused as i32)
        }
    }
}

/// Runs `bark zone`: lists the zones, or sets one's volume (members
/// moved in proportion) and mute.
///
/// # Errors
/// Bad assignments, socket failures.
pub fn zone(a: &ZoneArgs) -> Result<i32> {
    let auth = crate::keyed::Auth::new(a.key.key_file.as_deref(), false)?;
    let c = Directory::start(&a.net, &a.key)?;
    let snap = listen(&c, a.wait_sec);
    drop(c);
    let all = zones(&snap.nodes);
    let Some(name) = &a.zone else {
        if a.json {
            println!("{}", serde_json::to_string(&all)?);
        } else {
            for z in &all {
                println!(
                    "{:<16} {:>5.0}%{} {} room(s)",
                    z.name,
                    z.volume_pct,
                    if z.mute { " muted" } else { "" },
                    z.members.len()
                );
            }
        }
        return Ok(0);
    };
    let (mask, settings) = parse_assignments(&a.assignments)?;
    if mask & !(SET_VOLUME | SET_MUTE) != 0 {
        bail!("a zone takes volume and mute (name, stream and the rest are each room's: bark set)");
    }
    let Some(z) = all.iter().find(|z| z.name.eq_ignore_ascii_case(name)) else {
        let names: Vec<&str> = all.iter().map(|z| z.name.as_str()).collect();
        eprintln!(
            "bark zone: no zone {name:?} (zones: {}){}",
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            },
            key_hint(&snap)
        );
        return Ok(Exit::UnknownNode as i32);
    };
    let mut ctl = Controller::new(bark_io::node::random_nonzero_u64(), auth.key())
        .map_err(|e| anyhow!("{e}"))?;
    let results = apply_zone(
        &mut ctl,
        &snap.nodes,
        z,
        mask,
        &settings,
        Duration::from_millis(a.timeout_msec),
    )?;
    let mut code = 0;
    for (node, r) in &results {
        match r {
            Sent::Acked(ack, _)
                if matches!(ack.result, AckResult::Applied | AckResult::Repeated) =>
            {
                println!(
                    "{}: {}",
                    ack.settings.settings.name.as_str(),
                    describe(&ack.settings)
                );
            }
            Sent::Acked(_, _) => {
                eprintln!("bark zone: {node} refused");
                code = Exit::Refused as i32;
            }
            Sent::NoAck(to) => {
                eprintln!("bark zone: no ack from {node} at {to}");
                code = Exit::NoAck as i32;
            }
            Sent::NoSocket => {}
        }
    }
    Ok(code)
}

/// Sets zone `z`'s volume (its members moved in proportion) and/or mute
/// (every member); returns each member's outcome, by node id.
///
/// # Errors
/// Socket failures.
pub fn apply_zone(
    ctl: &mut Controller,
    nodes: &[NodeView],
    z: &Zone,
    mask: u16,
    settings: &Settings,
    timeout: Duration,
) -> Result<Vec<(String, Sent)>> {
    let members: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| z.members.contains(&n.node_id))
        .collect();
    let now: Vec<(String, f64)> = members
        .iter()
        .map(|n| {
            (
                n.node_id.clone(),
                n.control.as_ref().map_or(0.0, |c| c.volume_pct),
            )
        })
        .collect();
    let new = zone_volumes(&now, f64::from(settings.volume) * 100.0);
    let mut out = Vec::new();
    for (n, (_, pct)) in members.iter().zip(new) {
        let s = Settings {
            volume: (pct / 100.0) as f32,
            ..*settings
        };
        out.push((n.node_id.clone(), command_node(ctl, n, mask, &s, timeout)?));
    }
    Ok(out)
}

/// A zone: the receivers that follow one stream, named after it.
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct Zone {
    /// The stream's name.
    pub name: String,
    /// Node ids of its receivers (with a command socket).
    pub members: Vec<String>,
    /// The zone's volume: its loudest member's, percent (0 with no
    /// members).
    pub volume_pct: f64,
    /// Every member muted.
    pub mute: bool,
}

/// The stream a receiver is in the zone of: the one it is set to
/// follow, or else the stream of the sender whose session it follows.
fn zone_of(n: &NodeView, nodes: &[NodeView]) -> Option<String> {
    if !n.stream.is_empty() {
        return Some(n.stream.clone());
    }
    nodes
        .iter()
        .find(|s| s.role == "sender" && !n.session.is_empty() && s.session == n.session)
        .map(|s| s.stream.clone())
}

/// The zones of the receivers in `nodes`, by name.
pub fn zones(nodes: &[NodeView]) -> Vec<Zone> {
    let mut out: Vec<Zone> = Vec::new();
    // Only rooms whose settings are known (heard in their status), and
    // that play: a room switched off has left its zone.
    for n in nodes
        .iter()
        .filter(|n| n.role == "receiver" && n.via == "status")
    {
        let (Some(c), Some(name)) = (&n.control, zone_of(n, nodes)) else {
            continue;
        };
        if !c.enabled {
            continue;
        }
        let z = match out.iter_mut().position(|z| z.name == name) {
            Some(i) => &mut out[i],
            None => {
                out.push(Zone {
                    name,
                    members: Vec::new(),
                    volume_pct: 0.0,
                    mute: true,
                });
                out.last_mut().expect("just pushed")
            }
        };
        z.members.push(n.node_id.clone());
        z.volume_pct = z.volume_pct.max(c.volume_pct);
        z.mute &= c.mute;
    }
    out.sort_by(|a, b| crate::stats::model::natural_cmp(&a.name, &b.name));
    out
}

/// Each member's new volume when the zone's goes to `target_pct`: moved
/// in proportion (Sonos's group volume), so that the rooms keep their
/// balance; all to the target when the zone is silent. Percent, capped at
/// 150 %.
pub fn zone_volumes(members: &[(String, f64)], target_pct: f64) -> Vec<(String, f64)> {
    let loudest = members.iter().map(|m| m.1).fold(0.0, f64::max);
    members
        .iter()
        .map(|(id, v)| {
            let new = if loudest > 0.0 {
                v * target_pct / loudest
            } else {
                target_pct
            };
            (id.clone(), new.clamp(0.0, f64::from(MAX_VOLUME) * 100.0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_switched_off_leaves_its_zone() {
        let room = |id: u64, on: bool| {
            let mut n = NodeView::discovered(&bark_io::discovery::Found {
                role: bark_core::protocol::Role::Receiver,
                node_id: id,
                node_name: "bark_source".into(),
                room: format!("room {id}"),
                stream: "livingroom".into(),
                addr: [10, 0, 0, id as u8].into(),
                command_port: 4021,
                control_port: None,
                key_id: None,
                fullname: String::new(),
            });
            n.via = "status";
            if let Some(c) = n.control.as_mut() {
                c.enabled = on;
                c.volume_pct = 40.0;
            }
            n
        };
        let z = zones(&[room(1, true), room(2, false)]);
        assert_eq!(z.len(), 1);
        assert_eq!(z[0].name, "livingroom");
        assert_eq!(z[0].members, vec![format!("{:016x}", 1)]);
        // Known only by DNS-SD: its settings are not known, no zone.
        let mut advertised = room(3, true);
        advertised.via = "dns-sd";
        assert!(zones(&[advertised]).is_empty());
    }

    #[test]
    fn zone_volume_moves_members_in_proportion() {
        let m = vec![("a".to_string(), 40.0), ("b".to_string(), 20.0)];
        let v = zone_volumes(&m, 60.0);
        assert_eq!(v, vec![("a".to_string(), 60.0), ("b".to_string(), 30.0)]);
        let silent = vec![("a".to_string(), 0.0), ("b".to_string(), 0.0)];
        assert_eq!(zone_volumes(&silent, 25.0)[1].1, 25.0);
        assert_eq!(zone_volumes(&m, 150.0)[0].1, 150.0);
    }

    #[test]
    fn assignments_parse_as_people_write_them() {
        let items: Vec<String> = [
            "volume=40%",
            "mute=on",
            "delay=12.5ms",
            "name=Kitchen",
            "stream=livingroom",
            "channels=FL",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (mask, s) = parse_assignments(&items).unwrap();
        assert_eq!(
            mask,
            SET_VOLUME | SET_MUTE | SET_DELAY | SET_NAME | SET_STREAM | SET_CHANNELS
        );
        assert_eq!(s.channels.to_string(), "[ FL ]");
        assert!(parse_assignments(&["channels=left".to_string()]).is_err());
        assert!((s.volume - 0.4).abs() < 1e-6);
        assert!(s.mute);
        assert_eq!(s.delay_ns, 12_500_000);
        assert_eq!(s.name.as_str(), "Kitchen");
        assert_eq!(s.stream.as_str(), "livingroom");
        assert!((parse_volume("40").unwrap() - 0.4).abs() < 1e-6);
        assert!(
            (parse_volume("1").unwrap() - 0.01).abs() < 1e-6,
            "a bare number is percent"
        );
        for bad in [
            "volume=200%",
            "mute=maybe",
            "delay=3s",
            "colour=red",
            "volume",
            "name=",
        ] {
            assert!(parse_assignments(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}

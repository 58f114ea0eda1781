//! The node table behind every `bark stats` view: the latest status packet
//! of each node, when it was heard, and snapshots of it in display units.

use bark_core::command::SettingsBlock;
use bark_core::protocol::{Role, StatusCounters, StatusPacket, STATUS_ACTIVE, STATUS_LATE};
use bark_core::SampleFormat;
use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddrV4;

/// What is kept about one node.
#[derive(Clone, Debug)]
struct Entry {
    stream_id: u64,
    role: Role,
    flags: u8,
    counters: StatusCounters,
    name: String,
    host: String,
    stream: String,
    addr: SocketAddrV4,
    settings: Option<SettingsBlock>,
    first_heard_ns: u64,
    last_heard_ns: u64,
    reports: u64,
    /// (time, packets) of the previous report, for the packet rate.
    prev: Option<(u64, u64)>,
}

/// Every node heard on the group, keyed by node id.
#[derive(Clone, Debug, Default)]
pub struct NodeTable {
    nodes: HashMap<u64, Entry>,
    /// Status packets taken in.
    pub status_packets: u64,
    /// Datagrams on the group that were not Bark packets.
    pub malformed: u64,
    /// Datagrams dropped by `--key-file` checks.
    pub auth_dropped: u64,
}

/// Liveness of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// Heard within the quiet time.
    Active,
    /// Not heard for longer than the quiet time (dropped later).
    Quiet,
}

/// One node in display units: what the table, JSON and metrics show.
#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    /// Node id, 16 hex digits.
    pub node_id: String,
    /// `node.name`.
    pub name: String,
    /// Host name it reports.
    pub host: String,
    /// IPv4 address and port its status came from.
    pub addr: String,
    /// "sender" or "receiver".
    pub role: &'static str,
    /// Stream name (a receiver's `--stream`; empty: follows the best).
    pub stream: String,
    /// Session id sent (sender) or followed (receiver; empty: none), hex.
    pub session: String,
    /// For a receiver: `name@host` of the sender whose session it follows,
    /// if that sender is in the table.
    pub following: Option<String>,
    /// Streaming (sender) or playing (receiver).
    pub playing: bool,
    /// Wire sample format, e.g. "F32LE" (empty if unknown).
    pub format: String,
    /// Channels (0 if unknown).
    pub channels: u8,
    /// Rate, Hz (0 if unknown).
    pub rate_hz: u32,
    /// Session latency, ms: what the sender asks of every receiver (it
    /// rises to cover the receivers' needs; a receiver with its own
    /// `--latency-msec` shows that).
    pub latency_ms: f64,
    /// Receiver: downstream latency of its output, ms (from a frame leaving
    /// the receiver to its being heard: filters, DSP, the device).
    pub downstream_ms: f64,
    /// Receiver: the least session latency at which it plays every frame
    /// in time, ms (downstream latency, one output quantum, a margin).
    /// Sender: its configured (base) latency, ms.
    pub need_ms: f64,
    /// Receiver: the latency it plays at, ms (the session latency, or its
    /// need when that is larger). Sender: the most the session latency may
    /// rise to, ms.
    pub play_latency_ms: f64,
    /// Receiver: it plays later than the session latency, out of sync
    /// with the others, because its output needs more (status flag bit 1).
    pub playing_late: bool,
    /// Receiver: sender clock minus local clock, µs.
    pub clock_offset_us: f64,
    /// Receiver: sender clock rate relative to local; sender: its audio
    /// clock against nominal; parts per million.
    pub rate_error_ppm: f64,
    /// Receiver: current playback error, µs (late positive).
    pub sync_error_us: f64,
    /// Receiver: audio buffered ahead of playback, ms.
    pub buffer_ms: f64,
    /// The counters of its last status packet, as sent. The views show
    /// its packet and frame counts from here (`packets`, `lost`, `late`,
    /// `repaired`, `duplicated`, `concealed_frames`, `underruns`, their meanings as
    /// [`StatusCounters`] documents them); its figures with units they
    /// take from the fields above, in display units. `--json` has the
    /// counts only, as fields of the node.
    #[serde(flatten, serialize_with = "serialize_counts")]
    pub counters: StatusCounters,
    /// Audio packets per second between the last two reports.
    pub packet_rate_hz: f64,
    /// Seconds since the last status packet.
    pub last_heard_s: f64,
    /// Seconds since the first status packet.
    pub heard_for_s: f64,
    /// Status packets taken in from this node.
    pub reports: u64,
    /// Active or quiet.
    pub state: Liveness,
    /// Its settings and where commands reach it, from nodes with a
    /// command socket.
    pub control: Option<ControlView>,
    /// How it was found: "status" (its status packets, with figures) or
    /// "dns-sd" (its advertisement only; its settings are not known).
    pub via: &'static str,
}

impl NodeView {
    /// A node known only from its DNS-SD advertisement (its status does
    /// not reach this host: a unicast receiver's goes to its sender only):
    /// who and where it is, its stream and command address; no figures.
    pub fn discovered(f: &bark_io::discovery::Found) -> NodeView {
        let is_sender = f.role == Role::Sender;
        NodeView {
            node_id: format!("{:016x}", f.node_id),
            name: f.node_name.clone(),
            host: String::new(),
            addr: f.addr.to_string(),
            role: if is_sender { "sender" } else { "receiver" },
            stream: f.stream.clone(),
            session: String::new(),
            following: None,
            playing: false,
            format: String::new(),
            channels: 0,
            rate_hz: 0,
            latency_ms: 0.0,
            downstream_ms: 0.0,
            need_ms: 0.0,
            play_latency_ms: 0.0,
            playing_late: false,
            clock_offset_us: 0.0,
            rate_error_ppm: 0.0,
            sync_error_us: 0.0,
            buffer_ms: 0.0,
            counters: StatusCounters::default(),
            packet_rate_hz: 0.0,
            last_heard_s: 0.0,
            heard_for_s: 0.0,
            reports: 0,
            state: Liveness::Active,
            control: Some(ControlView {
                room: f.room.clone(),
                volume_pct: 100.0,
                mute: false,
                delay_ms: 0.0,
                enabled: true,
                priority: 0,
                channels: "all".into(),
                command_addr: SocketAddrV4::new(f.addr, f.command_port).to_string(),
            }),
            via: "dns-sd",
        }
    }
}

/// A node's settings in display units ([`bark_core::command::Settings`]).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ControlView {
    /// The room's name (`node.description`).
    pub room: String,
    /// Volume on the user's (cubic) scale, percent.
    pub volume_pct: f64,
    /// Muted.
    pub mute: bool,
    /// Receiver: delay offset, ms.
    pub delay_ms: f64,
    /// Receiver: plays (false: switched off).
    pub enabled: bool,
    /// Sender: priority.
    pub priority: i8,
    /// Receiver: which of the stream's channels it plays (`bark.channels`:
    /// "all", "mono", "[ FL ]").
    pub channels: String,
    /// Where commands go: the address its status came from, at its
    /// command port ("ip:port").
    pub command_addr: String,
}

impl ControlView {
    /// From a status packet's settings block, heard from `from`.
    pub fn new(b: &SettingsBlock, from: SocketAddrV4) -> ControlView {
        let s = &b.settings;
        ControlView {
            room: s.name.as_str().to_string(),
            volume_pct: (f64::from(s.volume) * 1000.0).round() / 10.0,
            mute: s.mute,
            delay_ms: s.delay_ns as f64 / 1e6,
            enabled: s.enabled,
            priority: s.priority,
            channels: s.channels.to_string(),
            command_addr: SocketAddrV4::new(*from.ip(), b.port).to_string(),
        }
    }
}

/// The counts of `c` (not the figures with units: [`NodeView`] has those in
/// display units), under their field names.
fn serialize_counts<S: Serializer>(c: &StatusCounters, s: S) -> Result<S::Ok, S::Error> {
    let counts = [
        ("packets", c.packets),
        ("lost", c.lost),
        ("late", c.late),
        ("repaired", c.repaired),
        ("duplicated", c.duplicated),
        ("concealed_frames", c.concealed_frames),
        ("underruns", c.underruns),
    ];
    let mut m = s.serialize_struct("Counts", counts.len())?;
    for (name, v) in counts {
        m.serialize_field(name, &v)?;
    }
    m.end()
}

/// A whole snapshot, as `--json` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// Wall-clock time of the snapshot, seconds since the Unix epoch.
    pub time_unix_s: f64,
    /// Group listened on, "ip:port".
    pub group: String,
    /// Senders in the view.
    pub senders: usize,
    /// Receivers in the view.
    pub receivers: usize,
    /// Status packets taken in so far.
    pub status_packets: u64,
    /// Non-Bark or malformed datagrams seen on the group.
    pub malformed: u64,
    /// Datagrams dropped by `--key-file` checks (unauthenticated, other
    /// key, replayed, stale; or sealed, when listening without a key).
    pub auth_dropped: u64,
    /// The nodes: senders first, then by stream, name, host.
    pub nodes: Vec<NodeView>,
}

/// Orders names the way people number rooms: "rx2" before "rx10".
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (dx, dy) = (&x[..nx], &y[..ny]);
                // Compare as numbers (leading zeros aside), then as text.
                let tx = &dx[dx.iter().take_while(|&&c| c == b'0').count()..];
                let ty = &dy[dy.iter().take_while(|&&c| c == b'0').count()..];
                let o = tx
                    .len()
                    .cmp(&ty.len())
                    .then_with(|| tx.cmp(ty))
                    .then_with(|| dx.cmp(dy));
                if o.is_ne() {
                    return o;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

impl NodeTable {
    /// Takes in a status packet heard at `now_ns` from `from`.
    pub fn update(&mut self, now_ns: u64, s: &StatusPacket<'_>, from: SocketAddrV4) {
        self.status_packets += 1;
        let e = self.nodes.entry(s.node_id).or_insert_with(|| Entry {
            stream_id: s.stream_id,
            role: s.role,
            flags: s.flags,
            counters: s.counters,
            name: String::new(),
            host: String::new(),
            stream: String::new(),
            addr: from,
            settings: None,
            first_heard_ns: now_ns,
            last_heard_ns: now_ns,
            reports: 0,
            prev: None,
        });
        if e.reports > 0 {
            e.prev = Some((e.last_heard_ns, e.counters.packets));
        }
        e.stream_id = s.stream_id;
        e.role = s.role;
        e.flags = s.flags;
        e.counters = s.counters;
        s.name.clone_into(&mut e.name);
        s.host.clone_into(&mut e.host);
        s.stream.clone_into(&mut e.stream);
        e.addr = from;
        e.settings = s.settings;
        e.last_heard_ns = now_ns;
        e.reports += 1;
    }

    /// Forgets nodes not heard from for `drop_ns`.
    pub fn expire(&mut self, now_ns: u64, drop_ns: u64) {
        self.nodes
            .retain(|_, e| now_ns.saturating_sub(e.last_heard_ns) < drop_ns);
    }

    /// Nodes in the table.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The nodes in display units at `now_ns`; quiet after `quiet_ns`
    /// without a report. Senders first, then by stream, name, host, id.
    pub fn views(&self, now_ns: u64, quiet_ns: u64) -> Vec<NodeView> {
        let senders: HashMap<u64, String> = self
            .nodes
            .values()
            .filter(|e| e.role == Role::Sender)
            .map(|e| (e.stream_id, format!("{}@{}", e.name, e.host)))
            .collect();
        let mut v: Vec<(u8, u64, NodeView)> = self
            .nodes
            .iter()
            .map(|(&id, e)| {
                let c = &e.counters;
                let age = now_ns.saturating_sub(e.last_heard_ns);
                let rate = e.prev.and_then(|(t, p)| {
                    let dt = e.last_heard_ns.saturating_sub(t) as f64 * 1e-9;
                    (dt > 0.05).then(|| c.packets.saturating_sub(p) as f64 / dt)
                });
                let is_sender = e.role == Role::Sender;
                let view = NodeView {
                    node_id: format!("{id:016x}"),
                    name: e.name.clone(),
                    host: e.host.clone(),
                    addr: e.addr.to_string(),
                    role: if is_sender { "sender" } else { "receiver" },
                    stream: e.stream.clone(),
                    session: if e.stream_id == 0 {
                        String::new()
                    } else {
                        format!("{:016x}", e.stream_id)
                    },
                    following: if is_sender {
                        None
                    } else {
                        senders.get(&e.stream_id).cloned()
                    },
                    playing: e.flags & STATUS_ACTIVE != 0,
                    format: if c.rate == 0 {
                        String::new()
                    } else {
                        SampleFormat::from_code(c.sample)
                            .map(|f| f.name().to_string())
                            .unwrap_or_else(|_| format!("?{}", c.sample))
                    },
                    channels: c.channels,
                    rate_hz: c.rate,
                    latency_ms: c.latency_us as f64 / 1e3,
                    downstream_ms: c.downstream_us as f64 / 1e3,
                    need_ms: c.need_us as f64 / 1e3,
                    play_latency_ms: c.play_latency_us as f64 / 1e3,
                    playing_late: !is_sender && e.flags & STATUS_LATE != 0,
                    clock_offset_us: c.clock_offset_ns as f64 / 1e3,
                    rate_error_ppm: c.rate_error_ppb as f64 / 1e3,
                    sync_error_us: c.sync_error_ns as f64 / 1e3,
                    buffer_ms: c.buffer_us as f64 / 1e3,
                    counters: *c,
                    packet_rate_hz: rate.unwrap_or(0.0),
                    last_heard_s: age as f64 * 1e-9,
                    heard_for_s: e.last_heard_ns.saturating_sub(e.first_heard_ns) as f64 * 1e-9,
                    reports: e.reports,
                    state: if age > quiet_ns {
                        Liveness::Quiet
                    } else {
                        Liveness::Active
                    },
                    control: e.settings.as_ref().map(|b| ControlView::new(b, e.addr)),
                    via: "status",
                };
                (u8::from(!is_sender), id, view)
            })
            .collect();
        v.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| a.2.stream.cmp(&b.2.stream))
                .then_with(|| natural_cmp(&a.2.name, &b.2.name))
                .then_with(|| a.2.host.cmp(&b.2.host))
                .then_with(|| a.1.cmp(&b.1))
        });
        v.into_iter().map(|(_, _, n)| n).collect()
    }

    /// A full snapshot at `now_ns`.
    pub fn snapshot(&self, now_ns: u64, quiet_ns: u64, group: &str) -> Snapshot {
        let nodes = self.views(now_ns, quiet_ns);
        let senders = nodes.iter().filter(|n| n.role == "sender").count();
        Snapshot {
            time_unix_s: crate::clock::realtime_ns() as f64 * 1e-9,
            group: group.to_string(),
            senders,
            receivers: nodes.len() - senders,
            status_packets: self.status_packets,
            malformed: self.malformed,
            auth_dropped: self.auth_dropped,
            nodes,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn status(
        node_id: u64,
        role: Role,
        stream_id: u64,
        name: &'static str,
        packets: u64,
    ) -> StatusPacket<'static> {
        StatusPacket {
            stream_id,
            node_id,
            role,
            flags: 1,
            counters: StatusCounters {
                sample: 0,
                channels: 2,
                rate: 48_000,
                latency_us: 40_000,
                clock_offset_ns: -12_345,
                rate_error_ppb: 2_500,
                sync_error_ns: 1_500,
                buffer_us: 38_000,
                packets,
                lost: 3,
                downstream_us: 12_500,
                need_us: 22_000,
                play_latency_us: 40_000,
                ..Default::default()
            },
            name,
            host: "h",
            stream: "default",
            settings: None,
        }
    }

    /// A snapshot at 2 ns (quiet after 3 s) of a table that heard
    /// `statuses` at 1 ns, all from 10.0.0.1:5000.
    pub(crate) fn snapshot_of(statuses: &[StatusPacket<'_>], group: &str) -> Snapshot {
        let mut t = NodeTable::default();
        for st in statuses {
            t.update(1, st, "10.0.0.1:5000".parse().unwrap());
        }
        t.snapshot(2, 3_000_000_000, group)
    }

    /// [`snapshot_of`] a receiver named `rx_name` (node 1) and a sender
    /// "tx" (node 2), both of stream 77.
    pub(crate) fn pair_snapshot(rx_name: &'static str, group: &str) -> Snapshot {
        let rx = status(1, Role::Receiver, 77, rx_name, 100);
        snapshot_of(&[rx, status(2, Role::Sender, 77, "tx", 100)], group)
    }

    #[test]
    fn names_sort_naturally() {
        let mut v = vec!["rx10", "rx2", "rx1", "kitchen", "rx"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["kitchen", "rx", "rx1", "rx2", "rx10"]);
    }

    #[test]
    fn tracks_nodes_rates_liveness_and_expiry() {
        let mut t = NodeTable::default();
        let a: SocketAddrV4 = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddrV4 = "10.0.0.2:6000".parse().unwrap();
        let s = 1_000_000_000;
        t.update(s, &status(1, Role::Receiver, 77, "rx", 100), b);
        t.update(s, &status(2, Role::Sender, 77, "tx", 100), a);
        t.update(
            s + 1_000_000_000,
            &status(1, Role::Receiver, 77, "rx", 373),
            b,
        );
        let v = t.views(s + 1_500_000_000, 3_000_000_000);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].role, "sender");
        assert_eq!(v[0].name, "tx");
        let rx = &v[1];
        assert_eq!(rx.following.as_deref(), Some("tx@h"));
        assert_eq!(rx.format, "F32LE");
        assert!((rx.packet_rate_hz - 273.0).abs() < 1e-6);
        assert!((rx.clock_offset_us + 12.345).abs() < 1e-9);
        assert!((rx.rate_error_ppm - 2.5).abs() < 1e-9);
        assert!((rx.sync_error_us - 1.5).abs() < 1e-9);
        assert!((rx.buffer_ms - 38.0).abs() < 1e-9);
        assert!((rx.downstream_ms - 12.5).abs() < 1e-9);
        assert!((rx.need_ms - 22.0).abs() < 1e-9);
        assert!((rx.play_latency_ms - 40.0).abs() < 1e-9);
        assert!(!rx.playing_late);
        assert!((rx.last_heard_s - 0.5).abs() < 1e-9);
        assert_eq!(rx.reports, 2);
        assert_eq!(rx.state, Liveness::Active);
        // The sender went quiet: marked, then dropped.
        let later = s + 3_500_000_000;
        let v = t.views(later, 3_000_000_000);
        assert_eq!(v[0].state, Liveness::Quiet);
        assert_eq!(v[1].state, Liveness::Active);
        t.expire(s + 30_500_000_000, 30_000_000_000);
        assert_eq!(t.len(), 1);
        let snap = t.snapshot(s + 30_500_000_000, 3_000_000_000, "g");
        assert_eq!((snap.senders, snap.receivers), (0, 1));
    }

    #[test]
    fn a_late_receiver_is_flagged() {
        let mut t = NodeTable::default();
        let a: SocketAddrV4 = "10.0.0.1:5000".parse().unwrap();
        let mut st = status(1, Role::Receiver, 77, "bt", 10);
        st.flags = STATUS_ACTIVE | STATUS_LATE;
        st.counters.downstream_us = 180_000;
        st.counters.need_us = 190_000;
        st.counters.play_latency_us = 190_000;
        t.update(1, &st, a);
        // The flag means nothing from a sender.
        let mut tx = status(2, Role::Sender, 77, "tx", 10);
        tx.flags = STATUS_ACTIVE | STATUS_LATE;
        t.update(1, &tx, a);
        let v = t.views(2, 3_000_000_000);
        assert!(!v[0].playing_late);
        let rx = &v[1];
        assert!(rx.playing && rx.playing_late);
        assert!((rx.downstream_ms - 180.0).abs() < 1e-9);
        assert!((rx.play_latency_ms - 190.0).abs() < 1e-9);
    }
}

//! The PipeWire graph as `pw-dump` prints it (a JSON array of objects),
//! reduced to what doctor judges: the daemon's version, Bark's modules
//! and nodes, and where each receiver's audio goes.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The `node.link-group` Bark's modules give their nodes.
const BARK_LINK_GROUP: &str = "bark";

/// One object of the dump. Its `info` differs by type (a Factory's
/// `version` is a number, a Core's a string), so it is read as [`Info`]
/// only for the types doctor uses.
#[derive(Deserialize)]
struct Object {
    id: u32,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    info: serde_json::Value,
}

/// The `info` fields doctor reads, absent ones defaulted (a Core has no
/// state, a Link no props).
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct Info {
    version: Option<String>,
    name: Option<String>,
    args: Option<String>,
    state: Option<String>,
    error: Option<String>,
    direction: Option<String>,
    output_node_id: Option<u32>,
    input_node_id: Option<u32>,
    props: BTreeMap<String, serde_json::Value>,
    params: Params,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Params {
    #[serde(rename = "Latency")]
    latency: Vec<Latency>,
    #[serde(rename = "ProcessLatency")]
    process_latency: Vec<ProcessLatency>,
}

/// A node's `ProcessLatency` param: the delay it adds itself.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ProcessLatency {
    quantum: f64,
    rate: i64,
    ns: i64,
}

/// A port's `Latency` param: how far it is from the end of the graph.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Latency {
    /// "Input" on an output port: the latency from it to the sinks
    /// (playback), what a playback stream's `pw_time.delay` counts.
    /// "Output": the latency from the sources (capture).
    pub direction: String,
    /// Most latency in quanta.
    pub max_quantum: f64,
    /// Most latency in frames of the graph rate.
    pub max_rate: i64,
    /// Most latency, ns.
    pub max_ns: i64,
}

/// A PipeWire module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// Object id.
    pub id: u32,
    /// e.g. "libpipewire-module-bark-source".
    pub name: String,
    /// Its arguments, SPA JSON as written in the conf.
    pub args: String,
}

/// A node, with the properties doctor looks at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    /// Object id.
    pub id: u32,
    /// `node.name`.
    pub name: String,
    /// `media.class`, "" when none.
    pub media_class: String,
    /// `node.link-group`: the nodes of one loopback or filter share it.
    pub link_group: Option<String>,
    /// "running", "idle", "suspended", "error", ...
    pub state: String,
    /// The error text when `state` is "error".
    pub error: Option<String>,
    /// It reports a delay of its own (a nonzero `ProcessLatency`), which
    /// PipeWire adds to the latency of the nodes before it.
    pub reports_delay: bool,
}

impl Node {
    /// A node of a Bark module (by its link group or its name).
    pub fn is_bark(&self) -> bool {
        self.link_group.as_deref() == Some(BARK_LINK_GROUP)
            || self.name.to_ascii_lowercase().contains("bark")
    }

    /// A Bark receiver rather than a sender (whose class is Audio/Sink).
    pub fn is_receiver(&self) -> bool {
        self.is_bark() && self.media_class != "Audio/Sink"
    }

    /// One side of a loopback, filter-chain or echo canceller: a node
    /// paired with others through a link group that is not Bark's.
    pub fn is_filter(&self) -> bool {
        self.link_group
            .as_deref()
            .is_some_and(|g| g != BARK_LINK_GROUP)
    }
}

/// The graph: what `pw-dump` showed.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// The daemon's version (the Core object's).
    pub version: Option<String>,
    /// `default.clock.rate` of the daemon, Hz.
    pub clock_rate: Option<u32>,
    /// Every module.
    pub modules: Vec<Module>,
    /// Every node, by id.
    pub nodes: BTreeMap<u32, Node>,
    /// Every link, as (output node, input node).
    pub links: Vec<(u32, u32)>,
    /// Output ports' Latency towards the sinks, by node id.
    pub sink_latency: BTreeMap<u32, Vec<Latency>>,
}

fn prop_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Graph {
    /// Parses `pw-dump` output.
    ///
    /// # Errors
    /// When it is not a JSON array of objects with an id and a type.
    pub fn parse(json: &str) -> Result<Graph, serde_json::Error> {
        let objects: Vec<Object> = serde_json::from_str(json)?;
        let mut g = Graph::default();
        for o in objects {
            let kind = o.kind.rsplit(':').next().unwrap_or("");
            if !["Core", "Module", "Node", "Port", "Link"].contains(&kind) {
                continue;
            }
            // One odd object (a newer PipeWire's) must not hide the rest.
            let Ok(info) = serde_json::from_value::<Info>(o.info) else {
                continue;
            };
            let prop = |k: &str| info.props.get(k).map(prop_string);
            match kind {
                "Core" => {
                    g.version = info.version.clone();
                    g.clock_rate = prop("default.clock.rate").and_then(|r| r.parse().ok());
                }
                "Module" => g.modules.push(Module {
                    id: o.id,
                    name: info.name.clone().unwrap_or_default(),
                    args: info.args.clone().unwrap_or_default(),
                }),
                "Node" => {
                    g.nodes.insert(
                        o.id,
                        Node {
                            id: o.id,
                            name: prop("node.name").unwrap_or_default(),
                            media_class: prop("media.class").unwrap_or_default(),
                            link_group: prop("node.link-group"),
                            state: info.state.clone().unwrap_or_default(),
                            error: info.error.clone(),
                            reports_delay: info
                                .params
                                .process_latency
                                .iter()
                                .any(|p| p.quantum > 0.0 || p.rate > 0 || p.ns > 0),
                        },
                    );
                }
                "Port" if info.direction.as_deref() == Some("output") => {
                    let Some(node) = prop("node.id").and_then(|n| n.parse().ok()) else {
                        continue;
                    };
                    let towards: Vec<Latency> = info
                        .params
                        .latency
                        .iter()
                        .filter(|l| l.direction == "Input")
                        .cloned()
                        .collect();
                    g.sink_latency.entry(node).or_default().extend(towards);
                }
                "Link" => {
                    if let (Some(out), Some(inp)) = (info.output_node_id, info.input_node_id) {
                        g.links.push((out, inp));
                    }
                }
                _ => {}
            }
        }
        Ok(g)
    }

    /// Bark's modules.
    pub fn bark_modules(&self) -> impl Iterator<Item = &Module> {
        self.modules
            .iter()
            .filter(|m| m.name.starts_with("libpipewire-module-bark"))
    }

    /// Bark's nodes, senders and receivers.
    pub fn bark_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values().filter(|n| n.is_bark())
    }

    /// Where the audio of node `from` goes: every node downstream of it,
    /// nearest first, crossing from each side of a loopback or filter to
    /// its other sides (they are one unit, joined by their link group, not
    /// by links).
    pub fn downstream(&self, from: u32) -> Vec<&Node> {
        let mut seen = BTreeSet::from([from]);
        let mut queue = VecDeque::from([from]);
        let mut out = Vec::new();
        while let Some(id) = queue.pop_front() {
            let mut next: Vec<u32> = self
                .links
                .iter()
                .filter(|(o, _)| *o == id)
                .map(|(_, i)| *i)
                .collect();
            if let Some(group) = self.nodes.get(&id).filter(|n| n.is_filter()) {
                next.extend(
                    self.nodes
                        .values()
                        .filter(|n| n.link_group == group.link_group)
                        .map(|n| n.id),
                );
            }
            for n in next {
                if seen.insert(n) {
                    if let Some(node) = self.nodes.get(&n) {
                        out.push(node);
                        queue.push_back(n);
                    }
                }
            }
        }
        out
    }

    /// Whether the loopback or filter that node `n` belongs to reports
    /// its delay: any node of its link group does.
    pub fn filter_reports_delay(&self, n: &Node) -> bool {
        self.nodes
            .values()
            .any(|m| m.reports_delay && m.link_group.is_some() && m.link_group == n.link_group)
    }

    /// The latency PipeWire reports downstream of node `id`'s output
    /// ports (the most over its ports), ns, and the number of quanta on
    /// top of it (a device's buffering, which scales with the quantum).
    /// `None` when its ports report no Latency param.
    pub fn reported_downstream(&self, id: u32) -> Option<(i64, f64)> {
        let rate = i64::from(self.clock_rate.unwrap_or(48_000).max(1));
        self.sink_latency
            .get(&id)
            .filter(|v| !v.is_empty())?
            .iter()
            .map(|l| (l.max_ns + l.max_rate * 1_000_000_000 / rate, l.max_quantum))
            .reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)))
    }
}

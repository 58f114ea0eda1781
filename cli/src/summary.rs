//! The `--summary` JSON files of `bark stream` and `bark receive`: what a
//! run did, for scripts and the lab's analyzers.

use anyhow::{Context, Result};
use bark_core::endpoint::Traffic;
use bark_core::protocol::IP_UDP_OVERHEAD;
use serde_json::{json, Value};
use std::path::Path;

/// Who ran and what the run cost: the fields every summary has.
pub struct Run<'a> {
    /// "sender" or "receiver".
    pub role: &'static str,
    /// This node's id (shown as 16 hex digits).
    pub node_id: u64,
    /// Its `--node-name`.
    pub node_name: &'a str,
    /// Wall-clock time of the run, s.
    pub wall_s: f64,
    /// CPU time the process used, s.
    pub cpu_s: f64,
}

impl Run<'_> {
    /// CPU time over wall-clock time, %.
    pub fn cpu_percent(&self) -> f64 {
        100.0 * self.cpu_s / self.wall_s.max(1e-9)
    }

    /// Writes the summary to `path`: the object `fields` with this run's
    /// fields added (role, node_id, node_name, wall_s, cpu_s, cpu_percent).
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn write(&self, path: &Path, mut fields: Value) -> Result<()> {
        fields["role"] = self.role.into();
        fields["node_id"] = format!("{:016x}", self.node_id).into();
        fields["node_name"] = self.node_name.into();
        fields["wall_s"] = self.wall_s.into();
        fields["cpu_s"] = self.cpu_s.into();
        fields["cpu_percent"] = self.cpu_percent().into();
        std::fs::write(path, serde_json::to_string_pretty(&fields)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// A [`Traffic`] as a summary shows it: packets, UDP payload bytes, and
/// bytes on the wire with the IPv4 and UDP headers.
pub fn traffic_json(t: Traffic) -> Value {
    json!({
        "packets": t.packets,
        "bytes": t.bytes,
        "ip_bytes": t.bytes + IP_UDP_OVERHEAD as u64 * t.packets,
    })
}

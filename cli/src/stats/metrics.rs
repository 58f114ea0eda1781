//! Prometheus exposition of the node table (`--metrics-listen`): the same
//! figures as the table, in base units (seconds, hertz), one series per
//! node labelled with its id, name, host, role and stream.

use super::model::{Liveness, NodeView, Snapshot};
use std::fmt::Write as _;

/// Escapes a label value (backslash, double quote, newline).
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus metric types.
const GAUGE: &str = "gauge";
const COUNTER: &str = "counter";

/// Writes the `# HELP` and `# TYPE` lines of metric `name`.
fn describe(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders a snapshot in the Prometheus text format (version 0.0.4).
pub fn render(s: &Snapshot) -> String {
    type Get = fn(&NodeView) -> f64;
    // (name, type, help, value of a node in base units)
    let per_node: &[(&str, &str, &str, Get)] = &[
        ("bark_node_up", GAUGE, "1 if heard within the quiet time, 0 if quiet", |n| f64::from(u8::from(n.state == Liveness::Active))),
        ("bark_node_playing", GAUGE, "1 if streaming (sender) or playing (receiver)", |n| f64::from(u8::from(n.playing))),
        ("bark_node_rate_hertz", GAUGE, "stream rate, Hz (0 if unknown)", |n| f64::from(n.rate_hz)),
        ("bark_node_channels", GAUGE, "stream channels (0 if unknown)", |n| f64::from(n.channels)),
        ("bark_node_latency_seconds", GAUGE, "session latency (rises to cover the receivers' needs), seconds", |n| n.latency_ms / 1e3),
        ("bark_node_downstream_latency_seconds", GAUGE, "receiver: downstream latency of its output (filters, DSP, device), seconds", |n| n.downstream_ms / 1e3),
        ("bark_node_need_latency_seconds", GAUGE, "receiver: least session latency at which it plays every frame in time; sender: configured base latency; seconds", |n| n.need_ms / 1e3),
        ("bark_node_play_latency_seconds", GAUGE, "receiver: latency it plays at; sender: most the session latency may rise to; seconds", |n| n.play_latency_ms / 1e3),
        ("bark_node_playing_late", GAUGE, "receiver: 1 if it plays later than the session latency (its output needs more), out of sync with the others", |n| f64::from(u8::from(n.playing_late))),
        ("bark_node_clock_offset_seconds", GAUGE, "receiver: sender clock minus local clock, seconds", |n| n.clock_offset_us / 1e6),
        ("bark_node_rate_error_ppm", GAUGE, "receiver: sender clock rate relative to local; sender: audio clock against nominal; ppm", |n| n.rate_error_ppm),
        ("bark_node_sync_error_seconds", GAUGE, "receiver: current playback error, seconds, late positive", |n| n.sync_error_us / 1e6),
        ("bark_node_buffer_seconds", GAUGE, "receiver: audio buffered ahead of playback, seconds", |n| n.buffer_ms / 1e3),
        ("bark_node_packets_total", COUNTER, "audio packets received (sender: sent)", |n| n.counters.packets as f64),
        ("bark_node_lost_packets_total", COUNTER, "receiver: packets never received", |n| n.counters.lost as f64),
        ("bark_node_repaired_packets_total", COUNTER, "receiver: packets that arrived in time because they were resent; sender: packets resent (low 32 bits, as status packets carry it)", |n| n.counters.repaired as f64),
        ("bark_node_late_packets_total", COUNTER, "receiver: packets that came after their frames were played", |n| n.counters.late as f64),
        ("bark_node_duplicated_packets_total", COUNTER, "receiver: packets received more than once", |n| n.counters.duplicated as f64),
        ("bark_node_concealed_frames_total", COUNTER, "receiver: frames faded or silenced for lack of data", |n| n.counters.concealed_frames as f64),
        ("bark_node_underruns_total", COUNTER, "receiver: times playback ran past the newest received frame", |n| n.counters.underruns as f64),
        ("bark_node_last_heard_seconds", GAUGE, "seconds since the node's last status packet", |n| n.last_heard_s),
    ];
    let mut out = String::new();
    for (name, kind, help, get) in per_node {
        describe(&mut out, name, kind, help);
        for n in &s.nodes {
            let _ = writeln!(
                out,
                "{name}{{node_id=\"{}\",name=\"{}\",host=\"{}\",role=\"{}\",stream=\"{}\"}} {}",
                n.node_id,
                esc(&n.name),
                esc(&n.host),
                n.role,
                esc(&n.stream),
                get(n)
            );
        }
    }
    describe(&mut out, "bark_nodes", GAUGE, "nodes in the view, by role");
    let _ = writeln!(out, "bark_nodes{{role=\"sender\"}} {}", s.senders);
    let _ = writeln!(out, "bark_nodes{{role=\"receiver\"}} {}", s.receivers);
    for (name, help, v) in [
        (
            "bark_status_packets_total",
            "status packets taken in by this bark stats",
            s.status_packets,
        ),
        (
            "bark_auth_dropped_total",
            "datagrams this bark stats dropped in its --key-file checks",
            s.auth_dropped,
        ),
    ] {
        describe(&mut out, name, COUNTER, help);
        let _ = writeln!(out, "{name} {v}");
    }
    out
}

/// Serves `GET /metrics` (and a short index on `/`) on `server` until
/// `stop` is set; `snapshot` gives the current figures.
pub fn serve(
    server: &tiny_http::Server,
    stop: &std::sync::atomic::AtomicBool,
    snapshot: &dyn Fn() -> Snapshot,
) {
    while !crate::util::stopping(stop) {
        let req = match server.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                log::warn!("metrics: {e}");
                continue;
            }
        };
        let path = req.url().split('?').next().unwrap_or("").to_string();
        let resp = match (req.method(), path.as_str()) {
            (tiny_http::Method::Get, "/metrics") => {
                let body = render(&snapshot());
                tiny_http::Response::from_string(body).with_header(
                    tiny_http::Header::from_bytes(
                        &b"Content-Type"[..],
                        &b"text/plain; version=0.0.4; charset=utf-8"[..],
                    )
                    .expect("static header is valid"),
                )
            }
            (tiny_http::Method::Get, "/") => {
                tiny_http::Response::from_string("bark stats: Prometheus metrics at /metrics\n")
            }
            _ => tiny_http::Response::from_string("not found\n").with_status_code(404),
        };
        if let Err(e) = req.respond(resp) {
            log::debug!("metrics: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::tests::pair_snapshot;
    use super::*;

    #[test]
    fn exposition_has_one_series_per_node_in_base_units() {
        let text = render(&pair_snapshot("rx \"1\"", "g"));
        assert!(text.contains("# TYPE bark_node_packets_total counter"));
        let line = text
            .lines()
            .find(|l| l.starts_with("bark_node_sync_error_seconds{") && l.contains("receiver"))
            .unwrap();
        assert!(line.contains("name=\"rx \\\"1\\\"\""), "{line}");
        assert!(line.ends_with(" 0.0000015"), "{line}");
        assert!(text.contains("bark_nodes{role=\"sender\"} 1"));
        let down = text
            .lines()
            .find(|l| {
                l.starts_with("bark_node_downstream_latency_seconds{") && l.contains("receiver")
            })
            .unwrap();
        assert!(down.ends_with(" 0.0125"), "{down}");
        assert!(text.contains("# TYPE bark_node_playing_late gauge"));
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("bark_node_latency_seconds{"))
                .count(),
            2
        );
    }
}

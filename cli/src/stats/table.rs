//! The columns of the stats table, shared by the plain `--once` table and
//! the live view, so both always show the same figures in the same units.

use super::model::{Liveness, NodeView, Snapshot};
use std::fmt::Write as _;

/// One column: header (with unit) and how a node fills it.
pub struct Column {
    /// Header text.
    pub header: &'static str,
    /// Right-align (numbers).
    pub right: bool,
    /// Cell text for a node.
    pub cell: fn(&NodeView) -> String,
}

/// A left-aligned (text) column.
const fn left(header: &'static str, cell: fn(&NodeView) -> String) -> Column {
    Column {
        header,
        right: false,
        cell,
    }
}

/// A right-aligned (number) column.
const fn right(header: &'static str, cell: fn(&NodeView) -> String) -> Column {
    Column {
        header,
        right: true,
        cell,
    }
}

fn recv_only(n: &NodeView, s: String) -> String {
    if n.role == "sender" {
        "-".into()
    } else {
        s
    }
}

/// State text: playing/streaming, playing late (a receiver whose output
/// needs more latency than the session gives: out of sync with the
/// others), idle, or quiet.
pub fn state_text(n: &NodeView) -> String {
    match n.state {
        Liveness::Quiet => "QUIET".into(),
        Liveness::Active if n.playing && n.role == "sender" => "streaming".into(),
        Liveness::Active if n.playing && n.playing_late => "LATE".into(),
        Liveness::Active if n.playing => "playing".into(),
        Liveness::Active => "idle".into(),
    }
}

/// The stream a node names; "*" for a receiver that follows the best.
fn stream_text(n: &NodeView) -> String {
    if n.stream.is_empty() {
        "*".into()
    } else {
        n.stream.clone()
    }
}

/// "F32LE 48000/2"; "-" while the format is unknown.
fn format_text(n: &NodeView) -> String {
    if n.rate_hz == 0 {
        "-".into()
    } else {
        format!("{} {}/{}", n.format, n.rate_hz, n.channels)
    }
}

/// Which of the stream's channels a receiver plays (`bark.channels`):
/// "all", "mono", "[ FL ]"; "all" for nodes that do not say.
fn plays_text(n: &NodeView) -> String {
    let c = n.control.as_ref().map_or("all", |c| c.channels.as_str());
    recv_only(n, c.to_string())
}

/// A receiver's downstream latency, ms, and the latency it plays at when
/// that is later than the session's.
fn downstream_text(n: &NodeView) -> String {
    let late = if n.playing_late {
        format!(" late@{:.1}", n.play_latency_ms)
    } else {
        String::new()
    };
    recv_only(n, format!("{:.1}{late}", n.downstream_ms))
}

/// The columns, left to right.
pub const COLUMNS: &[Column] = &[
    left("NAME", |n| n.name.clone()),
    left("HOST", |n| n.host.clone()),
    left("ADDRESS", |n| n.addr.clone()),
    left("ROLE", |n| n.role.into()),
    left("STATE", state_text),
    left("STREAM", stream_text),
    left("FORMAT", format_text),
    left("PLAYS", plays_text),
    right("LAT ms", |n| format!("{:.1}", n.latency_ms)),
    right("DOWN ms", downstream_text),
    right("OFFSET us", |n| {
        recv_only(n, format!("{:.1}", n.clock_offset_us))
    }),
    right("RATE ppm", |n| format!("{:+.2}", n.rate_error_ppm)),
    right("SYNC us", |n| {
        recv_only(n, format!("{:+.1}", n.sync_error_us))
    }),
    right("BUF ms", |n| recv_only(n, format!("{:.1}", n.buffer_ms))),
    right("PKTS", |n| n.counters.packets.to_string()),
    right("LOST", |n| recv_only(n, n.counters.lost.to_string())),
    right("LATE", |n| recv_only(n, n.counters.late.to_string())),
    // Receiver: resent in time; sender: resent.
    right("REP", |n| n.counters.repaired.to_string()),
    right("DUP", |n| recv_only(n, n.counters.duplicated.to_string())),
    right("CONCEAL", |n| {
        recv_only(n, n.counters.concealed_frames.to_string())
    }),
    right("UNDERRUN", |n| {
        recv_only(n, n.counters.underruns.to_string())
    }),
    right("HEARD", |n| format!("{:.1}s ago", n.last_heard_s)),
];

/// Each node's cells, in column order.
pub fn cells(s: &Snapshot) -> Vec<Vec<String>> {
    s.nodes
        .iter()
        .map(|n| COLUMNS.iter().map(|c| (c.cell)(n)).collect())
        .collect()
}

/// Each column's width, characters: its widest cell, or its header.
pub fn widths(cells: &[Vec<String>]) -> Vec<usize> {
    COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .fold(c.header.chars().count(), usize::max)
        })
        .collect()
}

/// The one-line summary above the table; it names datagrams the
/// `--key-file` checks dropped, when there were any (nodes with another
/// key, or none, are invisible otherwise).
pub fn title(s: &Snapshot) -> String {
    format!(
        "bark stats: {} - {} sender{}, {} receiver{}{}",
        s.group,
        s.senders,
        if s.senders == 1 { "" } else { "s" },
        s.receivers,
        if s.receivers == 1 { "" } else { "s" },
        if s.auth_dropped > 0 {
            format!(" ({} datagrams dropped by key checks)", s.auth_dropped)
        } else {
            String::new()
        },
    )
}

/// A plain-text table of the snapshot (for `--once`).
pub fn render_plain(s: &Snapshot) -> String {
    let cells = cells(s);
    let widths = widths(&cells);
    let mut out = String::new();
    let _ = writeln!(out, "{}", title(s));
    let line = |out: &mut String, row: &[String]| {
        let mut l = String::new();
        for (i, c) in COLUMNS.iter().enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let w = widths[i];
            if c.right {
                let _ = write!(l, "{:>w$}", row[i]);
            } else {
                let _ = write!(l, "{:<w$}", row[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    let header: Vec<String> = COLUMNS.iter().map(|c| c.header.to_string()).collect();
    line(&mut out, &header);
    for r in &cells {
        line(&mut out, r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::model::tests::{pair_snapshot, snapshot_of, status};
    use super::*;
    use bark_core::protocol::Role;

    #[test]
    fn plain_table_has_every_node_and_aligned_columns() {
        let text = render_plain(&pair_snapshot("kitchen", "239.255.66.66:1530"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].contains("1 sender, 1 receiver"));
        assert!(lines[1].starts_with("NAME"));
        assert!(lines[2].starts_with("tx "));
        assert!(lines[3].starts_with("kitchen"));
        assert!(lines[3].contains("F32LE 48000/2"));
        assert!(lines[3].contains("-12.3"));
        // Columns line up: the header's SYNC column ends where the values do.
        let end = lines[1].find("SYNC us").unwrap() + "SYNC us".len();
        assert_eq!(&lines[3][end - 4..end], "+1.5");
        let end = lines[1].find("DOWN ms").unwrap() + "DOWN ms".len();
        assert_eq!(&lines[3][end - 4..end], "12.5");
        assert_eq!(&lines[2][end - 1..end], "-");
    }

    #[test]
    fn a_late_receiver_says_so() {
        let mut st = status(1, Role::Receiver, 77, "bt", 100);
        st.flags |= bark_core::protocol::STATUS_LATE;
        st.counters.downstream_us = 180_000;
        st.counters.play_latency_us = 190_000;
        let text = render_plain(&snapshot_of(&[st], "g"));
        let row = text.lines().nth(2).unwrap();
        assert!(row.contains(" LATE "), "{text}");
        assert!(row.contains("180.0 late@190.0"), "{text}");
    }
}

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

/// The columns, left to right.
pub const COLUMNS: &[Column] = &[
    Column {
        header: "NAME",
        right: false,
        cell: |n| n.name.clone(),
    },
    Column {
        header: "HOST",
        right: false,
        cell: |n| n.host.clone(),
    },
    Column {
        header: "ADDRESS",
        right: false,
        cell: |n| n.addr.clone(),
    },
    Column {
        header: "ROLE",
        right: false,
        cell: |n| n.role.into(),
    },
    Column {
        header: "STATE",
        right: false,
        cell: state_text,
    },
    Column {
        header: "STREAM",
        right: false,
        cell: |n| {
            if n.stream.is_empty() {
                "*".into()
            } else {
                n.stream.clone()
            }
        },
    },
    Column {
        header: "FORMAT",
        right: false,
        cell: |n| {
            if n.rate_hz == 0 {
                "-".into()
            } else {
                format!("{} {}/{}", n.format, n.rate_hz, n.channels)
            }
        },
    },
    Column {
        header: "LAT ms",
        right: true,
        cell: |n| format!("{:.1}", n.latency_ms),
    },
    Column {
        header: "DOWN ms",
        right: true,
        cell: |n| {
            let late = if n.playing_late {
                format!(" late@{:.1}", n.play_latency_ms)
            } else {
                String::new()
            };
            recv_only(n, format!("{:.1}{late}", n.downstream_ms))
        },
    },
    Column {
        header: "OFFSET us",
        right: true,
        cell: |n| recv_only(n, format!("{:.1}", n.clock_offset_us)),
    },
    Column {
        header: "RATE ppm",
        right: true,
        cell: |n| format!("{:+.2}", n.rate_error_ppm),
    },
    Column {
        header: "SYNC us",
        right: true,
        cell: |n| recv_only(n, format!("{:+.1}", n.sync_error_us)),
    },
    Column {
        header: "BUF ms",
        right: true,
        cell: |n| recv_only(n, format!("{:.1}", n.buffer_ms)),
    },
    Column {
        header: "PKTS",
        right: true,
        cell: |n| n.packets.to_string(),
    },
    Column {
        header: "LOST",
        right: true,
        cell: |n| recv_only(n, n.lost.to_string()),
    },
    Column {
        header: "LATE",
        right: true,
        cell: |n| recv_only(n, n.late.to_string()),
    },
    Column {
        header: "DUP",
        right: true,
        cell: |n| recv_only(n, n.duplicated.to_string()),
    },
    Column {
        header: "CONCEAL",
        right: true,
        cell: |n| recv_only(n, n.concealed_frames.to_string()),
    },
    Column {
        header: "UNDERRUN",
        right: true,
        cell: |n| recv_only(n, n.underruns.to_string()),
    },
    Column {
        header: "HEARD",
        right: true,
        cell: |n| format!("{:.1}s ago", n.last_heard_s),
    },
];

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
    let cells: Vec<Vec<String>> = s
        .nodes
        .iter()
        .map(|n| COLUMNS.iter().map(|c| (c.cell)(n)).collect())
        .collect();
    let widths: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain(std::iter::once(c.header.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
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
    use super::super::model::{tests::status, NodeTable};
    use super::*;
    use bark_core::protocol::Role;

    #[test]
    fn plain_table_has_every_node_and_aligned_columns() {
        let mut t = NodeTable::default();
        let a = "10.0.0.1:5000".parse().unwrap();
        t.update(1, &status(1, Role::Receiver, 77, "kitchen", 100), a);
        t.update(1, &status(2, Role::Sender, 77, "tx", 100), a);
        let s = t.snapshot(2, 3_000_000_000, "239.255.66.66:1530");
        let text = render_plain(&s);
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
        let mut t = NodeTable::default();
        let a = "10.0.0.1:5000".parse().unwrap();
        let mut st = status(1, Role::Receiver, 77, "bt", 100);
        st.flags |= bark_core::protocol::STATUS_LATE;
        st.counters.downstream_us = 180_000;
        st.counters.play_latency_us = 190_000;
        t.update(1, &st, a);
        let text = render_plain(&t.snapshot(2, 3_000_000_000, "g"));
        let row = text.lines().nth(2).unwrap();
        assert!(row.contains(" LATE "), "{text}");
        assert!(row.contains("180.0 late@190.0"), "{text}");
    }
}

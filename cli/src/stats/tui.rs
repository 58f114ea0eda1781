//! The live view: a full-screen table redrawn every `--interval-msec`
//! (4 times a second by default), quit with q, Esc or Ctrl-C. Plain
//! crossterm escape sequences, so it works on any terminal (and in tmux).

use super::model::{Liveness, Snapshot};
use super::table::{cells, title, widths, COLUMNS};
use anyhow::Result;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// What the view shows besides the nodes.
pub struct ViewInfo {
    /// Refresh period.
    pub interval: Duration,
    /// Quiet time, s.
    pub quiet_s: f64,
    /// Drop time, s.
    pub drop_s: f64,
    /// Stop after this many refreshes (0: never).
    pub count: u64,
}

fn draw(f: &mut Frame, s: &Snapshot, info: &ViewInfo) {
    let [top, mid, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    f.render_widget(
        Line::styled(title(s), Style::default().add_modifier(Modifier::BOLD)),
        top,
    );
    let cells = cells(s);
    let widths: Vec<Constraint> = widths(&cells)
        .into_iter()
        .map(|w| Constraint::Length(w.min(24) as u16))
        .collect();
    let align = |i: usize, text: String| {
        if COLUMNS[i].right {
            Line::from(text).right_aligned()
        } else {
            Line::from(text)
        }
    };
    let header = Row::new(
        COLUMNS
            .iter()
            .enumerate()
            .map(|(i, c)| Cell::from(align(i, c.header.to_string()))),
    )
    .style(
        Style::default()
            .add_modifier(Modifier::BOLD)
            .add_modifier(Modifier::REVERSED),
    );
    let rows = s.nodes.iter().zip(cells).map(|(n, row)| {
        let style = match n.state {
            Liveness::Quiet => Style::default().fg(Color::DarkGray),
            Liveness::Active if n.role == "sender" => Style::default().fg(Color::Cyan),
            // Out of sync with the others: its output needs more latency
            // than the session gives.
            Liveness::Active if n.playing && n.playing_late => Style::default().fg(Color::Red),
            Liveness::Active if n.playing => Style::default(),
            Liveness::Active => Style::default().fg(Color::Yellow),
        };
        Row::new(
            row.into_iter()
                .enumerate()
                .map(|(i, t)| Cell::from(align(i, t))),
        )
        .style(style)
    });
    f.render_widget(
        Table::new(rows, widths).header(header).column_spacing(2),
        mid,
    );
    let empty = if s.nodes.is_empty() {
        "no Bark node heard yet (is anything streaming? try `bark doctor`) - "
    } else {
        ""
    };
    f.render_widget(
        Line::styled(
            format!(
                "{empty}q: quit | refresh {} ms | QUIET after {:.0} s, dropped after {:.0} s | {} status packets",
                info.interval.as_millis(),
                info.quiet_s,
                info.drop_s,
                s.status_packets
            ),
            Style::default().fg(Color::DarkGray),
        ),
        bottom,
    );
}

/// Runs the live view until q/Esc/Ctrl-C, `stop`, or `info.count` refreshes.
///
/// # Errors
/// Terminal I/O errors.
pub fn run(snapshot: &dyn Fn() -> Snapshot, info: &ViewInfo, stop: &AtomicBool) -> Result<()> {
    // ratatui::init switches to the alternate screen and raw mode, and
    // restores the terminal on panic too.
    let mut terminal = ratatui::init();
    let result = (|| -> Result<()> {
        let mut refreshes = 0u64;
        loop {
            let s = snapshot();
            terminal.draw(|f| draw(f, &s, info))?;
            refreshes += 1;
            if info.count > 0 && refreshes >= info.count {
                return Ok(());
            }
            let next = Instant::now() + info.interval;
            loop {
                if crate::util::stopping(stop) {
                    return Ok(());
                }
                let left = next.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                // Short polls so SIGTERM is noticed quickly.
                if event::poll(left.min(Duration::from_millis(100)))? {
                    if let Event::Key(k) = event::read()? {
                        let ctrl_c = k.code == KeyCode::Char('c')
                            && k.modifiers.contains(KeyModifiers::CONTROL);
                        if k.kind == KeyEventKind::Press
                            && (ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc))
                        {
                            return Ok(());
                        }
                    }
                }
            }
        }
    })();
    ratatui::restore();
    result
}

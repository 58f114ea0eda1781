//! The session latency: how long after entering the sink every receiver
//! plays a frame. It starts at the sender's base latency
//! (`sess.latency.msec`) and rises to cover the receiver that needs the
//! most, so that no receiver has to play a stream of gaps because of what
//! sits after it (a Bluetooth speaker's 150–250 ms, a soundbar, a DSP).
//!
//! Each receiver reports the least latency it can play at (its need: the
//! downstream latency its audio server reports, one output quantum, and
//! [`crate::receiver::NEED_MARGIN_NS`]) in its status packet, once a
//! second, to the sender. The sender takes the largest need of the
//! receivers heard within [`REPORT_EXPIRY_NS`]:
//!
//! - above the current latency: the latency rises at once, to that need
//!   rounded up to [`GRID_NS`] (so that a need that wanders by fractions of
//!   a millisecond does not cause a rise each time);
//! - below the current latency by more than [`FALL_HYSTERESIS_NS`] for
//!   [`FALL_HOLD_NS`] (the slow receiver left, or changed to a faster
//!   output): it falls back, to the larger of the base and the need rounded
//!   up to the grid;
//! - never below the base, never above the configured maximum
//!   (`bark.latency.max-msec`; equal to the base pins the latency).
//!
//! Every change moves all receivers' playback position by the difference:
//! each makes one short resync (see `crate::receiver`, a fade out and in
//! around the jump), so changes are rare by design. Reports are bounded in
//! number ([`MAX_REPORTS`]); a flood of forged reports can only raise the
//! latency up to the configured maximum, and without a key anyone on the
//! LAN can send audio anyway (docs/SECURITY.md).

/// Receivers whose needs are tracked at once; the stalest report makes room
/// for a new one.
pub const MAX_REPORTS: usize = 64;
/// A receiver's report counts for this long, ns (5 s: five status periods,
/// so one lost status packet changes nothing, and a receiver that left is
/// forgotten within seconds).
pub const REPORT_EXPIRY_NS: u64 = 5_000_000_000;
/// Latency changes are made in steps of this, ns (5 ms).
pub const GRID_NS: u64 = 5_000_000;
/// The latency only falls when the need is below it by more than this, ns
/// (10 ms)...
pub const FALL_HYSTERESIS_NS: u64 = 10_000_000;
/// ...for this long, ns (10 s).
pub const FALL_HOLD_NS: u64 = 10_000_000_000;

#[derive(Clone, Copy, Debug, Default)]
struct Report {
    node_id: u64,
    need_ns: u64,
    at: u64,
}

/// The session-latency controller of one sender. Fixed size; nothing
/// allocates. Times are ns of the sender's clock.
#[derive(Clone, Debug)]
pub struct SessionLatency {
    base: u64,
    max: u64,
    current: u64,
    reports: [Report; MAX_REPORTS],
    /// Since when the latency could fall (ns), if it could.
    low_since: Option<u64>,
    changes: u64,
}

/// `ns` rounded up to the next multiple of [`GRID_NS`].
pub fn round_up(ns: u64) -> u64 {
    ns.div_ceil(GRID_NS).saturating_mul(GRID_NS)
}

impl SessionLatency {
    /// A controller with base latency `base_ns` that rises at most to
    /// `max_ns` (taken as `base_ns` when smaller).
    pub fn new(base_ns: u64, max_ns: u64) -> Self {
        SessionLatency {
            base: base_ns,
            max: max_ns.max(base_ns),
            current: base_ns,
            reports: [Report::default(); MAX_REPORTS],
            low_since: None,
            changes: 0,
        }
    }

    /// The session latency now, ns.
    pub fn current(&self) -> u64 {
        self.current
    }

    /// The base latency, ns.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The most the latency may rise to, ns.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Times the latency changed.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The largest need reported within [`REPORT_EXPIRY_NS`] of `now_ns`,
    /// ns, and which receiver (node id) reported it.
    pub fn largest_need(&self, now_ns: u64) -> Option<(u64, u64)> {
        self.reports
            .iter()
            .filter(|r| r.node_id != 0 && now_ns.saturating_sub(r.at) <= REPORT_EXPIRY_NS)
            .max_by_key(|r| r.need_ns)
            .map(|r| (r.need_ns, r.node_id))
    }

    /// Records that receiver `node_id` needs `need_ns` (0: nothing beyond
    /// the base), reported at `now_ns`, and updates the latency.
    pub fn report(&mut self, now_ns: u64, node_id: u64, need_ns: u64) {
        if node_id == 0 {
            return;
        }
        let slot = match self.reports.iter().position(|r| r.node_id == node_id) {
            Some(i) => i,
            None => self
                .reports
                .iter()
                .enumerate()
                .min_by_key(|(_, r)| if r.node_id == 0 { 0 } else { r.at.max(1) })
                .map_or(0, |(i, _)| i),
        };
        self.reports[slot] = Report {
            node_id,
            need_ns,
            at: now_ns,
        };
        self.update(now_ns);
    }

    /// Expires old reports and applies the rules (module docs) at
    /// `now_ns`; returns the latency, ns.
    pub fn update(&mut self, now_ns: u64) -> u64 {
        let need = self.largest_need(now_ns).map_or(0, |(n, _)| n);
        let want = round_up(need).clamp(self.base, self.max);
        if want > self.current {
            self.set(want);
        } else if want.saturating_add(FALL_HYSTERESIS_NS) < self.current {
            match self.low_since {
                None => self.low_since = Some(now_ns),
                Some(t) if now_ns.saturating_sub(t) >= FALL_HOLD_NS => self.set(want),
                Some(_) => {}
            }
            return self.current;
        }
        if want.saturating_add(FALL_HYSTERESIS_NS) >= self.current {
            self.low_since = None;
        }
        self.current
    }

    fn set(&mut self, v: u64) {
        if v != self.current {
            self.current = v;
            self.changes += 1;
        }
        self.low_since = None;
    }
}

/// A change of a sender's session latency, for its log: what the user
/// must hear about, since every change moves every receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyChange {
    /// Raised to `to_ns` because receiver `node` (its node id) needs
    /// `need_ns` (ns).
    Raised { to_ns: u64, node: u64, need_ns: u64 },
    /// Fell back to `to_ns`; the largest need is now `need_ns` (ns).
    Fell { to_ns: u64, need_ns: u64 },
}

impl std::fmt::Display for LatencyChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |ns: u64| ns as f64 / 1e6;
        match *self {
            LatencyChange::Raised { to_ns, node, need_ns } => write!(
                f,
                "session latency raised to {:.1} ms: receiver {node:016x} needs {:.1} ms (its output's downstream latency, one quantum and a margin)",
                ms(to_ns),
                ms(need_ns)
            ),
            LatencyChange::Fell { to_ns, need_ns } => write!(
                f,
                "session latency back to {:.1} ms (the largest need is now {:.1} ms)",
                ms(to_ns),
                ms(need_ns)
            ),
        }
    }
}

/// A receiver starting or ceasing to play later than the session latency
/// (see [`crate::receiver::Receiver::late`]), for its log: every front end
/// words it the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LateNote {
    /// It plays at `play_ns` although the session latency is `session_ns`:
    /// its output needs `need_ns`, `downstream_ns` of it downstream (ns).
    Late {
        play_ns: u64,
        session_ns: u64,
        need_ns: u64,
        downstream_ns: u64,
    },
    /// In sync again at the session latency `session_ns` (ns).
    InSync { session_ns: u64 },
}

impl LateNote {
    /// The note for a receiver whose lateness is now `late` (it plays at
    /// `play_ns`; the other figures as in [`LateNote::Late`]).
    pub fn new(
        late: bool,
        play_ns: u64,
        session_ns: u64,
        need_ns: u64,
        downstream_ns: u64,
    ) -> Self {
        if late {
            LateNote::Late {
                play_ns,
                session_ns,
                need_ns,
                downstream_ns,
            }
        } else {
            LateNote::InSync { session_ns }
        }
    }
}

impl std::fmt::Display for LateNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |ns: u64| ns as f64 / 1e6;
        match *self {
            LateNote::Late { play_ns, session_ns, need_ns, downstream_ns } => write!(
                f,
                "playing {:.1} ms late, out of sync with the other receivers: this output needs {:.1} ms (downstream {:.1} ms, one output quantum and a margin) but the session latency is {:.1} ms; the sender raises it unless its latency is pinned (bark.latency.max-msec)",
                ms(play_ns.saturating_sub(session_ns)),
                ms(need_ns),
                ms(downstream_ns),
                ms(session_ns)
            ),
            LateNote::InSync { session_ns } => {
                write!(f, "in sync again at the session latency of {:.1} ms", ms(session_ns))
            }
        }
    }
}

/// Watches a sender's session latency between looks (a log tick, a
/// report) and says when it changed. The first look only records.
#[derive(Clone, Copy, Debug, Default)]
pub struct LatencyWatch {
    last_ns: u64,
}

impl LatencyWatch {
    /// Takes the latency now (`current_ns`) and the largest need with its
    /// receiver's node id (as [`SessionLatency::largest_need`] gives it;
    /// `None`: no report). Returns the change since the last look, if any.
    pub fn observe(&mut self, current_ns: u64, need: Option<(u64, u64)>) -> Option<LatencyChange> {
        let last = std::mem::replace(&mut self.last_ns, current_ns);
        if last == 0 || current_ns == 0 || current_ns == last {
            return None;
        }
        let (need_ns, node) = need.unwrap_or((0, 0));
        Some(if current_ns > last {
            LatencyChange::Raised {
                to_ns: current_ns,
                node,
                need_ns,
            }
        } else {
            LatencyChange::Fell {
                to_ns: current_ns,
                need_ns,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    #[test]
    fn rises_at_once_to_the_grid_and_never_past_the_max() {
        let mut l = SessionLatency::new(40 * MS, 1000 * MS);
        l.report(S, 7, 30 * MS);
        assert_eq!(l.current(), 40 * MS);
        l.report(2 * S, 7, 75 * MS + 300_000);
        assert_eq!(l.current(), 80 * MS);
        // The need wandering within the grid step changes nothing.
        l.report(3 * S, 7, 79 * MS);
        assert_eq!((l.current(), l.changes()), (80 * MS, 1));
        l.report(4 * S, 8, 5000 * MS);
        assert_eq!(l.current(), 1000 * MS);
        // Pinned: the maximum equals the base.
        let mut p = SessionLatency::new(40 * MS, 10 * MS);
        p.report(S, 7, 200 * MS);
        assert_eq!(p.current(), 40 * MS);
    }

    #[test]
    fn falls_back_after_the_hold_when_the_slow_receiver_leaves() {
        let mut l = SessionLatency::new(40 * MS, 1000 * MS);
        l.report(S, 1, 26 * MS);
        l.report(S, 2, 175 * MS);
        assert_eq!(l.current(), 175 * MS);
        // Receiver 2 keeps reporting for a while, then goes.
        for t in 2..6 {
            l.report(t * S, 1, 26 * MS);
            l.report(t * S, 2, 175 * MS);
        }
        let mut fell_at = None;
        for t in 6..40 {
            l.report(t * S, 1, 26 * MS);
            if l.current() == 40 * MS && fell_at.is_none() {
                fell_at = Some(t);
            }
        }
        // The last report (5 s) counts until 10 s; from 11 s the need is
        // low, and the 10 s hold ends at 21 s.
        assert_eq!(fell_at, Some(21));
        assert_eq!(l.changes(), 2);
    }

    #[test]
    fn small_drops_do_not_move_it_and_a_rise_cancels_a_pending_fall() {
        let mut l = SessionLatency::new(40 * MS, 1000 * MS);
        l.report(0, 1, 100 * MS);
        assert_eq!(l.current(), 100 * MS);
        // 95 ms: within the hysteresis, stays.
        for t in 1..30 {
            l.report(t * S, 1, 95 * MS);
        }
        assert_eq!(l.current(), 100 * MS);
        // 50 ms for 8 s, then 100 again: no fall.
        for t in 30..38 {
            l.report(t * S, 1, 50 * MS);
        }
        l.report(38 * S, 1, 100 * MS);
        for t in 39..45 {
            l.report(t * S, 1, 50 * MS);
        }
        assert_eq!(l.current(), 100 * MS);
    }

    #[test]
    fn a_flood_of_reporters_is_bounded() {
        let mut l = SessionLatency::new(40 * MS, 500 * MS);
        for id in 1..10_000u64 {
            l.report(S + id, id, (id % 700) * MS);
        }
        assert!(l.current() <= 500 * MS);
        assert_eq!(
            l.reports.iter().filter(|r| r.node_id != 0).count(),
            MAX_REPORTS
        );
    }

    #[test]
    fn the_watch_reports_rises_and_falls_once() {
        let mut w = LatencyWatch::default();
        let raised = LatencyChange::Raised {
            to_ns: 65 * MS,
            node: 7,
            need_ns: 61 * MS,
        };
        let fell = LatencyChange::Fell {
            to_ns: 40 * MS,
            need_ns: 30 * MS,
        };
        // (latency, largest need, change expected)
        let steps = [
            (40, None, None),
            (40, Some((30, 7)), None),
            (65, Some((61, 7)), Some(raised)),
            (65, Some((61, 7)), None),
            (40, Some((30, 7)), Some(fell)),
        ];
        for (latency, need, want) in steps {
            let need = need.map(|(n, node)| (n * MS, node));
            assert_eq!(w.observe(latency * MS, need), want, "{latency} ms");
        }
        assert!(raised
            .to_string()
            .contains("raised to 65.0 ms: receiver 0000000000000007 needs 61.0 ms"));
        assert!(fell.to_string().contains("back to 40.0 ms"));
    }

    #[test]
    fn late_notes_say_by_how_much_and_why() {
        let late = LateNote::new(true, 85 * MS, 40 * MS, 83 * MS, 50 * MS).to_string();
        assert!(late.starts_with("playing 45.0 ms late"), "{late}");
        assert!(late.contains("needs 83.0 ms (downstream 50.0 ms"), "{late}");
        assert!(late.contains("session latency is 40.0 ms"), "{late}");
        let back = LateNote::new(false, 80 * MS, 80 * MS, 77 * MS, 50 * MS).to_string();
        assert_eq!(back, "in sync again at the session latency of 80.0 ms");
    }
}

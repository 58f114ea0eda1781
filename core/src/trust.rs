//! Which datagrams of a session a receiver may let touch its state.
//!
//! Without a key (the default open mode) anybody on the LAN can send
//! datagrams that carry the live session's id: replays of the group's own
//! traffic (a reflecting switch, a duplicating bridge, a hostile host),
//! copies with the sequence number bumped and the presentation timestamp
//! shifted, copies with header bytes flipped. Before this module, one such
//! packet could restart the receiver's timeline, clear its jitter buffer
//! (a changed format byte) or take over the address its time requests go
//! to. A receiver now trusts:
//!
//! - [`SourcePin`]: a session's datagrams only from the address it was
//!   first heard from (kept per session by [`crate::select::Selector`], for
//!   every session it knows, so that copies of a session not followed yet
//!   cannot take its place either). Another address is adopted only once the pinned one has been silent
//!   (no audio, no sync message) for [`ADDR_QUIET_NS`], which a genuine
//!   sender never is while it lives (idle, it announces itself ten times a
//!   second); a sender that moved (a relay restarted, a NAT mapping
//!   renewed) is followed again after that second.
//! - [`SyncGate`]: the followed session's sync messages in the order the sender numbered them and
//!   no further ahead than it could have sent them, so that a replayed or
//!   re-numbered sync cannot add a clock point from the past.
//!
//! A datagram from another address changes nothing and is reported as
//! malformed (rate-limited by the adapters); a sync message out of order is
//! ignored. What open mode still allows, and why, is
//! in docs/SECURITY.md ("Open mode").

use std::net::SocketAddr;

/// Silence of the pinned address after which another address of the same
/// session is adopted, ns (1 s: ten idle announcements or about 370 audio
/// packets; the selector's [`crate::select::QUIET_NS`], after which the
/// session would be given up anyway).
pub const ADDR_QUIET_NS: u64 = 1_000_000_000;

/// Sync messages a sender may have sent beyond the elapsed time's share
/// ([`SYNC_PER_S_MAX`]), for bursts after a stalled data thread.
pub const SYNC_AHEAD_MAX: u64 = 16;

/// The fastest a sender sends sync messages, per second (120: at most one
/// per [`crate::sender::SYNC_INTERVAL_NS`], 100 a second, with a fifth to
/// spare for its clock being faster than ours).
pub const SYNC_PER_S_MAX: u64 = 120;

/// The address a session's datagrams must come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourcePin {
    addr: SocketAddr,
    /// When a datagram from `addr` was last admitted, ns.
    heard_ns: u64,
}

impl SourcePin {
    /// Pins `addr`, heard at `now_ns` (local clock, ns).
    pub fn new(addr: SocketAddr, now_ns: u64) -> Self {
        SourcePin {
            addr,
            heard_ns: now_ns,
        }
    }

    /// The pinned address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether a datagram of the session that came from `from` at `now_ns`
    /// may be used. From the pinned address: yes. From another: only once
    /// the pinned one has been silent for [`ADDR_QUIET_NS`]. Changes
    /// nothing: the datagram may still be refused by a later check, and a
    /// refused datagram must neither keep the pin fresh nor move it; call
    /// [`SourcePin::heard`] once it is taken.
    pub fn admits(&self, now_ns: u64, from: SocketAddr) -> bool {
        from == self.addr || now_ns.saturating_sub(self.heard_ns) >= ADDR_QUIET_NS
    }

    /// A datagram from `from` that [`SourcePin::admits`] was taken at
    /// `now_ns`: the pin is refreshed, or moves to `from`.
    pub fn heard(&mut self, now_ns: u64, from: SocketAddr) {
        if from == self.addr {
            self.heard_ns = self.heard_ns.max(now_ns);
        } else if self.admits(now_ns, from) {
            *self = SourcePin::new(from, now_ns);
        }
    }
}

/// How long sync messages from the pinned address must keep counting up
/// below the gate's mark before the gate believes them, ns (1 s: about a
/// hundred genuine syncs).
pub const SYNC_BEHIND_NS: u64 = 1_000_000_000;

/// Syncs in that run, at least (half the sender's pace over
/// [`SYNC_BEHIND_NS`]).
pub const SYNC_BEHIND_MIN: u64 = 50;

/// The order of a session's sync messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncGate {
    /// The last sync admitted: its seq and when it arrived, ns.
    last: Option<(u64, u64)>,
    /// A run of refused syncs counting up below `last`: (when it began,
    /// ns; its newest seq; how many).
    behind: Option<(u64, u64, u64)>,
}

impl SyncGate {
    /// Whether a sync message numbered `seq` that arrived at `now_ns` may
    /// add a clock point: the session's first, or one numbered above the
    /// last admitted and at most [`SYNC_AHEAD_MAX`] plus
    /// [`SYNC_PER_S_MAX`] per elapsed second above it. Duplicates, replays
    /// and messages overtaken by a later one are refused (the clock loses
    /// one point of about a hundred a second).
    ///
    /// One forged sync numbered ahead (spoofing the sender's address, which
    /// open mode cannot rule out) would put every genuine one behind the
    /// mark until the sender's count catches up. So a run of refused syncs
    /// that keeps counting up for [`SYNC_BEHIND_NS`] and at least
    /// [`SYNC_BEHIND_MIN`] messages is the sender's count: the gate moves
    /// back to it.
    pub fn admit(&mut self, now_ns: u64, seq: u64) -> bool {
        if let Some((last, at)) = self.last {
            let elapsed = now_ns.saturating_sub(at);
            // Rounded up; u128 so that any elapsed time is safe.
            let earned = (elapsed as u128 * SYNC_PER_S_MAX as u128)
                .div_ceil(1_000_000_000)
                .min(u64::MAX as u128) as u64;
            if seq <= last {
                let run = match self.behind {
                    Some((since, top, n)) if seq > top && seq - top <= SYNC_AHEAD_MAX => {
                        (since, seq, n + 1)
                    }
                    _ => (now_ns, seq, 1),
                };
                if now_ns.saturating_sub(run.0) < SYNC_BEHIND_NS || run.2 < SYNC_BEHIND_MIN {
                    self.behind = Some(run);
                    return false;
                }
                self.behind = None;
            } else if seq - last > SYNC_AHEAD_MAX.saturating_add(earned) {
                return false;
            }
        }
        self.last = Some((seq, now_ns));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 99, 0, 1], port))
    }

    /// `admits`, and `heard` when it does, as the selector uses them.
    fn take(p: &mut SourcePin, now: u64, from: SocketAddr) -> bool {
        let ok = p.admits(now, from);
        if ok {
            p.heard(now, from);
        }
        ok
    }

    #[test]
    fn another_address_is_refused_while_the_pinned_one_speaks() {
        let mut p = SourcePin::new(a(1530), 0);
        assert!(take(&mut p, 10_000_000, a(1530)));
        assert!(!take(&mut p, 20_000_000, a(1531)));
        // Just under a second after the pinned address was last heard.
        assert!(!take(&mut p, 10_000_000 + ADDR_QUIET_NS - 1, a(1531)));
        assert_eq!(p.addr(), a(1530));
        assert!(take(&mut p, 10_000_000 + ADDR_QUIET_NS - 1, a(1530)));
    }

    #[test]
    fn a_sender_that_moved_is_followed_after_a_quiet_second() {
        let mut p = SourcePin::new(a(1530), 0);
        assert!(take(&mut p, ADDR_QUIET_NS, a(1531)));
        assert_eq!(p.addr(), a(1531));
        // And the old address is now the stranger.
        assert!(!take(&mut p, ADDR_QUIET_NS + 1, a(1530)));
    }

    #[test]
    fn a_datagram_refused_later_neither_refreshes_nor_moves_the_pin() {
        let p = SourcePin::new(a(1530), 0);
        // Checked but not taken: the pinned address still counts as
        // silent since 0, and the stranger is not pinned.
        assert!(p.admits(ADDR_QUIET_NS / 2, a(1530)));
        assert!(p.admits(ADDR_QUIET_NS, a(1531)));
        assert_eq!(p.addr(), a(1530));
        assert!(p.admits(ADDR_QUIET_NS, a(1532)), "still quiet since 0");
    }

    #[test]
    fn a_forged_sync_numbered_ahead_holds_the_genuine_ones_back_for_a_second_only() {
        let mut g = SyncGate::default();
        let ms = 1_000_000;
        assert!(g.admit(0, 100));
        // A forgery 16 ahead of the sender.
        assert!(g.admit(ms, 116));
        // The sender's own, 10 ms apart, now behind the mark.
        let mut admitted_at = None;
        for i in 1..=200u64 {
            if g.admit(ms + i * 10 * ms, 100 + i) && admitted_at.is_none() {
                admitted_at = Some(i);
            }
        }
        // The sender's count passes the mark at i = 17, long before the
        // run below it would be believed.
        assert_eq!(admitted_at, Some(17));
        // A forger that keeps numbering ahead at the most the gate allows.
        let mut g = SyncGate::default();
        assert!(g.admit(0, 1000));
        let mut forged = 1000;
        let mut genuine_back = None;
        for i in 1..=300u64 {
            let t = i * 10 * ms;
            forged += 2;
            let taken = g.admit(t, forged);
            assert!(taken || genuine_back.is_some());
            if g.admit(t + 1, 1000 + i) && genuine_back.is_none() {
                genuine_back = Some(i);
            }
        }
        // The genuine run below the mark is believed after 1 s and 50 syncs.
        assert_eq!(genuine_back, Some(101));
        // Replays in random order never make a run.
        let mut g = SyncGate::default();
        assert!(g.admit(0, 5000));
        let mut x = 7u64;
        for i in 1..=500u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            assert!(!g.admit(i * 10 * ms, 4000 + (x >> 33) % 1000));
        }
    }

    #[test]
    fn syncs_count_up_at_the_pace_a_sender_can_send() {
        let mut g = SyncGate::default();
        assert!(g.admit(0, 500));
        assert!(!g.admit(1, 500), "duplicate");
        assert!(!g.admit(2, 499), "older");
        assert!(g.admit(10_000_000, 501));
        // Lost ones in between are fine.
        assert!(g.admit(20_000_000, 505));
        // 1 s later up to 16 + 120 ahead, not more.
        assert!(!g.admit(1_020_000_000, 505 + 137));
        assert!(g.admit(1_020_000_000, 505 + 136));
        // A replay of the past, however long after.
        assert!(!g.admit(u64::MAX / 2, 1));
        // After 10 s of lost syncs, up to 16 + 1200 ahead.
        assert!(g.admit(11_020_000_000, 505 + 136 + 1200));
        assert!(!g.admit(u64::MAX, u64::MAX), "no sender counts that fast");
    }
}

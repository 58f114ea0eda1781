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
    /// the pinned one has been silent for [`ADDR_QUIET_NS`]; `from` is then
    /// pinned instead.
    pub fn admit(&mut self, now_ns: u64, from: SocketAddr) -> bool {
        if from == self.addr {
            self.heard_ns = self.heard_ns.max(now_ns);
            return true;
        }
        if now_ns.saturating_sub(self.heard_ns) >= ADDR_QUIET_NS {
            *self = SourcePin::new(from, now_ns);
            return true;
        }
        false
    }
}

/// The order of a session's sync messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncGate {
    /// The last sync admitted: its seq and when it arrived, ns.
    last: Option<(u64, u64)>,
}

impl SyncGate {
    /// Whether a sync message numbered `seq` that arrived at `now_ns` may
    /// add a clock point: the session's first, or one numbered above the
    /// last admitted and at most [`SYNC_AHEAD_MAX`] plus
    /// [`SYNC_PER_S_MAX`] per elapsed second above it. Duplicates, replays
    /// and messages overtaken by a later one are refused (the clock loses
    /// one point of about a hundred a second).
    pub fn admit(&mut self, now_ns: u64, seq: u64) -> bool {
        if let Some((last, at)) = self.last {
            let elapsed = now_ns.saturating_sub(at);
            // Rounded up; u128 so that any elapsed time is safe.
            let earned = (elapsed as u128 * SYNC_PER_S_MAX as u128)
                .div_ceil(1_000_000_000)
                .min(u64::MAX as u128) as u64;
            if seq <= last || seq - last > SYNC_AHEAD_MAX.saturating_add(earned) {
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

    #[test]
    fn another_address_is_refused_while_the_pinned_one_speaks() {
        let mut p = SourcePin::new(a(1530), 0);
        assert!(p.admit(10_000_000, a(1530)));
        assert!(!p.admit(20_000_000, a(1531)));
        // Just under a second after the pinned address was last heard.
        assert!(!p.admit(10_000_000 + ADDR_QUIET_NS - 1, a(1531)));
        assert_eq!(p.addr(), a(1530));
        assert!(p.admit(10_000_000 + ADDR_QUIET_NS - 1, a(1530)));
    }

    #[test]
    fn a_sender_that_moved_is_followed_after_a_quiet_second() {
        let mut p = SourcePin::new(a(1530), 0);
        assert!(p.admit(ADDR_QUIET_NS, a(1531)));
        assert_eq!(p.addr(), a(1531));
        // And the old address is now the stranger.
        assert!(!p.admit(ADDR_QUIET_NS + 1, a(1530)));
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

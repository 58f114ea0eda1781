//! Which stream a receiver follows when several senders share a group.
//!
//! Rules, in order:
//! 1. If the receiver is configured with a stream name (`bark.stream`), only
//!    senders of that name are candidates.
//! 2. A candidate streams while its audio was heard within [`QUIET_NS`].
//!    Among streaming candidates: highest priority (`bark.priority`) first;
//!    between equal priorities, the newest session (first heard last) wins,
//!    so a sender that restarts, or a newer session of the same priority,
//!    takes over at once.
//! 3. While none streams, the same ranking picks among the candidates whose
//!    sync messages announced them within [`ANNOUNCE_QUIET_NS`] (idle
//!    senders): the receiver follows that session ahead of its audio, so
//!    its clock is known when the first frame arrives.
//! 4. While nothing is heard at all, the followed session stays followed:
//!    it is the likeliest to come back, with the clock still valid.
//!
//! Choices are made on every audio packet and announcement, so a followed
//! sender that goes quiet is replaced by the next candidate as soon as that
//! one's packets arrive after the timeout. An announcement never takes a
//! receiver away from a streaming session.

use crate::protocol::{Announce, AudioHeader};
use crate::trust::SourcePin;
use std::net::SocketAddr;

/// Silence after which a sender is considered gone, ns (1 s: far above any
/// network hiccup that audio could survive at Bark's latencies, short enough
/// for a takeover to feel immediate).
pub const QUIET_NS: u64 = 1_000_000_000;
/// Senders tracked at once. A new one takes the place of the stalest that
/// has been quiet for [`ANNOUNCE_QUIET_NS`]; while all are heard, it is
/// ignored until one goes quiet.
pub const MAX_CANDIDATES: usize = 8;
/// An idle sender counts as present while its announcements (sync messages,
/// 10 per second while idle) arrived this recently, ns (1 s).
pub const ANNOUNCE_QUIET_NS: u64 = 1_000_000_000;

#[derive(Clone, Copy, Debug)]
struct Candidate {
    session: u64,
    name_hash: u32,
    priority: i8,
    first_heard: u64,
    /// Last audio packet, ns (0: none yet).
    last_heard: u64,
    /// Last audio packet or announcement, ns.
    last_seen: u64,
    /// The address its datagrams must come from ([`crate::trust`]).
    pin: SourcePin,
}

/// Result of offering a packet to the selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// From the followed stream.
    Follow,
    /// From the followed stream, which just became the followed one
    /// (previously another or none).
    Switch,
    /// From another stream: ignore.
    Ignore,
}

/// The selector.
#[derive(Clone, Debug)]
pub struct Selector {
    want: Option<u32>,
    cands: [Option<Candidate>; MAX_CANDIDATES],
    current: Option<u64>,
}

impl Selector {
    /// Follows only streams whose name hash is `want`, if given.
    pub fn new(want: Option<u32>) -> Self {
        Selector {
            want,
            cands: [None; MAX_CANDIDATES],
            current: None,
        }
    }

    /// Follows only streams whose name hash is `want` from now on (a
    /// controller changed `bark.stream`); candidates of other names are
    /// forgotten, the followed one too if it is among them: the next
    /// packet of the wanted stream then takes over.
    pub fn set_want(&mut self, want: Option<u32>) {
        self.want = want;
        for slot in &mut self.cands {
            if slot.is_some_and(|c| want.is_some_and(|w| w != c.name_hash)) {
                if slot.map(|c| c.session) == self.current {
                    self.current = None;
                }
                *slot = None;
            }
        }
    }

    /// Session id being followed.
    pub fn current(&self) -> Option<u64> {
        self.current
    }

    /// Address the followed sender sends from (where time requests go).
    pub fn current_addr(&self) -> Option<SocketAddr> {
        let cur = self.current?;
        self.cands
            .iter()
            .flatten()
            .find(|c| c.session == cur)
            .map(|c| c.pin.addr())
    }

    /// Whether a datagram of `session` that came from `from` at `now` may
    /// be used: a session not heard before, or one heard from `from`
    /// ([`SourcePin::admits`]: another address only once the first was
    /// silent for [`crate::trust::ADDR_QUIET_NS`]). Changes nothing; call
    /// before [`Selector::offer`] and [`Selector::announce`], which keep
    /// the pin fresh (or move it) once the datagram has passed every
    /// other check.
    pub fn admit(&self, now: u64, session: u64, from: SocketAddr) -> bool {
        self.cands
            .iter()
            .flatten()
            .find(|c| c.session == session)
            .is_none_or(|c| c.pin.admits(now, from))
    }

    /// Offers an audio packet's header received at `now` from `from`.
    pub fn offer(&mut self, now: u64, h: &AudioHeader, from: SocketAddr) -> Choice {
        self.see(now, h.stream_id, h.name_hash, h.priority, from, true)
    }

    /// Offers a sync message's announcement of `session` received at
    /// `now` from `from`. [`Choice::Switch`] means: follow it now, ahead of
    /// its audio (nothing streams, and it ranks first).
    pub fn announce(&mut self, now: u64, session: u64, a: &Announce, from: SocketAddr) -> Choice {
        self.see(now, session, a.name_hash, a.priority, from, false)
    }

    fn see(
        &mut self,
        now: u64,
        session: u64,
        name_hash: u32,
        priority: i8,
        from: SocketAddr,
        audio: bool,
    ) -> Choice {
        if self.want.is_some_and(|w| w != name_hash) {
            return Choice::Ignore;
        }
        match self
            .cands
            .iter_mut()
            .flatten()
            .find(|c| c.session == session)
        {
            Some(c) => {
                if audio {
                    c.last_heard = now;
                }
                c.last_seen = now;
                c.priority = priority;
                // A sender renamed by a controller keeps its session.
                c.name_hash = name_hash;
                c.pin.heard(now, from);
            }
            None => {
                let fresh = Candidate {
                    session,
                    name_hash,
                    priority,
                    first_heard: now,
                    last_heard: if audio { now } else { 0 },
                    last_seen: now,
                    pin: SourcePin::new(from, now),
                };
                // A free slot, or the stalest candidate that has gone
                // quiet. Never one still heard: a flood of invented
                // session ids would otherwise evict a genuine sender's
                // pin, and its next copy from anywhere would be pinned.
                let slot = self.cands.iter().position(Option::is_none).or_else(|| {
                    self.cands
                        .iter()
                        .enumerate()
                        .filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
                        .filter(|(_, c)| {
                            Some(c.session) != self.current
                                && now.saturating_sub(c.last_seen) > ANNOUNCE_QUIET_NS
                        })
                        .min_by_key(|(_, c)| c.last_seen)
                        .map(|(i, _)| i)
                });
                let Some(slot) = slot else {
                    return Choice::Ignore;
                };
                self.cands[slot] = Some(fresh);
            }
        }
        let rank = |c: &&Candidate| (c.priority, c.first_heard, c.session);
        let streaming = self
            .cands
            .iter()
            .flatten()
            .filter(|c| c.last_heard > 0 && now.saturating_sub(c.last_heard) <= QUIET_NS)
            .max_by_key(rank)
            .map(|c| c.session);
        let best = streaming.or_else(|| {
            self.cands
                .iter()
                .flatten()
                .filter(|c| now.saturating_sub(c.last_seen) <= ANNOUNCE_QUIET_NS)
                .max_by_key(rank)
                .map(|c| c.session)
        });
        if best.is_some() && best != self.current {
            self.current = best;
            if best == Some(session) {
                return Choice::Switch;
            }
        }
        if self.current == Some(session) {
            Choice::Follow
        } else {
            Choice::Ignore
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::AudioFormat;

    fn h(session: u64, priority: i8, name: &str) -> AudioHeader {
        AudioHeader {
            positions: Default::default(),
            stream_id: session,
            seq: 0,
            frame: 0,
            pts: 0,
            format: AudioFormat::default(),
            latency_us: 0,
            name_hash: crate::protocol::stream_hash(name),
            priority,
            frames: 1,
        }
    }

    #[test]
    fn a_session_keeps_the_address_it_was_first_heard_from() {
        let (a1, a9) = (
            SocketAddr::from(([10, 0, 0, 1], 1530)),
            SocketAddr::from(([10, 0, 0, 9], 1530)),
        );
        let mut s = Selector::new(None);
        assert!(s.admit(0, 1, a1), "a session not heard before");
        assert_eq!(s.offer(0, &h(1, 0, "a"), a1), Choice::Switch);
        assert!(!s.admit(10, 1, a9));
        // Even a packet offered from elsewhere does not move it.
        assert_eq!(s.offer(10, &h(1, 0, "a"), a9), Choice::Follow);
        assert_eq!(s.current_addr(), Some(a1));
        // A sender that moved: admitted after a quiet second, and pinned
        // once its datagram is taken.
        let t = crate::trust::ADDR_QUIET_NS;
        assert!(s.admit(t, 1, a9));
        assert_eq!(s.current_addr(), Some(a1), "only checked, not taken");
        assert_eq!(s.offer(t, &h(1, 0, "a"), a9), Choice::Follow);
        assert_eq!(s.current_addr(), Some(a9));
    }

    #[test]
    fn a_flood_of_new_sessions_evicts_no_candidate_still_heard() {
        let a1 = SocketAddr::from(([10, 0, 0, 1], 1530));
        let a9 = SocketAddr::from(([10, 0, 0, 9], 1530));
        let mut s = Selector::new(None);
        assert_eq!(s.offer(1, &h(1, 0, "a"), a1), Choice::Switch);
        // Another genuine sender, idle, announcing itself.
        assert_eq!(s.announce(1, 2, &idle(0, "b"), a1), Choice::Ignore);
        for i in 1..100u64 {
            let t = i * 1_000_000;
            s.offer(t, &h(1, 0, "a"), a1);
            s.announce(t, 2, &idle(0, "b"), a1);
            s.offer(t, &h(1000 + i, 0, "x"), a9);
        }
        // Both keep their pins: copies of them from a9 are refused.
        assert!(!s.admit(100_000_000, 1, a9));
        assert!(!s.admit(100_000_000, 2, a9));
        // Candidates gone quiet make room again.
        let later = 100_000_000 + 2 * ANNOUNCE_QUIET_NS;
        s.offer(later, &h(1, 0, "a"), a1);
        s.offer(later, &h(7, 0, "y"), a9);
        assert!(!s.admit(later, 7, a1), "7 is tracked and pinned to a9");
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:1530".parse().unwrap()
    }

    #[test]
    fn newest_of_equal_priority_takes_over_and_higher_priority_wins() {
        let mut s = Selector::new(None);
        assert_eq!(s.offer(0, &h(1, 0, "a"), addr()), Choice::Switch);
        assert_eq!(s.offer(10, &h(1, 0, "a"), addr()), Choice::Follow);
        assert_eq!(s.offer(20, &h(2, 0, "b"), addr()), Choice::Switch);
        assert_eq!(s.offer(30, &h(1, 0, "a"), addr()), Choice::Ignore);
        assert_eq!(s.offer(40, &h(3, 5, "c"), addr()), Choice::Switch);
        // A newer but lower-priority stream does not take over.
        assert_eq!(s.offer(50, &h(4, 0, "d"), addr()), Choice::Ignore);
        assert_eq!(s.current(), Some(3));
    }

    fn idle(priority: i8, name: &str) -> Announce {
        Announce {
            name_hash: crate::protocol::stream_hash(name),
            priority,
            streaming: false,
            latency_ms: 40,
        }
    }

    #[test]
    fn idle_senders_are_followed_ahead_of_their_audio_but_never_preempt_audio() {
        let mut s = Selector::new(None);
        // Only an idle sender: followed at once.
        assert_eq!(s.announce(0, 1, &idle(0, "a"), addr()), Choice::Switch);
        assert_eq!(s.announce(100, 1, &idle(0, "a"), addr()), Choice::Follow);
        // Its audio then follows without a switch (the clock is kept).
        assert_eq!(s.offer(200, &h(1, 0, "a"), addr()), Choice::Follow);
        // A higher-priority idle sender does not take a streaming receiver.
        assert_eq!(s.announce(300, 2, &idle(9, "b"), addr()), Choice::Ignore);
        assert_eq!(s.current(), Some(1));
        // Once 1 has been quiet for QUIET_NS, the idle sender ranks first.
        let t = 200 + QUIET_NS + 1;
        assert_eq!(s.announce(t, 2, &idle(9, "b"), addr()), Choice::Switch);
        // Nothing heard at all: the followed session stays followed.
        let t = t + 10 * ANNOUNCE_QUIET_NS;
        assert_eq!(s.offer(t, &h(2, 9, "b"), addr()), Choice::Follow);
        // A named receiver ignores other streams' announcements.
        let mut n = Selector::new(Some(crate::protocol::stream_hash("kitchen")));
        assert_eq!(n.announce(0, 5, &idle(0, "living"), addr()), Choice::Ignore);
        assert_eq!(n.current(), None);
    }

    #[test]
    fn named_stream_only_and_quiet_takeover() {
        let mut s = Selector::new(Some(crate::protocol::stream_hash("kitchen")));
        assert_eq!(s.offer(0, &h(1, 9, "living"), addr()), Choice::Ignore);
        assert_eq!(s.offer(0, &h(2, 0, "kitchen"), addr()), Choice::Switch);
        assert_eq!(s.offer(1, &h(3, 5, "kitchen"), addr()), Choice::Switch);
        // 3 goes quiet; 2 is still talking and takes over after the timeout.
        assert_eq!(
            s.offer(QUIET_NS / 2, &h(2, 0, "kitchen"), addr()),
            Choice::Ignore
        );
        assert_eq!(
            s.offer(QUIET_NS + 2, &h(2, 0, "kitchen"), addr()),
            Choice::Switch
        );
    }
}

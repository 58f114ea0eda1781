//! Which stream a receiver follows when several senders share a group.
//!
//! Rules, in order:
//! 1. If the receiver is configured with a stream name (`bark.stream`), only
//!    senders of that name are candidates.
//! 2. A candidate that has not been heard for [`QUIET_NS`] is gone.
//! 3. Among the rest: highest priority (`bark.priority`) first; between equal
//!    priorities, the newest session (first heard last) wins, so a sender
//!    that restarts, or a newer session of the same priority, takes over at
//!    once.
//!
//! Choices are made on every audio packet, so a followed sender that goes
//! quiet is replaced by the next candidate as soon as that one's packets
//! arrive after the timeout.

use crate::protocol::AudioHeader;
use std::net::SocketAddr;

/// Silence after which a sender is considered gone, ns (1 s: far above any
/// network hiccup that audio could survive at Bark's latencies, short enough
/// for a takeover to feel immediate).
pub const QUIET_NS: u64 = 1_000_000_000;
/// Senders tracked at once; the stalest is forgotten to make room.
pub const MAX_CANDIDATES: usize = 8;

#[derive(Clone, Copy, Debug)]
struct Candidate {
    session: u64,
    priority: i8,
    first_heard: u64,
    last_heard: u64,
    addr: SocketAddr,
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
            .map(|c| c.addr)
    }

    /// When the followed sender was last heard, ns.
    pub fn current_last_heard(&self) -> Option<u64> {
        let cur = self.current?;
        self.cands
            .iter()
            .flatten()
            .find(|c| c.session == cur)
            .map(|c| c.last_heard)
    }

    /// Offers an audio packet's header received at `now` from `from`.
    pub fn offer(&mut self, now: u64, h: &AudioHeader, from: SocketAddr) -> Choice {
        if self.want.is_some_and(|w| w != h.name_hash) {
            return Choice::Ignore;
        }
        match self
            .cands
            .iter_mut()
            .flatten()
            .find(|c| c.session == h.stream_id)
        {
            Some(c) => {
                c.last_heard = now;
                c.priority = h.priority;
                c.addr = from;
            }
            None => {
                let fresh = Candidate {
                    session: h.stream_id,
                    priority: h.priority,
                    first_heard: now,
                    last_heard: now,
                    addr: from,
                };
                let slot = self
                    .cands
                    .iter()
                    .position(Option::is_none)
                    .unwrap_or_else(|| {
                        // Evict the stalest that is not followed.
                        let mut worst = 0;
                        let mut oldest = u64::MAX;
                        for (i, c) in self.cands.iter().enumerate() {
                            if let Some(c) = c {
                                if Some(c.session) != self.current && c.last_heard < oldest {
                                    oldest = c.last_heard;
                                    worst = i;
                                }
                            }
                        }
                        worst
                    });
                self.cands[slot] = Some(fresh);
            }
        }
        let best = self
            .cands
            .iter()
            .flatten()
            .filter(|c| now.saturating_sub(c.last_heard) <= QUIET_NS)
            .max_by_key(|c| (c.priority, c.first_heard, c.session))
            .map(|c| c.session);
        if best != self.current {
            self.current = best;
            if best == Some(h.stream_id) {
                return Choice::Switch;
            }
        }
        if self.current == Some(h.stream_id) {
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

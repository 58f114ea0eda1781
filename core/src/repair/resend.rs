//! The sender's side of repair: which NACKed packets it resends, to whom,
//! and how much. Rules, in order, for each sequence number a NACK names:
//!
//! 1. the NACK is for this session and carries a cookie minted for its
//!    source address and node ([`crate::repair::cookie`]), else nothing
//!    of it is answered;
//! 2. the packet is still in the [`History`], else `unknown` (also for
//!    sequence numbers not sent yet);
//! 3. its frames can still be played: `pts + session latency` more than
//!    [`STALE_MARGIN_NS`] away, else `stale`;
//! 4. the requester's bucket (the stream's own rate, [`REPAIR_BURST_S`]
//!    deep) and the sender's (that times [`RESEND_MULTIPLE`]) hold its
//!    bytes, else `capped`;
//! 5. the queue has room ([`MAX_QUEUED`]), else `queue_full`.
//!
//! So whoever asks, a sender resends at most its own stream's rate to any
//! one address that proved it receives there, and at most
//! `RESEND_MULTIPLE` times that in all (docs/SECURITY.md).

use super::bucket::TokenBucket;
use super::history::History;
use crate::protocol::{NackPacket, IP_UDP_OVERHEAD};
use std::net::SocketAddr;

/// Resends queued at once; NACKed packets beyond are dropped (counted).
pub const MAX_QUEUED: usize = 256;
/// Addresses with a bucket of their own; the least recently heard is
/// forgotten for a new one (as [`crate::latency`]'s reporters).
pub const MAX_REQUESTERS: usize = 64;
/// A requester's bucket depth, in seconds of the stream's own rate
/// (0.25 s: a 150 ms outage, 41 default packets, is repaired in one go).
pub const REPAIR_BURST_S: f64 = 0.25;
/// All requesters together may have resent at most this many times the
/// stream's rate (4: 32 receivers at 3 % independent loss need about
/// 0.96 of it; beyond, FEC is the tool).
pub const RESEND_MULTIPLE: f64 = 4.0;
/// A packet whose frames play sooner than this is not resent, ns: it
/// could not arrive in time.
pub const STALE_MARGIN_NS: i64 = 1_000_000;

/// What became of NACKed packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResendCounts {
    /// NACKs taken (valid cookie).
    pub nacks: u64,
    /// NACKs refused: no or a wrong cookie, or another session.
    pub bad_cookie: u64,
    /// Sequence numbers asked for that the history no longer (or never)
    /// held.
    pub unknown: u64,
    /// Asked for too late to be played.
    pub stale: u64,
    /// Refused by a bucket.
    pub capped: u64,
    /// Dropped: the queue was full.
    pub queue_full: u64,
    /// Packets resent.
    pub resent: u64,
    /// Bytes resent (plain datagram; sealing adds its trailer).
    pub resent_bytes: u64,
}

#[derive(Clone, Copy, Debug)]
struct Requester {
    addr: SocketAddr,
    bucket: TokenBucket,
    last_ns: u64,
}

/// History, caps and queue of a sender's resends.
pub struct Resender {
    history: History,
    requesters: [Option<Requester>; MAX_REQUESTERS],
    global: Option<TokenBucket>,
    queue: [(u64, Option<SocketAddr>); MAX_QUEUED],
    head: usize,
    len: usize,
    /// Wire bytes each resend is charged: the datagram plus the sealing
    /// trailer.
    overhead: usize,
    rate: f64,
    counts: ResendCounts,
}

impl Resender {
    /// A resender keeping `slots` datagrams of at most `slot_len` bytes,
    /// for a stream of `rate` wire bytes per second, each resend charged
    /// `overhead` bytes more than its plain datagram.
    pub fn new(slots: usize, slot_len: usize, rate: f64, overhead: usize) -> Self {
        Resender {
            history: History::new(slots, slot_len),
            requesters: [None; MAX_REQUESTERS],
            global: None,
            queue: [(0, None); MAX_QUEUED],
            head: 0,
            len: 0,
            overhead,
            rate,
            counts: ResendCounts::default(),
        }
    }

    /// The history, to store what is sent.
    pub fn history_mut(&mut self) -> &mut History {
        &mut self.history
    }

    /// What became of NACKs so far.
    pub fn counts(&self) -> &ResendCounts {
        &self.counts
    }

    /// A NACK arrived at sender time `now_ns` from `from`: `valid` says
    /// whether its session and cookie passed (rule 1); `latency_ns` is the
    /// session latency now. Queues what may be resent.
    pub fn handle_nack(
        &mut self,
        now_ns: u64,
        nack: &NackPacket,
        from: SocketAddr,
        valid: bool,
        latency_ns: u64,
    ) {
        if !valid {
            self.counts.bad_cookie += 1;
            return;
        }
        self.counts.nacks += 1;
        let r = self.requester(now_ns, from);
        for seq in nack.seqs() {
            let Some((d, pts)) = self.history.get(seq) else {
                self.counts.unknown += 1;
                continue;
            };
            let plays = pts.saturating_add(latency_ns as i64);
            if plays <= (now_ns as i64).saturating_add(STALE_MARGIN_NS) {
                self.counts.stale += 1;
                continue;
            }
            // As the rate counts them: sealed, with IPv4 and UDP headers.
            let bytes = d.len() + self.overhead + IP_UDP_OVERHEAD;
            let rate = self.rate;
            let packet = self.packet_bytes();
            let global = self.global.get_or_insert_with(|| {
                TokenBucket::new(
                    RESEND_MULTIPLE * rate,
                    (RESEND_MULTIPLE * rate * REPAIR_BURST_S).max(packet),
                    now_ns,
                )
            });
            let Some(req) = self.requesters[r].as_mut() else {
                continue;
            };
            if !req.bucket.take(now_ns, bytes) {
                self.counts.capped += 1;
                continue;
            }
            if !global.take(now_ns, bytes) {
                req.bucket.refund(bytes);
                self.counts.capped += 1;
                continue;
            }
            if self.len == MAX_QUEUED {
                req.bucket.refund(bytes);
                global.refund(bytes);
                self.counts.queue_full += 1;
                continue;
            }
            self.queue[(self.head + self.len) % MAX_QUEUED] = (seq, Some(from));
            self.len += 1;
        }
    }

    /// The requester slot for `from`: its own, a free one, or the least
    /// recently heard.
    fn requester(&mut self, now_ns: u64, from: SocketAddr) -> usize {
        let found = self
            .requesters
            .iter()
            .position(|r| r.is_some_and(|r| r.addr == from));
        let i = found.unwrap_or_else(|| {
            self.requesters
                .iter()
                .position(Option::is_none)
                .unwrap_or_else(|| {
                    (0..MAX_REQUESTERS)
                        .min_by_key(|&i| self.requesters[i].map_or(0, |r| r.last_ns))
                        .unwrap_or(0)
                })
        });
        let rate = self.rate;
        let packet = self.packet_bytes();
        let r = self.requesters[i]
            .filter(|r| r.addr == from)
            .unwrap_or(Requester {
                addr: from,
                // At least one packet deep: a stream of long packets
                // (8 kHz with a large MTU) must still get one resent.
                bucket: TokenBucket::new(rate, (rate * REPAIR_BURST_S).max(packet), now_ns),
                last_ns: now_ns,
            });
        self.requesters[i] = Some(Requester {
            last_ns: now_ns,
            ..r
        });
        i
    }

    /// The next queued resend: the plain datagram is written into `buf`
    /// (its length returned) with where it goes. Packets the history lost
    /// meanwhile are skipped. No allocation.
    pub fn next(&mut self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        while self.len > 0 {
            let (seq, to) = self.queue[self.head];
            self.head = (self.head + 1) % MAX_QUEUED;
            self.len -= 1;
            let (Some(to), Some((d, _))) = (to, self.history.get(seq)) else {
                continue;
            };
            let Some(room) = buf.get_mut(..d.len()) else {
                continue;
            };
            room.copy_from_slice(d);
            self.counts.resent += 1;
            self.counts.resent_bytes += d.len() as u64;
            return Some((d.len(), to));
        }
        None
    }

    /// Wire bytes of the largest resend: a full history slot, sealed, with
    /// IPv4 and UDP headers.
    fn packet_bytes(&self) -> f64 {
        (self.history.slot_len() + self.overhead + IP_UDP_OVERHEAD) as f64
    }

    /// Whether resends are queued.
    pub fn pending(&self) -> bool {
        self.len > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::CookieTag;

    fn nack(base: u64, mask: u64) -> NackPacket {
        NackPacket {
            stream_id: 1,
            node_id: 2,
            cookie: CookieTag::default(),
            base,
            mask,
        }
    }

    fn filled(n: u64) -> Resender {
        // 1000-byte packets, 100 kB/s (100 packets/s).
        let mut r = Resender::new(64, 1000, 100_000.0, 0);
        for seq in 0..n {
            r.history_mut()
                .store(seq, seq as i64 * 10_000_000, &[seq as u8; 1000]);
        }
        r
    }

    fn a(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 5000))
    }

    #[test]
    fn resends_only_what_it_holds_can_still_play_and_only_to_the_asker() {
        let mut r = filled(60);
        let mut buf = [0u8; 2000];
        // At 300 ms with 40 ms latency, packets before seq 27 are stale.
        let now = 300_000_000;
        r.handle_nack(now, &nack(20, 0b1111_1111), a(1), true, 40_000_000);
        r.handle_nack(now, &nack(59, 0b11), a(2), true, 40_000_000);
        r.handle_nack(now, &nack(30, 1), a(3), false, 40_000_000);
        let mut got = vec![];
        while let Some((n, to)) = r.next(&mut buf) {
            got.push((buf[0], n, to));
        }
        assert_eq!(
            got,
            vec![(27, 1000, a(1)), (28, 1000, a(1)), (59, 1000, a(2))]
        );
        let c = r.counts();
        assert_eq!((c.stale, c.unknown, c.bad_cookie, c.resent), (7, 2, 1, 3));
    }

    #[test]
    fn a_nack_flood_gets_at_most_the_caps() {
        let mut r = filled(64);
        let mut buf = [0u8; 2000];
        let mut to_1 = 0u64;
        let mut all = 0u64;
        // 10 s of 65-packet NACKs every ms from one address, and from 20
        // others in turn, all asking for packets that stay playable.
        for ms in 0..10_000u64 {
            let now = ms * 1_000_000;
            for seq in 0..64 {
                r.history_mut()
                    .store(seq, now as i64 + 500_000_000, &[0; 1000]);
            }
            r.handle_nack(now, &nack(0, u64::MAX >> 1), a(1), true, 40_000_000);
            r.handle_nack(
                now,
                &nack(0, u64::MAX >> 1),
                a(2 + (ms % 20) as u8),
                true,
                40_000_000,
            );
            while let Some((n, to)) = r.next(&mut buf) {
                all += n as u64;
                if to == a(1) {
                    to_1 += n as u64;
                }
            }
        }
        // One address: its rate over 10 s plus its bucket's depth.
        assert!(to_1 <= 100_000 * 10 + 25_000, "{to_1}");
        assert!(to_1 >= 100_000 * 9, "{to_1}");
        // Everyone: the multiple of the rate plus its depth.
        let cap = (RESEND_MULTIPLE * 100_000.0 * (10.0 + REPAIR_BURST_S)) as u64;
        assert!(all <= cap, "{all} > {cap}");
        assert!(r.counts().capped > 0);
    }
}

//! The receiver's side of repair: which audio packets it is missing, when
//! to ask the sender for them, and when to stop asking.
//!
//! A packet is missing from the moment one with a higher sequence number
//! arrives. It is first asked for once it is more likely lost than
//! reordered: [`FIRST_WAIT_NS`], or 1.5 times the largest lateness of a
//! reordered packet in the last [`REORDER_MEMORY_NS`]. Retries follow the
//! retransmission timer of RFC 6298 (`srtt + 4·rttvar`, at least
//! [`MIN_RTO_NS`], doubled per unanswered ask up to [`MAX_BACKOFF`]
//! times), with round-trip samples only from packets asked for once
//! (Karn's rule, RFC 6298 §3). A packet is never asked for when the
//! answer could not arrive before its frames are read (its deadline),
//! and at most [`MAX_TRIES`] times. NACKs are only sent with a cookie from
//! the sender ([`crate::repair::cookie`]), fetched with a Hello at the
//! start of a session and every [`COOKIE_REFRESH_NS`].

use super::cookie::COOKIE_REFRESH_NS;
use crate::protocol::{CookieTag, NACK_SPAN, OFFER_NACK};

/// Missing packets tracked at once (1.9 s of default packets); older gaps
/// beyond are counted in [`RepairCounts::overflow`] and not asked for.
pub const MAX_MISSING: usize = 512;
/// Most times one packet is asked for.
pub const MAX_TRIES: u8 = 16;
/// Each unanswered ask doubles the wait before the next (RFC 6298 §5.5),
/// up to this many retransmission timeouts and at most half the time left
/// before the packet's deadline: an outage or a stall then costs a few
/// NACKs, not one per timeout, and the first ask after it comes within
/// four timeouts.
pub const MAX_BACKOFF: u64 = 4;
/// NACKs one [`NackScheduler::poll_nack`] round sends at most (260
/// packets, about 950 ms of default audio).
pub const MAX_NACKS_PER_POLL: usize = 4;
/// Least wait before the first ask, ns: packets of one buffer arrive in
/// order on a LAN within microseconds.
pub const FIRST_WAIT_NS: u64 = 1_000_000;
/// Least retransmission timeout, ns (RFC 6298 says 1 s for TCP over the
/// Internet; a LAN's round trip is well under a millisecond, and a lost
/// NACK must be retried within the session latency).
pub const MIN_RTO_NS: u64 = 2_000_000;
/// Largest reordering taken into account, ns: a packet later than this
/// behind its successors is taken as lost and asked for (a resend that
/// turns out not to be needed costs one packet).
pub const MAX_REORDER_NS: u64 = 10_000_000;
/// How long the largest reordering seen is remembered, ns.
pub const REORDER_MEMORY_NS: u64 = 10_000_000_000;
/// A Hello unanswered this long is sent again, ns (10 ms, doubling with
/// each unanswered one up to [`HELLO_RETRY_MAX_NS`]): until the cookie
/// comes, nothing lost can be asked for, and a packet lost then has about
/// 20 ms before its deadline at the default latency, so a lost Hello or
/// Cookie must cost a LAN round trip or so, not 50 ms (the simulator's
/// 32 receivers at 3 % loss lost 4 packets that way with 50 ms).
pub const HELLO_RETRY_NS: u64 = 10_000_000;
/// The longest wait between unanswered Hellos, ns (1 s).
pub const HELLO_RETRY_MAX_NS: u64 = 1_000_000_000;
/// Hellos sent in a row without an answer (2.27 s of them, so that a
/// Wi-Fi outage of up to 2 s at the start is ridden out) before the
/// receiver asks only every [`COOKIE_REFRESH_NS`] (a sender before repair
/// never answers).
pub const HELLO_TRIES: u32 = 9;

/// What the receiver's repair did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepairCounts {
    /// Packets found missing (a gap in the sequence numbers).
    pub missing: u64,
    /// Missing packets that arrived anyway (reordered, or resent).
    pub recovered: u64,
    /// Of those, resent by the sender.
    pub resent: u64,
    /// NACKs sent.
    pub nacks: u64,
    /// Packet requests in them (a packet asked for twice counts twice).
    pub asked: u64,
    /// Missing packets whose deadline passed while still missing.
    pub expired: u64,
    /// Missing packets not tracked: the table was full.
    pub overflow: u64,
    /// Hellos sent.
    pub hellos: u64,
    /// Cookies taken.
    pub cookies: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Missing {
    seq: u64,
    live: bool,
    tries: u8,
    since_ns: u64,
    next_ns: u64,
    deadline_ns: u64,
    first_ask_ns: u64,
}

/// One receiver's missing packets and its NACK pacing.
pub struct NackScheduler {
    table: Box<[Missing]>,
    live: usize,
    srtt_ns: f64,
    rttvar_ns: f64,
    rtt_sampled: bool,
    reorder_ns: u64,
    /// See [`NackScheduler::set_hold_ns`].
    hold_ns: u64,
    reorder_at_ns: u64,
    cookie: Option<CookieTag>,
    cookie_at_ns: u64,
    /// The last Hello's nonce and the one before: a Cookie answering the
    /// previous Hello is still taken (a round trip longer than the 10 ms
    /// retry, a Wi-Fi stall, must not void every answer).
    hello_nonce: Option<u64>,
    prev_nonce: Option<u64>,
    next_hello_ns: u64,
    hellos_unanswered: u32,
    nonce_state: u64,
    counts: RepairCounts,
}

/// splitmix64 (Steele, Lea, Flood 2014): nonces that an off-path host
/// cannot guess from the previous one without the seed (Hellos here and
/// in [`crate::subscribe`]).
pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl NackScheduler {
    /// A scheduler; `seed` varies the Hello nonces (give it 64 random
    /// bits: an off-path host that guesses the next nonce could answer a
    /// Hello with a cookie of its own and so spoil this receiver's NACKs
    /// until the next refresh). Allocates its table once.
    pub fn new(seed: u64) -> Self {
        NackScheduler {
            table: vec![Missing::default(); MAX_MISSING].into_boxed_slice(),
            live: 0,
            srtt_ns: 0.0,
            rttvar_ns: 0.0,
            rtt_sampled: false,
            reorder_ns: 0,
            hold_ns: 0,
            reorder_at_ns: 0,
            cookie: None,
            cookie_at_ns: 0,
            hello_nonce: None,
            prev_nonce: None,
            next_hello_ns: 0,
            hellos_unanswered: 0,
            nonce_state: seed,
            counts: RepairCounts::default(),
        }
    }

    /// What repair did so far.
    pub fn counts(&self) -> &RepairCounts {
        &self.counts
    }

    /// Whether a cookie is held (NACKs can go).
    pub fn has_cookie(&self) -> bool {
        self.cookie.is_some()
    }

    /// Re-seeds the Hello nonces (see [`NackScheduler::new`]).
    pub fn seed_nonces(&mut self, seed: u64) {
        self.nonce_state = seed;
    }

    /// A new session from local time `now_ns`: nothing is missing, the
    /// cookie is the old sender's, and a Hello is due now.
    pub fn reset(&mut self, now_ns: u64) {
        self.table.iter_mut().for_each(|m| m.live = false);
        self.live = 0;
        self.cookie = None;
        self.hello_nonce = None;
        self.prev_nonce = None;
        self.next_hello_ns = now_ns;
        self.hellos_unanswered = 0;
        self.rtt_sampled = false;
    }

    /// Holds the first ask for a missing packet back by `hold_ns` (at
    /// most half its time left): while the session carries FEC, its block
    /// may be rebuilt without asking ([`crate::fec`]); 0 otherwise.
    pub fn set_hold_ns(&mut self, hold_ns: u64) {
        self.hold_ns = hold_ns;
    }

    /// Seeds the round-trip estimate from the clock's shortest exchange,
    /// ns, until NACKs give samples of their own.
    pub fn seed_rtt(&mut self, rtt_ns: f64) {
        if !self.rtt_sampled && rtt_ns.is_finite() && rtt_ns > 0.0 {
            self.srtt_ns = rtt_ns;
            self.rttvar_ns = rtt_ns / 2.0;
        }
    }

    fn rto_ns(&self) -> u64 {
        ((self.srtt_ns + 4.0 * self.rttvar_ns) as u64).max(MIN_RTO_NS)
    }

    /// Packet `seq` went missing at `now_ns` (a later one arrived); its
    /// frames are read at `deadline_ns` (local ns).
    pub fn missing(&mut self, seq: u64, now_ns: u64, deadline_ns: u64) {
        let slot = &mut self.table[(seq % MAX_MISSING as u64) as usize];
        if slot.live {
            if slot.seq == seq {
                return;
            }
            // The slot's packet is MAX_MISSING older: it would long be
            // played by now.
            self.counts.overflow += 1;
            self.live -= 1;
        }
        self.counts.missing += 1;
        // FEC's hold, but never past half the time left: if the block
        // cannot be rebuilt, the NACK still has its tries.
        let hold = self.hold_ns.min(deadline_ns.saturating_sub(now_ns) / 2);
        let wait = FIRST_WAIT_NS.max(self.reorder_ns * 3 / 2).max(hold);
        *slot = Missing {
            seq,
            live: true,
            tries: 0,
            since_ns: now_ns,
            next_ns: now_ns + wait,
            deadline_ns,
            first_ask_ns: 0,
        };
        self.live += 1;
    }

    /// Packet `seq` arrived at `now_ns` (`resent`: as a resend). Returns
    /// whether it was missing.
    pub fn arrived(&mut self, seq: u64, now_ns: u64, resent: bool) -> bool {
        let slot = &mut self.table[(seq % MAX_MISSING as u64) as usize];
        if !slot.live || slot.seq != seq {
            return false;
        }
        slot.live = false;
        let m = *slot;
        self.live -= 1;
        self.counts.recovered += 1;
        if resent {
            self.counts.resent += 1;
            if m.tries == 1 {
                // RFC 6298 §2.2–2.3.
                let r = now_ns.saturating_sub(m.first_ask_ns) as f64;
                if self.rtt_sampled {
                    self.rttvar_ns = 0.75 * self.rttvar_ns + 0.25 * (self.srtt_ns - r).abs();
                    self.srtt_ns = 0.875 * self.srtt_ns + 0.125 * r;
                } else {
                    self.srtt_ns = r;
                    self.rttvar_ns = r / 2.0;
                    self.rtt_sampled = true;
                }
            }
        } else {
            // Capped: one packet numbered ahead of the stream (a forgery
            // from the sender's own address, which open mode cannot rule
            // out) would otherwise make every genuine packet look
            // reordered by seconds and hold every first ask past its
            // deadline.
            let late = now_ns.saturating_sub(m.since_ns).min(MAX_REORDER_NS);
            if late > self.reorder_ns
                || now_ns.saturating_sub(self.reorder_at_ns) > REORDER_MEMORY_NS
            {
                self.reorder_ns = late;
                self.reorder_at_ns = now_ns;
            }
        }
        true
    }

    /// The Hello to send at `now_ns`, if one is due: its nonce.
    pub fn poll_hello(&mut self, now_ns: u64) -> Option<u64> {
        if now_ns < self.next_hello_ns {
            return None;
        }
        let nonce = splitmix(&mut self.nonce_state) ^ now_ns;
        self.prev_nonce = self.hello_nonce;
        self.hello_nonce = Some(nonce);
        self.hellos_unanswered += 1;
        // Also with a cookie held: refresh Hellos a sender stopped
        // answering fall back to the 30 s pace, not one a second.
        self.next_hello_ns = now_ns
            + if self.hellos_unanswered >= HELLO_TRIES {
                COOKIE_REFRESH_NS
            } else {
                (HELLO_RETRY_NS << (self.hellos_unanswered - 1).min(8)).min(HELLO_RETRY_MAX_NS)
            };
        self.counts.hellos += 1;
        Some(nonce)
    }

    /// A Cookie from the followed sender's address arrived at `now_ns`:
    /// taken if it answers the last Hello or the one before, and the sender
    /// answers NACKs.
    /// Returns whether it was taken.
    pub fn take_cookie(&mut self, now_ns: u64, nonce: u64, tag: CookieTag, offers: u32) -> bool {
        if self.hello_nonce != Some(nonce) && self.prev_nonce != Some(nonce) {
            return false;
        }
        self.hello_nonce = None;
        self.prev_nonce = None;
        self.hellos_unanswered = 0;
        self.next_hello_ns = now_ns + COOKIE_REFRESH_NS;
        if offers & OFFER_NACK == 0 {
            self.cookie = None;
            return false;
        }
        self.cookie = Some(tag);
        self.cookie_at_ns = now_ns;
        self.counts.cookies += 1;
        true
    }

    /// Drops what can no longer arrive in time, at `now_ns`.
    fn sweep(&mut self, now_ns: u64) {
        // The smoothed round trip, not the timeout: the timeout carries
        // four deviations of margin for *waiting*, and a jittery round
        // trip (a loaded host) would otherwise forbid the ask that a
        // typical round trip still brings back in time.
        let rtt = self.srtt_ns as u64;
        for m in self.table.iter_mut().filter(|m| m.live) {
            if now_ns > m.deadline_ns {
                m.live = false;
                self.live -= 1;
                self.counts.expired += 1;
            } else if now_ns + rtt > m.deadline_ns || m.tries >= MAX_TRIES {
                // Still missing, but no answer could come in time: wait
                // (it may still arrive) without asking.
                m.next_ns = u64::MAX;
            }
        }
    }

    /// Packet `seq` was rebuilt from FEC repair packets: no longer
    /// missing (counted `recovered`), but neither a round-trip sample nor
    /// a reordering one. Returns whether it was missing.
    pub fn rebuilt(&mut self, seq: u64) -> bool {
        let slot = &mut self.table[(seq % MAX_MISSING as u64) as usize];
        if !slot.live || slot.seq != seq {
            return false;
        }
        slot.live = false;
        self.live -= 1;
        self.counts.recovered += 1;
        true
    }

    /// The next NACK to send at `now_ns`: the cookie, the base sequence
    /// number and the mask (see [`crate::protocol::NackPacket`]). Call
    /// until `None`, at most [`MAX_NACKS_PER_POLL`] times a round. Only
    /// with a cookie.
    pub fn poll_nack(&mut self, now_ns: u64) -> Option<(CookieTag, u64, u64)> {
        if self.live == 0 {
            return None;
        }
        // Before the cookie check: what passed its deadline is lost
        // whether or not it could be asked for.
        self.sweep(now_ns);
        let cookie = self.cookie?;
        let base = self
            .table
            .iter()
            .filter(|m| m.live && m.next_ns <= now_ns)
            .map(|m| m.seq)
            .min()?;
        let rto = self.rto_ns();
        let mut mask = 0u64;
        for m in self.table.iter_mut() {
            if !m.live || m.next_ns > now_ns || m.seq < base || m.seq - base >= NACK_SPAN {
                continue;
            }
            if m.seq > base {
                mask |= 1 << (m.seq - base - 1);
            }
            m.tries += 1;
            if m.tries == 1 {
                m.first_ask_ns = now_ns;
            }
            // Backing off, but never past half the time left (nor closer
            // than MIN_RTO_NS): a packet due soon gets its tries while
            // they can still help, even when the timeout is longer than
            // the time left (a round trip that jitters on a loaded host).
            let backoff = (1u64 << (m.tries - 1).min(8)).min(MAX_BACKOFF);
            let left = m.deadline_ns.saturating_sub(now_ns) / 2;
            let rtt = self.srtt_ns as u64;
            m.next_ns = now_ns + (rto * backoff).min(left.max(MIN_RTO_NS).max(rtt));
            self.counts.asked += 1;
        }
        self.counts.nacks += 1;
        Some((cookie, base, mask))
    }

    /// When a NACK or Hello is due next, or a missing packet's deadline
    /// passes (it is then given up), local ns (`u64::MAX`: none).
    pub fn next_due_ns(&self) -> u64 {
        let live = self.table.iter().filter(|m| m.live);
        let nack = if self.cookie.is_some() {
            live.map(|m| m.next_ns.min(m.deadline_ns.saturating_add(1)))
                .min()
                .unwrap_or(u64::MAX)
        } else {
            live.map(|m| m.deadline_ns.saturating_add(1))
                .min()
                .unwrap_or(u64::MAX)
        };
        nack.min(self.next_hello_ns)
    }

    /// Whether packets are missing that may still be asked for or arrive.
    pub fn pending(&self) -> bool {
        self.live > 0
    }

    /// How many: not lost (yet), while their deadline has not passed.
    pub fn pending_count(&self) -> u64 {
        self.live as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn ready() -> NackScheduler {
        let mut s = NackScheduler::new(1);
        s.reset(0);
        let nonce = s.poll_hello(0).unwrap();
        assert!(!s.take_cookie(0, nonce ^ 1, CookieTag::default(), OFFER_NACK));
        assert!(s.take_cookie(0, nonce, CookieTag::default(), OFFER_NACK));
        s.seed_rtt(200_000.0);
        s
    }

    #[test]
    fn asks_after_the_first_wait_in_one_nack_and_retries_on_the_timer() {
        let mut s = ready();
        for seq in [10, 11, 13, 80] {
            s.missing(seq, 100 * MS, 140 * MS);
        }
        assert_eq!(s.poll_nack(100 * MS), None, "may still be reordered");
        assert_eq!(
            s.poll_nack(101 * MS),
            Some((CookieTag::default(), 10, 0b101))
        );
        // 80 is beyond the first NACK's span.
        assert_eq!(s.poll_nack(101 * MS).map(|n| (n.1, n.2)), Some((80, 0)));
        assert_eq!(s.poll_nack(101 * MS), None);
        // 11 arrives resent; the others are asked again after the RTO.
        assert!(s.arrived(11, 101 * MS + 300_000, true));
        assert!(!s.arrived(11, 101 * MS + 300_000, true), "once");
        assert_eq!(s.poll_nack(102 * MS), None);
        assert_eq!(s.poll_nack(103 * MS).map(|n| (n.1, n.2)), Some((10, 0b100)));
        assert_eq!(s.counts().asked, 6);
    }

    #[test]
    fn never_asks_what_cannot_arrive_in_time_and_stops_after_the_deadline() {
        let mut s = ready();
        s.missing(5, 0, MS + 600_000);
        // 1 ms wait, then a round trip of 0.2 ms: asked at 1.5 ms, an
        // answer could not come before 1.6 ms.
        assert_eq!(s.poll_nack(MS + MS / 2), None);
        assert!(s.pending());
        assert_eq!(s.poll_nack(3 * MS), None);
        assert!(!s.pending());
        assert_eq!(s.counts().expired, 1);
        assert_eq!(s.counts().asked, 0);
    }

    #[test]
    fn a_timeout_longer_than_the_time_left_still_leaves_room_for_retries() {
        let mut s = ready();
        // A jittery round trip: 5 ms smoothed, 15 ms timeout, 30 ms to go.
        s.rtt_sampled = false;
        s.seed_rtt(5.0 * MS as f64);
        s.missing(5, 0, 30 * MS);
        let asks: Vec<u64> = (0..300u64)
            .map(|t| t * MS / 10)
            .filter(|&t| s.poll_nack(t).is_some())
            .collect();
        // 1 ms, then at half the time left each time (14.5 ms, 7.25 ms)
        // while a round trip still fits before 30 ms.
        assert_eq!(
            asks,
            vec![MS, 155 * MS / 10, 228 * MS / 10],
            "asks at {asks:?}"
        );
    }

    #[test]
    fn a_cookie_for_the_previous_hello_is_taken_older_ones_are_not() {
        let mut s = NackScheduler::new(1);
        s.reset(0);
        let first = s.poll_hello(0).unwrap();
        let second = s.poll_hello(HELLO_RETRY_NS).unwrap();
        let third = s.poll_hello(3 * HELLO_RETRY_NS).unwrap();
        assert_ne!(first, second);
        // The answer to the first comes after two retries: too old.
        assert!(!s.take_cookie(31 * MS, first, CookieTag::default(), OFFER_NACK));
        assert!(!s.has_cookie());
        // The answer to the second, after the third went out: taken.
        assert!(s.take_cookie(32 * MS, second, CookieTag::default(), OFFER_NACK));
        assert!(s.has_cookie());
        // Answered: neither nonce is taken again.
        assert!(!s.take_cookie(33 * MS, third, CookieTag::default(), OFFER_NACK));
        assert!(!s.take_cookie(33 * MS, second, CookieTag::default(), OFFER_NACK));
    }

    #[test]
    fn no_cookie_no_nack_and_an_old_sender_is_asked_rarely() {
        let mut s = NackScheduler::new(1);
        s.reset(0);
        s.missing(5, 0, 100 * MS);
        let mut hellos = 0;
        for ms in 0..60_000u64 {
            assert_eq!(s.poll_nack(ms * MS), None);
            if s.poll_hello(ms * MS).is_some() {
                hellos += 1;
            }
        }
        // 9 in the first 2.27 s (10 ms apart, doubling up to 1 s), then
        // one every 30 s.
        assert_eq!(hellos, 9 + 1);
        // What was missing is given up at its deadline all the same.
        assert!(!s.pending());
        assert_eq!(s.counts().expired, 1);
        // A sender that does not answer NACKs: no cookie.
        let nonce = s.poll_hello(u64::MAX / 2).unwrap();
        assert!(!s.take_cookie(0, nonce, CookieTag::default(), 0));
        assert!(!s.has_cookie());
    }

    #[test]
    fn a_packet_numbered_far_ahead_delays_asks_by_the_cap_at_most() {
        let mut s = ready();
        s.missing(1, 0, 10_000 * MS);
        // Seconds "late": a forgery numbered ahead made it look missing.
        assert!(s.arrived(1, 5_000 * MS, false));
        s.missing(2, 5_001 * MS, 5_100 * MS);
        assert!(s.poll_nack(5_001 * MS + MAX_REORDER_NS * 3 / 2).is_some());
    }

    #[test]
    fn reordering_seen_delays_the_first_ask() {
        let mut s = ready();
        s.missing(1, 0, 200 * MS);
        // It was only reordered, 6 ms late.
        assert!(s.arrived(1, 6 * MS, false));
        s.missing(2, 10 * MS, 200 * MS);
        assert_eq!(s.poll_nack(18 * MS), None);
        assert!(s.poll_nack(19 * MS).is_some());
    }
}

//! A unicast receiver's subscription: it asks the sender it was given
//! (`bark.sender`, an IPv4 address and the sender's `bark.control.port`)
//! for a cookie, then for the stream, and renews that every
//! [`RENEW_NS`] (the sender's side is [`crate::fanout`]).
//!
//! The Hello carries [`ANY_SESSION`]: the receiver knows the sender's
//! address, not its session, and a sender that restarts draws a new one.
//! The Cookie names the session, and the Subscribe is for it. When nothing
//! at all has come from the sender for [`SILENT_NS`] (a live sender sends
//! at least its status every second), the session is taken to be gone and
//! the receiver says Hello again, so that a restarted sender is found
//! within a few seconds; and every [`COOKIE_REFRESH_NS`] it fetches a
//! fresh cookie before the old one's slot ends (a cookie holds for at
//! least 68.7 s, [`crate::repair::cookie`]).
//!
//! Sans-IO: the endpoint hands it what arrives from the sender and sends
//! what [`Subscription::poll`] writes to [`Subscription::sender`]. No
//! allocation.

use crate::fanout::RENEW_NS;
use crate::protocol::{
    self, CookiePacket, CookieTag, HelloPacket, SubscribePacket, ANY_SESSION, OFFER_SUBSCRIBE,
    SUBSCRIBE_LEAVE,
};
use crate::repair::cookie::COOKIE_REFRESH_NS;
use crate::repair::nack::splitmix;
use std::net::SocketAddr;

/// First wait for an unanswered Hello, ns (250 ms), doubling up to
/// [`HELLO_MAX_WAIT_NS`]: a sender that is not up yet is found within
/// about that once it is.
pub const HELLO_WAIT_NS: u64 = 250_000_000;
/// Longest wait between unanswered Hellos, ns (1 s): a receiver that
/// started before its sender misses at most about this much of the
/// first playback.
pub const HELLO_MAX_WAIT_NS: u64 = 1_000_000_000;
/// Nothing from the sender for this long, ns (3 s, three status periods):
/// its session is taken to be gone and a new cookie is asked for.
pub const SILENT_NS: u64 = 3_000_000_000;

/// What a subscription did; plain counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriptionCounts {
    /// Hellos sent.
    pub hellos: u64,
    /// Cookies taken.
    pub cookies: u64,
    /// Subscribes sent (renewals included).
    pub subscribes: u64,
    /// Sessions subscribed to (more than one: the sender restarted).
    pub sessions: u64,
}

/// The cookie in hand.
#[derive(Clone, Copy, Debug)]
struct Held {
    session: u64,
    cookie: CookieTag,
    taken_ns: u64,
}

/// A receiver's subscription to one sender.
#[derive(Debug)]
pub struct Subscription {
    sender: SocketAddr,
    node_id: u64,
    /// splitmix64 state of the Hello nonces.
    seed: u64,
    /// The last Hello's nonce, until a Cookie answers it (`None`: no
    /// Hello outstanding, so no Cookie is taken).
    nonce: Option<u64>,
    held: Option<Held>,
    next_hello_ns: u64,
    hello_wait_ns: u64,
    next_subscribe_ns: u64,
    last_heard_ns: u64,
    leave: bool,
    /// Left for good: nothing more is sent or taken.
    left: bool,
    counts: SubscriptionCounts,
}

impl Subscription {
    /// A subscription of receiver `node_id` to the sender at `sender`;
    /// `seed` (64 random bits) varies the Hello nonces, so that another
    /// host cannot answer them. The first Hello is due at once.
    pub fn new(sender: SocketAddr, node_id: u64, seed: u64) -> Self {
        Subscription {
            sender,
            node_id,
            seed,
            nonce: None,
            held: None,
            next_hello_ns: 0,
            hello_wait_ns: HELLO_WAIT_NS,
            next_subscribe_ns: u64::MAX,
            last_heard_ns: 0,
            leave: false,
            left: false,
            counts: SubscriptionCounts::default(),
        }
    }

    /// Where the subscription goes.
    pub fn sender(&self) -> SocketAddr {
        self.sender
    }

    /// What it did.
    pub fn counts(&self) -> &SubscriptionCounts {
        &self.counts
    }

    /// The session subscribed to, once a cookie came.
    pub fn session(&self) -> Option<u64> {
        self.held.map(|h| h.session)
    }

    /// A datagram that passed the key check came from `from` at `now_ns`.
    pub fn heard(&mut self, now_ns: u64, from: SocketAddr) {
        if from == self.sender {
            self.last_heard_ns = self.last_heard_ns.max(now_ns);
        }
    }

    /// A Cookie from `from` at `now_ns`: taken if it is the sender's
    /// answer to the last Hello and the sender takes subscriptions; the
    /// Subscribe is then due at once.
    pub fn take_cookie(&mut self, now_ns: u64, from: SocketAddr, c: &CookiePacket) -> bool {
        if self.left
            || from != self.sender
            || self.nonce != Some(c.nonce)
            || c.node_id != self.node_id
            || c.offers & OFFER_SUBSCRIBE == 0
        {
            return false;
        }
        if self.held.is_none_or(|h| h.session != c.stream_id) {
            self.counts.sessions += 1;
        }
        self.held = Some(Held {
            session: c.stream_id,
            cookie: c.cookie,
            taken_ns: now_ns,
        });
        self.counts.cookies += 1;
        // An answer spends the nonce: a replayed Cookie is not taken twice.
        self.nonce = None;
        self.last_heard_ns = self.last_heard_ns.max(now_ns);
        self.hello_wait_ns = HELLO_WAIT_NS;
        self.next_hello_ns = now_ns.saturating_add(COOKIE_REFRESH_NS);
        self.next_subscribe_ns = now_ns;
        true
    }

    /// Asks for the subscription to end at the next [`Subscription::poll`]
    /// (a receiver that stops), rather than let its lease run out; after
    /// it nothing is sent and no Cookie taken.
    pub fn leave(&mut self) {
        self.leave = !self.left;
    }

    /// The Hello or Subscribe due at `now_ns`, written into `buf`: its
    /// length, for [`Subscription::sender`]. `None` when nothing is due
    /// (or `buf` is too small).
    pub fn poll(&mut self, now_ns: u64, buf: &mut [u8]) -> Option<usize> {
        if self.left {
            return None;
        }
        if self.leave {
            self.leave = false;
            self.left = true;
            self.nonce = None;
            self.next_subscribe_ns = u64::MAX;
            self.next_hello_ns = u64::MAX;
            let h = self.held.take()?;
            return self.write_subscribe(buf, h, SUBSCRIBE_LEAVE);
        }
        if self
            .held
            .is_some_and(|h| now_ns.saturating_sub(self.last_heard_ns.max(h.taken_ns)) > SILENT_NS)
        {
            // The session went quiet: a new one may be there.
            self.held = None;
            self.next_subscribe_ns = u64::MAX;
            self.next_hello_ns = now_ns;
        }
        // A renewal before a refresh Hello: the lease matters more.
        if let Some(h) = self.held.filter(|_| now_ns >= self.next_subscribe_ns) {
            self.next_subscribe_ns = now_ns.saturating_add(RENEW_NS);
            return self.write_subscribe(buf, h, 0);
        }
        if now_ns >= self.next_hello_ns {
            let nonce = splitmix(&mut self.seed);
            self.nonce = Some(nonce);
            self.counts.hellos += 1;
            let wait = if self.held.is_some() {
                // A refresh: the cookie in hand still holds for a while.
                RENEW_NS
            } else {
                let w = self.hello_wait_ns;
                self.hello_wait_ns = (w * 2).min(HELLO_MAX_WAIT_NS);
                w
            };
            self.next_hello_ns = now_ns.saturating_add(wait);
            let hello = HelloPacket {
                stream_id: ANY_SESSION,
                node_id: self.node_id,
                nonce,
            };
            return protocol::write_hello(buf, &hello);
        }
        None
    }

    fn write_subscribe(&mut self, buf: &mut [u8], h: Held, flags: u32) -> Option<usize> {
        self.counts.subscribes += 1;
        let s = SubscribePacket {
            stream_id: h.session,
            node_id: self.node_id,
            cookie: h.cookie,
            flags,
        };
        protocol::write_subscribe(buf, &s)
    }

    /// When [`Subscription::poll`] has something next, ns.
    pub fn next_ns(&self) -> u64 {
        let silent = self.held.map_or(u64::MAX, |h| {
            self.last_heard_ns
                .max(h.taken_ns)
                .saturating_add(SILENT_NS + 1)
        });
        if self.leave {
            return 0;
        }
        if self.left {
            return u64::MAX;
        }
        self.next_hello_ns.min(self.next_subscribe_ns).min(silent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse, Packet};

    fn sender() -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], 4010))
    }

    fn cookie_for(hello: &HelloPacket, session: u64) -> CookiePacket {
        CookiePacket {
            stream_id: session,
            node_id: hello.node_id,
            nonce: hello.nonce,
            cookie: CookieTag {
                slot: 1,
                mac: [7; 16],
            },
            offers: OFFER_SUBSCRIBE,
        }
    }

    fn poll(s: &mut Subscription, now: u64) -> Option<Packet<'static>> {
        let mut buf = [0u8; 64];
        let n = s.poll(now, &mut buf)?;
        let leaked: &'static [u8] = Box::leak(buf[..n].to_vec().into_boxed_slice());
        Some(parse(leaked).expect("what it writes parses"))
    }

    #[test]
    fn hello_then_subscribe_then_renewals() {
        let mut s = Subscription::new(sender(), 9, 42);
        let Some(Packet::Hello(h)) = poll(&mut s, 0) else {
            panic!("a Hello first");
        };
        assert_eq!(h.stream_id, ANY_SESSION);
        assert!(poll(&mut s, 1).is_none());
        // Unanswered: again after 250 ms, then 500 ms.
        assert!(matches!(
            poll(&mut s, HELLO_WAIT_NS),
            Some(Packet::Hello(_))
        ));
        assert!(poll(&mut s, HELLO_WAIT_NS + 1).is_none());
        let Some(Packet::Hello(h)) = poll(&mut s, 3 * HELLO_WAIT_NS) else {
            panic!("a third Hello");
        };
        // Only the answer to the last Hello, from the sender, is taken.
        let c = cookie_for(&h, 55);
        let elsewhere = SocketAddr::from(([10, 0, 0, 66], 4010));
        assert!(!s.take_cookie(1, elsewhere, &c));
        assert!(!s.take_cookie(
            1,
            sender(),
            &CookiePacket {
                nonce: h.nonce ^ 1,
                ..c
            }
        ));
        assert!(!s.take_cookie(1, sender(), &CookiePacket { offers: 1, ..c }));
        let t = 3 * HELLO_WAIT_NS + 10;
        assert!(s.take_cookie(t, sender(), &c));
        assert!(!s.take_cookie(t, sender(), &c), "a replay is not taken");
        assert_eq!(s.session(), Some(55));
        let Some(Packet::Subscribe(sub)) = poll(&mut s, t) else {
            panic!("a Subscribe at once");
        };
        assert_eq!(
            (sub.stream_id, sub.node_id, sub.cookie, sub.flags),
            (55, 9, c.cookie, 0)
        );
        assert!(poll(&mut s, t + RENEW_NS - 1).is_none());
        s.heard(t + RENEW_NS - 1, sender());
        assert!(matches!(
            poll(&mut s, t + RENEW_NS),
            Some(Packet::Subscribe(_))
        ));
        assert_eq!(s.next_ns(), t + 2 * RENEW_NS);
        // A leave goes at once, and then nothing.
        s.leave();
        assert_eq!(s.next_ns(), 0);
        let Some(Packet::Subscribe(l)) = poll(&mut s, t + RENEW_NS + 5) else {
            panic!("a leave");
        };
        assert_eq!(l.flags, SUBSCRIBE_LEAVE);
        assert!(poll(&mut s, t + 100 * RENEW_NS).is_none());
    }

    #[test]
    fn a_silent_sender_is_looked_for_again_and_a_new_session_taken() {
        let mut s = Subscription::new(sender(), 9, 1);
        let Some(Packet::Hello(h)) = poll(&mut s, 0) else {
            panic!("a Hello");
        };
        assert!(s.take_cookie(0, sender(), &cookie_for(&h, 55)));
        let mut t = 0;
        let mut hello = None;
        while t < 10 * RENEW_NS {
            t += RENEW_NS / 2;
            // Heard until 2 s, then silence.
            if t <= 2 * RENEW_NS {
                s.heard(t, sender());
            }
            if let Some(Packet::Hello(h)) = poll(&mut s, t) {
                hello = Some((t, h));
                break;
            }
        }
        let (t, h) = hello.expect("a Hello after the silence");
        assert!(t > 2 * RENEW_NS + SILENT_NS && t <= 2 * RENEW_NS + SILENT_NS + RENEW_NS);
        assert_eq!(s.session(), None);
        assert!(s.take_cookie(t, sender(), &cookie_for(&h, 56)));
        assert_eq!((s.session(), s.counts().sessions), (Some(56), 2));
    }

    #[test]
    fn the_cookie_is_refreshed_before_the_sender_stops_taking_it() {
        let mut s = Subscription::new(sender(), 9, 1);
        let Some(Packet::Hello(h)) = poll(&mut s, 0) else {
            panic!("a Hello");
        };
        assert!(s.take_cookie(0, sender(), &cookie_for(&h, 55)));
        // As the endpoint does: every 100 ms, poll until nothing is due.
        let mut refresh = None;
        let mut t = 0;
        while t < COOKIE_REFRESH_NS + 2 * RENEW_NS && refresh.is_none() {
            t += RENEW_NS / 10;
            s.heard(t, sender());
            while let Some(p) = poll(&mut s, t) {
                match p {
                    Packet::Hello(h) => refresh = Some((t, h)),
                    Packet::Subscribe(sub) => assert_eq!(sub.stream_id, 55),
                    other => panic!("{other:?} at {t}"),
                }
            }
        }
        let (t, h) = refresh.expect("a refresh Hello");
        assert!(
            (COOKIE_REFRESH_NS..=COOKIE_REFRESH_NS + RENEW_NS / 10).contains(&t),
            "{t}"
        );
        // Subscriptions go on with the old cookie meanwhile, and the
        // answer replaces it.
        assert_eq!(s.session(), Some(55));
        let fresh = CookiePacket {
            cookie: CookieTag {
                slot: 2,
                mac: [8; 16],
            },
            ..cookie_for(&h, 55)
        };
        assert!(s.take_cookie(t + 1, sender(), &fresh));
        let Some(Packet::Subscribe(sub)) = poll(&mut s, t + 1) else {
            panic!("a Subscribe with the fresh cookie");
        };
        assert_eq!(sub.cookie, fresh.cookie);
    }

    #[test]
    fn no_cookie_is_taken_without_a_hello_or_after_a_leave() {
        let mut s = Subscription::new(sender(), 9, 1);
        // Before any Hello: no nonce to match, whatever the Cookie says.
        for nonce in [0, 1, u64::MAX] {
            let c = CookiePacket {
                stream_id: 55,
                node_id: 9,
                nonce,
                cookie: CookieTag::default(),
                offers: OFFER_SUBSCRIBE,
            };
            assert!(!s.take_cookie(0, sender(), &c));
        }
        let Some(Packet::Hello(h)) = poll(&mut s, 0) else {
            panic!("a Hello");
        };
        // The receiver leaves with the Hello unanswered: nothing goes out,
        // and the late answer is not taken.
        s.leave();
        assert!(poll(&mut s, 1).is_none());
        assert!(!s.take_cookie(2, sender(), &cookie_for(&h, 55)));
        assert!(poll(&mut s, 100 * RENEW_NS).is_none());
        assert_eq!(s.next_ns(), u64::MAX);
    }
}

//! Unicast fan-out: the receivers a sender sends its stream to one by one,
//! besides its destination (a multicast group, or one unicast address).
//!
//! A receiver on Wi-Fi wants unicast: multicast there goes out at the
//! lowest basic rate, without the link's acknowledgements and retries, and
//! waits for the next DTIM beacon. Such a receiver subscribes (a
//! [`crate::protocol::SubscribePacket`], carrying the cookie the sender
//! gave its address, docs/design/REPAIR.md), and renews the subscription
//! every [`RENEW_NS`]; the sender sends it everything it sends the group
//! (audio, syncs, status) until the lease ([`LEASE_NS`]) runs out or it
//! leaves.
//!
//! The cookie proves the subscriber receives at the address it names, so
//! nobody can point a stream at a third party. What is left to bound is
//! how much one host can take: at most [`MAX_PER_HOST`] subscriptions per
//! IP address and [`MAX_SUBSCRIBERS`] in all; when full, a new one is
//! refused (never one that is renewed evicted), and counted.
//!
//! Besides subscribers, a sender can be given unicast destinations in
//! its configuration (`destination.ip` as a list, WaveSync-style: a
//! receiver that cannot subscribe, or a fixed installation): up to
//! [`MAX_LISTED`], each sent the same copies, without cookie or lease
//! (whoever configures the sender vouches for them).
//!
//! Fixed capacity, no allocation after construction.

use std::net::{SocketAddr, SocketAddrV4};

/// Subscribers a sender serves at once. Each costs a copy of the stream
/// (3.3 Mbit/s for 48 kHz stereo F32); 16 rooms is a large house.
pub const MAX_SUBSCRIBERS: usize = 16;
/// Unicast destinations a sender's configuration may list besides its
/// destination (`destination.ip`'s further entries).
pub const MAX_LISTED: usize = 8;
/// Slots [`Fanout::slot`] runs over: the listed destinations, then the
/// subscribers.
pub const SLOTS: usize = MAX_LISTED + MAX_SUBSCRIBERS;
/// Subscriptions from one IP address (several receivers on one host,
/// each with its own control port); more are refused, so that one host
/// cannot take every place.
pub const MAX_PER_HOST: usize = 4;
/// How long a subscription lasts without renewal, ns (5 s): a receiver
/// that went away stops costing a stream within this.
pub const LEASE_NS: u64 = 5_000_000_000;
/// How often a receiver renews, ns (1 s): four renewals may be lost in a
/// row before the lease runs out.
pub const RENEW_NS: u64 = 1_000_000_000;

/// One subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Subscriber {
    addr: SocketAddr,
    node_id: u64,
    expires_ns: u64,
}

/// What became of subscriptions; plain counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FanoutCounts {
    /// Subscriptions taken (new addresses).
    pub joined: u64,
    /// Renewals of a live subscription.
    pub renewed: u64,
    /// Subscriptions ended by a leave.
    pub left: u64,
    /// Subscriptions whose lease ran out.
    pub expired: u64,
    /// Refused: the table or the host's share was full.
    pub refused_full: u64,
    /// Refused: no valid cookie for the address, or another session's.
    pub refused_cookie: u64,
}

/// The sender's subscribers.
#[derive(Debug)]
pub struct Fanout {
    listed: [Option<SocketAddr>; MAX_LISTED],
    subs: [Option<Subscriber>; MAX_SUBSCRIBERS],
    counts: FanoutCounts,
}

impl Default for Fanout {
    fn default() -> Self {
        Fanout {
            listed: [None; MAX_LISTED],
            subs: [None; MAX_SUBSCRIBERS],
            counts: FanoutCounts::default(),
        }
    }
}

impl Fanout {
    /// What became of subscriptions.
    pub fn counts(&self) -> &FanoutCounts {
        &self.counts
    }

    /// Live subscribers (not counting the listed destinations).
    pub fn len(&self) -> usize {
        self.subs.iter().flatten().count()
    }

    /// Whether nothing is owed a copy: no subscriber, nothing listed.
    pub fn is_empty(&self) -> bool {
        self.subs.iter().all(Option::is_none) && self.listed.iter().all(Option::is_none)
    }

    /// Sends copies to `to` from now on, besides the subscribers, in place
    /// of what was listed before: the configured unicast destinations.
    ///
    /// # Errors
    /// More than [`MAX_LISTED`] addresses (nothing is changed).
    pub fn list(&mut self, to: &[SocketAddrV4]) -> Result<(), String> {
        if to.len() > MAX_LISTED {
            return Err(format!(
                "{} unicast destinations listed; at most {MAX_LISTED}",
                to.len()
            ));
        }
        self.listed = [None; MAX_LISTED];
        for (slot, a) in self.listed.iter_mut().zip(to) {
            *slot = Some((*a).into());
        }
        Ok(())
    }

    /// The listed destinations ([`Fanout::list`]).
    pub fn listed(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.listed.iter().flatten().copied()
    }

    /// A Subscribe from `from` for receiver `node_id` at `now_ns`, its
    /// cookie already checked (`valid`). Takes or renews the subscription,
    /// or ends it (`leave`). Returns whether the address is subscribed
    /// now.
    pub fn subscribe(
        &mut self,
        now_ns: u64,
        from: SocketAddr,
        node_id: u64,
        valid: bool,
        leave: bool,
    ) -> bool {
        if !valid {
            self.counts.refused_cookie += 1;
            return false;
        }
        self.expire(now_ns);
        let expires_ns = now_ns.saturating_add(LEASE_NS);
        if let Some(slot) = self
            .subs
            .iter_mut()
            .find(|s| s.is_some_and(|s| s.addr == from))
        {
            if leave {
                *slot = None;
                self.counts.left += 1;
                return false;
            }
            *slot = Some(Subscriber {
                addr: from,
                node_id,
                expires_ns,
            });
            self.counts.renewed += 1;
            return true;
        }
        if leave {
            return false;
        }
        let same_host = self
            .subs
            .iter()
            .flatten()
            .filter(|s| s.addr.ip() == from.ip())
            .count();
        let free = self.subs.iter_mut().find(|s| s.is_none());
        match free {
            Some(slot) if same_host < MAX_PER_HOST => {
                *slot = Some(Subscriber {
                    addr: from,
                    node_id,
                    expires_ns,
                });
                self.counts.joined += 1;
                true
            }
            _ => {
                self.counts.refused_full += 1;
                false
            }
        }
    }

    /// Ends the subscriptions whose lease ran out by `now_ns`.
    pub fn expire(&mut self, now_ns: u64) {
        for slot in &mut self.subs {
            if slot.is_some_and(|s| s.expires_ns <= now_ns) {
                *slot = None;
                self.counts.expired += 1;
            }
        }
    }

    /// The `i`-th slot's address (`None` for an empty slot); slots run
    /// `0..SLOTS`, the listed destinations first. For a send loop that
    /// must not hold a borrow across sends.
    pub fn slot(&self, i: usize) -> Option<SocketAddr> {
        match i.checked_sub(MAX_LISTED) {
            None => self.listed[i],
            Some(j) => self.subs.get(j).copied().flatten().map(|s| s.addr),
        }
    }

    /// Every address owed a copy: the listed ones, then the subscribers.
    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.listed()
            .chain(self.subs.iter().flatten().map(|s| s.addr))
    }

    /// When the next lease runs out, ns (`u64::MAX`: none).
    pub fn next_expiry_ns(&self) -> u64 {
        self.subs
            .iter()
            .flatten()
            .map(|s| s.expires_ns)
            .min()
            .unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(host: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, host], port))
    }

    #[test]
    fn a_subscription_needs_a_cookie_lasts_its_lease_and_is_renewed() {
        let mut f = Fanout::default();
        assert!(!f.subscribe(0, at(2, 5000), 7, false, false));
        assert_eq!(f.counts().refused_cookie, 1);
        assert!(f.is_empty());
        assert!(f.subscribe(0, at(2, 5000), 7, true, false));
        assert_eq!(f.addrs().collect::<Vec<_>>(), vec![at(2, 5000)]);
        assert_eq!(f.next_expiry_ns(), LEASE_NS);
        // Renewed before it runs out: kept, once.
        assert!(f.subscribe(LEASE_NS - 1, at(2, 5000), 7, true, false));
        assert_eq!(f.len(), 1);
        assert_eq!(f.counts().renewed, 1);
        f.expire(2 * LEASE_NS - 2);
        assert_eq!(f.len(), 1);
        f.expire(2 * LEASE_NS - 1);
        assert!(f.is_empty());
        assert_eq!(f.counts().expired, 1);
    }

    #[test]
    fn a_leave_ends_it_at_once() {
        let mut f = Fanout::default();
        assert!(f.subscribe(0, at(2, 5000), 7, true, false));
        assert!(f.subscribe(0, at(3, 5000), 8, true, false));
        // A leave from an address that is not subscribed changes nothing.
        assert!(!f.subscribe(1, at(4, 5000), 9, true, true));
        assert_eq!(f.len(), 2);
        assert!(!f.subscribe(1, at(2, 5000), 7, true, true));
        assert_eq!(f.addrs().collect::<Vec<_>>(), vec![at(3, 5000)]);
        assert_eq!(f.counts().left, 1);
    }

    #[test]
    fn one_host_cannot_take_every_place_and_a_full_table_refuses_newcomers() {
        let mut f = Fanout::default();
        for port in 0..10 {
            f.subscribe(0, at(66, 6000 + port), 1, true, false);
        }
        assert_eq!(f.len(), MAX_PER_HOST);
        assert_eq!(f.counts().refused_full, 10 - MAX_PER_HOST as u64);
        let mut host = 1;
        while f.len() < MAX_SUBSCRIBERS {
            host += 1;
            assert!(f.subscribe(0, at(host, 5000), 2, true, false));
        }
        assert!(!f.subscribe(0, at(200, 5000), 3, true, false));
        // Every live one is renewed, none evicted.
        assert!(f.subscribe(2, at(2, 5000), 2, true, false));
        assert!(f.subscribe(2, at(66, 6000), 1, true, false));
        assert_eq!(f.len(), MAX_SUBSCRIBERS);
        // Once leases run out, newcomers get in.
        assert!(f.subscribe(LEASE_NS + 1, at(200, 5000), 3, true, false));
        assert_eq!(f.len(), 3);
        assert_eq!((0..MAX_SUBSCRIBERS).filter_map(|i| f.slot(i)).count(), 3);
    }

    #[test]
    fn listed_destinations_get_copies_without_a_lease_and_before_subscribers() {
        let mut f = Fanout::default();
        assert!(f.is_empty());
        let v4 = |h: u8| SocketAddrV4::new([10, 0, 0, h].into(), 1530);
        f.list(&[v4(20), v4(21)]).unwrap();
        assert!(!f.is_empty());
        assert_eq!(f.len(), 0, "listed ones are not subscribers");
        assert!(f.subscribe(0, at(30, 4000), 7, true, false));
        f.expire(10 * LEASE_NS);
        let all: Vec<_> = (0..SLOTS).filter_map(|i| f.slot(i)).collect();
        assert_eq!(
            all,
            vec![at(20, 1530), at(21, 1530)],
            "the subscriber's lease ran out, not theirs"
        );
        assert_eq!(f.addrs().collect::<Vec<_>>(), all);
        let many: Vec<_> = (0..=MAX_LISTED as u8).map(v4).collect();
        assert!(f.list(&many).unwrap_err().contains("at most 8"));
        assert_eq!(f.listed().count(), 2, "unchanged by a refused list");
        f.list(&[]).unwrap();
        assert!(f.is_empty());
    }
}

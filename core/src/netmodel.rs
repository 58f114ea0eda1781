//! Deterministic network impairments: what one direction of one link does
//! to each datagram. One implementation for the simulator ([`crate::sim`])
//! and, later, the lab's relays, so that a scenario means the same thing
//! in both. Same seed, same losses, delays, stalls and outages.
//!
//! A [`Path`] applies, per datagram, in this order:
//!
//! 1. [`Outages`]: inside one, the link carries nothing.
//! 2. Loss: independent ([`NetModel::loss`]), fixed-length bursts
//!    ([`NetModel::burst_start`]) and [`GilbertElliott`].
//! 3. [`Spikes`]: a stalled link holds what is sent until the stall ends.
//! 4. [`BeaconGrid`]: group datagrams to a power-saving Wi-Fi station wait
//!    for the next beacon.
//! 5. Delay, jitter and reordering.
//!
//! Times are ns as `f64` (the simulator's true time), sizes bytes of UDP
//! payload. The stall and outage schedules are drawn lazily, forwards: a
//! datagram sent a little before one already through (an event loop that
//! stamps a reply ahead of its turn) meets the link as it was at the later
//! time.
//!
//! Per-datagram draws (loss, jitter) come from the [`Rng`] the caller
//! hands in: one per path makes paths independent (a receiver's losses do
//! not move when another receiver joins), one shared reproduces a single
//! random stream. The stall and outage schedules have their own
//! generators, seeded per link: both directions of a link built with the
//! same link seed stall and go dark together, and the schedules do not
//! move when the traffic (and so the number of per-datagram draws)
//! changes.

/// Bytes an IPv4 and a UDP header add to a datagram's payload on the air
/// ([`BeaconGrid`] airtime).
pub const IP_UDP_HEADER_BYTES: usize = 28;

/// How much later a duplicated datagram's copy arrives, ns
/// ([`Path::duplicate`]).
pub const DUPLICATE_LAG_NS: f64 = 50_000.0;

/// xorshift64* (Marsaglia's xorshift with Vigna's multiplicative scramble,
/// "An experimental exploration of Marsaglia's xorshift generators,
/// scrambled", 2016): small, fast, deterministic, and plenty for
/// impairments. Not for anything secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value: 0, the one state xorshift
    /// cannot leave, is replaced by a constant).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// A uniform draw in [0, 1), 53 bits.
    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`; draws nothing when `p ≤ 0`, so that a
    /// disabled impairment leaves the sequence of draws unchanged.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.uniform() < p
    }

    /// A uniform draw in [`lo`, `hi`) (`lo` when they are equal; one draw
    /// either way).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + self.uniform() * (hi - lo)
    }

    /// An exponential draw with mean `mean` (inverse transform:
    /// `−mean·ln(1 − u)`); the gap between events of a Poisson process.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.uniform()).ln()
    }
}

/// A seed for stream `stream` of `seed`: SplitMix64's finaliser (Steele,
/// Lea and Flood, "Fast splittable pseudorandom number generators", 2014)
/// of their mix, so that neighbouring streams (receiver 1, receiver 2) get
/// unrelated generators.
pub fn seed_for(seed: u64, stream: u64) -> u64 {
    let mut z = seed
        .wrapping_add(stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// True with probability `p`, drawing only when the outcome is uncertain.
fn draw(rng: &mut Rng, p: f64) -> bool {
    p >= 1.0 || rng.chance(p)
}

/// The Gilbert–Elliott two-state loss channel (Gilbert 1960, "Capacity of
/// a burst-noise channel"; Elliott 1963, "Estimates of error rates for
/// codes on burst-noise channels"), per datagram. In state Good a datagram
/// is lost with probability `loss_good`, in Bad with `loss_bad`; after
/// each datagram the chain moves Good → Bad with probability `p` and
/// Bad → Good with `r`. Stationary: `π_B = p/(p + r)`, loss
/// `π_B·loss_bad + (1 − π_B)·loss_good`, a stay in Bad lasts `1/r`
/// datagrams on average (RFC 3611 §4.7.2 reports the observable
/// counterparts: burst and gap densities and durations). Gilbert's original model (`loss_good = 0`,
/// `loss_bad = 1`) loses exactly the Bad stays: mean loss burst `1/r`.
#[derive(Clone, Debug, PartialEq)]
pub struct GilbertElliott {
    /// P(Good → Bad) per datagram.
    pub p: f64,
    /// P(Bad → Good) per datagram.
    pub r: f64,
    /// Loss probability in Good.
    pub loss_good: f64,
    /// Loss probability in Bad.
    pub loss_bad: f64,
    bad: bool,
}

impl GilbertElliott {
    /// A channel with these transition and loss probabilities, in Good.
    pub fn new(p: f64, r: f64, loss_good: f64, loss_bad: f64) -> Self {
        GilbertElliott {
            p,
            r,
            loss_good,
            loss_bad,
            bad: false,
        }
    }

    /// Gilbert's channel (`loss_good = 0`, `loss_bad = 1`) losing the
    /// fraction `loss` of datagrams in bursts of `mean_burst` datagrams on
    /// average: `r = 1/mean_burst`, `p = loss·r/(1 − loss)` (from
    /// `π_B = p/(p + r) = loss`). 3 % in bursts of 2.5: `r = 0.4`,
    /// `p = 0.01237`.
    ///
    /// # Panics
    /// If `loss` is outside [0, 1) or `mean_burst` is below 1 (a burst is
    /// at least one datagram).
    pub fn from_loss(loss: f64, mean_burst: f64) -> Self {
        assert!((0.0..1.0).contains(&loss), "loss {loss} outside [0, 1)");
        assert!(mean_burst >= 1.0, "mean burst {mean_burst} below 1");
        let r = 1.0 / mean_burst;
        GilbertElliott::new(loss * r / (1.0 - loss), r, 0.0, 1.0)
    }

    /// Whether the next datagram is lost: drawn in the current state, then
    /// the chain steps.
    pub fn lose(&mut self, rng: &mut Rng) -> bool {
        let (loss, leave) = if self.bad {
            (self.loss_bad, self.r)
        } else {
            (self.loss_good, self.p)
        };
        let lost = draw(rng, loss);
        if draw(rng, leave) {
            self.bad = !self.bad;
        }
        lost
    }

    /// Whether the chain is in Bad.
    pub fn bad(&self) -> bool {
        self.bad
    }

    /// The stationary share of datagrams in Bad, `π_B = p/(p + r)`.
    pub fn bad_share(&self) -> f64 {
        if self.p + self.r > 0.0 {
            self.p / (self.p + self.r)
        } else {
            0.0
        }
    }

    /// The stationary loss rate, `π_B·loss_bad + (1 − π_B)·loss_good`.
    pub fn loss_rate(&self) -> f64 {
        let b = self.bad_share();
        b * self.loss_bad + (1.0 - b) * self.loss_good
    }

    /// The mean stay in Bad, datagrams: `1/r` (the mean loss burst of
    /// Gilbert's channel).
    pub fn mean_burst(&self) -> f64 {
        1.0 / self.r
    }
}

/// Delay spikes: the link stalls (a Wi-Fi station scanning, a retry storm)
/// and holds what is sent until the stall ends, then releases it in order.
/// Stalls start as a Poisson process in the time between them: the gap
/// from one's end to the next one's start is exponential with mean
/// `mean_gap_ns`; each lasts uniform in [`min_hold_ns`, `max_hold_ns`).
/// The first gap starts at time 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Spikes {
    /// Mean gap between stalls, ns.
    pub mean_gap_ns: f64,
    /// Shortest stall, ns.
    pub min_hold_ns: f64,
    /// Longest stall, ns.
    pub max_hold_ns: f64,
    rng: Rng,
    start: f64,
    end: f64,
}

impl Spikes {
    /// Stalls with this schedule, drawn from `seed`.
    ///
    /// # Panics
    /// If `mean_gap_ns` is not positive, or the hold range is reversed or
    /// negative.
    pub fn new(mean_gap_ns: f64, min_hold_ns: f64, max_hold_ns: f64, seed: u64) -> Self {
        assert!(mean_gap_ns > 0.0, "mean gap {mean_gap_ns} ns not positive");
        assert!(
            (0.0..=max_hold_ns).contains(&min_hold_ns),
            "hold range {min_hold_ns}..{max_hold_ns} ns"
        );
        Spikes {
            mean_gap_ns,
            min_hold_ns,
            max_hold_ns,
            rng: Rng::new(seed_for(seed, 0x5_b1e5)),
            start: 0.0,
            end: 0.0,
        }
    }

    /// The same stalls drawn from another seed, from time 0.
    pub fn reseeded(&self, seed: u64) -> Self {
        Spikes::new(self.mean_gap_ns, self.min_hold_ns, self.max_hold_ns, seed)
    }

    /// When a datagram sent at `t_ns` goes on, ns: `t_ns`, or the end of
    /// the stall it falls in. Never earlier for a later `t_ns`, so held
    /// datagrams leave in the order they were sent. `t_ns` must not
    /// decrease between calls.
    pub fn release(&mut self, t_ns: f64) -> f64 {
        while t_ns >= self.end {
            self.start = self.end + self.rng.exp(self.mean_gap_ns);
            self.end = self.start + self.rng.range(self.min_hold_ns, self.max_hold_ns);
        }
        if t_ns >= self.start {
            self.end
        } else {
            t_ns
        }
    }
}

/// Outages: the link carries nothing (both directions, when both paths of
/// a link share the link seed). The first starts at `first_ns`; each next
/// one `every_ns` after the one before, start to start (uniform in the
/// range; a fixed period when both ends are equal); each lasts `len_ns`
/// (uniform in the range).
#[derive(Clone, Debug, PartialEq)]
pub struct Outages {
    /// Time from one outage's start to the next one's, ns: `(min, max)`.
    pub every_ns: (f64, f64),
    /// How long one lasts, ns: `(min, max)`.
    pub len_ns: (f64, f64),
    /// When the first starts, ns.
    pub first_ns: f64,
    rng: Rng,
    start: f64,
    end: f64,
    next: f64,
}

impl Outages {
    /// Outages on this schedule, drawn from `seed`.
    ///
    /// # Panics
    /// If a range is reversed or the period is not positive.
    pub fn new(every_ns: (f64, f64), len_ns: (f64, f64), first_ns: f64, seed: u64) -> Self {
        assert!(
            every_ns.0 > 0.0 && every_ns.0 <= every_ns.1,
            "period {every_ns:?} ns"
        );
        assert!(
            len_ns.0 >= 0.0 && len_ns.0 <= len_ns.1,
            "length {len_ns:?} ns"
        );
        Outages {
            every_ns,
            len_ns,
            first_ns,
            rng: Rng::new(seed_for(seed, 0x0a7a6e)),
            start: f64::NEG_INFINITY,
            end: f64::NEG_INFINITY,
            next: first_ns,
        }
    }

    /// An outage of `len_ns` every `every_ns`, the first at `every_ns`.
    pub fn every(every_ns: f64, len_ns: f64) -> Self {
        Outages::new((every_ns, every_ns), (len_ns, len_ns), every_ns, 0)
    }

    /// The same schedule drawn from another seed, from the first outage.
    pub fn reseeded(&self, seed: u64) -> Self {
        Outages::new(self.every_ns, self.len_ns, self.first_ns, seed)
    }

    /// Whether time `t_ns` falls in an outage. `t_ns` must not decrease
    /// between calls.
    pub fn cut(&mut self, t_ns: f64) -> bool {
        while t_ns >= self.end {
            self.start = self.next;
            self.end = self.start + self.rng.range(self.len_ns.0, self.len_ns.1);
            self.next = self.start + self.rng.range(self.every_ns.0, self.every_ns.1);
        }
        t_ns >= self.start
    }
}

/// Group datagrams to a power-saving Wi-Fi station: the access point
/// buffers them until the next DTIM beacon (DTIM period 1 here), then
/// sends them back to back at the basic rate, which every station
/// decodes (IEEE 802.11 power management in an infrastructure BSS).
/// Beacons fall every `interval_ns` from `phase_ns`. Past `queue`
/// datagrams waiting for one beacon, more are dropped. Airtime counts the payload and [`IP_UDP_HEADER_BYTES`],
/// not the MAC header or preamble: 1468 B of payload take 2.0 ms at
/// 6 Mbit/s.
#[derive(Clone, Debug, PartialEq)]
pub struct BeaconGrid {
    /// Beacon interval, ns (100 TU of 1024 µs: 102.4 ms).
    pub interval_ns: f64,
    /// Time of one beacon, ns (the grid is `phase_ns + k·interval_ns`).
    pub phase_ns: f64,
    /// Rate group frames leave at, bit/s (6 Mbit/s: OFDM's lowest basic
    /// rate).
    pub rate_bps: f64,
    /// Datagrams the access point buffers for one beacon, packets.
    pub queue: usize,
    beacon: f64,
    queued: usize,
    air_free: f64,
}

impl BeaconGrid {
    /// The usual grid: 102.4 ms, 6 Mbit/s, 64 datagrams, beacons at
    /// `phase_ns + k·102.4 ms`.
    pub fn new(phase_ns: f64) -> Self {
        BeaconGrid::with(102_400_000.0, phase_ns, 6e6, 64)
    }

    /// A grid with every figure given (units as the fields').
    pub fn with(interval_ns: f64, phase_ns: f64, rate_bps: f64, queue: usize) -> Self {
        BeaconGrid {
            interval_ns,
            phase_ns,
            rate_bps,
            queue,
            beacon: f64::NEG_INFINITY,
            queued: 0,
            air_free: f64::NEG_INFINITY,
        }
    }

    /// Airtime of a datagram of `bytes` of payload, ns.
    pub fn airtime_ns(&self, bytes: usize) -> f64 {
        (bytes + IP_UDP_HEADER_BYTES) as f64 * 8.0 / self.rate_bps * 1e9
    }

    /// When a group datagram of `bytes` that reaches the access point at
    /// `t_ns` has been sent to the station, ns (the end of its airtime),
    /// or `None` if the buffer for its beacon is full. `t_ns` must not
    /// decrease between calls.
    pub fn depart(&mut self, t_ns: f64, bytes: usize) -> Option<f64> {
        let k = ((t_ns - self.phase_ns) / self.interval_ns).ceil();
        let beacon = self.phase_ns + k * self.interval_ns;
        if beacon != self.beacon {
            self.beacon = beacon;
            self.queued = 0;
        }
        if self.queued >= self.queue {
            return None;
        }
        self.queued += 1;
        // An overloaded air carries the last beacon's frames past this one.
        let start = beacon.max(self.air_free);
        self.air_free = start + self.airtime_ns(bytes);
        Some(self.air_free)
    }
}

/// The impairments of one direction of one link. The fields from
/// `delay_ns` to `duplicate` are the simulator's original model; the
/// options add burst loss, stalls, outages and the Wi-Fi beacon grid.
#[derive(Clone, Debug, PartialEq)]
pub struct NetModel {
    /// Fixed one-way delay, ns.
    pub delay_ns: f64,
    /// Extra queueing delay, uniform in [`jitter_min_ns`, `jitter_max_ns`].
    pub jitter_min_ns: f64,
    /// See `jitter_min_ns`.
    pub jitter_max_ns: f64,
    /// Probability a datagram is lost outside bursts.
    pub loss: f64,
    /// Probability per datagram of entering a loss burst.
    pub burst_start: f64,
    /// Datagrams lost in a burst.
    pub burst_len: u32,
    /// Probability a datagram is held back by an extra `reorder_ns`.
    pub reorder: f64,
    /// Extra delay of a reordered datagram, ns.
    pub reorder_ns: f64,
    /// Probability a datagram is delivered twice ([`Path::duplicate`]).
    pub duplicate: f64,
    /// Gilbert–Elliott loss, besides `loss` and the bursts.
    pub ge: Option<GilbertElliott>,
    /// Stalls; their schedule is drawn from the path's link seed.
    pub spikes: Option<Spikes>,
    /// Outages; their schedule is drawn from the path's link seed.
    pub outages: Option<Outages>,
    /// The beacon grid group datagrams wait for.
    pub beacon: Option<BeaconGrid>,
    /// Mean of an exponential extra delay, ns (0: none): the scheduling
    /// noise of the hosts at each end, which blurs the floor that the
    /// uniform jitter alone leaves sharp. Measured in the lab's `wifi`
    /// case (2-core VM, user-space wires; each direction's delays from
    /// the receivers' time points against the test clocks' truth): 0.6–1.3
    /// % of the datagrams lie within 50 µs of their direction's least delay
    /// where a sharp floor would put 1.7 %, as an exponential of mean
    /// ~30 µs does (~80 µs before bark-lab-wire counted delays from its
    /// kernel receive stamps).
    pub fuzz_ns: f64,
}

impl NetModel {
    /// A clean wired LAN: `delay` ns plus up to `jitter` ns.
    pub fn wired(delay: f64, jitter: f64) -> Self {
        NetModel {
            delay_ns: delay,
            jitter_min_ns: 0.0,
            jitter_max_ns: jitter,
            loss: 0.0,
            burst_start: 0.0,
            burst_len: 0,
            reorder: 0.0,
            reorder_ns: 0.0,
            duplicate: 0.0,
            ge: None,
            spikes: None,
            outages: None,
            beacon: None,
            fuzz_ns: 0.0,
        }
    }

    /// One Wi-Fi station's own link as issue 14 models it, for the
    /// simulator's `wifi` scenario and the lab's bark-lab-wire alike:
    /// 1.5 ms plus 0–3 ms, Gilbert–Elliott loss of 3 % in bursts of 2.5
    /// datagrams ([`GilbertElliott::from_loss`]), stalls of 20–200 ms
    /// about every 3 s ([`Spikes`]), and a 150 ms outage every 5 s, the
    /// first at `first_outage_ns` (give each station its own phase). No
    /// beacon grid: the profile streams unicast, which is not held for
    /// beacons. Figures: the measurements of home Wi-Fi (a scan or
    /// a microwave oven stalls a link for 100–200 ms).
    pub fn wifi_station(first_outage_ns: f64) -> Self {
        NetModel {
            ge: Some(GilbertElliott::from_loss(0.03, 2.5)),
            spikes: Some(Spikes::new(3e9, 20e6, 200e6, 0)),
            outages: Some(Outages::new((5e9, 5e9), (150e6, 150e6), first_outage_ns, 0)),
            ..NetModel::wired(1.5e6, 3e6)
        }
    }
}

/// What a path did, datagrams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathStats {
    /// Datagrams offered.
    pub sent: u64,
    /// Dropped inside an outage.
    pub cut: u64,
    /// Dropped by a loss model.
    pub lost: u64,
    /// Dropped because the beacon buffer was full.
    pub overflow: u64,
    /// Held by a stall (and delivered).
    pub held: u64,
}

impl PathStats {
    /// Every datagram dropped, for whatever reason.
    pub fn dropped(&self) -> u64 {
        self.cut + self.lost + self.overflow
    }
}

/// One direction of one link, with its state: the model's loss chain,
/// stall and outage schedules and beacon buffer.
#[derive(Clone, Debug)]
pub struct Path {
    model: NetModel,
    /// Datagrams still to lose in the current fixed-length burst.
    burst: u32,
    /// The latest send time seen, ns: the schedules only go forwards.
    latest: f64,
    stats: PathStats,
}

impl Path {
    /// A path with `model`, its stall and outage schedules drawn from
    /// `link_seed` (give both directions of a link the same one).
    pub fn new(model: &NetModel, link_seed: u64) -> Self {
        let mut model = model.clone();
        model.spikes = model.spikes.map(|s| s.reseeded(link_seed));
        model.outages = model.outages.map(|o| o.reseeded(link_seed));
        Path {
            model,
            burst: 0,
            latest: f64::NEG_INFINITY,
            stats: PathStats::default(),
        }
    }

    /// The model, with its state.
    pub fn model(&self) -> &NetModel {
        &self.model
    }

    /// What the path did so far.
    pub fn stats(&self) -> &PathStats {
        &self.stats
    }

    /// When a datagram of `bytes` sent at `t_ns` arrives, ns, or `None` if
    /// it is lost; per-datagram draws from `rng`. `group`: sent to a group
    /// address (only those wait for the beacon grid). The draws for the
    /// original fields come in the simulator's original order; the options
    /// draw nothing when off.
    pub fn transit(&mut self, rng: &mut Rng, t_ns: f64, bytes: usize, group: bool) -> Option<f64> {
        self.stats.sent += 1;
        // Where the schedules are looked up (they cannot go back).
        self.latest = self.latest.max(t_ns);
        let at = self.latest;
        if let Some(o) = self.model.outages.as_mut() {
            if o.cut(at) {
                self.stats.cut += 1;
                return None;
            }
        }
        if self.lose(rng) {
            self.stats.lost += 1;
            return None;
        }
        let mut t = t_ns;
        if let Some(s) = self.model.spikes.as_mut() {
            let released = s.release(at);
            if released > at {
                t = released;
                self.stats.held += 1;
            }
        }
        if group {
            if let Some(b) = self.model.beacon.as_mut() {
                let Some(sent) = b.depart(t.max(at), bytes) else {
                    self.stats.overflow += 1;
                    return None;
                };
                t = sent;
            }
        }
        let m = &self.model;
        let mut d =
            m.delay_ns + m.jitter_min_ns + rng.uniform() * (m.jitter_max_ns - m.jitter_min_ns);
        if rng.chance(m.reorder) {
            d += m.reorder_ns;
        }
        if m.fuzz_ns > 0.0 {
            d += rng.exp(m.fuzz_ns);
        }
        Some(t + d)
    }

    /// Whether the loss models take the next datagram.
    fn lose(&mut self, rng: &mut Rng) -> bool {
        if self.burst > 0 {
            self.burst -= 1;
            return true;
        }
        if rng.chance(self.model.burst_start) {
            self.burst = self.model.burst_len.saturating_sub(1);
            return true;
        }
        if rng.chance(self.model.loss) {
            return true;
        }
        match self.model.ge.as_mut() {
            Some(ge) => ge.lose(rng),
            None => false,
        }
    }

    /// Whether a datagram that got through arrives twice (the copy
    /// [`DUPLICATE_LAG_NS`] later); drawn from `rng`.
    pub fn duplicate(&self, rng: &mut Rng) -> bool {
        rng.chance(self.model.duplicate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loss rate and mean loss burst over `n` datagrams of `ge`.
    fn measure(ge: &mut GilbertElliott, rng: &mut Rng, n: usize) -> (f64, f64) {
        let (mut lost, mut bursts, mut prev) = (0u64, 0u64, false);
        for _ in 0..n {
            let l = ge.lose(rng);
            lost += l as u64;
            bursts += (l && !prev) as u64;
            prev = l;
        }
        (lost as f64 / n as f64, lost as f64 / bursts as f64)
    }

    #[test]
    fn gilbert_from_loss_gives_the_asked_loss_and_burst() {
        let mut ge = GilbertElliott::from_loss(0.03, 2.5);
        assert!((ge.r - 0.4).abs() < 1e-12);
        assert!((ge.p - 0.012_371).abs() < 1e-6, "p = {}", ge.p);
        assert!((ge.loss_rate() - 0.03).abs() < 1e-12);
        assert!((ge.mean_burst() - 2.5).abs() < 1e-12);
        // About 12 000 bursts of geometric length (variance 3.75): the
        // mean's standard deviation is 0.018, the loss's 0.0003, so the
        // bounds are about 2.5 and 3 sigma. The seed is fixed (the test is
        // exact); over seeds 1..40, two miss the burst bound (by 0.004 and
        // 0.005), none the loss bound.
        let (loss, burst) = measure(&mut ge, &mut Rng::new(1), 1_000_000);
        assert!((loss - 0.03).abs() <= 0.001, "loss {loss}");
        assert!((burst - 2.5).abs() <= 0.05, "mean burst {burst}");
    }

    /// The plan's other operating points come out too (not just the one
    /// the constructor was tuned on), and Elliott's lossy Good state adds
    /// its share.
    #[test]
    fn gilbert_elliott_matches_its_stationary_figures() {
        for (loss, burst) in [(0.02, 2.0), (0.05, 3.0)] {
            let mut ge = GilbertElliott::from_loss(loss, burst);
            let (l, b) = measure(&mut ge, &mut Rng::new(11), 1_000_000);
            assert!((l - loss).abs() <= 0.0015, "{loss}/{burst}: loss {l}");
            assert!((b - burst).abs() <= 0.08, "{loss}/{burst}: burst {b}");
        }
        let mut ge = GilbertElliott::new(0.01, 0.2, 0.01, 0.5);
        let want = ge.loss_rate();
        assert!((want - (0.01 / 0.21 * 0.5 + 0.2 / 0.21 * 0.01)).abs() < 1e-12);
        let (l, _) = measure(&mut ge, &mut Rng::new(3), 1_000_000);
        assert!((l - want).abs() <= 0.002, "loss {l}, want {want}");
    }

    fn wifi() -> NetModel {
        NetModel {
            ge: Some(GilbertElliott::from_loss(0.03, 2.5)),
            spikes: Some(Spikes::new(3e9, 20e6, 200e6, 0)),
            outages: Some(Outages::every(5e9, 150e6)),
            beacon: Some(BeaconGrid::new(0.0)),
            fuzz_ns: 0.0,
            reorder: 0.01,
            reorder_ns: 3e6,
            duplicate: 0.01,
            ..NetModel::wired(1.5e6, 3e6)
        }
    }

    /// Every arrival (or loss) of 20 s of a stream through a path.
    fn trace(seed: u64, link: u64) -> Vec<Option<f64>> {
        let mut p = Path::new(&wifi(), link);
        let mut rng = Rng::new(seed);
        (0..20 * 272)
            .map(|k| {
                let a = p.transit(&mut rng, k as f64 * 3.667e6, 1468, true);
                p.duplicate(&mut rng);
                a
            })
            .collect()
    }

    #[test]
    fn a_seed_repeats_exactly_and_another_differs() {
        let a = trace(42, 9);
        // (Not `assert_eq!`: thousands of arrivals are no message.)
        assert!(a == trace(42, 9), "the same seeds differ");
        assert!(a != trace(43, 9), "another generator, the same arrivals");
        assert!(a != trace(42, 10), "another link seed, the same arrivals");
        assert!(a.iter().any(Option::is_none) && a.iter().any(Option::is_some));
    }

    #[test]
    fn spikes_hold_and_release_in_order() {
        let mut s = Spikes::new(1e9, 20e6, 200e6, 5);
        let (mut held, mut last, mut stalls) = (0, 0.0, 0);
        let mut in_stall = false;
        // 1 ms steps over 100 s.
        for k in 0..100_000 {
            let t = k as f64 * 1e6;
            let out = s.release(t);
            assert!(out >= t, "released before it was sent");
            assert!(out >= last, "released out of order at {t}");
            assert!(out - t <= 200e6, "held longer than the longest stall");
            if out > t {
                held += 1;
                stalls += !in_stall as u32;
            }
            in_stall = out > t;
            last = out;
        }
        // About 100 s / (1 s + 110 ms) stalls of 110 ms on average.
        assert!((70..=110).contains(&stalls), "{stalls} stalls");
        assert!((7_000..=13_000).contains(&held), "{held} ms held");
    }

    #[test]
    fn outages_drop_everything_inside_and_nothing_outside() {
        let mut o = Outages::every(5e9, 150e6);
        for k in 0..30_000 {
            let t = k as f64 * 1e6;
            let phase = t % 5e9;
            let inside = t >= 5e9 && phase < 150e6;
            assert_eq!(o.cut(t), inside, "at {t} ns");
        }
        // Another phase: the first at 2 s, then every 5 s.
        let mut o = Outages::new((5e9, 5e9), (150e6, 150e6), 2e9, 0);
        let cuts: Vec<bool> = [1.99e9, 2e9, 2.149e9, 2.15e9, 6.9e9, 7e9]
            .iter()
            .map(|&t| o.cut(t))
            .collect();
        assert_eq!(cuts, [false, true, true, false, false, true]);
        // A datagram sent just before one already through meets the link
        // as it was then, and keeps its own send time.
        let model = NetModel {
            outages: Some(Outages::every(5e9, 150e6)),
            ..NetModel::wired(1e5, 0.0)
        };
        let mut p = Path::new(&model, 0);
        let mut rng = Rng::new(1);
        assert_eq!(p.transit(&mut rng, 5.01e9, 100, true), None);
        assert_eq!(p.transit(&mut rng, 5.2e9, 100, true), Some(5.2001e9));
        assert_eq!(p.transit(&mut rng, 5.1e9, 100, true), Some(5.1001e9));
        let model = NetModel {
            outages: Some(Outages::new((2e9, 4e9), (100e6, 300e6), 1e9, 0)),
            ..NetModel::wired(1e5, 0.0)
        };
        // Both directions of a link go dark together.
        let (mut down, mut up) = (Path::new(&model, 77), Path::new(&model, 77));
        let (mut rd, mut ru) = (Rng::new(1), Rng::new(2));
        let mut cut = 0;
        for k in 0..60_000 {
            let t = k as f64 * 1e6;
            let d = down.transit(&mut rd, t, 100, true);
            let u = up.transit(&mut ru, t, 100, false);
            assert_eq!(d.is_none(), u.is_none(), "{t}");
            cut += d.is_none() as u32;
        }
        // 60 s, an outage from 1 s on every 3 s on average, lasting 200 ms
        // on average.
        assert!((2_500..=5_500).contains(&cut), "{cut} ms cut");
        assert_eq!(down.stats().cut, cut as u64);
    }

    #[test]
    fn beacon_grid_delays_to_the_grid_and_drops_past_the_queue() {
        let mut b = BeaconGrid::new(1e6);
        let air = b.airtime_ns(1468);
        assert!((air - 1.9947e6).abs() < 1e3, "airtime {air}");
        // 28 datagrams in one interval leave back to back after the next
        // beacon, at 103.4 ms.
        for k in 0..28 {
            let t = 2e6 + k as f64 * 3.6e6;
            let out = b.depart(t, 1468).unwrap();
            let want = 103.4e6 + (k + 1) as f64 * air;
            assert!((out - want).abs() < 1.0, "{k}: {out} want {want}");
        }
        // One sent during that burst waits for the beacon after.
        let out = b.depart(104e6, 1468).unwrap();
        assert!((out - (205.8e6 + air)).abs() < 1.0, "{out}");
        // A flood for one beacon: 64 go, the rest are dropped.
        let mut b = BeaconGrid::new(0.0);
        let sent = (0..100)
            .filter(|k| b.depart(1e6 + *k as f64 * 1e3, 200).is_some())
            .count();
        assert_eq!(sent, 64);
        // Through a path, only group datagrams wait.
        let model = NetModel {
            beacon: Some(BeaconGrid::new(0.0)),
            fuzz_ns: 0.0,
            ..NetModel::wired(1e5, 0.0)
        };
        let mut p = Path::new(&model, 0);
        let mut rng = Rng::new(1);
        assert_eq!(p.transit(&mut rng, 50e6, 100, false), Some(50.1e6));
        let g = p.transit(&mut rng, 50e6, 100, true).unwrap();
        assert!(g > 102.4e6 && g < 103e6, "{g}");
    }

    /// A clean model draws in the original order (jitter, then reorder),
    /// so the simulator's scenarios keep their meaning.
    #[test]
    fn the_original_fields_behave_as_before() {
        let model = NetModel {
            loss: 0.1,
            burst_start: 0.01,
            burst_len: 5,
            ..NetModel::wired(1e6, 2e6)
        };
        let mut p = Path::new(&model, 0);
        let (mut prng, mut rng) = (Rng::new(9), Rng::new(9));
        let mut burst = 0u32;
        for k in 0..10_000 {
            let t = k as f64 * 1e6;
            // The simulator's original `transit`.
            let want = if burst > 0 {
                burst -= 1;
                None
            } else if rng.chance(0.01) {
                burst = 4;
                None
            } else if rng.chance(0.1) {
                None
            } else {
                Some(t + (1e6 + 0.0 + rng.uniform() * 2e6))
            };
            assert_eq!(p.transit(&mut prng, t, 100, true), want, "{k}");
        }
        let s = p.stats();
        assert_eq!(s.sent, 10_000);
        assert!(s.lost > 1_000 && s.lost < 2_000, "{s:?}");
    }
}

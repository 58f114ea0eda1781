//! Sender-clock estimation from PTP-style time exchanges.
//!
//! A receiver sends a request at t1 (its clock); the sender stamps arrival t2
//! and departure t3 (sender clock); the reply arrives at t4 (receiver clock).
//! Then, with `θ(t)` the sender clock minus the receiver clock at receiver
//! time `t`:
//!
//! ```text
//! t2 − t1 = θ(t1) + d_fwd        t4 − t3 = d_bwd − θ(t4)
//! ```
//!
//! Queueing only ever adds to `d_fwd` and `d_bwd`. So instead of filtering
//! whole exchanges by round-trip delay (which needs both directions to be
//! quiet at once), each direction is filtered on its own: the forward points
//! `(t1, t2 − t1)` lie on or above the line `θ(t) + d_fwd,min`, the backward
//! points `(t4, t4 − t3)` on or above `d_bwd,min − θ(t)`. The lower convex hull
//! of each set gives that line, and the hull edge over the points' mean time
//! is the linear-programming estimate of Moon, Skelly and Towsley,
//! "Estimation and removal of clock skew from network delay measurements"
//! (INFOCOM 1999). Half the difference of the two lines is `θ(t)`, with the
//! usual PTP assumption `d_fwd,min = d_bwd,min`; half the difference of their
//! slopes is the rate error. Only the least-delayed points of each direction
//! matter, so a busy network with millisecond jitter still yields offsets
//! within microseconds.

/// Exchanges kept, oldest dropped first: 25 s at 20 exchanges per second.
/// A long window lets each direction find its least-queued packets even on
/// a busy network; clock rates are stable over such spans.
pub const WINDOW: usize = 2048;
/// A reply whose round trip exceeds this (ns) is dropped as useless.
pub const MAX_RTT_NS: u64 = 500_000_000;
/// A sample this far (ns) outside the current estimate's envelope counts
/// toward a clock step.
pub const STEP_NS: f64 = 20_000_000.0;
/// Consecutive outlying samples that restart the estimator: a clock step.
pub const STEP_COUNT: u32 = 4;
/// Prior spread of the rate between two crystal clocks (±100 ppm parts
/// each), dimensionless: 200 ppm.
pub const PRIOR_RATE: f64 = 200e-6;
/// Largest rate difference believed, dimensionless (1000 ppm); more is a
/// broken clock.
pub const MAX_RATE: f64 = 1e-3;

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    t1: i64,
    t4: i64,
    fwd: i64,
    bwd: i64,
}

/// The current clock model: `sender = local + offset + rate · (local − at)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Local time the model is anchored at, ns.
    pub at: i64,
    /// Sender clock minus local clock at `at`, ns.
    pub offset: f64,
    /// Sender clock rate relative to local, minus one (e.g. 50e-6 = sender
    /// runs 50 ppm fast).
    pub rate: f64,
    /// Smallest round trip in the window, ns.
    pub min_rtt: f64,
}

impl Estimate {
    /// Maps a local time (ns) to the sender clock (ns, fractional).
    pub fn to_sender(&self, local: i64) -> f64 {
        local as f64 + self.offset + self.rate * (local - self.at) as f64
    }
}

/// The estimator. Fixed-size; adding a sample does not allocate.
#[derive(Clone, Debug)]
pub struct ClockSync {
    ring: [Sample; WINDOW],
    len: usize,
    head: usize,
    estimate: Option<Estimate>,
    outliers: u32,
    samples: u64,
    resets: u64,
    jitter: f64,
    hull: [(f64, f64); WINDOW],
    pts: [(f64, f64); WINDOW],
}

impl Default for ClockSync {
    fn default() -> Self {
        Self::new()
    }
}

impl ClockSync {
    /// An empty estimator.
    pub fn new() -> Self {
        ClockSync {
            ring: [Sample::default(); WINDOW],
            len: 0,
            head: 0,
            estimate: None,
            outliers: 0,
            samples: 0,
            resets: 0,
            jitter: 0.0,
            hull: [(0.0, 0.0); WINDOW],
            pts: [(0.0, 0.0); WINDOW],
        }
    }

    /// Forgets everything (new sender session).
    pub fn reset(&mut self) {
        self.len = 0;
        self.head = 0;
        self.estimate = None;
        self.outliers = 0;
    }

    /// Current model, once at least one exchange completed.
    pub fn estimate(&self) -> Option<&Estimate> {
        self.estimate.as_ref()
    }

    /// Samples in the window.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Estimated width of the one-way queueing noise, ns: how busy the
    /// network is.
    pub fn jitter_ns(&self) -> f64 {
        self.jitter
    }

    /// Times a clock step restarted the estimator.
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Adds one exchange (t1, t4 local ns; t2, t3 sender ns). Returns false
    /// if it was rejected (inconsistent timestamps or a useless round trip).
    pub fn add(&mut self, t1: u64, t2: u64, t3: u64, t4: u64) -> bool {
        if t4 < t1 || t3 < t2 {
            return false;
        }
        let rtt = (t4 - t1).saturating_sub(t3 - t2);
        if rtt > MAX_RTT_NS || t3 - t2 > MAX_RTT_NS {
            return false;
        }
        let s = Sample {
            t1: t1 as i64,
            t4: t4 as i64,
            fwd: (t2 as i64).wrapping_sub(t1 as i64),
            bwd: (t4 as i64).wrapping_sub(t3 as i64),
        };
        if let Some(e) = self.estimate.filter(|_| self.len >= 16) {
            // θ from this sample alone lies within ±rtt/2 of the truth.
            let theta = (s.fwd - s.bwd) as f64 / 2.0;
            let predicted = e.to_sender(s.t4) - s.t4 as f64;
            if (theta - predicted).abs() > rtt as f64 / 2.0 + STEP_NS {
                self.outliers += 1;
                if self.outliers < STEP_COUNT {
                    return false;
                }
                self.resets += 1;
                self.reset();
            } else {
                self.outliers = 0;
            }
        }
        self.ring[self.head] = s;
        self.head = (self.head + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
        self.samples += 1;
        // A full window moves little per exchange: refitting every fourth
        // keeps the estimate as fresh as the exchange rate needs at a
        // quarter of the cost.
        if self.len < WINDOW / 4 || self.samples.is_multiple_of(4) || self.estimate.is_none() {
            self.recompute();
        }
        true
    }

    /// Samples oldest first.
    fn ordered(&self) -> impl Iterator<Item = &Sample> {
        let start = (self.head + WINDOW - self.len) % WINDOW;
        (0..self.len).map(move |i| &self.ring[(start + i) % WINDOW])
    }

    fn recompute(&mut self) {
        let newest = self.ring[(self.head + WINDOW - 1) % WINDOW];
        let at = newest.t4;
        let min_rtt = self
            .ordered()
            .map(|s| (s.fwd + s.bwd) as f64)
            .fold(f64::INFINITY, f64::min);
        // Work relative to the newest sample so f64 keeps sub-ns precision.
        let fwd = self.envelope(at, newest.fwd, true);
        let bwd = self.envelope(at, newest.bwd, false);
        // fwd = θ + d and bwd = d − θ: evaluate both at a common time.
        let xc = (fwd.mean_x + bwd.mean_x) / 2.0;
        let lf = newest.fwd as f64 + fwd.value + fwd.slope * (xc - fwd.mean_x);
        let lb = newest.bwd as f64 + bwd.value + bwd.slope * (xc - bwd.mean_x);
        let theta_c = (lf - lb) / 2.0;
        // Shrink the measured rate toward 0 by its standard error against
        // the prior spread of crystal clocks (Kalman-style weighting), so a
        // short or noisy window cannot extrapolate wildly.
        let rate_lp = (fwd.slope - bwd.slope) / 2.0;
        let var = (fwd.slope_var + bwd.slope_var) / 4.0;
        let k = PRIOR_RATE * PRIOR_RATE / (PRIOR_RATE * PRIOR_RATE + var);
        let rate = (rate_lp * k).clamp(-MAX_RATE, MAX_RATE);
        self.jitter = (fwd.width + bwd.width) / 2.0;
        self.estimate = Some(Estimate {
            at,
            offset: theta_c - rate * xc,
            rate,
            min_rtt,
        });
    }

    /// Lower envelope of one direction's points (x relative to `at`, y
    /// relative to `y0`). The lower convex hull bounds the points from
    /// below; its value at an interior time is a tight bound there whatever
    /// the sampling density. The line through its values at 1/4 and 3/4 of
    /// the window's time span gives the slope from half the span, so a dense
    /// burst of samples (the fast start) cannot make it rest on two
    /// neighbouring points.
    fn envelope(&mut self, at: i64, y0: i64, forward: bool) -> Envelope {
        // Both directions are indexed by t1: θ moves by at most rate × rtt
        // (nanoseconds) between t1 and t4. Replies arrive out of order, so
        // sort; the disorder is local and insertion sort is near linear.
        let start = (self.head + WINDOW - self.len) % WINDOW;
        let mut sum_y = 0.0;
        for i in 0..self.len {
            let s = self.ring[(start + i) % WINDOW];
            let x = (s.t1 - at) as f64;
            let y = if forward { s.fwd - y0 } else { s.bwd - y0 } as f64;
            sum_y += y;
            let mut j = i;
            while j > 0 && self.pts[j - 1].0 > x {
                self.pts[j] = self.pts[j - 1];
                j -= 1;
            }
            self.pts[j] = (x, y);
        }
        let mut n = 0usize;
        for i in 0..self.len {
            let (x, y) = self.pts[i];
            // Monotone chain, lower hull.
            while n >= 2 {
                let (x1, y1) = self.hull[n - 2];
                let (x2, y2) = self.hull[n - 1];
                if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) <= 0.0 {
                    n -= 1;
                } else {
                    break;
                }
            }
            if n >= 1 && self.hull[n - 1].0 == x {
                self.hull[n - 1].1 = self.hull[n - 1].1.min(y);
                continue;
            }
            self.hull[n] = (x, y);
            n += 1;
        }
        let hull = &self.hull[..n];
        let (x0, x1) = (hull[0].0, hull[n - 1].0);
        let count = self.len as f64;
        if n < 2 || x1 - x0 <= 0.0 {
            return Envelope {
                mean_x: x1,
                value: hull[0].1,
                slope: 0.0,
                slope_var: f64::INFINITY,
                width: 0.0,
            };
        }
        let at_x = |x: f64| -> f64 {
            let k = hull.partition_point(|p| p.0 <= x).clamp(1, n - 1);
            let (xa, ya) = hull[k - 1];
            let (xb, yb) = hull[k];
            ya + (yb - ya) * (x - xa) / (xb - xa)
        };
        let (qa, qb) = (x0 + (x1 - x0) * 0.25, x0 + (x1 - x0) * 0.75);
        let (ha, hb) = (at_x(qa), at_x(qb));
        let slope = (hb - ha) / (qb - qa);
        // A hull value sits about W/m above the true floor, W the noise
        // width (twice the mean height of the points above the envelope) and
        // m the points within a quarter span of it.
        let width = 2.0 * (sum_y / count - (ha + hb) / 2.0).max(0.0);
        let quarter = (x1 - x0) / 4.0;
        let (mut na, mut nb) = (0usize, 0usize);
        for &(x, _) in &self.pts[..self.len] {
            na += usize::from((x - qa).abs() <= quarter);
            nb += usize::from((x - qb).abs() <= quarter);
        }
        let (ea, eb) = (width / na.max(1) as f64, width / nb.max(1) as f64);
        let slope_var = (ea * ea + eb * eb) / ((qb - qa) * (qb - qa));
        Envelope {
            mean_x: qb,
            value: hb,
            slope,
            slope_var,
            width,
        }
    }
}

/// One direction's lower envelope.
#[derive(Clone, Copy, Debug)]
struct Envelope {
    /// Where the envelope is read: 3/4 of the window's time span, ns
    /// relative to the newest sample (late enough to extrapolate little,
    /// early enough to have points on both sides).
    mean_x: f64,
    /// Envelope value at `mean_x`, ns (relative to the newest sample's value).
    value: f64,
    /// Envelope slope, dimensionless.
    slope: f64,
    /// Variance of the slope estimate.
    slope_var: f64,
    /// Estimated width of the queueing noise, ns.
    width: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic xorshift for test jitter.
    fn rng(state: &mut u64) -> f64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state >> 11) as f64 / (1u64 << 53) as f64
    }

    fn run(offset: f64, ppm: f64, jitter_ns: f64, n: usize) -> (f64, f64) {
        let mut c = ClockSync::new();
        let mut seed = 0x1234_5678u64;
        let sender = |local: f64| local + offset + ppm * 1e-6 * local;
        let mut last = 0;
        for i in 0..n {
            let t1 = 1e9 + i as f64 * 50e6;
            let arrive = t1 + 200_000.0 + rng(&mut seed) * jitter_ns;
            let t2 = sender(arrive);
            let t3 = t2 + 10_000.0;
            let back_local = arrive + 10_000.0 / (1.0 + ppm * 1e-6);
            let t4 = back_local + 200_000.0 + rng(&mut seed) * jitter_ns;
            assert!(c.add(t1 as u64, t2 as u64, t3 as u64, t4 as u64));
            last = t4 as i64;
        }
        let e = c.estimate().unwrap();
        let truth = sender(last as f64) - last as f64;
        (
            e.to_sender(last) - last as f64 - truth,
            (e.rate - ppm * 1e-6) * 1e6,
        )
    }

    #[test]
    fn symmetric_quiet_network_is_exact_to_a_microsecond() {
        let (err, ppm_err) = run(-4.5e8, 120.0, 100_000.0, 200);
        assert!(err.abs() < 3_000.0, "offset error {err} ns");
        assert!(ppm_err.abs() < 1.0, "rate error {ppm_err} ppm");
    }

    #[test]
    fn millisecond_jitter_still_gives_microseconds() {
        // 0..4 ms of queueing each way, independently.
        let (err, ppm_err) = run(7.7e8, -180.0, 4_000_000.0, 600);
        assert!(err.abs() < 40_000.0, "offset error {err} ns");
        assert!(ppm_err.abs() < 20.0, "rate error {ppm_err} ppm");
    }

    /// The start-up burst: 460 exchanges 2 ms apart over a network with
    /// 1–5 ms of queueing each way, replies arriving out of order. Offset
    /// and rate must already be usable after this second.
    #[test]
    fn fast_start_on_a_busy_network() {
        for seed0 in 1..8u64 {
            let mut seed = seed0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut c = ClockSync::new();
            let ppm = 60.0;
            let sender = |l: f64| l * (1.0 + ppm * 1e-6) + 3e8;
            let mut last = 0.0;
            for i in 0..460 {
                let t1 = 5e9 + i as f64 * 2e6;
                let arrive = t1 + 1.3e6 + rng(&mut seed) * 4e6;
                let t2 = sender(arrive);
                let t3 = t2 + 20_000.0;
                let t4 = arrive + 20_000.0 + 1.3e6 + rng(&mut seed) * 4e6;
                c.add(t1 as u64, t2 as u64, t3 as u64, t4 as u64);
                last = t4;
            }
            let e = c.estimate().unwrap();
            let err = e.to_sender(last as i64) - last - (sender(last) - last);
            let ppm_err = (e.rate - ppm * 1e-6) * 1e6;
            assert!(err.abs() < 60_000.0, "seed {seed0}: offset error {err} ns");
            assert!(
                ppm_err.abs() < 80.0,
                "seed {seed0}: rate error {ppm_err} ppm"
            );
            assert!(c.jitter_ns() > 3e6, "seed {seed0}: busy network not seen");
        }
    }

    #[test]
    fn rejects_inconsistent_and_recovers_from_a_step() {
        let mut c = ClockSync::new();
        assert!(!c.add(100, 50, 40, 200)); // t3 < t2
        assert!(!c.add(300, 50, 60, 200)); // t4 < t1
        for i in 0..20u64 {
            let t = 1_000_000_000 + i * 50_000_000;
            assert!(c.add(t, t + 1_000_100, t + 1_000_200, t + 300));
        }
        let before = c.estimate().unwrap().offset;
        assert!((before - 1_000_000.0).abs() < 1_000.0, "{before}");
        // The sender clock steps by +1 s: a few outliers, then a restart.
        let mut accepted = 0;
        for i in 20..40u64 {
            let t = 1_000_000_000 + i * 50_000_000;
            if c.add(t, t + 1_001_000_100, t + 1_001_000_200, t + 300) {
                accepted += 1;
            }
        }
        assert_eq!(c.resets(), 1);
        assert_eq!(accepted, 20 - (STEP_COUNT as usize - 1));
        let after = c.estimate().unwrap().offset;
        assert!((after - 1_001_000_000.0).abs() < 1_000.0, "{after}");
    }
}

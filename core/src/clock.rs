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
//!
//! Since the directions are filtered apart, they need not come from the
//! same exchange. The sender multicasts sync messages (t3 only, PTP's Sync)
//! every 10 ms: each is a backward point for every receiver at no cost per
//! receiver. A receiver's own exchanges then only have to supply forward
//! points, sparsely. Each direction has its own window (bounded in count
//! and in time span); the rate is the variance-weighted mean of the two
//! slopes, so the dense side carries it, and each side's level at a common
//! time is the lower of its hull value and the lowest point carried there
//! along that rate (with a margin for the rate's error): a few well-placed
//! forward points then fix the level even when the hull between them is a
//! coarse chord.

/// Points kept per direction, oldest dropped first: 20 s of backward points
/// at 100 sync messages per second, or 25 s of exchanges at 80 per second.
/// A long window lets each direction find its least-queued packets even on
/// a busy network; clock rates are stable over such spans.
pub const WINDOW: usize = 2048;
/// Forward points below which every new point refits the estimate.
pub const REFIT_ALWAYS_FWD: usize = 32;
/// Once formed, the estimate is refitted on every this many points.
pub const REFIT_EVERY: u64 = 8;
/// Longest time span of one direction's window, ns (30 s). Forward points
/// come only from the receiver's own exchanges, which are sparse (about 2
/// per second) once sync messages flow: without a bound in time the window
/// would reach back 17 minutes, over which a crystal's rate wanders
/// (temperature) by more than the estimate may err.
pub const SPAN_NS: i64 = 30_000_000_000;
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

/// One direction's point: local time `x` (ns) and measured one-way
/// difference `y` (ns).
#[derive(Clone, Copy, Debug, Default)]
struct Point {
    x: i64,
    y: i64,
}

/// One direction's window: a ring bounded in count ([`WINDOW`]) and span
/// ([`SPAN_NS`]).
#[derive(Clone, Debug)]
struct Ring {
    pts: [Point; WINDOW],
    len: usize,
    head: usize,
    newest_x: i64,
}

impl Ring {
    fn new() -> Self {
        Ring {
            pts: [Point::default(); WINDOW],
            len: 0,
            head: 0,
            newest_x: i64::MIN,
        }
    }

    fn clear(&mut self) {
        self.len = 0;
        self.head = 0;
        self.newest_x = i64::MIN;
    }

    fn get(&self, i: usize) -> Point {
        self.pts[(self.head + WINDOW - self.len + i) % WINDOW]
    }

    fn push(&mut self, p: Point) {
        self.pts[self.head] = p;
        self.head = (self.head + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
        self.newest_x = self.newest_x.max(p.x);
        // Points arrive nearly in time order: drop from the oldest end.
        while self.len > 1 && self.newest_x - self.get(0).x > SPAN_NS {
            self.len -= 1;
        }
    }
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
    /// Round-trip floor, ns: the sum of the two directions' lower
    /// envelopes (the least delay each way, queueing excluded).
    pub min_rtt: f64,
}

impl Estimate {
    /// Maps a local time (ns) to the sender clock (ns, fractional).
    pub fn to_sender(&self, local: i64) -> f64 {
        local as f64 + self.offset + self.rate * (local - self.at) as f64
    }
}

/// The estimator. Fixed-size; adding a point does not allocate.
///
/// Forward points come from full exchanges ([`ClockSync::add`]); backward
/// points from full exchanges and from the sender's multicast sync messages
/// ([`ClockSync::add_backward`]), which every receiver hears at once. Each
/// direction keeps its own window, so a dense backward stream and sparse
/// exchanges combine: the rate comes mostly from the dense side (the two
/// slopes are weighted by their variances), and the forward side only has
/// to place its level, for which sparse but long-lived points suffice.
#[derive(Clone, Debug)]
pub struct ClockSync {
    fwd: Ring,
    bwd: Ring,
    estimate: Option<Estimate>,
    outliers: u32,
    exchanges: u64,
    added: u64,
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
            fwd: Ring::new(),
            bwd: Ring::new(),
            estimate: None,
            outliers: 0,
            exchanges: 0,
            added: 0,
            resets: 0,
            jitter: 0.0,
            hull: [(0.0, 0.0); WINDOW],
            pts: [(0.0, 0.0); WINDOW],
        }
    }

    /// Forgets everything (new sender session).
    pub fn reset(&mut self) {
        self.fwd.clear();
        self.bwd.clear();
        self.estimate = None;
        self.outliers = 0;
        self.exchanges = 0;
    }

    /// Current model, once at least one exchange completed.
    pub fn estimate(&self) -> Option<&Estimate> {
        self.estimate.as_ref()
    }

    /// Forward points (exchanges) in the window.
    pub fn len(&self) -> usize {
        self.fwd.len
    }

    /// Backward points (exchanges and sync messages) in the window.
    pub fn backward_len(&self) -> usize {
        self.bwd.len
    }

    /// Exchanges accepted since the last reset (not bounded by the window):
    /// how far the start-up has come.
    pub fn exchanges(&self) -> u64 {
        self.exchanges
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.fwd.len == 0
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

    /// Counts an outlier; true if it completes a clock step (the estimator
    /// was restarted and the point should start the new window).
    fn outlier(&mut self) -> bool {
        self.outliers += 1;
        if self.outliers < STEP_COUNT {
            return false;
        }
        self.resets += 1;
        self.reset();
        true
    }

    /// Adds one exchange (t1, t4 local ns; t2, t3 sender ns): a forward
    /// point (t1, t2 − t1) and a backward point (t4, t4 − t3). Returns false
    /// if it was rejected (inconsistent timestamps, a useless round trip, or
    /// an outlier that may be a clock step).
    pub fn add(&mut self, t1: u64, t2: u64, t3: u64, t4: u64) -> bool {
        if t4 < t1 || t3 < t2 {
            return false;
        }
        let rtt = (t4 - t1).saturating_sub(t3 - t2);
        if rtt > MAX_RTT_NS || t3 - t2 > MAX_RTT_NS {
            return false;
        }
        let f = Point {
            x: t1 as i64,
            y: (t2 as i64).wrapping_sub(t1 as i64),
        };
        let b = Point {
            x: t4 as i64,
            y: (t4 as i64).wrapping_sub(t3 as i64),
        };
        if let Some(e) = self.estimate.filter(|_| self.fwd.len >= 16) {
            // θ from this exchange alone lies within ±rtt/2 of the truth.
            let theta = (f.y - b.y) as f64 / 2.0;
            let predicted = e.to_sender(b.x) - b.x as f64;
            if (theta - predicted).abs() > rtt as f64 / 2.0 + STEP_NS {
                if !self.outlier() {
                    return false;
                }
            } else {
                self.outliers = 0;
            }
        }
        self.fwd.push(f);
        self.bwd.push(b);
        self.exchanges += 1;
        self.refit();
        true
    }

    /// Adds a backward-only point from a sync message: `t3` the sender
    /// clock when it left (ns), `t4` the local arrival time (ns, the kernel
    /// stamp when available). Needs a forward point to be of use, so it is
    /// ignored (false) until the first exchange. A point more than
    /// `STEP_NS` off the estimate either way is rejected and never counts
    /// towards a clock step: far above may be queueing, far below a step
    /// or a sync re-stamped by someone spoofing the sender (open mode);
    /// the exchanges, whose replies echo our own t1 and know their round
    /// trip, tell a step apart.
    pub fn add_backward(&mut self, t3: u64, t4: u64) -> bool {
        let b = Point {
            x: t4 as i64,
            y: (t4 as i64).wrapping_sub(t3 as i64),
        };
        let Some(e) = self.estimate else {
            return false;
        };
        if self.fwd.len >= 16 {
            // Expected: y = d_bwd − θ, with d_bwd about half the floor.
            let expected = e.min_rtt / 2.0 - (e.to_sender(b.x) - b.x as f64);
            let dev = b.y as f64 - expected;
            if dev.abs() > STEP_NS {
                // Far off the estimate either way: a delayed message, or a
                // sync re-stamped by someone else (open mode cannot tell).
                // Only exchanges, whose replies must echo our own t1,
                // count towards a clock step (`outlier`).
                return false;
            }
        }
        self.bwd.push(b);
        self.refit();
        true
    }

    fn refit(&mut self) {
        self.added += 1;
        // Refit on every point while the estimate forms; after that a
        // full backward window moves little per point, and points arrive
        // ~90 times a second with sync messages: refitting every eighth
        // keeps the estimate within ~0.1 s of the newest point (the model
        // extrapolates with its rate in between) at an eighth of the cost
        // (each refit walks both windows: tens of µs).
        let forming =
            self.estimate.is_none() || self.fwd.len < REFIT_ALWAYS_FWD || self.bwd.len < WINDOW / 4;
        if forming || self.added.is_multiple_of(REFIT_EVERY) {
            self.recompute();
        }
    }

    fn recompute(&mut self) {
        if self.fwd.len == 0 || self.bwd.len == 0 {
            return;
        }
        let at = self.fwd.newest_x.max(self.bwd.newest_x);
        // Work relative to the newest time and a recent value of each
        // direction so f64 keeps sub-ns precision.
        let fy0 = self.fwd.get(self.fwd.len - 1).y;
        let by0 = self.bwd.get(self.bwd.len - 1).y;
        let fwd = self.envelope(at, fy0, true);
        let bwd = self.envelope(at, by0, false);
        // fwd = θ + d and bwd = d − θ: each slope measures the rate; weigh
        // them by their variances (equal when both come from the same
        // exchanges; the dense sync stream dominates otherwise).
        // The noise width is a property of the network, measured on the
        // denser side: a hull through a few sparse points hugs them and
        // would make its own side look quiet. A noise-free window has zero
        // variance: floor it far below any real one so the weights stay
        // finite.
        let width = if self.fwd.len >= self.bwd.len {
            fwd.width
        } else {
            bwd.width
        };
        let weight = |e: &Envelope| {
            if e.slope_var.is_finite() {
                1.0 / (e.slope_var * width * width).max(1e-30)
            } else {
                0.0
            }
        };
        let (wf, wb) = (weight(&fwd), weight(&bwd));
        let (rate_lp, var) = if wf + wb > 0.0 {
            (
                (fwd.slope * wf - bwd.slope * wb) / (wf + wb),
                1.0 / (wf + wb),
            )
        } else {
            // Neither window spans any time yet.
            ((fwd.slope - bwd.slope) / 2.0, f64::INFINITY)
        };
        // Shrink the measured rate toward 0 by its standard error against
        // the prior spread of crystal clocks (Kalman-style weighting), so a
        // short or noisy window cannot extrapolate wildly.
        let k = PRIOR_RATE * PRIOR_RATE / (PRIOR_RATE * PRIOR_RATE + var);
        let rate = (rate_lp * k).clamp(-MAX_RATE, MAX_RATE);
        // Three standard errors: the slope's error is itself estimated
        // (from the noise width over the points near the read times), and
        // a forward point 25 s old must not win on a rate error the
        // estimate does not own up to.
        let rate_sd = 3.0 * (var * k).sqrt();
        // Evaluate both lines at a common time, carried there along the
        // common rate (the two read points differ when the windows do).
        let xc = (fwd.mean_x + bwd.mean_x) / 2.0;
        let lf = fwd.value + rate * (xc - fwd.mean_x);
        let lb = bwd.value - rate * (xc - bwd.mean_x);
        // Where one direction's points are sparse (the forward side once
        // sync messages flow), the hull between them is a chord well above
        // the floor. With the rate known, every point bounds the level at
        // `xc` directly: y − slope·(x − xc), give or take the rate's error
        // times the distance (see `level`). The tighter bound is kept.
        let lf = fy0 as f64 + lf.min(Self::level(&self.fwd, at, fy0, xc, rate, rate_sd));
        let lb = by0 as f64 + lb.min(Self::level(&self.bwd, at, by0, xc, -rate, rate_sd));
        // The lowest of n points lies above the floor by about the mean
        // queueing delay over n (exactly so for exponential queueing; half
        // of it for uniform): small for the dense side, tens of µs for the
        // sparse one on a busy network. Left in, it would shift θ by half
        // the difference; with equal counts (no sync messages) it cancels.
        let mean_q = width / 2.0;
        let lf = lf - mean_q / (self.fwd.len + 1) as f64;
        let lb = lb - mean_q / (self.bwd.len + 1) as f64;
        let theta_c = (lf - lb) / 2.0;
        self.jitter = (fwd.width + bwd.width) / 2.0;
        self.estimate = Some(Estimate {
            at,
            offset: theta_c - rate * xc,
            rate,
            min_rtt: lf + lb,
        });
    }

    /// Lowest bound that one direction's points put on its line at `xc`
    /// (ns relative to `at`), along `slope`, relative to `y0`, each bound
    /// raised by `slope_sd` times the point's distance from `xc`: the most
    /// it can be off through the rate's error. A distant point thus only
    /// wins when it is that much lower, and then counts with its margin.
    /// (Ranking by the margin but returning the bare bound was tried:
    /// worse on the busy simulation, p99 67 µs against 45 µs over six
    /// seeds, as a rate error then passes straight into the level.)
    fn level(ring: &Ring, at: i64, y0: i64, xc: f64, slope: f64, slope_sd: f64) -> f64 {
        let mut best = f64::INFINITY;
        for i in 0..ring.len {
            let p = ring.get(i);
            let dx = (p.x - at) as f64 - xc;
            best = best.min((p.y - y0) as f64 - slope * dx + slope_sd * dx.abs());
        }
        best
    }

    /// Lower envelope of one direction's points (x relative to `at`, y
    /// relative to `y0`). The lower convex hull bounds the points from
    /// below; its value at an interior time is a tight bound there whatever
    /// the sampling density. The line through its values at 1/4 and 3/4 of
    /// the window's time span gives the slope from half the span, so a dense
    /// burst of samples (the fast start) cannot make it rest on two
    /// neighbouring points.
    fn envelope(&mut self, at: i64, y0: i64, forward: bool) -> Envelope {
        // Points arrive out of order (replies overtake each other), so sort;
        // the disorder is local and insertion sort is near linear.
        let ring = if forward { &self.fwd } else { &self.bwd };
        let len = ring.len;
        for i in 0..len {
            let p = ring.get(i);
            let x = (p.x - at) as f64;
            let y = (p.y - y0) as f64;
            let mut j = i;
            while j > 0 && self.pts[j - 1].0 > x {
                self.pts[j] = self.pts[j - 1];
                j -= 1;
            }
            self.pts[j] = (x, y);
        }
        let mut n = 0usize;
        for i in 0..len {
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
        let count = len as f64;
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
        // m the points within a quarter span of it. The height is taken
        // point by point: points are not spread evenly in time (the fast
        // start, sparse exchanges after it), so their mean and the
        // envelope's mean differ by the trend.
        let mut above = 0.0;
        let mut k = 1;
        for &(x, y) in &self.pts[..len] {
            while k < n - 1 && hull[k].0 < x {
                k += 1;
            }
            let (xa, ya) = hull[k - 1];
            let (xb, yb) = hull[k];
            above += (y - (ya + (yb - ya) * (x - xa) / (xb - xa))).max(0.0);
        }
        let width = 2.0 * above / count;
        let quarter = (x1 - x0) / 4.0;
        let (mut na, mut nb) = (0usize, 0usize);
        for &(x, _) in &self.pts[..len] {
            na += usize::from((x - qa).abs() <= quarter);
            nb += usize::from((x - qb).abs() <= quarter);
        }
        let (ia, ib) = (1.0 / na.max(1) as f64, 1.0 / nb.max(1) as f64);
        Envelope {
            mean_x: qb,
            value: hb,
            slope,
            slope_var: (ia * ia + ib * ib) / ((qb - qa) * (qb - qa)),
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
    /// Variance of the slope estimate per squared noise width, ns⁻²
    /// (multiply by the width squared).
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

    /// The multicast regime on a busy network, sparser than the receiver
    /// now paces it (`receiver::SYNC_BUSY_INTERVAL_NS`, 20 ms): a 1 s
    /// burst of exchanges, 2 s at 100 per second, then one exchange per
    /// 100 ms, and a sync message every 10 ms, with 1.3–5.3 ms of queueing
    /// each way. The dense backward points carry the rate, the sparse
    /// forward ones the level.
    #[test]
    fn sparse_exchanges_and_sync_messages_on_a_busy_network() {
        for seed0 in 1..6u64 {
            let mut seed = seed0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut c = ClockSync::new();
            let ppm = -70.0;
            let sender = |l: f64| l * (1.0 + ppm * 1e-6) - 2e8;
            let local = |s: f64| (s + 2e8) / (1.0 + ppm * 1e-6);
            let q = |seed: &mut u64| 1.3e6 + rng(seed) * 4e6;
            let mut last = 0.0;
            let mut next_x = 5e9;
            let mut next_sync = 5e9;
            while next_x < 45e9 || next_sync < 45e9 {
                if next_x <= next_sync {
                    let t1 = next_x;
                    let arrive = t1 + q(&mut seed);
                    let t2 = sender(arrive);
                    let t3 = t2 + 20_000.0;
                    let t4 = local(t3) + q(&mut seed);
                    c.add(t1 as u64, t2 as u64, t3 as u64, t4 as u64);
                    next_x += if c.exchanges() < 500 {
                        2e6
                    } else if c.exchanges() < 700 {
                        10e6
                    } else {
                        100e6
                    };
                } else {
                    let t4 = next_sync + q(&mut seed);
                    c.add_backward(sender(next_sync) as u64, t4 as u64);
                    last = t4;
                    next_sync += 10e6;
                }
            }
            assert!(c.len() < 400, "forward window bounded in time");
            assert_eq!(c.backward_len(), WINDOW);
            let e = c.estimate().unwrap();
            let err = e.to_sender(last as i64) - sender(last);
            let ppm_err = (e.rate - ppm * 1e-6) * 1e6;
            assert!(err.abs() < 40_000.0, "seed {seed0}: offset error {err} ns");
            assert!(
                ppm_err.abs() < 3.0,
                "seed {seed0}: rate error {ppm_err} ppm"
            );
        }
    }

    #[test]
    fn sync_points_need_an_exchange_and_never_restart_the_clock() {
        let mut c = ClockSync::new();
        // Sender 1 ms ahead, 100 µs each way.
        assert!(!c.add_backward(1_000_000, 1_000));
        assert!(c.estimate().is_none());
        for i in 0..40u64 {
            let t = 1_000_000_000 + i * 2_000_000;
            assert!(c.add(t, t + 1_100_000, t + 1_120_000, t + 220_000));
        }
        for i in 0..10u64 {
            let t = 1_100_000_000 + i * 10_000_000;
            assert!(c.add_backward(t + 1_000_000, t + 100_000));
        }
        let e = c.estimate().unwrap();
        assert!((e.offset - 1_000_000.0).abs() < 1_000.0, "{e:?}");
        // Far above the envelope: queueing or a step, rejected, no restart.
        let t = 1_300_000_000;
        for k in 0..STEP_COUNT as u64 {
            assert!(!c.add_backward(t + k, t + k + 100_000 + 30_000_000));
        }
        assert_eq!(c.resets(), 0);
        // Far below it: a clock step, or syncs re-stamped by a forger that
        // spoofs the sender's address. Rejected too, however many: only
        // exchanges (which must echo our t1) can restart the clock.
        for k in 0..(10 * STEP_COUNT) as u64 {
            assert!(!c.add_backward(t + k + 1_001_000_000, t + k + 100_000));
        }
        assert_eq!(c.resets(), 0);
        assert!(c.estimate().is_some());
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

//! A second-order delay-locked loop that turns noisy per-buffer timestamps
//! into a smooth timeline: the time of each buffer's first frame and the true
//! frame period.
//!
//! The loop is the one described by Fons Adriaensen, "Using a DLL to filter
//! time" (2005), which PipeWire's `spa_dll` also follows: with
//! `ω = 2π·B·T` for loop bandwidth `B` (Hz) and update interval `T` (s), the
//! phase gain is `√2·ω` and the period gain `ω²` (critically damped).
//! It is written here per frame, so buffers may change size between updates.

/// Bandwidth right after start, Hz: wide, to learn the period quickly.
pub const BW_START_HZ: f64 = 2.0;
/// Steady-state bandwidth, Hz: narrow, to average scheduling jitter away.
pub const BW_MIN_HZ: f64 = 0.1;
/// A timestamp this far (ns) from the prediction restarts the loop: the
/// stream was paused, or the clock stepped. The default of [`Dll::new`];
/// [`Dll::with_step`] sets a tighter one for smooth time sources.
pub const RESET_NS: f64 = 20e6;

/// The loop's state. Times are `i64` ns of whatever clock feeds it.
#[derive(Clone, Debug)]
pub struct Dll {
    nominal_period: f64,
    step_ns: f64,
    period: f64,
    base: i64,
    /// Smoothed time of the last buffer's first frame, ns after `base`.
    t: f64,
    last_frames: u32,
    elapsed: f64,
    started: bool,
}

/// What [`Dll::update`] found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DllUpdate {
    /// Smoothed time of this buffer's first frame, ns.
    pub time: i64,
    /// Raw minus predicted time, ns (0 on (re)start).
    pub error: f64,
    /// True when the loop restarted at this update (first call, or a jump
    /// larger than [`RESET_NS`]).
    pub reset: bool,
}

impl Dll {
    /// A loop for a clock whose nominal frame period is `nominal_period` ns.
    pub fn new(nominal_period: f64) -> Self {
        Self::with_step(nominal_period, RESET_NS)
    }

    /// A loop that restarts (re-anchors its phase, keeps its period) when a
    /// timestamp is more than `step_ns` ns from the prediction, instead of
    /// filtering it. For sources whose timestamps are smooth, where any
    /// such error is a real discontinuity (an xrun, a skipped cycle): a
    /// second-order loop turns a phase step into a large, slow period
    /// swing (a 10.7 ms step at 512-frame buffers swings the period by
    /// about 3000 ppm for a second, about 11 ms of accumulated rate error),
    /// which a consumer of [`Dll::period`] would play out.
    pub fn with_step(nominal_period: f64, step_ns: f64) -> Self {
        Dll {
            nominal_period,
            step_ns,
            period: nominal_period,
            base: 0,
            t: 0.0,
            last_frames: 0,
            elapsed: 0.0,
            started: false,
        }
    }

    /// Estimated frame period, ns.
    pub fn period(&self) -> f64 {
        self.period
    }

    /// Whether at least one update happened.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Feeds the raw time `now` (ns) of the first frame of a buffer of
    /// `frames` frames, which follows the previous buffer without a gap.
    pub fn update(&mut self, now: i64, frames: u32) -> DllUpdate {
        let frames = frames.max(1);
        if !self.started {
            return self.restart(now, frames);
        }
        let pred = self.t + self.last_frames as f64 * self.period;
        let raw = (now - self.base) as f64;
        let error = raw - pred;
        if error.abs() > self.step_ns {
            return self.restart(now, frames);
        }
        let interval_s = self.last_frames as f64 * self.period * 1e-9;
        self.elapsed += interval_s;
        let bw = (BW_START_HZ / (1.0 + self.elapsed)).max(BW_MIN_HZ);
        // Keep ω small enough for the discrete loop to stay stable even with
        // very long buffers.
        let w = (2.0 * core::f64::consts::PI * bw * interval_s).min(0.5);
        self.t = pred + core::f64::consts::SQRT_2 * w * error;
        self.period += w * w * error / self.last_frames as f64;
        // A period more than 1 % off nominal is a broken timestamp source,
        // not a real clock: clamp rather than follow it.
        self.period = self
            .period
            .clamp(self.nominal_period * 0.99, self.nominal_period * 1.01);
        self.last_frames = frames;
        DllUpdate {
            time: self.base + self.t.round() as i64,
            error,
            reset: false,
        }
    }

    fn restart(&mut self, now: i64, frames: u32) -> DllUpdate {
        // The period learned so far survives a restart: the clock is the same.
        self.base = now;
        self.t = 0.0;
        self.last_frames = frames;
        self.started = true;
        DllUpdate {
            time: now,
            error: 0.0,
            reset: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock 150 ppm fast, timestamps with ±40 µs of deterministic
    /// pseudo-random jitter: the loop learns the period to a few ppm and
    /// smooths the phase to a few µs.
    #[test]
    fn learns_period_and_smooths_jitter() {
        let nominal = 1e9 / 48_000.0;
        let true_period = nominal * (1.0 + 150e-6);
        let mut dll = Dll::new(nominal);
        let mut seed = 1u64;
        let mut worst_late = 0.0f64;
        for i in 0..6000u64 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let jitter = ((seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 80_000.0;
            let truth = 1_000_000_000.0 + (i * 256) as f64 * true_period;
            let u = dll.update((truth + jitter) as i64, 256);
            if i > 3000 {
                worst_late = worst_late.max((u.time as f64 - truth).abs());
            }
        }
        let ppm = (dll.period() / true_period - 1.0) * 1e6;
        assert!(ppm.abs() < 5.0, "period off by {ppm} ppm");
        assert!(worst_late < 8_000.0, "phase error {worst_late} ns");
    }

    /// One step in otherwise exact timestamps (a skipped 512-frame cycle):
    /// the default loop filters it and its period swings by thousands of
    /// ppm; a loop with a 1 ms step threshold re-anchors and keeps the
    /// period it had.
    #[test]
    fn a_step_swings_the_period_unless_it_restarts_the_loop() {
        let nominal = 1e9 / 48_000.0;
        let swing = |mut dll: Dll| {
            let mut t = 1e9;
            let mut worst = 0.0f64;
            for i in 0..4000 {
                if i == 2000 {
                    t += 512.0 * nominal;
                }
                dll.update(t as i64, 512);
                if i >= 2000 {
                    worst = worst.max((dll.period() / nominal - 1.0).abs() * 1e6);
                }
                t += 512.0 * nominal;
            }
            worst
        };
        let filtered = swing(Dll::new(nominal));
        let restarted = swing(Dll::with_step(nominal, 1e6));
        assert!(filtered > 1000.0, "filtered swing {filtered} ppm");
        assert!(restarted < 1.0, "restarted swing {restarted} ppm");
    }

    #[test]
    fn restarts_after_a_gap_and_keeps_period() {
        let nominal = 1e9 / 48_000.0;
        let mut dll = Dll::new(nominal);
        for i in 0..100 {
            dll.update(i * 5_333_333, 256);
        }
        let p = dll.period();
        let u = dll.update(10_000_000_000, 256);
        assert!(u.reset);
        assert_eq!(u.time, 10_000_000_000);
        assert_eq!(dll.period(), p);
    }
}

//! Drift control through an output's own resampler: the PI loop behind
//! `bark.resampler = pipewire`, sans IO.
//!
//! The default receiver ([`crate::receiver::Receiver`]) corrects drift with
//! its own interpolator: it is told when each buffer is heard and slews its
//! read position. With `bark.resampler = pipewire` the correction is made by
//! PipeWire's stream adapter instead, steered through
//! `SPA_IO_RateMatch` (as PipeWire's `module-rtp-source` does). The core
//! cannot render at a fixed ratio and hand its desired ratio out, so the
//! adapter puts a [`RateMatchLoop`] around it:
//!
//! 1. [`RateMatchLoop::virtual_time`] turns the real play time of a buffer
//!    into a *virtual* one, `v`, which advances by exactly `frames × P` per
//!    buffer, `P` being one output frame of the sender's clock in local
//!    time (`1/rate / (1 + clock rate)`). Against that perfectly smooth
//!    clock the core's feed-forward ratio is the nominal one (1 at equal
//!    rates), so its interpolator does no drift correction beyond what its
//!    estimates miss.
//! 2. The core fills the buffer for `v`.
//! 3. [`RateMatchLoop::advance_after_fill`] advances `v` and updates a PI
//!    loop that keeps the *real* play time of each buffer on `v`. Its output
//!    is the consumption ratio for the output's resampler (input frames per
//!    output frame); [`pipewire_rate`] turns it into PipeWire's
//!    `spa_io_rate_match.rate`. Late (real after virtual) means consume
//!    faster.
//!
//! The gains are the core's drift controller's ([`crate::drift`]), so both
//! methods differ only in where the correction is applied. The simulator
//! runs this path with a model of PipeWire 0.3.65's resampler
//! ([`crate::sim`], scenario "ratematch"); the lab measures it against the
//! core's interpolator (docs/BENCHMARKS.md, "Drift control").

use crate::drift::{OMEGA, ZETA};
use crate::receiver::Receiver;

/// Largest correction applied through the output's resampler,
/// dimensionless (±0.2 %: the core's own slew limit,
/// [`crate::drift::MAX_SLEW`]).
pub const MAX_CORR: f64 = crate::drift::MAX_SLEW;
/// An error (ns) between the real and the virtual clock beyond which the
/// loop lets go of the virtual clock and starts again from the real one
/// (a graph stall, a changed latency): the core then removes the error
/// with its own jump or slew.
pub const RESYNC_NS: f64 = 2_000_000.0;

/// The `spa_io_rate_match.rate` that makes PipeWire's resampler consume
/// `ratio` input frames per output frame of a `stream_rate` (Hz) stream.
///
/// PipeWire divides the input rate by this value. Its 0.3.65 native
/// resampler truncates that quotient to whole Hz (steps of 20.8 ppm at
/// 48 kHz; [`pipewire_0365_input_rate`]) and, when it lands exactly on the
/// nominal rate, switches to a plain copy that drops the fractional read
/// phase (up to one frame, a step in the output timing each time the loop
/// passes through 1). So a ratio within one step of 1 is pushed out to the
/// nearest step on its side; the loop's integrator takes up the
/// difference. (PipeWire 1.5 resamples with a fixed-point rate and keeps
/// the phase; there this only keeps the rate from resting at exactly 1.)
pub fn pipewire_rate(ratio: f64, stream_rate: u32) -> f64 {
    let step = 1.0 / stream_rate.max(1) as f64;
    let r = if ratio >= 1.0 {
        ratio.max(1.0 + 1.5 * step)
    } else {
        ratio.min(1.0 - 0.5 * step)
    };
    1.0 / r
}

/// The input rate, Hz, PipeWire 0.3.65's adapter resamples a
/// `stream_rate` stream from when `spa_io_rate_match.rate` is `rate`:
/// `(uint32_t)(i_rate / rate)` (spa/plugins/audioconvert/audioconvert.c of
/// that release). It consumes `input rate / stream_rate` input frames per
/// output frame, and copies (dropping its fractional phase) when the two
/// are equal. A model for tests and the simulator.
pub fn pipewire_0365_input_rate(rate: f64, stream_rate: u32) -> u32 {
    (stream_rate as f64 / rate) as u32
}

/// The loop: a virtual play-time clock and a PI controller that keeps the
/// real play time on it (module docs). Fixed size, no allocation; the
/// default value is unlocked.
#[derive(Clone, Debug, Default)]
pub struct RateMatchLoop {
    /// The virtual play time of the next buffer, local ns.
    v: f64,
    locked: bool,
    err_ns: f64,
    integral: f64,
    corr: f64,
    resyncs: u64,
}

impl RateMatchLoop {
    /// The play time to give the core for a buffer heard from `real_ns`
    /// (local ns, on the receiver's clock): the virtual clock once locked,
    /// else `real_ns`. Lets go of the virtual clock (counting a resync)
    /// when the two are more than [`RESYNC_NS`] apart.
    pub fn virtual_time(&mut self, real_ns: u64) -> u64 {
        if self.locked {
            let err = real_ns as f64 - self.v;
            if err.abs() <= RESYNC_NS {
                self.err_ns = err;
                return self.v.round().max(0.0) as u64;
            }
            self.resyncs += 1;
        }
        self.unlock();
        self.v = real_ns as f64;
        real_ns
    }

    /// After the core filled `frames` frames for the time
    /// [`RateMatchLoop::virtual_time`] gave: advances the virtual clock by
    /// `frames × frame_ns` (one output frame of the sender's clock, local
    /// ns) and updates the loop. `playing` is whether the core plays (the
    /// loop locks once it does, and lets go when it stops). Returns the
    /// consumption ratio to apply: input frames per output frame,
    /// 1 = nominal, within 1 ± [`MAX_CORR`].
    pub fn advance(&mut self, frames: usize, frame_ns: f64, playing: bool) -> f64 {
        let dt = (frames as f64 * frame_ns * 1e-9).clamp(0.0, 0.5);
        if !playing {
            self.unlock();
        } else if !self.locked {
            self.locked = true;
        } else {
            let e = self.err_ns * 1e-9;
            let kp = 2.0 * ZETA * OMEGA;
            let ki = OMEGA * OMEGA;
            self.integral = (self.integral + ki * e * dt).clamp(-MAX_CORR, MAX_CORR);
            self.corr = (kp * e + self.integral).clamp(-MAX_CORR, MAX_CORR);
        }
        self.v += frames as f64 * frame_ns;
        self.ratio()
    }

    /// [`RateMatchLoop::advance`] after `rx` filled `frames` frames: one
    /// frame of the sender's clock is `1/rate` (the receiver's output rate)
    /// over `1 +` its clock-rate estimate (0 before it has one), and the
    /// loop runs while `rx` plays. Returns the consumption ratio.
    pub fn advance_after_fill(&mut self, rx: &Receiver, frames: usize) -> f64 {
        let clock_rate = rx.clock().estimate().map_or(0.0, |e| e.rate);
        let frame_ns = 1e9 / rx.config().rate as f64 / (1.0 + clock_rate);
        self.advance(frames, frame_ns, rx.playing())
    }

    fn unlock(&mut self) {
        self.locked = false;
        self.err_ns = 0.0;
        self.integral = 0.0;
        self.corr = 0.0;
    }

    /// Real minus virtual play time at the last buffer, ns (late positive):
    /// the output's sync error on top of the core's own, which is measured
    /// against the virtual clock.
    pub fn error_ns(&self) -> f64 {
        self.err_ns
    }

    /// The correction applied, dimensionless (consumption ratio − 1).
    pub fn correction(&self) -> f64 {
        self.corr
    }

    /// The consumption ratio last returned: input frames per output frame.
    pub fn ratio(&self) -> f64 {
        1.0 + self.corr
    }

    /// Times the loop let go of the virtual clock while locked.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// Whether the virtual clock is in use.
    pub fn locked(&self) -> bool {
        self.locked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device `ppm` fast or slow against the sender, PipeWire's rate
    /// quantisation (0.3.65's native resampler truncates the input rate to
    /// whole Hz: 20.8 ppm steps at 48 kHz), ±10 µs of measurement noise
    /// (the resampler's fractional phase, which `pw_time` does not show):
    /// the loop locks, its mean correction undoes the device's rate error, and
    /// the real output stays within a few tens of µs of the virtual clock.
    #[test]
    fn follows_a_drifting_device() {
        for ppm in [-80.0, -3.0, 0.0, 60.0, 150.0] {
            let mut l = RateMatchLoop::default();
            let p = 1e9 / 48_000.0;
            let q = 512.0;
            let mut real = 1e9;
            let mut seed = 7u64;
            let (mut worst, mut sum_corr, mut n) = (0.0f64, 0.0, 0.0);
            for k in 0..6000 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                let noise = ((seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 20_000.0;
                l.virtual_time((real + noise) as u64);
                assert!(k < 2 || l.locked());
                let c = l.ratio();
                let c_eff =
                    pipewire_0365_input_rate(pipewire_rate(c, 48_000), 48_000) as f64 / 48_000.0;
                let frames = (q * c_eff).round() as usize;
                l.advance(frames, p, true);
                // The device plays q frames at its own rate; they hold
                // q·c_eff frames of the stream.
                real += q * p / (1.0 + ppm * 1e-6) * (frames as f64 / (q * c_eff));
                if k > 2000 {
                    worst = worst.max((real - l.v).abs());
                    // What PipeWire applies (the loop's integrator absorbs
                    // the truncation's bias).
                    sum_corr += c_eff - 1.0;
                    n += 1.0;
                }
            }
            let mean_ppm = sum_corr / n * 1e6;
            let want = (1.0 / (1.0 + ppm * 1e-6) - 1.0) * 1e6;
            assert!(
                (mean_ppm - want).abs() < 1.0,
                "{ppm} ppm: mean corr {mean_ppm}"
            );
            assert!(worst < 10_000.0, "{ppm} ppm: worst {worst} ns");
            assert_eq!(l.resyncs(), 0);
        }
    }

    #[test]
    fn pipewire_rates_stay_off_the_copy_mode() {
        let pw_in_rate =
            |ratio: f64| pipewire_0365_input_rate(pipewire_rate(ratio, 48_000), 48_000);
        assert_eq!(pw_in_rate(1.0), 48_001);
        assert_eq!(pw_in_rate(1.0 + 1e-7), 48_001);
        assert_eq!(pw_in_rate(1.0 - 1e-7), 47_999);
        assert_eq!(pw_in_rate(1.0 + 100e-6), 48_004);
        assert_eq!(pw_in_rate(1.0 - 100e-6), 47_995);
    }

    #[test]
    fn resyncs_on_a_stall_and_unlocks_on_silence() {
        let mut l = RateMatchLoop::default();
        let p = 1e9 / 48_000.0;
        let mut real = 5e9;
        for _ in 0..100 {
            l.virtual_time(real as u64);
            l.advance(480, p, true);
            real += 480.0 * p;
        }
        assert!(l.locked());
        // A 5 ms stall: let go, start again from the real clock.
        real += 5e6;
        assert_eq!(l.virtual_time(real as u64), real as u64);
        assert_eq!(l.resyncs(), 1);
        assert!(!l.locked());
        l.advance(480, p, false);
        assert_eq!(l.correction(), 0.0);
    }

    /// A late output asks to consume faster, an early one slower, and the
    /// correction never passes [`MAX_CORR`].
    #[test]
    fn late_consumes_faster_within_the_limit() {
        let p = 1e9 / 48_000.0;
        for (late_ns, faster) in [(500_000.0, true), (-500_000.0, false)] {
            let mut l = RateMatchLoop::default();
            l.virtual_time(1_000_000_000);
            l.advance(480, p, true);
            let mut ratio = 1.0;
            for k in 1..200 {
                // The real output stays `late_ns` off the virtual clock.
                l.virtual_time((l.v + late_ns) as u64);
                ratio = l.advance(480, p, true);
                assert!((ratio - 1.0).abs() <= MAX_CORR + 1e-15, "{k}: {ratio}");
            }
            assert_eq!(ratio > 1.0, faster, "{late_ns}: {ratio}");
            assert_eq!(l.correction().abs(), MAX_CORR, "saturates: {ratio}");
        }
    }

    /// With a receiver that does not play (no stream), the loop stays
    /// unlocked, the ratio nominal and the virtual clock the real one.
    #[test]
    fn an_idle_receiver_leaves_the_ratio_nominal() {
        let rx = Receiver::new(crate::ReceiverConfig {
            node_id: 1,
            ..Default::default()
        })
        .unwrap();
        let mut l = RateMatchLoop::default();
        let mut real = 2_000_000_000u64;
        for _ in 0..10 {
            assert_eq!(l.virtual_time(real), real);
            assert_eq!(l.advance_after_fill(&rx, 256), 1.0);
            assert!(!l.locked());
            real += 5_333_333;
        }
        // One frame at 48 kHz with no clock estimate.
        assert!((l.v - (real - 5_333_333) as f64 - 256e9 / 48_000.0).abs() < 1e-3);
    }
}

//! The drift controller: turns the playback error ("this frame will be heard
//! at T, it should be heard at T*") into a resampling ratio correction.
//!
//! It is a proportional-integral loop (a type-2 PLL in the frequency domain)
//! behind a feed-forward ratio: the receiver already estimates the sender's
//! audio clock rate and its own device rate, so the loop only trims what
//! those estimates miss. With natural frequency ω and damping ζ, the gains are
//! `Kp = 2ζω` (1/s) and `Ki = ω²` (1/s²), the textbook critically damped
//! second-order loop (Gardner, "Phaselock Techniques", ch. 2).
//!
//! Thresholds and their reasons:
//! - [`MAX_SLEW`] = 0.2 %: the pitch change (3.5 cents) is below what
//!   listeners notice on music (about 5 cents); Bark's original allows 1 %.
//! - [`JUMP_NS`] = 2 ms: at the slew limit a 2 ms error takes 1 s to remove;
//!   larger errors (a start, a sender restart, a stalled output) are removed
//!   at once by moving the read position, which costs one discontinuity
//!   rather than seconds of audible offset.

/// Largest ratio correction, dimensionless (±0.2 %).
pub const MAX_SLEW: f64 = 2e-3;
/// Errors beyond this (ns) jump instead of slewing.
pub const JUMP_NS: f64 = 2_000_000.0;
/// Natural frequency of the loop, rad/s (≈ 0.25 Hz): slow enough to
/// average clock-estimate noise, fast enough to settle within 2 s.
pub const OMEGA: f64 = 1.6;
/// Damping factor (critically damped is 1/√2).
pub const ZETA: f64 = 0.8;

/// What to do this cycle.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    /// Move the read position to the target.
    Jump,
    /// Multiply the feed-forward ratio by `1 + correction`.
    Slew(f64),
}

/// Loop state.
#[derive(Clone, Debug, Default)]
pub struct DriftController {
    integral: f64,
    jumps: u64,
}

impl DriftController {
    /// A loop at rest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the integrator (new stream).
    pub fn reset(&mut self) {
        self.integral = 0.0;
    }

    /// Counts a jump made outside [`DriftController::update`] (start-up).
    pub fn note_jump(&mut self) {
        self.jumps += 1;
    }

    /// Jumps so far.
    pub fn jumps(&self) -> u64 {
        self.jumps
    }

    /// One update. `error_ns` > 0 means playback is late (the frame being
    /// played should already have been heard), so consume faster; `dt_s` is
    /// the time since the previous update, s.
    pub fn update(&mut self, error_ns: f64, dt_s: f64) -> Action {
        if error_ns.abs() > JUMP_NS {
            self.jumps += 1;
            return Action::Jump;
        }
        let e = error_ns * 1e-9;
        let kp = 2.0 * ZETA * OMEGA;
        let ki = OMEGA * OMEGA;
        self.integral = (self.integral + ki * e * dt_s.clamp(0.0, 0.5)).clamp(-MAX_SLEW, MAX_SLEW);
        Action::Slew((kp * e + self.integral).clamp(-MAX_SLEW, MAX_SLEW))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plant whose consumption rate is 150 ppm off what the feed-forward
    /// believes: the loop removes a 500 µs error and the rate offset, and
    /// settles within 0.5 µs in simulated seconds.
    #[test]
    fn removes_offset_and_rate_error() {
        let mut c = DriftController::new();
        let dt = 0.01;
        let mut err = 500_000.0f64; // ns, late
        for _ in 0..1000 {
            match c.update(err, dt) {
                Action::Slew(k) => err -= (k - 150e-6) * dt * 1e9,
                Action::Jump => panic!("no jump expected"),
            }
        }
        assert!(err.abs() < 500.0, "residual {err} ns");
    }

    #[test]
    fn jumps_on_large_errors_and_clamps_slew() {
        let mut c = DriftController::new();
        assert_eq!(c.update(3e6, 0.01), Action::Jump);
        assert_eq!(c.jumps(), 1);
        match c.update(1.9e6, 0.01) {
            Action::Slew(k) => assert_eq!(k, MAX_SLEW),
            a => panic!("{a:?}"),
        }
    }
}

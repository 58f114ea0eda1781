//! Clock reads, and the mapping of local times onto what the core is told.
//!
//! The core works in nanoseconds of this host's CLOCK_MONOTONIC. Two other
//! clocks show up at its edges: kernel receive timestamps (`SO_TIMESTAMPNS`)
//! and PulseAudio's `pa_timing_info.timestamp` are both CLOCK_REALTIME, so
//! they are moved onto the monotonic clock with a pair of reads taken
//! together ([`ClockPair`]).
//!
//! **Test only:** `BARK_TEST_CLOCK="<offset_ns>,<ppm>"` makes this process
//! pretend that its monotonic clock is off by `offset_ns` and runs `ppm`
//! parts per million fast (negative: slow), counted from start. It is the
//! same convention as the PipeWire modules', so the lab can give receivers
//! on one kernel distinct clocks. Never set it in production.

use nix::time::{clock_gettime, ClockId};

/// Name of the test-only clock skew variable.
pub const TEST_CLOCK_ENV: &str = "BARK_TEST_CLOCK";

/// CLOCK_MONOTONIC now, ns (a vDSO read, no syscall).
pub fn monotonic_ns() -> u64 {
    read(ClockId::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME now, ns since the epoch.
pub fn realtime_ns() -> u64 {
    read(ClockId::CLOCK_REALTIME)
}

fn read(id: ClockId) -> u64 {
    match clock_gettime(id) {
        Ok(ts) => (ts.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec() as u64),
        // Cannot fail for these clocks on Linux; 0 is a harmless fallback.
        Err(_) => 0,
    }
}

/// A monotonic and a realtime reading taken back to back, to convert
/// realtime stamps (kernel receive times, PulseAudio timing info) to
/// monotonic ones.
#[derive(Clone, Copy, Debug)]
pub struct ClockPair {
    /// CLOCK_MONOTONIC, ns.
    pub mono: u64,
    /// CLOCK_REALTIME, ns.
    pub real: u64,
}

impl ClockPair {
    /// Reads both clocks now. The realtime read is bracketed by two
    /// monotonic reads, and of up to four tries the tightest bracket wins:
    /// a thread preempted between two plain reads would pair instants
    /// milliseconds apart, and one such bogus pair makes a datagram look
    /// early, which the clock estimator's minimum-delay filter then keeps.
    pub fn now() -> Self {
        let mut best = (u64::MAX, ClockPair { mono: 0, real: 0 });
        for _ in 0..4 {
            let m0 = monotonic_ns();
            let real = realtime_ns();
            let m1 = monotonic_ns();
            let span = m1.saturating_sub(m0);
            if span < best.0 {
                best = (
                    span,
                    ClockPair {
                        mono: m0 + span / 2,
                        real,
                    },
                );
            }
            // vDSO reads take tens of ns: 2 µs means nothing intervened.
            if span < 2_000 {
                break;
            }
        }
        best.1
    }

    /// The monotonic time of the realtime instant `real_ns`, or `None` when
    /// it lies in the future or more than `max_age_ns` in the past (a clock
    /// step between the stamp and now makes it meaningless).
    pub fn to_mono(&self, real_ns: u64, max_age_ns: u64) -> Option<u64> {
        let age = self.real as i128 - real_ns as i128;
        if !(0..=max_age_ns as i128).contains(&age) {
            return None;
        }
        Some(self.mono.saturating_sub(age as u64))
    }
}

/// Maps local monotonic times onto the times given to the core: the
/// identity, or the test skew of [`TEST_CLOCK_ENV`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockMap {
    offset_ns: i64,
    ppm: f64,
    start_ns: u64,
}

impl ClockMap {
    /// No skew.
    pub const IDENTITY: ClockMap = ClockMap {
        offset_ns: 0,
        ppm: 0.0,
        start_ns: 0,
    };

    /// From `BARK_TEST_CLOCK` if set, the drift counted from `start_ns`.
    ///
    /// # Errors
    /// A message for a malformed value.
    pub fn from_env(start_ns: u64) -> Result<ClockMap, String> {
        match std::env::var(TEST_CLOCK_ENV) {
            Ok(v) => Self::parse(&v, start_ns),
            Err(_) => Ok(Self::IDENTITY),
        }
    }

    /// Parses `"<offset_ns>,<ppm>"` (|ppm| ≤ 10000).
    ///
    /// # Errors
    /// A message for a malformed value.
    pub fn parse(v: &str, start_ns: u64) -> Result<ClockMap, String> {
        let bad = || format!("{TEST_CLOCK_ENV}={v:?}: expected \"<offset_ns>,<ppm>\"");
        let (o, p) = v.split_once(',').ok_or_else(bad)?;
        let offset_ns: i64 = o.trim().parse().map_err(|_| bad())?;
        let ppm: f64 = p.trim().parse().map_err(|_| bad())?;
        if !ppm.is_finite() || ppm.abs() > 10_000.0 {
            return Err(bad());
        }
        Ok(ClockMap {
            offset_ns,
            ppm,
            start_ns,
        })
    }

    /// Whether this map changes anything.
    pub fn is_identity(&self) -> bool {
        self.offset_ns == 0 && self.ppm == 0.0
    }

    /// `t + offset + (t − start)·ppm·1e-6`, ns, clamped at 0.
    pub fn map(&self, t: u64) -> u64 {
        if self.is_identity() {
            return t;
        }
        let drift = (t as f64 - self.start_ns as f64) * self.ppm * 1e-6;
        let v = t as i128 + self.offset_ns as i128 + drift.round() as i128;
        v.clamp(0, u64::MAX as i128) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_clock_offset_and_drift() {
        let m = ClockMap::parse("1000,100", 1_000_000_000).unwrap();
        assert_eq!(m.map(1_000_000_000), 1_000_001_000);
        assert_eq!(m.map(2_000_000_000), 2_000_001_000 + 100_000);
        let n = ClockMap::parse(" -5000 , -50", 0).unwrap();
        assert_eq!(n.map(1_000_000_000), 1_000_000_000 - 5000 - 50_000);
        for bad in ["12", "a,b", "1,nan", "1,20000"] {
            assert!(ClockMap::parse(bad, 0).is_err(), "{bad}");
        }
        assert_eq!(ClockMap::IDENTITY.map(42), 42);
    }

    #[test]
    fn realtime_to_monotonic() {
        let p = ClockPair {
            mono: 5_000_000_000,
            real: 1_700_000_000_000_000_000,
        };
        assert_eq!(
            p.to_mono(p.real - 250_000, 1_000_000_000),
            Some(p.mono - 250_000)
        );
        assert_eq!(p.to_mono(p.real + 1, 1_000_000_000), None);
        assert_eq!(p.to_mono(p.real - 2_000_000_000, 1_000_000_000), None);
        let now = ClockPair::now();
        assert!(now.mono > 0 && now.real > now.mono);
    }
}

//! Clock reads and the mapping of local times onto what the core is told.
//!
//! The core works in nanoseconds of the node's CLOCK_MONOTONIC. Kernel
//! receive timestamps (`SO_TIMESTAMPNS`) are CLOCK_REALTIME, so they are
//! moved onto the monotonic clock with a pair of reads taken together.
//!
//! **Test only:** the environment variable `BARK_TEST_CLOCK="<offset_ns>,<ppm>"`
//! makes this node pretend that its monotonic clock is off by `offset_ns`
//! and runs `ppm` parts per million fast (negative: slow), counted from
//! module load. The lab uses it to give receivers on one host distinct
//! clocks. Never set it in production: it desynchronizes the node on purpose.

use nix::time::{clock_gettime, ClockId};

/// Name of the test-only clock skew variable.
pub const TEST_CLOCK_ENV: &str = "BARK_TEST_CLOCK";

/// CLOCK_MONOTONIC now, ns. A vDSO read: no syscall on the data thread.
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

/// A bracket this narrow (ns) is as good as clock reads get here (two
/// vDSO reads take ~50 ns); wider ones mean the thread was preempted.
pub const PAIR_TIGHT_NS: u64 = 2_000;

/// A monotonic and a realtime reading taken back to back, to convert kernel
/// (realtime) timestamps to monotonic ones.
#[derive(Clone, Copy, Debug)]
pub struct ClockPair {
    /// CLOCK_MONOTONIC, ns.
    pub mono: u64,
    /// CLOCK_REALTIME, ns.
    pub real: u64,
}

impl ClockPair {
    /// Reads both clocks now: the realtime read bracketed by two monotonic
    /// reads, its monotonic time taken as their midpoint. A preemption
    /// between the reads (the data thread is not always real-time) would
    /// otherwise shift every stamp of the cycle by the time preempted; the
    /// narrowest of up to four tries is kept, stopping at the first under
    /// [`PAIR_TIGHT_NS`]. Four vDSO reads at most: no syscall.
    pub fn now() -> Self {
        let mut best = (u64::MAX, ClockPair { mono: 0, real: 0 });
        for _ in 0..4 {
            let m0 = monotonic_ns();
            let real = realtime_ns();
            let width = monotonic_ns().saturating_sub(m0);
            if width < best.0 {
                best = (
                    width,
                    ClockPair {
                        mono: m0 + width / 2,
                        real,
                    },
                );
            }
            if width <= PAIR_TIGHT_NS {
                break;
            }
        }
        best.1
    }

    /// The monotonic time of realtime instant `real_ns`. Timestamps that
    /// land in the future or more than a second in the past (a clock step
    /// between the packet and now) are replaced by `self.mono`.
    pub fn to_mono(&self, real_ns: u64) -> u64 {
        let age = self.real as i128 - real_ns as i128;
        if !(0..=1_000_000_000).contains(&age) {
            return self.mono;
        }
        self.mono.saturating_sub(age as u64)
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

    /// From `BARK_TEST_CLOCK` if set, starting the drift at `start_ns`.
    ///
    /// # Errors
    /// A message for a malformed value.
    pub fn from_env(start_ns: u64) -> Result<ClockMap, String> {
        match std::env::var(TEST_CLOCK_ENV) {
            Ok(v) => Self::parse(&v, start_ns),
            Err(_) => Ok(Self::IDENTITY),
        }
    }

    /// Parses `"<offset_ns>,<ppm>"`.
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

    /// `t + offset + (t - start) * ppm * 1e-6`, ns, clamped at 0.
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
    fn test_clock_maps_offset_and_drift() {
        let m = ClockMap::parse("1000,100", 1_000_000_000).unwrap();
        assert_eq!(m.map(1_000_000_000), 1_000_001_000);
        // One second after start at +100 ppm: 100 us more.
        assert_eq!(m.map(2_000_000_000), 2_000_001_000 + 100_000);
        let n = ClockMap::parse("-5000, -50", 0).unwrap();
        assert_eq!(n.map(1_000_000_000), 1_000_000_000 - 5000 - 50_000);
        assert!(ClockMap::parse("12", 0).is_err());
        assert!(ClockMap::parse("a,b", 0).is_err());
        assert_eq!(ClockMap::IDENTITY.map(42), 42);
    }

    #[test]
    fn realtime_stamps_move_to_monotonic() {
        let p = ClockPair {
            mono: 5_000_000_000,
            real: 1_700_000_000_000_000_000,
        };
        assert_eq!(p.to_mono(p.real - 250_000), p.mono - 250_000);
        // Future or stale stamps fall back to the pair's monotonic time.
        assert_eq!(p.to_mono(p.real + 1), p.mono);
        assert_eq!(p.to_mono(p.real - 2_000_000_000), p.mono);
        let now = ClockPair::now();
        assert!(now.mono > 0 && now.real > now.mono);
    }
}

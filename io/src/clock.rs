//! Clocks: CLOCK_MONOTONIC reads, realtime→monotonic conversion of kernel
//! receive stamps, absolute sleeps, and the test-only clock skew.
//!
//! The core works in nanoseconds of the node's own CLOCK_MONOTONIC. Kernel
//! receive timestamps (`SO_TIMESTAMPNS`) and PulseAudio's timing reports are
//! CLOCK_REALTIME, so they are moved onto the monotonic clock with a pair of
//! reads taken together ([`ClockPair`]).
//!
//! **Test only:** `BARK_TEST_CLOCK="<offset_ns>,<ppm>"` (read by every
//! adapter; `bark` also takes `--test-clock`) makes a process pretend that
//! its monotonic clock is off by `offset_ns` and runs `ppm` parts per
//! million fast, counted from its start ([`ClockMap`]). Lab hosts share one
//! kernel, hence one clock; this gives them distinct ones so that clock
//! sync is exercised. Never set it in production: it desynchronizes the
//! node on purpose.

use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, clock_nanosleep, ClockId, ClockNanosleepFlags};

/// Name of the test-only clock skew variable.
pub const TEST_CLOCK_ENV: &str = "BARK_TEST_CLOCK";

/// CLOCK_MONOTONIC now, ns.
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

/// Sleeps until CLOCK_MONOTONIC reaches `deadline_ns` (absolute, so a late
/// wake-up does not push every later deadline back). Returns at once for a
/// deadline in the past; an interrupted sleep simply returns early.
pub fn sleep_until(deadline_ns: u64) {
    if deadline_ns <= monotonic_ns() {
        return;
    }
    let ts = TimeSpec::new(
        (deadline_ns / 1_000_000_000) as _,
        (deadline_ns % 1_000_000_000) as _,
    );
    let _ = clock_nanosleep(
        ClockId::CLOCK_MONOTONIC,
        ClockNanosleepFlags::TIMER_ABSTIME,
        &ts,
    );
}

/// A monotonic and a realtime reading taken as one instant, to convert
/// realtime stamps (kernel receive times, PulseAudio timing reports) to
/// monotonic ones.
#[derive(Clone, Copy, Debug)]
pub struct ClockPair {
    /// CLOCK_MONOTONIC, ns.
    pub mono: u64,
    /// CLOCK_REALTIME, ns.
    pub real: u64,
}

/// Largest gap (ns) between the two monotonic reads around a realtime read
/// that still counts as "taken together" (two vDSO reads take tens of ns;
/// more means the thread was preempted between them).
pub const PAIR_TIGHT_NS: u64 = 2_000;

impl ClockPair {
    /// Reads both clocks now, as one instant: the realtime read is
    /// bracketed by two monotonic reads and the narrowest of a few tries is
    /// kept (its midpoint). A process preempted between two plain reads
    /// would otherwise pair clocks milliseconds apart, and every kernel stamp
    /// converted with that pair would be off by as much: a receive delay
    /// that looks shorter than any real one, which a minimum-delay clock
    /// filter then trusts for its whole window.
    pub fn now() -> Self {
        let mut best = (u64::MAX, ClockPair { mono: 0, real: 0 });
        for _ in 0..4 {
            let m0 = monotonic_ns();
            let real = realtime_ns();
            let m1 = monotonic_ns();
            let width = m1.saturating_sub(m0);
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

    /// The monotonic time of realtime instant `real_ns`. A stamp in the
    /// future or more than a second old (the realtime clock stepped between
    /// the datagram and now) is replaced by `self.mono`.
    pub fn to_mono(&self, real_ns: u64) -> u64 {
        self.to_mono_within(real_ns, 1_000_000_000)
            .unwrap_or(self.mono)
    }

    /// The monotonic time of realtime instant `real_ns`, or `None` when it
    /// lies in the future or more than `max_age_ns` in the past (a clock
    /// step between the stamp and now makes it meaningless).
    pub fn to_mono_within(&self, real_ns: u64, max_age_ns: u64) -> Option<u64> {
        let age = self.real as i128 - real_ns as i128;
        if !(0..=max_age_ns as i128).contains(&age) {
            return None;
        }
        Some(self.mono.saturating_sub(age as u64))
    }
}

/// The local clock this process shows the core: the real monotonic clock,
/// or (tests) a skewed copy of it. `local = t + offset + (t − start)·ppm·1e-6`.
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

    /// From `BARK_TEST_CLOCK` if set, else the identity; drift counts from
    /// `start_ns`.
    ///
    /// # Errors
    /// A message for a malformed value.
    pub fn from_env(start_ns: u64) -> Result<Self, String> {
        Self::from_spec_or_env(None, start_ns)
    }

    /// From `spec` if given, else from `BARK_TEST_CLOCK` if set, else the
    /// identity; drift counts from `start_ns`.
    ///
    /// # Errors
    /// A message for a malformed value.
    pub fn from_spec_or_env(spec: Option<&str>, start_ns: u64) -> Result<Self, String> {
        match spec {
            Some(v) => Self::parse(v, start_ns),
            None => match std::env::var(TEST_CLOCK_ENV) {
                Ok(v) => Self::parse(&v, start_ns),
                Err(_) => Ok(Self::IDENTITY),
            },
        }
    }

    /// Parses `"<offset_ns>,<ppm>"` (|ppm| ≤ 10000).
    ///
    /// # Errors
    /// A message for a malformed value.
    pub fn parse(v: &str, start_ns: u64) -> Result<Self, String> {
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

    /// Whether this clock is the real one.
    pub fn is_identity(&self) -> bool {
        self.offset_ns == 0 && self.ppm == 0.0
    }

    /// Local time (ns) of real monotonic instant `t`.
    pub fn map(&self, t: u64) -> u64 {
        if self.is_identity() {
            return t;
        }
        let drift = (t as f64 - self.start_ns as f64) * self.ppm * 1e-6;
        let v = t as i128 + self.offset_ns as i128 + drift.round() as i128;
        v.clamp(0, u64::MAX as i128) as u64
    }

    /// Real monotonic instant (ns) at which the local clock shows `l`: the
    /// inverse of [`ClockMap::map`].
    pub fn unmap(&self, l: u64) -> u64 {
        if self.is_identity() {
            return l;
        }
        let rel = l as f64 - self.offset_ns as f64 - self.start_ns as f64;
        let t = self.start_ns as f64 + rel / (1.0 + self.ppm * 1e-6);
        t.round().clamp(0.0, u64::MAX as f64) as u64
    }

    /// Local clock now, ns.
    pub fn now(&self) -> u64 {
        self.map(monotonic_ns())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_clock_maps_and_inverts() {
        let m = ClockMap::parse("1000,100", 1_000_000_000).unwrap();
        assert_eq!(m.map(1_000_000_000), 1_000_001_000);
        // One second after start at +100 ppm: 100 µs more.
        assert_eq!(m.map(2_000_000_000), 2_000_001_000 + 100_000);
        for t in [1_000_000_000u64, 5_123_456_789, 90_000_000_000] {
            assert!((m.unmap(m.map(t)) as i64 - t as i64).abs() <= 1);
        }
        let n = ClockMap::parse("-5000, -50", 0).unwrap();
        assert_eq!(n.map(1_000_000_000), 1_000_000_000 - 5000 - 50_000);
        assert!(ClockMap::parse("12", 0).is_err());
        assert!(ClockMap::parse("a,b", 0).is_err());
        assert!(ClockMap::parse("0,1e9", 0).is_err());
        assert_eq!(ClockMap::IDENTITY.map(42), 42);
        assert_eq!(ClockMap::IDENTITY.unmap(42), 42);
    }

    #[test]
    fn realtime_stamps_move_to_monotonic() {
        let p = ClockPair {
            mono: 5_000_000_000,
            real: 1_700_000_000_000_000_000,
        };
        assert_eq!(p.to_mono(p.real - 250_000), p.mono - 250_000);
        assert_eq!(p.to_mono(p.real + 1), p.mono);
        assert_eq!(p.to_mono(p.real - 2_000_000_000), p.mono);
        assert_eq!(
            p.to_mono_within(p.real - 250_000, 1_000_000),
            Some(p.mono - 250_000)
        );
        assert_eq!(p.to_mono_within(p.real - 2_000_000, 1_000_000), None);
        assert_eq!(p.to_mono_within(p.real + 1, 1_000_000), None);
        // A pair read now converts a realtime read taken just before to a
        // monotonic time just before now.
        let r = realtime_ns();
        let m = monotonic_ns();
        let q = ClockPair::now();
        let back = q.to_mono(r);
        assert!(back <= q.mono && back + 1_000_000 > m, "{back} {m}");
    }

    #[test]
    fn sleep_until_reaches_the_deadline() {
        let d = monotonic_ns() + 3_000_000;
        sleep_until(d);
        assert!(monotonic_ns() >= d);
    }
}

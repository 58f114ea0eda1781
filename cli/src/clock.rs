//! Clocks: the shared adapter clock helpers of `bark-io` (monotonic reads,
//! realtime→monotonic pairing, absolute sleeps, the test-only skew of
//! `BARK_TEST_CLOCK` / `--test-clock`).

pub use bark_io::clock::{
    monotonic_ns, realtime_ns, sleep_until, ClockPair, PAIR_TIGHT_NS, TEST_CLOCK_ENV,
};

/// The local clock this process shows the core: the real monotonic clock,
/// or (tests) a skewed copy of it (`bark_io::clock::ClockMap`).
pub type TestClock = bark_io::clock::ClockMap;

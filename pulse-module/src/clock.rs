//! Clock reads, realtime→monotonic pairing (kernel receive stamps and
//! PulseAudio's timing reports are CLOCK_REALTIME) and the test-only skew
//! of `BARK_TEST_CLOCK`: the shared adapter helpers of `bark-io`.

pub use bark_io::clock::{monotonic_ns, realtime_ns, ClockMap, ClockPair, TEST_CLOCK_ENV};

//! Clock reads and the mapping of local times onto what the core is told:
//! the shared adapter helpers of `bark-io`. Kernel receive timestamps
//! (`SO_TIMESTAMPNS`) are CLOCK_REALTIME and move onto CLOCK_MONOTONIC
//! through a [`ClockPair`]; `BARK_TEST_CLOCK` ([`ClockMap`], test only)
//! skews this node's clock in the lab. All reads are vDSO calls: no
//! syscall, no allocation on the data thread.

pub use bark_io::clock::{monotonic_ns, realtime_ns, ClockMap, ClockPair, TEST_CLOCK_ENV};

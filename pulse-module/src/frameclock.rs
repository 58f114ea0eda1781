//! When frame *n* of a stream is heard: the estimate itself is bark-core's
//! sans-IO [`bark_core::frameclock`] (lower envelope of the timing reports,
//! robust drift slope, step detection), where the simulator runs it too.
//! bark-pulse's part is the libpulse glue: [`crate::timing`] reduces each
//! `pa_timing_info` to a report, and the sink and source feed the reports
//! in and fill their writes for the estimate's play times.

pub use bark_core::frameclock::{FrameClock, BUCKET_NS, STEP_NS};

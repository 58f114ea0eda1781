//! When the buffer being filled will be heard, from the stream's `pw_time`.
//!
//! What PipeWire 0.3.65 puts in `pw_time` for a playback stream with
//! `PW_STREAM_FLAG_RT_PROCESS` (src/pipewire/stream.c of that release):
//!
//! - `process` runs inside the graph cycle that will consume the buffer we
//!   queue, right after the stream snapshots the cycle's position. So the
//!   buffer filled now is the one this cycle hands to the graph.
//! - `now` is the driver's `clock.nsec`: CLOCK_MONOTONIC at the start of this
//!   cycle (the driver's wakeup), not the moment `process` runs.
//! - `rate` is the graph's clock rate (1/48000 typically); `ticks` and
//!   `delay` count in it.
//! - `delay` is the downstream latency reported through `SPA_PARAM_Latency`
//!   (filters plus the device's own report), in graph ticks: how long after
//!   the cycle start the first sample of this cycle's output is presented.
//! - `queued` sums `pw_buffer.size` of buffers queued but not yet consumed;
//!   we set `size` in frames, and it is 0 in an RT `process` because the
//!   stream only asks for a buffer once its queue is empty.
//! - `buffered` is what the stream's resampler holds (samples at the
//!   stream rate), non-zero when the stream rate differs from the graph's.
//!
//! So the first frame we write now is heard at
//! `now + delay·rate + (queued + buffered) / stream_rate`. The cycle start,
//! not the current time, is the base: anything between the cycle start and
//! our `process` call is already accounted for by the driver.
//!
//! Known limit: an ALSA sink in 0.3.65 reports only its headroom as latency,
//! not the fill level its timer keeps (about one quantum more). Receivers on
//! equal setups share that bias; `bark.delay.msec` corrects the rest.

use pipewire_sys as pw;

/// The parts of `pw_time` that matter, as plain numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StreamTime {
    /// Cycle start, CLOCK_MONOTONIC ns (0: unknown).
    pub now: i64,
    /// Graph rate numerator (seconds per tick = num / denom).
    pub rate_num: u32,
    /// Graph rate denominator.
    pub rate_denom: u32,
    /// Downstream latency, graph ticks.
    pub delay: i64,
    /// Queued data, frames (our `pw_buffer.size` unit).
    pub queued: u64,
    /// Resampler backlog, frames at the stream rate.
    pub buffered: u64,
}

impl From<&pw::pw_time> for StreamTime {
    fn from(t: &pw::pw_time) -> Self {
        StreamTime {
            now: t.now,
            rate_num: t.rate.num,
            rate_denom: t.rate.denom,
            delay: t.delay,
            queued: t.queued,
            buffered: t.buffered,
        }
    }
}

/// CLOCK_MONOTONIC ns at which the first frame of the buffer being filled
/// will be heard. `stream_rate` is the stream's own rate, Hz; `fallback_now`
/// is used while the stream has no position yet.
pub fn play_ns(t: &StreamTime, stream_rate: u32, fallback_now: u64) -> u64 {
    if t.now <= 0 || t.rate_denom == 0 {
        return fallback_now;
    }
    let delay_ns = t.delay as i128 * 1_000_000_000 * t.rate_num as i128 / t.rate_denom as i128;
    let backlog = t.queued.saturating_add(t.buffered) as i128;
    let backlog_ns = if stream_rate == 0 {
        0
    } else {
        backlog * 1_000_000_000 / stream_rate as i128
    };
    (t.now as i128 + delay_ns.max(0) + backlog_ns).clamp(0, u64::MAX as i128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_delay_and_backlog_to_cycle_start() {
        let t = StreamTime {
            now: 1_000_000_000,
            rate_num: 1,
            rate_denom: 48_000,
            delay: 480,
            queued: 0,
            buffered: 0,
        };
        assert_eq!(play_ns(&t, 48_000, 7), 1_010_000_000);
        // 44.1 kHz stream in a 48 kHz graph with 441 frames in the resampler.
        let t = StreamTime { buffered: 441, ..t };
        assert_eq!(play_ns(&t, 44_100, 7), 1_020_000_000);
        // No position yet.
        assert_eq!(play_ns(&StreamTime::default(), 48_000, 7), 7);
    }
}

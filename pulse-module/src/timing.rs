//! Which frame of a stream is heard when, from one `pa_timing_info`
//! (PulseAudio 16.1: src/pulsecore/protocol-native.c, src/pulse/stream.c,
//! src/modules/module-null-sink.c, read for the semantics below).
//!
//! The server answers a timing request by snapshotting the stream on the
//! sink's (or source's) I/O thread at some instant `t_io`, then stamping the
//! reply with `gettimeofday` on its main thread: `timestamp` ≥ `t_io`, by
//! tens of µs typically. libpulse keeps that stamp when client and server
//! share a clock (`synchronized_clocks`, always true for a local server).
//!
//! **Playback** (the receiver): `sink_usec` is the sink's latency (audio
//! rendered but not yet heard) plus what the stream's sink input has taken
//! from its queue but not yet rendered, plus its resampler's delay. So the
//! frame at `read_index` is heard at `t_io + sink_usec`, and later frames
//! follow one period apart. libpulse adds every write made since the request
//! to `write_index`, so `write_index` is where the *next* write lands:
//! heard at `t_io + sink_usec + (write_index − read_index)/bytes_per_second`.
//!
//! **Record of a monitor** (the sender): `sink_usec` is the monitored sink's
//! latency (`u->timestamp − now` for a null sink: how far ahead of its
//! virtual play-out clock it has rendered), `source_usec` is what the I/O
//! thread has posted but the main thread not yet queued (`on_the_fly`), and
//! `write_index` is the end of the queue. With rewinds off (`norewinds=1`),
//! a monitor's record stream gets every rendered chunk at once, so the end
//! of what was rendered is frame `write_index + on_the_fly`, played into the
//! sink at `t_io + sink_usec`. Hence frame `write_index` at
//! `t_io + sink_usec − source_usec`. (With rewinds on, the monitor holds back
//! up to the sink's latency for possible rewinds and this errs late by
//! what is held; the sink is loaded with `norewinds=1` where the server
//! supports it, PulseAudio ≥ 13.)
//!
//! Using `timestamp` for `t_io` errs late; [`bark_core::frameclock`] takes
//! the lower envelope of many reports to remove that.

use crate::clock::ClockPair;
use libpulse_binding as pulse;
use pulse::def::TimingInfo;

/// pipewire-pulse's reply lag, measured in core (see there).
pub use bark_core::frameclock::CycleQuantum;

/// Reports older than this (ns) are not used: a clock step may lie between.
const MAX_REPORT_AGE_NS: u64 = 1_000_000_000;

/// One timing report, reduced to "frame `frame` is heard at `play_ns`",
/// known at `t_ns` (all CLOCK_MONOTONIC ns).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Report {
    /// When the server took the report (its reply stamp, on CLOCK_MONOTONIC).
    pub t_ns: u64,
    /// Frame index in the stream's own count.
    pub frame: u64,
    /// When that frame is (or was) heard.
    pub play_ns: f64,
}

/// The plain numbers of a `pa_timing_info` that matter here.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Info {
    /// Reply stamp, CLOCK_REALTIME µs since the epoch.
    pub timestamp_us: i64,
    /// `sink_usec`.
    pub sink_usec: u64,
    /// `source_usec`.
    pub source_usec: u64,
    /// `write_index`, bytes (`None` when libpulse marks it corrupt).
    pub write_index: Option<i64>,
    /// `read_index`, bytes (`None` when corrupt).
    pub read_index: Option<i64>,
}

impl Info {
    /// From libpulse's struct.
    pub fn from_pa(ti: &TimingInfo) -> Info {
        // SAFETY: `UnixTs` is repr(transparent) over the binding's
        // `Timeval`, itself repr(transparent) over `libc::timeval` (the
        // binding documents both as transmutable); the binding offers no
        // accessor for the raw value.
        let tv: libc::timeval = unsafe { std::mem::transmute(ti.timestamp) };
        Info {
            timestamp_us: tv.tv_sec * 1_000_000 + tv.tv_usec,
            sink_usec: ti.sink_usec.0,
            source_usec: ti.source_usec.0,
            write_index: (ti.write_index_corrupt == 0).then_some(ti.write_index),
            read_index: (ti.read_index_corrupt == 0).then_some(ti.read_index),
        }
    }

    /// The reply stamp on CLOCK_MONOTONIC, ns, using a clock pair read now.
    pub fn t_mono(&self, now: &ClockPair) -> Option<u64> {
        if self.timestamp_us <= 0 {
            return None;
        }
        now.to_mono_within(self.timestamp_us as u64 * 1000, MAX_REPORT_AGE_NS)
    }

    /// Playback: when the next frame written is heard. `next_frame` is the
    /// caller's count of frames written so far (its index for the next
    /// write); `frame_bytes` and `rate` describe the stream.
    pub fn playback(
        &self,
        now: &ClockPair,
        next_frame: u64,
        frame_bytes: usize,
        rate: u32,
    ) -> Option<Report> {
        let t = self.t_mono(now)?;
        let (w, r) = (self.write_index?, self.read_index?);
        let queued_frames = (w - r) as f64 / frame_bytes as f64;
        let play = t as f64 + self.sink_usec as f64 * 1000.0 + queued_frames * 1e9 / rate as f64;
        Some(Report {
            t_ns: t,
            frame: next_frame,
            play_ns: play,
        })
    }

    /// Record of a monitor: when frame `write_index` was played into the
    /// monitored sink. Frames are counted from the stream's start, the same
    /// count the server's indices use.
    pub fn monitor_record(&self, now: &ClockPair, frame_bytes: usize) -> Option<Report> {
        let t = self.t_mono(now)?;
        let w = self.write_index?;
        if w < 0 {
            return None;
        }
        let play = t as f64 + self.sink_usec as f64 * 1000.0 - self.source_usec as f64 * 1000.0;
        Some(Report {
            t_ns: t,
            frame: w as u64 / frame_bytes as u64,
            play_ns: play,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> ClockPair {
        ClockPair {
            mono: 100_000_000_000,
            real: 1_700_000_000_000_000_000,
        }
    }

    #[test]
    fn playback_adds_latency_and_queue() {
        let p = pair();
        let i = Info {
            timestamp_us: (p.real / 1000) as i64 - 2_000,
            sink_usec: 10_000,
            source_usec: 0,
            write_index: Some(8 * 960),
            read_index: Some(8 * 480),
        };
        // Stamp 2 ms ago, 10 ms sink latency, 480 frames (10 ms) queued.
        let r = i.playback(&p, 5000, 8, 48_000).unwrap();
        assert_eq!(r.t_ns, p.mono - 2_000_000);
        assert_eq!(r.frame, 5000);
        assert!((r.play_ns - (p.mono as f64 - 2e6 + 10e6 + 10e6)).abs() < 1.0);
        assert!(Info {
            read_index: None,
            ..i
        }
        .playback(&p, 0, 8, 48_000)
        .is_none());
        // A stamp from the future or far past is refused.
        let future = Info {
            timestamp_us: (p.real / 1000) as i64 + 5,
            ..i
        };
        assert!(future.playback(&p, 0, 8, 48_000).is_none());
    }

    #[test]
    fn monitor_record_subtracts_on_the_fly() {
        let p = pair();
        let i = Info {
            timestamp_us: (p.real / 1000) as i64,
            sink_usec: 7_000,
            source_usec: 500,
            write_index: Some(8 * 48_000),
            read_index: Some(0),
        };
        let r = i.monitor_record(&p, 8).unwrap();
        assert_eq!(r.frame, 48_000);
        assert!((r.play_ns - (p.mono as f64 + 6.5e6)).abs() < 1.0);
    }
}

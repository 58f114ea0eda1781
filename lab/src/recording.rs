//! Timestamped recordings: a WAV file of samples plus a sidecar CSV
//! (`<name>.ts.csv`) with one row per PipeWire buffer saying when the
//! buffer's first frame was played, in CLOCK_MONOTONIC nanoseconds.
//!
//! All lab hosts are network namespaces on one kernel, so CLOCK_MONOTONIC is
//! one clock for all of them: these times are directly comparable across
//! hosts. That makes them ground truth for the lab, and useless anywhere
//! else (the product never sees them).

use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Timing of one buffer of a recording (or of a generated reference).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamp {
    /// Index, in frames, of the buffer's first frame within the WAV file.
    pub frame: u64,
    /// Frames in the buffer.
    pub frames: u32,
    /// CLOCK_MONOTONIC time, ns, at which the buffer's first frame was (or
    /// will be) presented by the sink. Derived from the fields below; see
    /// the recorder and lab/README.md for the derivation.
    pub t_first_ns: i64,
    /// `pw_time.now`: CLOCK_MONOTONIC ns of the graph cycle start.
    pub now_ns: i64,
    /// `pw_time.delay`, in ticks of `rate_num/rate_den` seconds.
    pub delay: i64,
    /// `pw_time.rate.num` (tick = num/den s).
    pub rate_num: u32,
    /// `pw_time.rate.denom`.
    pub rate_den: u32,
    /// `pw_time.ticks`: graph clock position, ticks.
    pub ticks: u64,
    /// `pw_time.queued`: stream-defined queue size (frames for our tools).
    pub queued: u64,
    /// How many newer buffers were taken in the same process() call (0 =
    /// on time; >0 = this buffer was delivered late and its time was
    /// computed back from the newest one).
    pub backlog: u32,
}

const HEADER: &str = "frame,frames,t_first_ns,now_ns,delay,rate_num,rate_den,ticks,queued,backlog";

/// Sidecar path for a WAV file: `x.wav` -> `x.ts.csv`.
pub fn stamps_path(wav: &Path) -> PathBuf {
    wav.with_extension("ts.csv")
}

/// Write stamps as CSV with a `#` comment line holding `meta`.
pub fn write_stamps(path: &Path, meta: &str, stamps: &[Stamp]) -> Result<()> {
    let mut s = String::with_capacity(64 * (stamps.len() + 2));
    let _ = writeln!(s, "# bark-lab stamps v1; {meta}");
    s.push_str(HEADER);
    s.push('\n');
    for t in stamps {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{}",
            t.frame,
            t.frames,
            t.t_first_ns,
            t.now_ns,
            t.delay,
            t.rate_num,
            t.rate_den,
            t.ticks,
            t.queued,
            t.backlog
        );
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

/// Parse a stamps CSV written by [`write_stamps`].
pub fn read_stamps(path: &Path) -> Result<Vec<Stamp>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (no, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.starts_with("frame,") || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 10 {
            bail!(
                "{}:{}: want 10 fields, got {}",
                path.display(),
                no + 1,
                f.len()
            );
        }
        let p = |i: usize| -> Result<i64> {
            f[i].trim()
                .parse::<i64>()
                .with_context(|| format!("{}:{} field {}", path.display(), no + 1, i + 1))
        };
        out.push(Stamp {
            frame: p(0)? as u64,
            frames: p(1)? as u32,
            t_first_ns: p(2)?,
            now_ns: p(3)?,
            delay: p(4)?,
            rate_num: p(5)? as u32,
            rate_den: p(6)? as u32,
            ticks: p(7)? as u64,
            queued: p(8)? as u64,
            backlog: p(9)? as u32,
        });
    }
    Ok(out)
}

/// A recording loaded for analysis: mono mix-down plus its time map.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Sample rate of `mono`, Hz.
    pub rate: u32,
    /// Channels in the original file (mixed down into `mono`).
    pub channels: u16,
    /// Mean of all channels, full scale = 1.0.
    pub mono: Vec<f64>,
    /// Per-buffer timing, sorted by `frame`; empty if the file has none
    /// (then only content-based figures can be computed).
    pub stamps: Vec<Stamp>,
}

impl Recording {
    /// Load `wav` and, if present, its `.ts.csv` sidecar.
    pub fn load(wav: &Path) -> Result<Self> {
        Recording::load_channel(wav, None)
    }

    /// Load channel `channel` of `wav` (0-based) in place of the mean of
    /// all channels (`None`: the mean), and its `.ts.csv` sidecar.
    pub fn load_channel(wav: &Path, channel: Option<u16>) -> Result<Self> {
        let (spec, interleaved) = read_wav(wav)?;
        let ch = spec.channels as usize;
        if let Some(c) = channel {
            if c >= spec.channels {
                anyhow::bail!(
                    "{}: has {} channels, no channel {c}",
                    wav.display(),
                    spec.channels
                );
            }
        }
        let mono = interleaved
            .chunks_exact(ch)
            .map(|f| match channel {
                Some(c) => f[c as usize],
                None => f.iter().sum::<f64>() / ch as f64,
            })
            .collect();
        let sp = stamps_path(wav);
        let stamps = if sp.exists() {
            let mut s = read_stamps(&sp)?;
            s.sort_by_key(|t| t.frame);
            s
        } else {
            Vec::new()
        };
        Ok(Recording {
            rate: spec.sample_rate,
            channels: spec.channels,
            mono,
            stamps,
        })
    }

    /// True if this recording carries timestamps.
    pub fn has_time(&self) -> bool {
        !self.stamps.is_empty()
    }

    /// CLOCK_MONOTONIC time, ns, at which (fractional) frame `frame` was
    /// played: the enclosing buffer's first-frame time plus the offset in
    /// frames at the nominal rate. Frames outside all buffers extrapolate
    /// from the nearest one. `None` without timestamps.
    pub fn time_at(&self, frame: f64) -> Option<f64> {
        if self.stamps.is_empty() {
            return None;
        }
        // Last buffer whose first frame is <= frame.
        let idx = self
            .stamps
            .partition_point(|s| (s.frame as f64) <= frame)
            .saturating_sub(1);
        let s = &self.stamps[idx];
        Some(s.t_first_ns as f64 + (frame - s.frame as f64) * 1e9 / f64::from(self.rate))
    }

    /// Timestamp gaps: places where a buffer starts more than `tol_ns`
    /// away from where the previous one ended (a missed graph cycle,
    /// an xrun, a stall of the recorder). Returns (frame, gap_ns) pairs,
    /// gap positive when time was skipped.
    pub fn time_gaps(&self, tol_ns: f64) -> Vec<(u64, f64)> {
        let mut out = Vec::new();
        for w in self.stamps.windows(2) {
            let expect =
                w[0].t_first_ns as f64 + f64::from(w[0].frames) * 1e9 / f64::from(self.rate);
            let gap = w[1].t_first_ns as f64 - expect;
            if gap.abs() > tol_ns {
                out.push((w[1].frame, gap));
            }
        }
        out
    }

    /// Duration of the samples, s.
    pub fn seconds(&self) -> f64 {
        self.mono.len() as f64 / f64::from(self.rate)
    }
}

/// Read a WAV file (float or integer samples) as interleaved samples,
/// full scale = 1.0, with its format.
///
/// Errors: the file cannot be opened or is not a WAV file hound reads.
pub fn read_wav(path: &Path) -> Result<(hound::WavSpec, Vec<f64>)> {
    let mut r =
        hound::WavReader::open(path).with_context(|| format!("opening {}", path.display()))?;
    let spec = r.spec();
    let samples = match spec.sample_format {
        hound::SampleFormat::Float => r
            .samples::<f32>()
            .map(|s| s.map(f64::from))
            .collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / f64::from(1u32 << (spec.bits_per_sample - 1));
            r.samples::<i32>()
                .map(|s| s.map(|v| f64::from(v) * scale))
                .collect::<Result<_, _>>()?
        }
    };
    Ok((spec, samples))
}

/// Write interleaved f32 samples as a WAV file.
pub fn write_wav(path: &Path, rate: u32, channels: u16, interleaved: &[f32]) -> Result<()> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .with_context(|| format!("creating {}", path.display()))?;
    for &s in interleaved {
        w.write_sample(s)?;
    }
    w.finalize()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_roundtrip_and_time_map() {
        let dir = std::env::temp_dir().join(format!("bark-lab-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let wav = dir.join("x.wav");
        write_wav(&wav, 48000, 2, &vec![0.25f32; 2 * 960]).unwrap();
        let stamps: Vec<Stamp> = (0..2)
            .map(|i| Stamp {
                frame: 480 * i,
                frames: 480,
                // 10 ms buffers, but the second starts 1 ms late: a gap.
                t_first_ns: 1_000_000_000 + i as i64 * 11_000_000,
                now_ns: 0,
                delay: 0,
                rate_num: 1,
                rate_den: 48000,
                ticks: 0,
                queued: 0,
                backlog: 0,
            })
            .collect();
        write_stamps(&stamps_path(&wav), "test", &stamps).unwrap();
        let r = Recording::load(&wav).unwrap();
        assert_eq!(r.stamps, stamps);
        assert_eq!(r.mono.len(), 960);
        assert!((r.mono[5] - 0.25).abs() < 1e-9);
        // Frame 240 = 5 ms into the first buffer.
        assert!((r.time_at(240.0).unwrap() - 1_005_000_000.0).abs() < 1e-3);
        // Frame 480 starts the second buffer.
        assert!((r.time_at(480.0).unwrap() - 1_011_000_000.0).abs() < 1e-3);
        let gaps = r.time_gaps(100_000.0);
        assert_eq!(gaps.len(), 1);
        assert!((gaps[0].1 - 1_000_000.0).abs() < 1.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

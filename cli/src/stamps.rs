//! Timestamped recordings: a WAV file (32-bit float) written as audio is
//! produced, plus a sidecar `FILE.ts.csv` with one row per buffer saying when
//! its first frame is heard (receive) or entered the sender (stream), in
//! CLOCK_MONOTONIC ns.
//!
//! The sidecar uses the lab's format (lab/src/recording.rs, "bark-lab stamps
//! v1": `frame,frames,t_first_ns,now_ns,delay,rate_num,rate_den,ticks,queued,backlog`)
//! so that `bark-lab-analyze` measures latency and skew of CLI recordings
//! exactly as it does for PipeWire ones. Lab hosts share one kernel, so these
//! times are comparable across network namespaces.

use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Sidecar path of a WAV file: `x.wav` → `x.ts.csv`.
pub fn stamps_path(wav: &Path) -> PathBuf {
    wav.with_extension("ts.csv")
}

/// Timing of one buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Index of the buffer's first frame in the file.
    pub frame: u64,
    /// Frames in the buffer.
    pub frames: u32,
    /// CLOCK_MONOTONIC ns at which the first frame is heard (or entered).
    pub t_first_ns: i64,
    /// CLOCK_MONOTONIC ns of the cycle start (when the buffer was due).
    pub now_ns: i64,
    /// Cycle start to first frame heard, in frames at the file's rate.
    pub delay_frames: i64,
    /// Cycles that were handled late (behind schedule) so far; the lab's
    /// `backlog` column.
    pub backlog: u32,
}

/// A WAV file plus its timestamp sidecar, written incrementally.
pub struct StampedWav {
    wav: hound::WavWriter<BufWriter<File>>,
    csv: BufWriter<File>,
    rate: u32,
    frames: u64,
}

impl StampedWav {
    /// Creates `path` (F32 WAV, `rate` Hz, `channels`) and its sidecar;
    /// `meta` goes into the sidecar's comment line.
    ///
    /// # Errors
    /// If either file cannot be created.
    pub fn create(path: &Path, rate: u32, channels: u16, meta: &str) -> Result<Self> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let wav = hound::WavWriter::create(path, spec)
            .with_context(|| format!("creating {}", path.display()))?;
        let sp = stamps_path(path);
        let mut csv = BufWriter::new(
            File::create(&sp).with_context(|| format!("creating {}", sp.display()))?,
        );
        writeln!(csv, "# bark-lab stamps v1; {meta}")?;
        writeln!(
            csv,
            "frame,frames,t_first_ns,now_ns,delay,rate_num,rate_den,ticks,queued,backlog"
        )?;
        Ok(StampedWav {
            wav,
            csv,
            rate,
            frames: 0,
        })
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Appends one buffer of interleaved samples heard from `t_first_ns`.
    ///
    /// # Errors
    /// Write failures (a full disk).
    pub fn write(&mut self, samples: &[f32], channels: usize, s: Stamp) -> Result<()> {
        for &v in samples {
            self.wav.write_sample(v)?;
        }
        let frames = (samples.len() / channels) as u32;
        writeln!(
            self.csv,
            "{},{},{},{},{},1,{},{},0,{}",
            self.frames,
            frames,
            s.t_first_ns,
            s.now_ns,
            s.delay_frames,
            self.rate,
            self.frames,
            s.backlog
        )?;
        self.frames += frames as u64;
        Ok(())
    }

    /// Completes the WAV header and flushes both files.
    ///
    /// # Errors
    /// Write failures.
    pub fn finish(mut self) -> Result<()> {
        self.csv.flush()?;
        self.wav.finalize()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_wav_and_lab_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.wav");
        let mut w = StampedWav::create(&p, 48_000, 2, "test").unwrap();
        let s = Stamp {
            frame: 0,
            frames: 2,
            t_first_ns: 1000,
            now_ns: 900,
            delay_frames: 5,
            backlog: 0,
        };
        w.write(&[0.5, -0.5, 0.25, -0.25], 2, s).unwrap();
        w.write(
            &[0.0, 0.0],
            2,
            Stamp {
                t_first_ns: 2000,
                ..s
            },
        )
        .unwrap();
        w.finish().unwrap();
        let r = hound::WavReader::open(&p).unwrap();
        assert_eq!(r.spec().sample_rate, 48_000);
        assert_eq!(r.len(), 6);
        let csv = std::fs::read_to_string(dir.path().join("x.ts.csv")).unwrap();
        let rows: Vec<&str> = csv.lines().skip(2).collect();
        assert_eq!(
            rows,
            [
                "0,2,1000,900,5,1,48000,0,0,0",
                "2,1,2000,900,5,1,48000,2,0,0"
            ]
        );
    }
}

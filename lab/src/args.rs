//! Command-line argument groups that several lab tools share (flattened
//! into their own `clap` structs), so that the same option means the same
//! thing, with the same limits, in each of them.

use crate::recording::Recording;
use anyhow::{bail, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// Longest recording or playback a lab tool takes, s.
pub const MAX_SECONDS: f64 = 3600.0;

/// Check a `--seconds` value: in (0, [`MAX_SECONDS`]].
///
/// Errors: out of range (or NaN), with the message the tools print.
pub fn check_seconds(seconds: f64) -> Result<()> {
    if !(seconds > 0.0 && seconds <= MAX_SECONDS) {
        bail!("--seconds must be in (0, {MAX_SECONDS}]");
    }
    Ok(())
}

/// What a recorder takes (`bark-lab-record`, `bark-lab-pulse record`):
/// how much, into which file, in which format, and how long to wait for
/// the first audio.
#[derive(Args, Debug, Clone)]
pub struct Capture {
    /// Seconds of audio to keep (counted in frames from the first buffer).
    #[arg(long)]
    pub seconds: f64,
    /// Output WAV; the stamps go beside it as `.ts.csv`.
    #[arg(long)]
    pub out: PathBuf,
    /// Sample rate, Hz: use the graph's (the sink's), so that nothing
    /// resamples between the monitor and the recorder.
    #[arg(long, default_value_t = 48000)]
    pub rate: u32,
    /// Channels, 1..=8, in PipeWire's default layout for the count.
    #[arg(long, default_value_t = 2)]
    pub channels: u8,
    /// Give up if no audio arrived within this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub start_timeout: f64,
}

impl Capture {
    /// Frames to keep: `--seconds` at `--rate`, rounded.
    ///
    /// Errors: `--seconds` out of range ([`check_seconds`]).
    pub fn frames(&self) -> Result<u64> {
        check_seconds(self.seconds)?;
        Ok((self.seconds * f64::from(self.rate)).round() as u64)
    }
}

/// What a judge compares (`bark-lab-analyze`, `bark-lab-onsets`): one
/// reference recording and the receivers' recordings, labelled.
#[derive(Args, Debug, Clone)]
pub struct Compared {
    /// Reference recording (what entered the sender's sink), WAV (+ .ts.csv).
    #[arg(long)]
    pub reference: PathBuf,
    /// Receiver recordings, WAV (+ .ts.csv); repeat for each receiver.
    #[arg(long = "receiver", required = true)]
    pub receivers: Vec<PathBuf>,
    /// Labels for the receivers, same order (default: file stems).
    #[arg(long = "label")]
    pub labels: Vec<String>,
}

impl Compared {
    /// Label of receiver `i`: its `--label`, else its file stem, else `rx<i>`.
    pub fn label(&self, i: usize) -> String {
        self.labels.get(i).cloned().unwrap_or_else(|| {
            self.receivers[i]
                .file_stem()
                .map_or(format!("rx{i}"), |s| s.to_string_lossy().into_owned())
        })
    }

    /// The reference and every receiver with its label, each read by
    /// `load` (e.g. [`Recording::load`], or that and a resampler).
    ///
    /// Errors: the first recording `load` fails on.
    pub fn load(
        &self,
        load: impl Fn(&Path) -> Result<Recording>,
    ) -> Result<(Recording, Vec<(String, Recording)>)> {
        let reference = load(&self.reference)?;
        let receivers = self
            .receivers
            .iter()
            .enumerate()
            .map(|(i, p)| Ok((self.label(i), load(p)?)))
            .collect::<Result<_>>()?;
        Ok((reference, receivers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_outside_the_range_are_refused() {
        for bad in [0.0, -1.0, f64::NAN, MAX_SECONDS + 0.1] {
            assert!(check_seconds(bad).is_err(), "{bad} accepted");
        }
        assert!(check_seconds(MAX_SECONDS).is_ok());
        let c = Capture {
            seconds: 1.5,
            out: "x.wav".into(),
            rate: 44100,
            channels: 2,
            start_timeout: 10.0,
        };
        assert_eq!(c.frames().unwrap(), 66150);
    }

    #[test]
    fn labels_fall_back_to_file_stems() {
        let c = Compared {
            reference: "ref.wav".into(),
            receivers: vec!["out/rx1.wav".into(), "out/rx2.wav".into(), "/".into()],
            labels: vec!["h1".into()],
        };
        assert_eq!(c.label(0), "h1");
        assert_eq!(c.label(1), "rx2");
        assert_eq!(c.label(2), "rx2");
    }
}

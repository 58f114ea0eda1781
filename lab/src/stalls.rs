//! Stalls of the machine itself: spans in which even a SCHED_FIFO thread
//! at the top priority did not run (a virtual machine descheduled by its
//! host, a firmware interrupt). No audio system plays through those; the
//! lab records them with `bark-lab-stalls` beside every recording so that
//! a dropout they explain is told apart from one Bark caused.
//!
//! File format (CSV, written by `bark-lab-stalls`): a `#` comment line,
//! then `start_ns,len_ns` per stall: CLOCK_MONOTONIC ns at which the probe
//! should have woken, and how much later it did, ns.

use anyhow::{Context, Result};
use std::path::Path;

/// How long before a stall's start a dropout still counts as its doing, ns
/// (20 ms: the probe wakes every 1 ms, and a recorder stamps a buffer at
/// its start).
pub const BEFORE_NS: f64 = 20e6;
/// How long after a stall ends its effects can still be heard, ns (300 ms:
/// the session latency, the output's buffer and the recorder's, drained
/// during the stall, refill within that).
pub const AFTER_NS: f64 = 300e6;

/// One stall: CLOCK_MONOTONIC ns when it began, and its length, ns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stall {
    pub start_ns: f64,
    pub len_ns: f64,
}

impl Stall {
    /// Whether something heard at `t_ns` (CLOCK_MONOTONIC) lies within
    /// this stall's reach: [`BEFORE_NS`] before it to [`AFTER_NS`] after.
    pub fn covers(&self, t_ns: f64) -> bool {
        t_ns >= self.start_ns - BEFORE_NS && t_ns <= self.start_ns + self.len_ns + AFTER_NS
    }
}

/// Reads a stall file.
///
/// # Errors
/// The file cannot be read, or a line is not two numbers.
pub fn load(path: &Path) -> Result<Vec<Stall>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    parse(&text).with_context(|| format!("{}", path.display()))
}

/// Parses the CSV text of a stall file (module docs).
///
/// # Errors
/// A line that is neither a comment, the header, nor two numbers.
pub fn parse(text: &str) -> Result<Vec<Stall>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("start_ns") {
            continue;
        }
        let (a, b) = line
            .split_once(',')
            .with_context(|| format!("line {}: want start_ns,len_ns", n + 1))?;
        out.push(Stall {
            start_ns: a
                .trim()
                .parse()
                .with_context(|| format!("line {}", n + 1))?,
            len_ns: b
                .trim()
                .parse()
                .with_context(|| format!("line {}", n + 1))?,
        });
    }
    Ok(out)
}

/// Whether any of `stalls` covers `t_ns` ([`Stall::covers`]).
pub fn any_covers(stalls: &[Stall], t_ns: f64) -> bool {
    stalls.iter().any(|s| s.covers(t_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_covers_only_the_stalls_reach() {
        let s = parse("# bark-lab-stalls\nstart_ns,len_ns\n1000000000,40000000\n").unwrap();
        assert_eq!(
            s,
            vec![Stall {
                start_ns: 1e9,
                len_ns: 40e6
            }]
        );
        assert!(any_covers(&s, 1e9 - 10e6));
        assert!(any_covers(&s, 1e9 + 40e6 + 250e6));
        assert!(!any_covers(&s, 1e9 - 30e6));
        assert!(!any_covers(&s, 1e9 + 40e6 + 350e6));
        assert!(!any_covers(&[], 1e9));
        assert!(parse("12\n").is_err());
        assert!(parse("1,x\n").is_err());
    }
}

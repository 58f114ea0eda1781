//! PipeWire versions and what each one means for Bark.
//!
//! Every row of [`KNOWN_ISSUES`] names where it was verified: a PipeWire
//! commit (and the first release containing it, from the tags of the
//! PipeWire repository) or a measurement in Bark's lab
//! (docs/ARCHITECTURE.md, "Facts verified on this machine").

use std::fmt;
use std::str::FromStr;

/// A PipeWire version, major.minor.micro.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PwVersion(pub u32, pub u32, pub u32);

impl FromStr for PwVersion {
    type Err = String;

    /// Parses "1.4.2"; a missing micro counts as 0 ("1.4").
    ///
    /// # Errors
    /// When a part is missing or not a number.
    fn from_str(s: &str) -> Result<PwVersion, String> {
        let mut it = s.trim().split('.').map(str::parse::<u32>);
        match (it.next(), it.next(), it.next().unwrap_or(Ok(0))) {
            (Some(Ok(a)), Some(Ok(b)), Ok(c)) => Ok(PwVersion(a, b, c)),
            _ => Err(format!("not a PipeWire version: {s:?}")),
        }
    }
}

impl fmt::Display for PwVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The oldest PipeWire Bark is tested on (Debian 12's).
pub const TESTED_MIN: PwVersion = PwVersion(0, 3, 65);

/// The releases Bark's lab runs: Debian 12's and Debian 13's.
pub const LAB_TESTED: [PwVersion; 2] = [PwVersion(0, 3, 65), PwVersion(1, 4, 2)];

/// The first release in which a loopback can report its delay to the
/// streams before it (`latencyOffsetNsec`).
pub const LOOPBACK_REPORTS: PwVersion = PwVersion(1, 4, 0);

/// A known issue of a range of PipeWire versions.
#[derive(Clone, Copy, Debug)]
pub struct KnownIssue {
    /// First affected version.
    pub from: PwVersion,
    /// First version without it; `None`: still so in 1.6.
    pub until: Option<PwVersion>,
    /// What PipeWire lacks or does.
    pub what: &'static str,
    /// What that means for Bark, and how Bark copes.
    pub effect: &'static str,
    /// What the user can do; `None`: nothing to do.
    pub workaround: Option<&'static str>,
    /// Where it was verified.
    pub source: &'static str,
}

impl KnownIssue {
    /// Whether `v` has this issue.
    pub fn affects(&self, v: PwVersion) -> bool {
        v >= self.from && self.until.is_none_or(|u| v < u)
    }
}

impl fmt::Display for KnownIssue {
    /// One line: what, its effect, and the workaround if there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.effect)?;
        match self.workaround {
            Some(w) => write!(f, "; workaround: {w}"),
            None => Ok(()),
        }
    }
}

const ANY: PwVersion = PwVersion(0, 0, 0);

/// The issues that matter to a network sink and source, oldest first.
pub const KNOWN_ISSUES: &[KnownIssue] = &[
    KnownIssue {
        from: ANY,
        until: Some(PwVersion(0, 3, 66)),
        what: "no `condition` in pipewire.conf.d entries",
        effect: "a Bark drop-in cannot be made conditional: it loads wherever it is installed",
        workaround: Some("install bark-sink.conf or bark-source.conf only on the machines that need it"),
        source: "PipeWire 5552ff7f \"conf: add conditions to modules, exec and objects\" (0.3.66)",
    },
    KnownIssue {
        from: ANY,
        until: Some(PwVersion(1, 2, 0)),
        what: "the native resampler turns into a plain copy whenever the adapted rate lands on the nominal one, dropping its fractional phase",
        effect: "only bark.resampler = pipewire uses it, and Bark keeps that rate off the nominal one",
        workaround: None,
        source: "PipeWire a5419ea6 \"resampler: Only use copy when rate is 1.0\" (1.1.81, so 1.2.0)",
    },
    KnownIssue {
        from: ANY,
        until: Some(LOOPBACK_REPORTS),
        what: "no `pw_stream_set_rate`",
        effect: "Bark steers the adapter's resampler (bark.resampler = pipewire) through SPA_IO_RateMatch instead, which every version reads",
        workaround: None,
        source: "PipeWire 433afeaa \"stream: add function to set adaptive resampler rate\" (1.3.81, so 1.4.0)",
    },
    KnownIssue {
        from: ANY,
        until: Some(LOOPBACK_REPORTS),
        what: "a loopback (pw-loopback, module-loopback) cannot report its delay (no latencyOffsetNsec)",
        effect: "a DSP or loopback between a receiver and its speaker leaves that speaker late by its delay",
        workaround: Some("set bark.delay.msec = -<its delay in ms> on that receiver"),
        source: "PipeWire e4ff13a7 \"module-loopback: support latencyOffsetNsec Prop\" (1.3.81, so 1.4.0); Bark lab: `pw-loopback -d 0.05` ports report 0 on 0.3.65, and set-param of latencyOffsetNsec changes nothing",
    },
    KnownIssue {
        from: LOOPBACK_REPORTS,
        until: None,
        what: "a loopback reports its delay (target.delay.sec, `pw-loopback -d`) only once its latencyOffsetNsec is set",
        effect: "until then a speaker behind it plays late by that delay",
        workaround: Some("`pw-cli set-param <its capture node id> Props '{ \"latencyOffsetNsec\": <ns> }'` (Bark then counts it), or bark.delay.msec = -<ms> on the receiver"),
        source: "Bark lab on 1.4.2 (the receiver's ports report 0 until it is set, 50 ms after); PipeWire 1.6.0 module-loopback.c uses target.delay.sec only to size its buffer",
    },
    KnownIssue {
        from: ANY,
        until: Some(PwVersion(1, 6, 0)),
        what: "the native resampler truncates the adapted input rate to whole Hz",
        effect: "bark.resampler = pipewire steers in 1 Hz steps (20.8 ppm at 48 kHz), which Bark's loop alternates between; the default bark.resampler = core is exact",
        workaround: None,
        source: "PipeWire 244d5a1c \"resample: use fixed point for resample phase and input rate\" (1.5.81, so 1.6.0)",
    },
];

/// The known issues of version `v`.
pub fn issues(v: PwVersion) -> impl Iterator<Item = &'static KnownIssue> {
    KNOWN_ISSUES.iter().filter(move |i| i.affects(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders_versions() {
        let v: PwVersion = "0.3.65".parse().unwrap();
        assert_eq!(v, PwVersion(0, 3, 65));
        assert_eq!("1.4".parse::<PwVersion>(), Ok(PwVersion(1, 4, 0)));
        assert!("1.x.2".parse::<PwVersion>().is_err());
        assert!("".parse::<PwVersion>().is_err());
        assert!(PwVersion(0, 3, 65) < PwVersion(0, 3, 66));
        assert!(PwVersion(0, 3, 80) < PwVersion(1, 0, 0));
        assert_eq!(PwVersion(1, 4, 2).to_string(), "1.4.2");
    }

    #[test]
    fn each_version_gets_its_issues() {
        let what = |v| issues(v).map(|i| i.what).collect::<Vec<_>>();
        let debian12 = what(PwVersion(0, 3, 65));
        assert_eq!(debian12.len(), 5, "{debian12:?}");
        assert!(debian12.iter().any(|w| w.contains("condition")));
        assert!(debian12.iter().any(|w| w.contains("pw_stream_set_rate")));
        assert!(debian12
            .iter()
            .any(|w| w.contains("cannot report its delay")));
        assert!(debian12.iter().any(|w| w.contains("whole Hz")));
        let v1_2 = what(PwVersion(1, 2, 7));
        assert_eq!(v1_2.len(), 3, "{v1_2:?}");
        assert!(!v1_2.iter().any(|w| w.contains("plain copy")));
        let debian13 = what(PwVersion(1, 4, 2));
        assert_eq!(debian13.len(), 2, "{debian13:?}");
        assert!(debian13
            .iter()
            .any(|w| w.contains("once its latencyOffsetNsec is set")));
        assert!(debian13.iter().any(|w| w.contains("whole Hz")));
        assert_eq!(what(PwVersion(1, 6, 0)).len(), 1);
    }
}

//! `bark doctor`: checks what usually breaks multicast audio and says how
//! to fix it.
//!
//! Two halves: [`probe::gather`] looks at this host (sockets, /proc, the
//! audio server's tools) and fills a plain [`Facts`]; [`judge()`] decides
//! every check from those facts alone, so tests feed it samples of
//! /proc files and `pw-dump` output instead of this host's state.
//!
//! - [`facts`]: what was observed.
//! - [`probe`]: observing it (the only part with side effects; every
//!   probe stays on this host).
//! - [`parse`]: reading /proc files, command output and module arguments.
//! - [`pwdump`]: the PipeWire graph from `pw-dump` JSON.
//! - [`versions`]: PipeWire versions and their known issues for Bark.
//! - `judge` and `audio`: the verdicts.

mod audio;
pub mod facts;
mod judge;
pub mod parse;
pub mod probe;
pub mod pwdump;
pub mod versions;

pub use facts::Facts;
pub use judge::judge;

use crate::cli::{DoctorArgs, DoctorOutput};
use anyhow::Result;
use serde::Serialize;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Worth knowing; not an error.
    Info,
    /// Likely to cause trouble: the user should act.
    Warn,
    /// Broken: Bark cannot work like this.
    Fail,
}

/// One check's result.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Short name, e.g. "route".
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// How to fix it, if anything needs fixing.
    pub fix: Option<String>,
    /// Further facts that need no action, one line each (e.g. the known
    /// issues of this PipeWire version and how Bark copes with them).
    pub notes: Vec<String>,
}

impl Check {
    /// A check without a fix or notes.
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
        Check {
            name,
            status,
            detail: detail.into(),
            fix: None,
            notes: Vec::new(),
        }
    }

    /// With how to fix it.
    fn with_fix(self, fix: impl Into<String>) -> Check {
        self.with_fix_opt(Some(fix.into()))
    }

    /// With how to fix it, if there is anything to fix.
    fn with_fix_opt(self, fix: Option<String>) -> Check {
        Check { fix, ..self }
    }
}

/// Observes this host and judges every check.
pub fn checks(a: &DoctorArgs) -> Vec<Check> {
    judge(&probe::gather(a))
}

/// The text report: one line per check, its fix and notes indented below.
pub fn render_text(group: &str, checks: &[Check]) -> String {
    let mut s = format!("bark doctor: group {group}\n");
    for c in checks {
        let tag = match c.status {
            Status::Ok => " ok ",
            Status::Info => "info",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        s += &format!("[{tag}] {:<14} {}\n", c.name, c.detail);
        if let Some(f) = &c.fix {
            s += &format!("       {:<14} fix: {f}\n", "");
        }
        for n in &c.notes {
            s += &format!("       {:<14} - {n}\n", "");
        }
    }
    s += match checks.iter().filter(|c| c.status == Status::Fail).count() {
        0 => "no problem found.\n".to_string(),
        1 => "1 problem found.\n".to_string(),
        n => format!("{n} problems found.\n"),
    }
    .as_str();
    s
}

/// Runs `bark doctor`; exit code 1 if anything failed.
///
/// # Errors
/// Only output errors.
pub fn run(a: &DoctorArgs) -> Result<i32> {
    let facts = probe::gather(a);
    let v = judge(&facts);
    let failed = v.iter().filter(|c| c.status == Status::Fail).count();
    let group = facts.group.to_string();
    match a.output {
        DoctorOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "group": group,
                "failed": failed,
                "checks": v,
            }))?
        ),
        DoctorOutput::Text => print!("{}", render_text(&group, &v)),
    }
    Ok(i32::from(failed > 0))
}

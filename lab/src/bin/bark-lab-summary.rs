//! bark-lab-summary: one line from a session's `analysis.json`, for scripts
//! and the demo:
//! `PREFIX: receivers=N latency_ms=X skew_p99_us=X dropouts=N`
//! (latency: the worst receiver's median; skew: the worst pair's p99 of
//! |skew|; dropouts: silence runs plus skipped/repeated audio, all
//! receivers, except those within a stall of the machine itself, which
//! are reported beside). `--check` also enforces limits and exits 1 naming
//! each one broken.

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Summarise a lab session's analysis.json in one line")]
struct Args {
    /// The analysis written by bark-lab-analyze --json.
    json: PathBuf,
    /// Word before the colon.
    #[arg(long, default_value = "lab")]
    prefix: String,
    /// Fail unless every receiver's fidelity (mean normalised correlation
    /// with the reference) is at least this.
    #[arg(long)]
    min_fidelity: Option<f64>,
    /// Fail if the worst pair's skew p99 exceeds this, µs.
    #[arg(long)]
    max_skew_us: Option<f64>,
    /// Fail if any receiver's median latency exceeds this, ms.
    #[arg(long)]
    max_latency_ms: Option<f64>,
    /// Fail if there are more dropouts than this.
    #[arg(long)]
    max_dropouts: Option<u64>,
}

/// `v` is a number within the limit; NaN (a figure missing) never is.
fn within(v: f64, ok: impl Fn(f64) -> bool) -> bool {
    !v.is_nan() && ok(v)
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn main() -> Result<()> {
    let a = Args::parse();
    let text = std::fs::read_to_string(&a.json)
        .with_context(|| format!("reading {}", a.json.display()))?;
    let v: Value = serde_json::from_str(&text).context("analysis.json is not JSON")?;
    let rx = v["receivers"]
        .as_array()
        .context("no receivers in the analysis")?;
    let mut failures = Vec::new();
    let mut latency = f64::NAN;
    let mut dropouts = 0u64;
    for r in rx {
        let label = r["label"].as_str().unwrap_or("?");
        let lat = num(r, &["latency_ms", "p50"]).unwrap_or(f64::NAN);
        let fid = num(r, &["fidelity", "mean"]).unwrap_or(0.0);
        let all = r["dropouts"].as_u64().unwrap_or(0) + r["jumps"].as_u64().unwrap_or(0);
        // Those within a stall of the machine itself (bark-lab-stalls:
        // not even a top-priority thread ran) are reported, not counted.
        let stalled = r["dropouts_in_stalls"].as_u64().unwrap_or(0)
            + r["jumps_in_stalls"].as_u64().unwrap_or(0);
        let d = all.saturating_sub(stalled);
        let note = if stalled > 0 {
            format!(" (and {stalled} in machine stalls)")
        } else {
            String::new()
        };
        println!("  {label}: latency_ms={lat:.2} fidelity={fid:.4} dropouts={d}{note}");
        latency = if latency.is_nan() {
            lat
        } else {
            latency.max(lat)
        };
        dropouts += d;
        if a.min_fidelity.is_some_and(|m| !within(fid, |f| f >= m)) {
            failures.push(format!(
                "{label}: fidelity {fid:.4} below {}",
                a.min_fidelity.unwrap_or(0.0)
            ));
        }
        if a.max_latency_ms.is_some_and(|m| !within(lat, |l| l <= m)) {
            failures.push(format!(
                "{label}: latency {lat:.2} ms above {} ms",
                a.max_latency_ms.unwrap_or(0.0)
            ));
        }
    }
    let skew = v["pairs"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| num(p, &["abs_skew_us", "p99"]))
                .fold(0.0, f64::max)
        })
        .unwrap_or(f64::NAN);
    if let Some(m) = a.max_skew_us {
        if !within(skew, |k| k <= m) {
            failures.push(format!("skew p99 {skew:.1} µs above {m} µs"));
        }
    }
    if a.max_dropouts.is_some_and(|m| dropouts > m) {
        failures.push(format!("{dropouts} dropouts"));
    }
    println!(
        "{}: receivers={} latency_ms={latency:.2} skew_p99_us={skew:.1} dropouts={dropouts}",
        a.prefix,
        rx.len()
    );
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("{}: FAIL {f}", a.prefix);
        }
        std::process::exit(1);
    }
    Ok(())
}

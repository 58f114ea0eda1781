//! bark-lab-onsets: did every receiver play the first frame of every run of
//! audio (after an idle span, a pause, a restart) at its instant, and every
//! frame after it? See [`bark_lab::onset`] for the measures.
//!
//! Prints one line per run and receiver, then
//! `PREFIX: runs=N onset_error_max_us=X onset_skew_max_us=X missing_blocks=N damaged_blocks=N`;
//! with limits, exits 1 naming each one broken. `--json FILE` writes the
//! figures.

use anyhow::{bail, Context, Result};
use bark_lab::args::Compared;
use bark_lab::onset::{played, runs, OnsetParams};
use bark_lab::recording::Recording;
use bark_lab::stalls::Stall;
use clap::Parser;
use serde_json::json;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Judge the first frame of every run of audio on every receiver")]
struct Args {
    // The reference: what entered the sender's sink (a passive recording
    // of its monitor).
    #[command(flatten)]
    compared: Compared,
    /// The latency every frame should be heard after, ms.
    #[arg(long, default_value_t = 40.0)]
    latency_ms: f64,
    /// Word before the colon of the summary line.
    #[arg(long, default_value = "onsets")]
    prefix: String,
    /// Fail unless the reference holds at least this many runs.
    #[arg(long)]
    min_runs: Option<usize>,
    /// Fail if any onset is off its instant by more than this, µs.
    #[arg(long)]
    max_error_us: Option<f64>,
    /// Fail if any receiver's head (first 2 ms) carries less than this
    /// share of the reference's energy (a clipped start reads ~0).
    #[arg(long)]
    min_head_ratio: Option<f64>,
    /// Fail if more than this many 10 ms blocks are missing (silent) on any
    /// receiver, over all runs.
    #[arg(long)]
    max_missing: Option<usize>,
    /// Fail if more than this many blocks are damaged (correlation < 0.9).
    #[arg(long)]
    max_damaged: Option<usize>,
    /// The machine's own stalls during the recording (`bark-lab-stalls`):
    /// bad blocks heard within their reach are counted apart
    /// (`stalled_blocks`), not as missing or damaged.
    #[arg(long)]
    stalls: Option<PathBuf>,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let p = OnsetParams::default();
    let (reference, rx) = a
        .compared
        .load(|f| Recording::load(f).with_context(|| format!("loading {}", f.display())))?;
    if !reference.has_time() {
        bail!("{} has no timestamps", a.compared.reference.display());
    }
    let (labels, probes): (Vec<String>, Vec<Recording>) = rx.into_iter().unzip();
    let found = runs(&reference, &p);
    let machine: Vec<Stall> = match &a.stalls {
        Some(path) => bark_lab::stalls::load(path)?,
        None => Vec::new(),
    };
    let mut stalled = 0usize;
    let mut sender_gaps = 0usize;
    let latency_ns = a.latency_ms * 1e6;
    let mut failures = Vec::new();
    let (mut worst_error, mut worst_skew) = (0f64, 0f64);
    let mut missing = vec![0usize; probes.len()];
    let mut damaged = vec![0usize; probes.len()];
    let mut out_runs = Vec::new();
    let t0 = found.first().map_or(0.0, |r| r.t_ns);
    for (ri, run) in found.iter().enumerate() {
        let mut errors = Vec::new();
        let mut out_rx = Vec::new();
        for (i, probe) in probes.iter().enumerate() {
            let label = &labels[i];
            let Some(q) = played(&reference, probe, run, latency_ns, &machine, &p) else {
                failures.push(format!("run {ri}: {label} does not cover it"));
                out_rx.push(json!({ "label": label, "covered": false }));
                continue;
            };
            println!(
                "  run {ri} at +{:.3} s ({:.2} s long), {label}: onset error {:+.1} µs (corr {:.3}), head {:.3} (corr {:.3}), blocks {} missing {} damaged {}",
                (run.t_ns - t0) / 1e9,
                (run.end - run.start) as f64 / f64::from(reference.rate),
                q.error_us,
                q.corr,
                q.head_ratio,
                q.head_corr,
                q.blocks,
                q.missing_blocks,
                q.damaged_blocks
            );
            if i == 0 && q.sender_gaps > 0 {
                // The reference's, so once per run.
                sender_gaps += q.sender_gaps;
                println!(
                    "    the sender's timeline jumps in this run ({} cycles its graph skipped): played as silence",
                    q.sender_gaps
                );
            }
            if q.bad_listed > 0 {
                let at: Vec<String> = q.bad_at_s[..q.bad_listed]
                    .iter()
                    .map(|s| format!("{s:.2}"))
                    .collect();
                println!("    bad blocks at +[{}] s into the run", at.join(", "));
            }
            worst_error = worst_error.max(q.error_us.abs());
            errors.push(q.error_us);
            missing[i] += q.missing_blocks;
            stalled += q.stalled_blocks;
            damaged[i] += q.damaged_blocks;
            if let Some(m) = a.max_error_us {
                if q.error_us.is_nan() || q.error_us.abs() > m {
                    failures.push(format!(
                        "run {ri}: {label} onset error {:+.1} µs beyond {m} µs",
                        q.error_us
                    ));
                }
            }
            if a.min_head_ratio.is_some_and(|m| q.head_ratio < m) {
                failures.push(format!(
                    "run {ri}: {label} head carries {:.3} of the reference's energy: the start was clipped",
                    q.head_ratio
                ));
            }
            out_rx.push(json!({
                "label": label,
                "covered": true,
                "error_us": q.error_us,
                "corr": q.corr,
                "head_ratio": q.head_ratio,
                "head_corr": q.head_corr,
                "blocks": q.blocks,
                "missing_blocks": q.missing_blocks,
                "damaged_blocks": q.damaged_blocks,
                "stalled_blocks": q.stalled_blocks,
                "sender_gaps": q.sender_gaps,
                "bad_at_s": &q.bad_at_s[..q.bad_listed],
            }));
        }
        if errors.len() > 1 {
            let hi = errors.iter().cloned().fold(f64::MIN, f64::max);
            let lo = errors.iter().cloned().fold(f64::MAX, f64::min);
            worst_skew = worst_skew.max(hi - lo);
        }
        out_runs.push(json!({
            "start_s": (run.t_ns - t0) / 1e9,
            "seconds": (run.end - run.start) as f64 / f64::from(reference.rate),
            "receivers": out_rx,
        }));
    }
    if a.min_runs.is_some_and(|m| found.len() < m) {
        failures.push(format!(
            "{} runs in the reference, expected at least {}",
            found.len(),
            a.min_runs.unwrap_or(0)
        ));
    }
    for (i, label) in labels.iter().enumerate() {
        if a.max_missing.is_some_and(|m| missing[i] > m) {
            failures.push(format!("{label}: {} missing blocks", missing[i]));
        }
        if a.max_damaged.is_some_and(|m| damaged[i] > m) {
            failures.push(format!("{label}: {} damaged blocks", damaged[i]));
        }
    }
    let total_missing: usize = missing.iter().sum();
    let total_damaged: usize = damaged.iter().sum();
    println!(
        "{}: runs={} onset_error_max_us={worst_error:.1} onset_skew_max_us={worst_skew:.1} missing_blocks={total_missing} damaged_blocks={total_damaged}{}{}",
        a.prefix,
        found.len(),
        if stalled > 0 {
            format!(" (and {stalled} blocks in machine stalls)")
        } else {
            String::new()
        },
        if sender_gaps > 0 {
            format!(" sender_gaps={sender_gaps}")
        } else {
            String::new()
        }
    );
    if let Some(path) = &a.json {
        let v = json!({
            "latency_ms": a.latency_ms,
            "runs": out_runs,
            "onset_error_max_us": worst_error,
            "onset_skew_max_us": worst_skew,
            "missing_blocks": total_missing,
            "damaged_blocks": total_damaged,
            "stalled_blocks": stalled,
            "sender_gaps": sender_gaps,
            "failures": failures,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("{}: FAIL {f}", a.prefix);
        }
        std::process::exit(1);
    }
    Ok(())
}

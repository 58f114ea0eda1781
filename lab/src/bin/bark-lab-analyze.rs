//! bark-lab-analyze: compare receiver recordings with a reference.
//!
//! Prints, per receiver: end-to-end latency (reference play time → receiver
//! play time of the same content, ms), slew (ppm), fidelity (normalized
//! correlation), dropouts (digital-silence runs), timestamp gaps inside
//! the program, and jumps (audio skipped or repeated); per receiver pair:
//! skew over time (p50/p99/max of |skew|, µs).
//! `--json FILE` writes the same figures machine-readably.

use anyhow::{bail, Result};
use bark_lab::analysis::{self, percentile, Params, Track};
use bark_lab::args::Compared;
use bark_lab::recording::Recording;
use bark_lab::stalls::{self, Stall};
use clap::Parser;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Latency, skew, dropouts and fidelity of lab recordings")]
struct Args {
    #[command(flatten)]
    compared: Compared,
    /// Analysis rate, Hz; recordings at other rates are resampled to it.
    #[arg(long, default_value_t = 48000)]
    rate: u32,
    /// Window length, ms.
    #[arg(long, default_value_t = 200.0)]
    window_ms: f64,
    /// Window hop, ms.
    #[arg(long, default_value_t = 100.0)]
    hop_ms: f64,
    /// Largest |latency| to consider when aligning, ms.
    #[arg(long, default_value_t = 5000.0)]
    max_latency_ms: f64,
    /// Skip this many seconds at the start of each receiver recording
    /// (start-up transients, e.g. before a receiver locked on).
    #[arg(long, default_value_t = 0.0)]
    settle_s: f64,
    /// Leave windows played inside START:END (CLOCK_MONOTONIC ns, as the
    /// recordings' stamps) out of the pair skew: a span of deliberate
    /// disruption (a flood) whose concealed gaps would align as lags of
    /// milliseconds, and which a test judges on its own terms.
    #[arg(long, value_name = "START:END")]
    skew_exclude_ns: Option<String>,
    /// The machine's own stalls during the recording (`bark-lab-stalls`):
    /// dropouts and jumps within their reach are counted apart
    /// (`dropouts_in_stalls`, `jumps_in_stalls`) and their windows are
    /// left out of the pair skew, since no audio system plays through a
    /// span in which the machine ran nothing.
    #[arg(long)]
    stalls: Option<PathBuf>,
    /// Compare receiver `i` with channel `ref_channels[i]` (0-based) of
    /// the reference instead of the mean of its channels: receivers that
    /// each play one channel (the two sides of a stereo pair, the speakers
    /// of a surround set). Two receivers compared with different channels
    /// play different content, so their pair skew is the difference of
    /// their latencies at the same instant (nearest windows, at most half
    /// a hop apart) instead of a direct correlation. Windows whose lag
    /// changes faster than [`MAX_MEASURABLE_SLEW_PPM`] on either side are
    /// left out of that difference and counted (`unreliable_windows`):
    /// one channel alone can lack timing detail (a held note), and its lag
    /// then wanders by tens of µs while its correlation stays high.
    #[arg(long, value_delimiter = ',')]
    ref_channels: Vec<u16>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write per-window series (CSV: receiver,t_s,latency_ms,fidelity,slew_ppm) here.
    #[arg(long)]
    series: Option<PathBuf>,
}

/// Fastest change of lag, ppm, that a window of one channel is believed
/// to measure (see `--ref-channels`): a receiver's clock and its drift
/// control move a few tens of ppm, its corrections at most a few hundred
/// in a steady stream; beyond that the content lacks timing detail.
const MAX_MEASURABLE_SLEW_PPM: f64 = 300.0;

fn stats(v: &[f64]) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    json!({
        "n": v.len(),
        "mean": mean,
        "min": v.iter().cloned().fold(f64::INFINITY, f64::min),
        "p50": percentile(v, 50.0),
        "p99": percentile(v, 99.0),
        "max": v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
    })
}

fn settle(tr: &mut Track, settle_s: f64) {
    tr.windows.retain(|w| w.probe_s >= settle_s);
}

fn main() -> Result<()> {
    let a = Args::parse();
    let p = Params {
        window_s: a.window_ms / 1e3,
        hop_s: a.hop_ms / 1e3,
        max_latency_ms: a.max_latency_ms,
        ..Params::default()
    };
    let (reference, rx) = a
        .compared
        .load(|path| analysis::resample(&Recording::load(path)?, a.rate))?;
    if rx.is_empty() {
        bail!("no receivers");
    }
    if !a.ref_channels.is_empty() && a.ref_channels.len() != rx.len() {
        bail!(
            "--ref-channels names {} channels for {} receivers",
            a.ref_channels.len(),
            rx.len()
        );
    }
    // The reference each receiver is compared with: one channel of it, or
    // the mean of all.
    let ref_channel = |i: usize| a.ref_channels.get(i).copied();
    let mut refs: Vec<(u16, Recording)> = Vec::new();
    for c in a.ref_channels.iter() {
        if !refs.iter().any(|(k, _)| k == c) {
            let r = Recording::load_channel(&a.compared.reference, Some(*c))?;
            refs.push((*c, analysis::resample(&r, a.rate)?));
        }
    }
    let reference_for = |i: usize| match ref_channel(i) {
        Some(c) => refs
            .iter()
            .find(|(k, _)| *k == c)
            .map_or(&reference, |(_, r)| r),
        None => &reference,
    };
    // Per receiver: (CLOCK_MONOTONIC ns of each window, its latency ns,
    // whether its lag is measurable), for pairs compared through their
    // latencies.
    let mut latency_at: Vec<Vec<(f64, f64, bool)>> = Vec::new();

    let exclude = match &a.skew_exclude_ns {
        Some(v) => {
            let (x, y) = v
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("--skew-exclude-ns {v}: want START:END"))?;
            Some((x.trim().parse::<f64>()?, y.trim().parse::<f64>()?))
        }
        None => None,
    };
    let machine: Vec<Stall> = match &a.stalls {
        Some(path) => stalls::load(path)?,
        None => Vec::new(),
    };
    if a.stalls.is_some() {
        let longest = machine.iter().map(|s| s.len_ns).fold(0.0, f64::max);
        println!(
            "machine stalls: {} (longest {:.1} ms)",
            machine.len(),
            longest / 1e6
        );
    }
    let in_stall = |r: &Recording, frame: f64| {
        r.time_at(frame)
            .is_some_and(|t| stalls::any_covers(&machine, t))
    };
    let mut out_rx = Vec::new();
    let mut series = String::from("receiver,t_s,latency_ms,fidelity,slew_ppm\n");
    let ref_gaps = reference.time_gaps(p.gap_tol_ns);
    let ref_silences = analysis::reference_silence_runs(&reference, &p);
    println!(
        "reference: {} ({:.1} s, {} buffers, quantum {}, ts-gaps {}, silence runs {})",
        a.compared.reference.display(),
        reference.seconds(),
        reference.stamps.len(),
        quantum(&reference),
        ref_gaps.len(),
        ref_silences.len()
    );
    for (i, (label, r)) in rx.iter().enumerate() {
        let mut tr = analysis::track(reference_for(i), r, &p)?;
        settle(&mut tr, a.settle_s);
        latency_at.push(
            tr.windows
                .iter()
                .filter_map(|w| {
                    let ok = w.slew_ppm.abs() <= MAX_MEASURABLE_SLEW_PPM;
                    Some((r.time_at(w.probe_frame)?, w.delta_ns?, ok))
                })
                .collect(),
        );
        let lat_ms: Vec<f64> = tr
            .windows
            .iter()
            .filter_map(|w| w.delta_ns.map(|d| d / 1e6))
            .collect();
        let corr: Vec<f64> = tr.windows.iter().map(|w| w.corr).collect();
        let drops = analysis::silence_dropouts(reference_for(i), r, &tr, &p);
        let gaps = analysis::program_time_gaps(r, &tr, &p);
        // Content jumps the timestamps do not explain: the receiver skipped
        // or repeated audio. (Jumps they do explain are a recorder missing a
        // cycle, already counted as a timestamp gap of that recording.)
        let jumps: Vec<_> = tr
            .jumps
            .iter()
            .filter(|j| j.latency_change_ms.is_none_or(|c| c.abs() > 0.5))
            .collect();
        let drops_in_stalls = drops.iter().filter(|d| in_stall(r, d.frame as f64)).count();
        let jumps_in_stalls = jumps
            .iter()
            .filter(|j| in_stall(r, j.at_s * f64::from(r.rate)))
            .count();
        let drop_ms: f64 =
            drops.iter().map(|d| d.frames as f64).sum::<f64>() / f64::from(r.rate) * 1e3;
        for (w, f) in tr.windows.iter().zip(&corr) {
            series.push_str(&format!(
                "{label},{:.4},{},{:.6},{:.1}\n",
                w.probe_s,
                w.delta_ns
                    .map(|d| format!("{:.6}", d / 1e6))
                    .unwrap_or_default(),
                f,
                w.slew_ppm
            ));
        }
        let slew: Vec<f64> = tr.windows.iter().map(|w| w.slew_ppm).collect();
        let ls = stats(&lat_ms);
        let cs = stats(&corr);
        println!(
            "{label} (quantum {}): latency ms p50 {} (min {} max {})  slew ppm p50 {}  fidelity mean {:.4} min {:.4}  windows {} unmatched {}  dropouts {} ({:.1} ms)  ts-gaps {}  jumps {}{}",
            quantum(r),
            fmt(&ls["p50"], 3),
            fmt(&ls["min"], 3),
            fmt(&ls["max"], 3),
            fmt(&stats(&slew)["p50"], 0),
            cs["mean"].as_f64().unwrap_or(f64::NAN),
            cs["min"].as_f64().unwrap_or(f64::NAN),
            tr.windows.len(),
            tr.unmatched,
            drops.len(),
            drop_ms,
            gaps.len(),
            jumps.len(),
            if drops_in_stalls + jumps_in_stalls > 0 {
                format!("  ({drops_in_stalls} dropouts, {jumps_in_stalls} jumps in machine stalls)")
            } else {
                String::new()
            }
        );
        out_rx.push(json!({
            "label": label,
            "seconds": r.seconds(),
            "quantum_frames": quantum(r),
            "windows": tr.windows.len(),
            "unmatched_subwindows": tr.unmatched,
            "uncovered_subwindows": tr.uncovered,
            "latency_ms": ls,
            "fidelity": cs,
            // Issue 14's measure of damaged audio: windows whose
            // correlation with what was sent is below 0.9.
            "damaged_windows": corr.iter().filter(|c| **c < 0.9).count(),
            "slew_ppm": stats(&slew),
            "dropouts": drops.len(),
            "dropout_ms": drop_ms,
            "dropout_at_s": drops.iter().map(|d| d.at_s).collect::<Vec<_>>(),
            "timestamp_gaps": gaps.len(),
            "timestamp_gap_ms": gaps.iter().map(|g| g.1 / 1e6).collect::<Vec<_>>(),
            "dropouts_in_stalls": drops_in_stalls,
            "jumps": jumps.len(),
            "jumps_in_stalls": jumps_in_stalls,
            "jump_at_s": jumps.iter().map(|j| j.at_s).collect::<Vec<_>>(),
            "jump_latency_change_ms": jumps.iter().map(|j| j.latency_change_ms).collect::<Vec<_>>(),
        }));
    }

    // Skew: each pair directly (the same chain on both sides, so the
    // correlation peak is sharpest there).
    let mut out_pairs = Vec::new();
    for i in 0..rx.len() {
        for j in i + 1..rx.len() {
            let (la, ra) = (&rx[i].0, &rx[i].1);
            let (lb, rb) = (&rx[j].0, &rx[j].1);
            let excluded = |t: f64| {
                exclude.is_some_and(|(x, y)| t >= x && t <= y) || stalls::any_covers(&machine, t)
            };
            let mut unreliable = 0;
            let (skew_us, windows): (Vec<f64>, usize) = if ref_channel(i) != ref_channel(j) {
                // Different content: latency of b minus latency of a at the
                // same instant.
                let half_hop_ns = a.hop_ms * 1e6 / 2.0;
                let mut v = Vec::new();
                for &(t, lb_ns, ok_b) in latency_at[j].iter().filter(|w| !excluded(w.0)) {
                    let Some(&(ta, la_ns, ok_a)) = latency_at[i]
                        .iter()
                        .min_by(|x, y| (x.0 - t).abs().total_cmp(&(y.0 - t).abs()))
                    else {
                        continue;
                    };
                    if (ta - t).abs() > half_hop_ns {
                        continue;
                    }
                    if ok_a && ok_b {
                        v.push((lb_ns - la_ns) / 1e3);
                    } else {
                        unreliable += 1;
                    }
                }
                let n = v.len() + unreliable;
                (v, n)
            } else {
                let mut tr = analysis::track(ra, rb, &p)?;
                settle(&mut tr, a.settle_s);
                let v = tr
                    .windows
                    .iter()
                    .filter(|w| !rb.time_at(w.probe_frame).is_some_and(excluded))
                    .filter_map(|w| w.delta_ns.map(|d| d / 1e3))
                    .collect();
                (v, tr.windows.len())
            };
            let abs: Vec<f64> = skew_us.iter().map(|v| v.abs()).collect();
            let s = stats(&skew_us);
            let sa = stats(&abs);
            let wander = match (s["max"].as_f64(), s["min"].as_f64()) {
                (Some(x), Some(n)) => x - n,
                _ => f64::NAN,
            };
            println!(
                "skew {lb} - {la}: |skew| us p50 {} p99 {} max {}  (signed mean {} wander {:.1})  windows {}{}",
                fmt(&sa["p50"], 1),
                fmt(&sa["p99"], 1),
                fmt(&sa["max"], 1),
                fmt(&s["mean"], 1),
                wander,
                windows,
                if unreliable > 0 {
                    format!("  ({unreliable} left out: lag changing faster than {MAX_MEASURABLE_SLEW_PPM} ppm)")
                } else {
                    String::new()
                }
            );
            out_pairs.push(json!({
                "a": la, "b": lb,
                "skew_us": s,
                "abs_skew_us": sa,
                "wander_us": wander,
                "windows": windows,
                "unreliable_windows": unreliable,
            }));
        }
    }
    if let Some(path) = &a.json {
        let v = json!({
            "reference": a.compared.reference.display().to_string(),
            "reference_timestamp_gaps": ref_gaps.len(),
            "reference_silence_runs": ref_silences.len(),
            "reference_silence_at_s": ref_silences.iter().map(|d| d.at_s).collect::<Vec<_>>(),
            "machine_stalls_ms": machine.iter().map(|s| s.len_ns / 1e6).collect::<Vec<_>>(),
            "rate": a.rate,
            "window_ms": a.window_ms,
            "hop_ms": a.hop_ms,
            "settle_s": a.settle_s,
            "receivers": out_rx,
            "pairs": out_pairs,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    }
    if let Some(path) = &a.series {
        std::fs::write(path, series)?;
    }
    Ok(())
}

/// Median buffer size of a recording, frames: the graph quantum it ran at
/// (at the analysis rate). 0 without stamps.
fn quantum(r: &Recording) -> u32 {
    let mut f: Vec<u32> = r.stamps.iter().map(|s| s.frames).collect();
    f.sort_unstable();
    f.get(f.len() / 2).copied().unwrap_or(0)
}

fn fmt(v: &Value, prec: usize) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.prec$}"),
        None => "-".into(),
    }
}

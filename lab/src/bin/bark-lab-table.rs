//! bark-lab-table: a comparison table (Markdown) of several lab sessions,
//! e.g. Bark beside PipeWire's rtp modules, several runs each.
//!
//! `bark-lab-table --run bark=DIR --run rtp=DIR --run bark=DIR2 ...`
//!
//! Each DIR is a `run-session.sh --out` directory: `analysis.json`,
//! `cpu.csv` and, if the bench script wrote it, `loadavg.txt` ("before
//! after", the 1-minute load averages). One row per run, then one per
//! label with the median of its runs (and the range of the CPU figures).
//!
//! Columns: latency p50 (worst receiver's median), latency spread (worst
//! receiver's max − min over the 200 ms windows), |skew| p50 / p99 / max
//! (worst pair), dropouts (silence runs + skipped/repeated audio, all
//! receivers), sender gaps (digital silence inside the reference: audio
//! the sender's graph never got, e.g. a player's xrun), graph xruns
//! (PipeWire's "client too slow", sender / receivers, from `xruns.txt`
//! when the bench script wrote it), the Bark receivers' least buffered
//! audio beyond what they had played ("buffer min"; a packet arriving with
//! less than one output quantum left would have been too late), timestamp
//! gaps of the receivers' recordings, fidelity (worst
//! receiver's mean), CPU of the receiving `pipewire` processes (mean over
//! receivers, % of one core), context switches per second of those
//! processes (`ctxsw.csv`) and the load average around the run.

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(about = "Markdown comparison table of lab sessions")]
struct Args {
    /// LABEL=DIR of one session (repeatable; runs of one label are
    /// summarised together, in the order first seen).
    #[arg(long = "run", required = true)]
    runs: Vec<String>,
    /// Only the per-label summary, not every run.
    #[arg(long)]
    summary_only: bool,
}

#[derive(Clone, Debug)]
struct Row {
    label: String,
    dir: PathBuf,
    latency_p50: f64,
    latency_spread: f64,
    skew_p50: f64,
    skew_p99: f64,
    skew_max: f64,
    dropouts: u64,
    ts_gaps: u64,
    ref_silences: u64,
    /// Graph xruns ("client too slow") on the sender and on all receivers.
    xruns: Option<(u64, u64)>,
    /// Bark receivers: least audio buffered beyond what was played, µs.
    buffer_min_us: Option<u64>,
    fidelity: f64,
    cpu: f64,
    ctxsw: f64,
    load: Option<(f64, f64)>,
    quantum: Option<u64>,
}

fn num(v: &Value, path: &[&str]) -> f64 {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN)
}

/// `a.max(b)`, but NaN (a figure missing) wins: a table must not hide it.
fn worst(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn load_row(label: &str, dir: &Path) -> Result<Row> {
    let text = std::fs::read_to_string(dir.join("analysis.json"))
        .with_context(|| format!("reading {}/analysis.json", dir.display()))?;
    let v: Value = serde_json::from_str(&text).context("analysis.json is not JSON")?;
    let rx = v["receivers"]
        .as_array()
        .context("no receivers in the analysis")?;
    let (mut lat, mut spread, mut fid) = (f64::NEG_INFINITY, f64::NEG_INFINITY, f64::INFINITY);
    let (mut dropouts, mut ts_gaps) = (0, 0);
    let mut quantum = None;
    for r in rx {
        lat = worst(lat, num(r, &["latency_ms", "p50"]));
        spread = worst(
            spread,
            num(r, &["latency_ms", "max"]) - num(r, &["latency_ms", "min"]),
        );
        let f = num(r, &["fidelity", "mean"]);
        fid = if f.is_nan() { f } else { fid.min(f) };
        dropouts += r["dropouts"].as_u64().unwrap_or(0) + r["jumps"].as_u64().unwrap_or(0);
        ts_gaps += r["timestamp_gaps"].as_u64().unwrap_or(0);
        quantum = quantum.or(r["quantum_frames"].as_u64());
    }
    let (mut s50, mut s99, mut smax) = (f64::NAN, f64::NAN, f64::NAN);
    if let Some(ps) = v["pairs"].as_array() {
        for (i, p) in ps.iter().enumerate() {
            let (a, b, c) = (
                num(p, &["abs_skew_us", "p50"]),
                num(p, &["abs_skew_us", "p99"]),
                num(p, &["abs_skew_us", "max"]),
            );
            if i == 0 {
                (s50, s99, smax) = (a, b, c);
            } else {
                (s50, s99, smax) = (worst(s50, a), worst(s99, b), worst(smax, c));
            }
        }
    }
    let cpu_text = std::fs::read_to_string(dir.join("cpu.csv")).unwrap_or_default();
    let cpus: Vec<f64> = cpu_text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() == 3 && f[1] == "pipewire")
                .then(|| f[2].trim().parse().ok())
                .flatten()
        })
        .collect();
    let cpu = if cpus.is_empty() {
        f64::NAN
    } else {
        cpus.iter().sum::<f64>() / cpus.len() as f64
    };
    let csw: Vec<f64> = std::fs::read_to_string(dir.join("ctxsw.csv"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(1)?.trim().parse().ok())
        .collect();
    let ctxsw = if csw.is_empty() {
        f64::NAN
    } else {
        csw.iter().sum::<f64>() / csw.len() as f64
    };
    let load = std::fs::read_to_string(dir.join("loadavg.txt"))
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|x| x.parse::<f64>().ok());
            Some((it.next()??, it.next()??))
        });
    let mut buffer_min_us = None;
    let xruns = std::fs::read_to_string(dir.join("xruns.txt"))
        .ok()
        .map(|t| {
            let w: Vec<&str> = t.split_whitespace().collect();
            let (mut tx, mut rx) = (0, 0);
            for p in w.chunks_exact(2) {
                let n: u64 = p[1].parse().unwrap_or(0);
                match p[0] {
                    "h0" => tx += n,
                    "bufmin" => buffer_min_us = Some(n),
                    _ => rx += n,
                }
            }
            (tx, rx)
        });
    Ok(Row {
        label: label.to_owned(),
        xruns,
        buffer_min_us,
        dir: dir.to_owned(),
        latency_p50: lat,
        latency_spread: spread,
        skew_p50: s50,
        skew_p99: s99,
        skew_max: smax,
        dropouts,
        ts_gaps,
        ref_silences: v["reference_silence_runs"].as_u64().unwrap_or(0),
        fidelity: fid,
        cpu,
        ctxsw,
        load,
        quantum,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn f(x: f64, prec: usize) -> String {
    if x.is_nan() {
        "n/a".into()
    } else {
        format!("{x:.prec$}")
    }
}

const HEADER: &str = "| run | rx quantum | latency p50 | latency spread | \\|skew\\| p50 | \\|skew\\| p99 | \\|skew\\| max | dropouts | sender gaps | graph xruns tx/rx | rx buffer min | ts gaps | fidelity | CPU pipewire (rx) | ctx switches/s (rx) | load |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|";

fn main() -> Result<()> {
    let a = Args::parse();
    let mut rows = Vec::new();
    for r in &a.runs {
        let Some((label, dir)) = r.split_once('=') else {
            bail!("--run wants LABEL=DIR, got {r:?}");
        };
        rows.push(load_row(label, Path::new(dir))?);
    }
    if !a.summary_only {
        println!("{HEADER}");
        for r in &rows {
            let name = r
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            println!(
                "| {} ({name}) | {} | {} ms | {} µs | {} µs | {} µs | {} µs | {} | {} | {} | {} | {} | {} | {} % | {} | {} |",
                r.label,
                r.quantum.map_or("?".into(), |q| q.to_string()),
                f(r.latency_p50, 2),
                f(r.latency_spread * 1000.0, 0),
                f(r.skew_p50, 1),
                f(r.skew_p99, 1),
                f(r.skew_max, 1),
                r.dropouts,
                r.ref_silences,
                r.xruns.map_or("?".into(), |(t, r)| format!("{t}/{r}")),
                r.buffer_min_us
                    .map_or("n/a".into(), |b| format!("{:.1} ms", b as f64 / 1000.0)),
                r.ts_gaps,
                f(r.fidelity, 4),
                f(r.cpu, 2),
                f(r.ctxsw, 0),
                r.load
                    .map_or("?".into(), |(b, e)| format!("{b:.2} → {e:.2}")),
            );
        }
        println!();
    }
    let mut labels: Vec<&str> = Vec::new();
    for r in &rows {
        if !labels.contains(&r.label.as_str()) {
            labels.push(&r.label);
        }
    }
    println!("| variant (median of runs) | runs | latency p50 | latency spread | \\|skew\\| p50 | \\|skew\\| p99 | \\|skew\\| max | dropouts (total) | sender gaps (total) | graph xruns tx/rx (total) | rx buffer min (least) | CPU pipewire (rx), median (min–max) | ctx switches/s (rx) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in labels {
        let rs: Vec<&Row> = rows.iter().filter(|r| r.label == l).collect();
        let m = |g: fn(&Row) -> f64| median(rs.iter().map(|r| g(r)).collect());
        let cpus: Vec<f64> = rs.iter().map(|r| r.cpu).filter(|c| !c.is_nan()).collect();
        let (lo, hi) = cpus
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &c| {
                (a.min(c), b.max(c))
            });
        println!(
            "| {l} | {} | {} ms | {} µs | {} µs | {} µs | {} µs | {} | {} | {} | {} | {} % ({}–{}) | {} |",
            rs.len(),
            f(m(|r| r.latency_p50), 2),
            f(m(|r| r.latency_spread) * 1000.0, 0),
            f(m(|r| r.skew_p50), 1),
            f(m(|r| r.skew_p99), 1),
            f(m(|r| r.skew_max), 1),
            rs.iter().map(|r| r.dropouts).sum::<u64>(),
            rs.iter().map(|r| r.ref_silences).sum::<u64>(),
            if rs.iter().all(|r| r.xruns.is_some()) {
                let (t, x) = rs.iter().filter_map(|r| r.xruns).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
                format!("{t}/{x}")
            } else {
                "?".into()
            },
            rs.iter()
                .filter_map(|r| r.buffer_min_us)
                .min()
                .map_or("n/a".into(), |b| format!("{:.1} ms", b as f64 / 1000.0)),
            f(m(|r| r.cpu), 2),
            f(lo, 2),
            f(hi, 2),
            f(m(|r| r.ctxsw), 0),
        );
    }
    Ok(())
}

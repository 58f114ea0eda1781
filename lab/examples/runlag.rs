//! Debug aid: the lag of a receiver against the reference through one run
//! (onsets::runs), every 20 ms, relative to the run's onset lag.
//! Usage: runlag REF.wav PROBE.wav RUN_INDEX LATENCY_MS
use bark_lab::analysis::window_lag;
use bark_lab::onset::{played, runs, OnsetParams};
mod common;

fn main() -> anyhow::Result<()> {
    let (r, p, a) = common::pair(2, "runlag REF.wav PROBE.wav RUN LATENCY_MS")?;
    let k: usize = a[0].parse()?;
    let lat: f64 = a[1].parse::<f64>()? * 1e6;
    let op = OnsetParams::default();
    let rs = runs(&r, &op);
    let run = rs.get(k).ok_or_else(|| anyhow::anyhow!("no run {k}"))?;
    let q = played(&r, &p, run, lat, &[], &op).ok_or_else(|| anyhow::anyhow!("not covered"))?;
    // Onset lag, samples: reference frame run.start plays at probe frame run.start + lag0.
    let t_on = run.t_ns + lat + q.error_us * 1e3;
    let i = p.stamps.partition_point(|s| (s.t_first_ns as f64) <= t_on) - 1;
    let s = &p.stamps[i];
    let f_on = s.frame as f64 + (t_on - s.t_first_ns as f64) * 48e-6;
    let lag0 = (f_on - run.start as f64).round() as i64;
    let w = 960;
    let mut off = 0;
    while run.start + off + w < run.end {
        let k0 = (run.start + off) as i64 + lag0;
        if let Some(e) = window_lag(&r.mono, &p.mono, k0 as usize, w, lag0, 48) {
            let a = run.start + off;
            let peak = |x: &[f64], i: usize| x[i..i + w].iter().fold(0f64, |m, v| m.max(v.abs()));
            println!(
                "{:.3} s: lag {:+.2} samples corr {:.4} peak ref {:.4} probe {:.4}",
                off as f64 / 48e3,
                e.lag - lag0 as f64,
                e.corr,
                peak(&r.mono, a),
                peak(&p.mono, k0 as usize)
            );
        }
        off += w;
    }
    Ok(())
}

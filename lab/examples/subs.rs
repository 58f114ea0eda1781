//! Dump the sub-window alignment of a receiver against a reference (debug aid).
use bark_lab::analysis::{resample, track, Params};
mod common;

fn main() -> anyhow::Result<()> {
    let (r, p, a) = common::pair(2, "subs REF.wav PROBE.wav T0_S T1_S")?;
    let (r, p) = (resample(&r, 48000)?, resample(&p, 48000)?);
    let (t0, t1): (f64, f64) = (a[0].parse()?, a[1].parse()?);
    let tr = track(&r, &p, &Params::default())?;
    for s in &tr.subs {
        let t = s.centre / 48000.0;
        if t >= t0 && t <= t1 {
            println!("{t:.3} lag {:.2} corr {:.4}", s.lag, s.corr);
        }
    }
    Ok(())
}

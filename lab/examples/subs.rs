//! Dump the sub-window alignment of a receiver against a reference (debug aid).
use bark_lab::analysis::{resample, track, Params};
use bark_lab::recording::Recording;
fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 5 {
        anyhow::bail!("usage: subs REF.wav PROBE.wav T0_S T1_S");
    }
    let r = resample(&Recording::load(a[1].as_ref())?, 48000)?;
    let p = resample(&Recording::load(a[2].as_ref())?, 48000)?;
    let (t0, t1): (f64, f64) = (a[3].parse()?, a[4].parse()?);
    let tr = track(&r, &p, &Params::default())?;
    for s in &tr.subs {
        let t = s.centre / 48000.0;
        if t >= t0 && t <= t1 {
            println!("{t:.3} lag {:.2} corr {:.4}", s.lag, s.corr);
        }
    }
    Ok(())
}

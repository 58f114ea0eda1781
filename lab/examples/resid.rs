//! Residual energy (probe minus lag-shifted reference), per ms (debug aid).
mod common;

fn main() -> anyhow::Result<()> {
    let (r, p, a) = common::pair(3, "resid REF.wav PROBE.wav LAG_SAMPLES T0_S T1_S")?;
    let lag: i64 = a[0].parse()?;
    let (t0, t1): (f64, f64) = (a[1].parse()?, a[2].parse()?);
    let mut k = (t0 * 48000.0) as usize;
    while (k as f64) < t1 * 48000.0 {
        let (mut e, mut d) = (0.0, 0.0);
        for i in k..k + 48 {
            let x = p.mono[i];
            let y = r.mono[(i as i64 - lag) as usize];
            e += x * x;
            d += (x - y) * (x - y);
        }
        println!(
            "{:.3} rms {:.4} resid/sig {:.3}",
            k as f64 / 48000.0,
            (e / 48.0).sqrt(),
            (d / e.max(1e-20)).sqrt()
        );
        k += 48;
    }
    Ok(())
}

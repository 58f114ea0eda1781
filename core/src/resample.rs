//! Band-limited interpolation at arbitrary fractional positions: the
//! variable-rate resampler through which the drift controller slews.
//!
//! Bark's own, not speexdsp's: the drift controller must know the exact
//! fractional input position of every output frame (that position *is* the
//! sync error), and speexdsp keeps it private. Here the caller owns the
//! position and the resampler is a pure function of it.
//!
//! The filter is a Kaiser-windowed sinc (Kaiser, "Nonrecursive digital filter
//! design using the I0-sinh window function", 1974) of [`TAPS`] taps,
//! tabulated at [`PHASES`] fractional phases and interpolated linearly
//! between them (the scheme of Smith, "Digital Audio Resampling Home Page",
//! CCRMA). Every phase is normalised to unit DC gain. At cutoff 1 and phase 0
//! the kernel is the identity, so an unadjusted stream passes bit-exact.

/// Filter length, input frames. The output at position `x` reads frames
/// `floor(x) − TAPS/2 + 1 ..= floor(x) + TAPS/2`.
pub const TAPS: usize = 16;
/// Tabulated fractional phases.
pub const PHASES: usize = 256;
/// Kaiser window shape: ≈ 80 dB side-lobe attenuation.
pub const KAISER_BETA: f64 = 8.0;
/// Frames the kernel reads before the integer part of a position.
pub const BEFORE: usize = TAPS / 2 - 1;
/// Frames the kernel reads after the integer part of a position.
pub const AFTER: usize = TAPS / 2;

/// Modified Bessel function of the first kind, order 0, by its power series.
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..50 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// A tabulated interpolation kernel.
#[derive(Clone, Debug)]
pub struct Kernel {
    table: Vec<f32>,
}

impl Kernel {
    /// A kernel whose low-pass cutoff is `cutoff` × the input Nyquist
    /// frequency (0 < cutoff ≤ 1). Use 1 when input and output rates are
    /// nominally equal; below 1 to avoid aliasing when the output rate is
    /// lower.
    pub fn new(cutoff: f64) -> Self {
        let mut k = Kernel {
            table: vec![0f32; (PHASES + 1) * TAPS],
        };
        k.set_cutoff(cutoff);
        k
    }

    /// Recomputes the table in place for a new cutoff (see [`Kernel::new`]).
    /// Does not allocate.
    pub fn set_cutoff(&mut self, cutoff: f64) {
        let cutoff = cutoff.clamp(0.05, 1.0);
        let half = (TAPS / 2) as f64;
        let norm = bessel_i0(KAISER_BETA);
        let table = &mut self.table;
        for p in 0..=PHASES {
            let frac = p as f64 / PHASES as f64;
            let row = &mut table[p * TAPS..(p + 1) * TAPS];
            let mut w = [0f64; TAPS];
            for (i, wi) in w.iter_mut().enumerate() {
                let d = i as f64 - BEFORE as f64 - frac;
                let arg = core::f64::consts::PI * cutoff * d;
                let sinc = if d.abs() < 1e-12 {
                    1.0
                } else if cutoff == 1.0 && (d - d.round()).abs() < 1e-12 {
                    // Exact zero crossings, so phase 0 is the identity.
                    0.0
                } else {
                    arg.sin() / arg
                };
                let r = d / half;
                let win = if r.abs() >= 1.0 {
                    0.0
                } else {
                    bessel_i0(KAISER_BETA * (1.0 - r * r).sqrt()) / norm
                };
                *wi = sinc * win;
            }
            let sum: f64 = w.iter().sum();
            for (o, wi) in row.iter_mut().zip(w) {
                *o = (wi / sum) as f32;
            }
        }
    }

    /// The taps for fractional phase `frac` in [0, 1).
    #[inline]
    pub fn taps(&self, frac: f64, out: &mut [f32; TAPS]) {
        let pf = frac * PHASES as f64;
        let p = (pf as usize).min(PHASES - 1);
        let t = (pf - p as f64) as f32;
        let a = &self.table[p * TAPS..(p + 1) * TAPS];
        let b = &self.table[(p + 1) * TAPS..(p + 2) * TAPS];
        for i in 0..TAPS {
            out[i] = a[i] + t * (b[i] - a[i]);
        }
    }

    /// Renders `out.len() / channels` frames. Output frame `j` is the input
    /// interpolated at position `x0 + j·step`, measured in frames from the
    /// start of `src` (interleaved, `channels` per frame). The caller
    /// guarantees `src` covers every position's [`BEFORE`]/[`AFTER`] reach.
    pub fn render(&self, src: &[f32], channels: usize, x0: f64, step: f64, out: &mut [f32]) {
        let mut taps = [0f32; TAPS];
        for (j, frame) in out.chunks_exact_mut(channels).enumerate() {
            let x = x0 + j as f64 * step;
            let k = x.floor();
            self.taps(x - k, &mut taps);
            let start = (k as usize - BEFORE) * channels;
            let window = &src[start..start + TAPS * channels];
            if channels == 2 {
                let (mut l, mut r) = (0f32, 0f32);
                for (t, s) in taps.iter().zip(window.chunks_exact(2)) {
                    l += t * s[0];
                    r += t * s[1];
                }
                frame[0] = l;
                frame[1] = r;
            } else {
                for (c, o) in frame.iter_mut().enumerate() {
                    let mut acc = 0f32;
                    for (i, t) in taps.iter().enumerate() {
                        acc += t * window[i * channels + c];
                    }
                    *o = acc;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_zero_is_identity() {
        let k = Kernel::new(1.0);
        let src: Vec<f32> = (0..64)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let mut out = vec![0f32; 20];
        k.render(&src, 1, BEFORE as f64 + 3.0, 1.0, &mut out);
        assert_eq!(&out[..], &src[BEFORE + 3..BEFORE + 23]);
    }

    #[test]
    fn interpolates_a_sine_between_samples() {
        // 1 kHz at 48 kHz, read at 0.37-frame offsets: error far below 16 bit.
        let k = Kernel::new(1.0);
        let f = 1000.0 / 48_000.0;
        let src: Vec<f32> = (0..400)
            .map(|i| (2.0 * core::f64::consts::PI * f * i as f64).sin() as f32)
            .collect();
        let mut out = vec![0f32; 300];
        let x0 = 20.37;
        k.render(&src, 1, x0, 1.0003, &mut out);
        for (j, o) in out.iter().enumerate() {
            let x = x0 + j as f64 * 1.0003;
            let want = (2.0 * core::f64::consts::PI * f * x).sin() as f32;
            assert!((o - want).abs() < 2e-4, "frame {j}: {o} vs {want}");
        }
    }

    #[test]
    fn unit_dc_gain_at_every_phase() {
        let k = Kernel::new(0.9);
        let mut taps = [0f32; TAPS];
        for p in 0..100 {
            k.taps(p as f64 / 100.0, &mut taps);
            let sum: f32 = taps.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5);
        }
    }
}

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

/// Planar input of [`Kernel::render`]: `channels` planes of `plane` frames
/// each, channel `c` at `data[c·plane..]`.
#[derive(Clone, Copy, Debug)]
pub struct Planes<'a> {
    /// The samples, plane after plane.
    pub data: &'a [f32],
    /// Frames per plane.
    pub plane: usize,
    /// Planes (channels).
    pub channels: usize,
}

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

/// The normalised kernel row for fractional phase `frac` (see module docs).
fn kernel_row(frac: f64, cutoff: f64) -> [f64; TAPS] {
    let half = (TAPS / 2) as f64;
    let norm = bessel_i0(KAISER_BETA);
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
    w.map(|v| v / sum)
}

/// A tabulated interpolation kernel: per phase, the row and its difference
/// to the next row, so interpolating between phases is one multiply-add.
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
            table: vec![0f32; PHASES * 2 * TAPS],
        };
        k.set_cutoff(cutoff);
        k
    }

    /// Recomputes the table in place for a new cutoff (see [`Kernel::new`]).
    /// Does not allocate.
    pub fn set_cutoff(&mut self, cutoff: f64) {
        let cutoff = cutoff.clamp(0.05, 1.0);
        let mut this = kernel_row(0.0, cutoff);
        for p in 0..PHASES {
            let next = kernel_row((p + 1) as f64 / PHASES as f64, cutoff);
            let row = &mut self.table[p * 2 * TAPS..(p + 1) * 2 * TAPS];
            for i in 0..TAPS {
                row[i] = this[i] as f32;
                row[TAPS + i] = (next[i] - this[i]) as f32;
            }
            this = next;
        }
    }

    /// The taps for fractional phase `frac` in [0, 1).
    pub fn taps(&self, frac: f64, out: &mut [f32; TAPS]) {
        let fixed = (frac.clamp(0.0, 1.0) * (1u64 << 32) as f64) as u64;
        self.taps_fixed(fixed.min(u32::MAX as u64) as u32, out);
    }

    /// Renders `out.len() / src.channels` interleaved frames from planar
    /// input. Output frame `j` is the input interpolated at position `x0 +
    /// j·step`, in frames from the start of each plane. The caller
    /// guarantees the planes cover every position's [`BEFORE`]/[`AFTER`]
    /// reach. Planar input makes each channel's dot product contiguous,
    /// which the compiler vectorises.
    pub fn render(&self, src: Planes<'_>, x0: f64, step: f64, out: &mut [f32]) {
        render_impl(self, src, x0, step, out);
    }

    /// The taps for a 0.32 fixed-point phase.
    #[inline(always)]
    fn taps_fixed(&self, frac: u32, out: &mut [f32; TAPS]) {
        const SHIFT: u32 = 32 - PHASES.trailing_zeros();
        let p = (frac >> SHIFT) as usize;
        let t = (frac & ((1 << SHIFT) - 1)) as f32 * (1.0 / (1u32 << SHIFT) as f32);
        let row: &[f32; 2 * TAPS] = self.table[p * 2 * TAPS..(p + 1) * 2 * TAPS]
            .try_into()
            .expect("rows are 2·TAPS long");
        let (base, delta) = row.split_at(TAPS);
        for i in 0..TAPS {
            out[i] = base[i] + t * delta[i];
        }
    }
}

/// [`Kernel::render`]'s body, compiled for several instruction sets and
/// picked at run time (AVX2/FMA where the CPU has them), since distro
/// builds target the x86-64 baseline.
#[multiversion::multiversion(targets("x86_64+avx2+fma", "x86_64+avx", "aarch64+neon"))]
fn render_impl<'a>(kernel: &Kernel, planes: Planes<'a>, x0: f64, step: f64, out: &mut [f32]) {
    let Planes {
        data: src,
        plane,
        channels,
    } = planes;
    // Positions in 32.32 fixed point: the per-frame advance is one integer
    // add instead of a float-to-int round trip on the loop-carried path.
    // Resolution 2⁻³² frame; the caller re-anchors every call.
    const ONE: f64 = (1u64 << 32) as f64;
    let mut pos = (x0 * ONE) as u64;
    let inc = (step * ONE).round() as u64;
    let mut taps = [0f32; TAPS];
    for frame in out.chunks_exact_mut(channels) {
        let k = (pos >> 32) as usize;
        let frac = (pos & 0xffff_ffff) as u32;
        kernel.taps_fixed(frac, &mut taps);
        for (c, o) in frame.iter_mut().enumerate() {
            // The caller sizes the planes for every position's reach; a
            // window that would still fall outside (it cannot) is silence,
            // never a panic on the audio thread.
            let start = (c * plane + k).wrapping_sub(BEFORE);
            let Some(window) = src
                .get(start..start.wrapping_add(TAPS))
                .and_then(|w| <&[f32; TAPS]>::try_from(w).ok())
            else {
                *o = 0.0;
                continue;
            };
            // Four independent lanes: a single accumulator would not be
            // reassociated into SIMD.
            let mut acc = [0f32; 4];
            for (w, t) in window.chunks_exact(4).zip(taps.chunks_exact(4)) {
                for l in 0..4 {
                    acc[l] += w[l] * t[l];
                }
            }
            *o = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        }
        pos += inc;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mono(x: &[f32]) -> Planes<'_> {
        Planes {
            data: x,
            plane: x.len(),
            channels: 1,
        }
    }

    /// `n` samples of a deterministic pattern within ±1: (i·`mul` mod
    /// `m`) scaled, so that neighbouring samples differ.
    fn pattern(n: usize, mul: usize, m: usize) -> Vec<f32> {
        let half = (m / 2) as f32;
        (0..n)
            .map(|i| ((i * mul) % m) as f32 / half - 1.0)
            .collect()
    }

    #[test]
    fn phase_zero_is_identity() {
        let k = Kernel::new(1.0);
        let src = pattern(64, 7919, 101);
        let mut out = vec![0f32; 20];
        k.render(mono(&src), BEFORE as f64 + 3.0, 1.0, &mut out);
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
        k.render(mono(&src), x0, 1.0003, &mut out);
        for (j, o) in out.iter().enumerate() {
            let x = x0 + j as f64 * 1.0003;
            let want = (2.0 * core::f64::consts::PI * f * x).sin() as f32;
            assert!((o - want).abs() < 2e-4, "frame {j}: {o} vs {want}");
        }
    }

    #[test]
    fn channels_are_independent_planes() {
        let k = Kernel::new(1.0);
        let left = pattern(200, 37, 23);
        let right: Vec<f32> = left.iter().map(|v| -0.5 * v).collect();
        let planes: Vec<f32> = left.iter().chain(&right).copied().collect();
        let mut stereo = vec![0f32; 2 * 150];
        k.render(
            Planes {
                data: &planes,
                plane: 200,
                channels: 2,
            },
            12.3,
            0.9993,
            &mut stereo,
        );
        let mut one = vec![0f32; 150];
        k.render(mono(&left), 12.3, 0.9993, &mut one);
        for j in 0..150 {
            assert_eq!(one[j], stereo[2 * j], "frame {j}");
            assert!((stereo[2 * j + 1] + 0.5 * one[j]).abs() < 1e-6);
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

    proptest::proptest! {
        /// The planes the receiver sizes for a chunk (its last position's
        /// reach, plus one frame for the fixed-point stepping) hold every
        /// window the kernel reads: a constant input comes out constant,
        /// never as the silence of a window that fell outside.
        #[test]
        fn windows_stay_inside_the_planes(x0 in 0.0f64..1.0, step in 0.99f64..1.01, n in 1usize..4096) {
            let k = Kernel::new(1.0);
            let x0 = BEFORE as f64 + x0;
            let len = (x0 + (n - 1) as f64 * step).floor() as usize + AFTER + 2;
            let src = vec![1.0f32; len];
            let mut out = vec![0.0f32; n];
            k.render(mono(&src), x0, step, &mut out);
            proptest::prop_assert!(out.iter().all(|v| (v - 1.0).abs() < 1e-3));
        }
    }
}

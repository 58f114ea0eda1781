//! Signal analysis for lab recordings: alignment by cross-correlation with
//! sub-sample refinement, end-to-end latency, inter-receiver skew,
//! dropouts and fidelity.
//!
//! Conventions: a *lag* `L` (samples, fractional) between a `reference` and
//! a `probe` signal means `probe[k] ≈ reference[k - L]`. Times are
//! CLOCK_MONOTONIC nanoseconds from the recordings' stamps.

use crate::recording::{Recording, Stamp};
use anyhow::{bail, Result};
use rustfft::{num_complex::Complex, FftPlanner};

/// Tunables of the windowed analysis.
#[derive(Debug, Clone)]
pub struct Params {
    /// Analysis window length, s.
    pub window_s: f64,
    /// Step between window starts, s.
    pub hop_s: f64,
    /// Sub-window length for alignment, s (see [`track`]).
    pub sub_s: f64,
    /// Half-width of the per-sub-window lag search around the predicted
    /// lag, s. Must stay below the period of the music's tones (aliases),
    /// above the prediction error of a slewing receiver.
    pub search_s: f64,
    /// Windows whose probe RMS is below this level (dBFS) are skipped:
    /// correlation of near-silence is noise.
    pub silence_dbfs: f64,
    /// Minimum normalized correlation for a window to count as matched.
    pub min_corr: f64,
    /// Shortest run of digital silence counted as a dropout, s.
    pub dropout_min_s: f64,
    /// |sample| at or below this is digital silence (full scale 1.0).
    pub silence_eps: f64,
    /// Timestamp jumps larger than this count as gaps, ns.
    pub gap_tol_ns: f64,
    /// Largest |latency| considered when aligning recordings that carry
    /// time, ms. Stops the coarse search from locking onto a repeat of a
    /// looped passage far away.
    pub max_latency_ms: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            window_s: 0.2,
            hop_s: 0.1,
            sub_s: 0.02,
            search_s: 0.000125,
            silence_dbfs: -50.0,
            min_corr: 0.5,
            dropout_min_s: 0.001,
            silence_eps: 1e-6,
            gap_tol_ns: 500_000.0,
            max_latency_ms: 5000.0,
        }
    }
}

/// Half-width, in lags, of the band-limited interpolation kernel used to
/// evaluate the cross-correlation between integer lags.
const INTERP_HALF: i64 = 16;
/// Fine grid step for the sub-sample search, samples.
const FINE_STEPS: i64 = 16;

fn rms(x: &[f64]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64).sqrt()
}

fn dbfs_to_lin(db: f64) -> f64 {
    10f64.powf(db / 20.0)
}

/// Coarse integer lag by FFT cross-correlation of the whole signals
/// (decimated by `decim` for speed). Only lags in `[lo, hi]` are
/// considered. Returns the lag in samples at the full rate (a multiple of
/// `decim`, so refine it afterwards) or `None` if the range is empty.
pub fn coarse_lag(reference: &[f64], probe: &[f64], decim: usize, lo: i64, hi: i64) -> Option<i64> {
    let dec = |x: &[f64]| -> Vec<f64> {
        x.chunks(decim)
            .map(|c| c.iter().sum::<f64>() / c.len() as f64)
            .collect()
    };
    let r = dec(reference);
    let p = dec(probe);
    if r.is_empty() || p.is_empty() {
        return None;
    }
    let n = (r.len() + p.len()).next_power_of_two();
    let mut planner = FftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let mut a: Vec<Complex<f64>> = p.iter().map(|&v| Complex::new(v, 0.0)).collect();
    a.resize(n, Complex::new(0.0, 0.0));
    let mut b: Vec<Complex<f64>> = r.iter().map(|&v| Complex::new(v, 0.0)).collect();
    b.resize(n, Complex::new(0.0, 0.0));
    fwd.process(&mut a);
    fwd.process(&mut b);
    for (x, y) in a.iter_mut().zip(&b) {
        *x *= y.conj();
    }
    inv.process(&mut a);
    // a[l] (circular) = sum_k p[k] r[k - l].
    let d = decim as i64;
    let mut best: Option<(i64, f64)> = None;
    for (i, v) in a.iter().enumerate() {
        let l = if i < n / 2 {
            i as i64
        } else {
            i as i64 - n as i64
        };
        let full = l * d;
        if full < lo - d || full > hi + d {
            continue;
        }
        if best.is_none_or(|(_, bv)| v.re > bv) {
            best = Some((full, v.re));
        }
    }
    best.map(|(l, _)| l)
}

/// Result of aligning one window.
#[derive(Debug, Clone, Copy)]
pub struct LagEstimate {
    /// Lag, samples (fractional): probe[k] ≈ reference[k - lag].
    pub lag: f64,
    /// Normalized correlation at that lag, -1..1.
    pub corr: f64,
    /// True if the integer peak sat on the edge of the search range (the
    /// true peak may lie outside; widen the search).
    pub at_edge: bool,
}

/// Raw cross-correlation of probe window `[k0, k0+w)` against the
/// reference at integer lag `l`; `None` if the reference does not cover it.
fn xcorr_at(reference: &[f64], probe: &[f64], k0: usize, w: usize, l: i64) -> Option<f64> {
    let start = k0 as i64 - l;
    if start < 0 || (start as usize + w) > reference.len() || k0 + w > probe.len() {
        return None;
    }
    let r = &reference[start as usize..start as usize + w];
    let p = &probe[k0..k0 + w];
    Some(r.iter().zip(p).map(|(a, b)| a * b).sum())
}

/// Blackman-windowed sinc, argument in samples, support |x| < half.
fn wsinc(x: f64, half: f64) -> f64 {
    if x.abs() >= half {
        return 0.0;
    }
    let s = if x.abs() < 1e-12 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    };
    let t = std::f64::consts::PI * (x / half + 1.0); // 0..2π across the support
    let w = 0.42 - 0.5 * t.cos() + 0.08 * (2.0 * t).cos();
    s * w
}

/// Cross-correlation between integer lags, by band-limited (windowed
/// sinc) interpolation of the integer-lag values `r` centred on `centre`
/// (`r[i]` is the value at lag `centre - INTERP_HALF - 1 + i`).
fn interp_r(r: &[f64], base: i64, at: f64) -> f64 {
    let half = (INTERP_HALF + 1) as f64;
    r.iter()
        .enumerate()
        .map(|(i, v)| v * wsinc(at - (base + i as i64) as f64, half))
        .sum()
}

/// Align probe window `[k0, k0+w)` with the reference, searching integer
/// lags `guess ± search`, then refining to a fraction of a sample.
///
/// Sub-sample refinement: the cross-correlation of band-limited signals is
/// itself band-limited, so its value between integer lags follows from the
/// integer-lag values by sinc interpolation. We evaluate it on a 1/16-sample
/// grid around the integer peak and fit a parabola through the best grid
/// point and its neighbours. A parabola straight on the three integer lags
/// is biased by up to ~0.1 sample for broadband signals (the peak is not a
/// parabola at that scale); at 1/16 sample the bias is negligible.
pub fn window_lag(
    reference: &[f64],
    probe: &[f64],
    k0: usize,
    w: usize,
    guess: i64,
    search: i64,
) -> Option<LagEstimate> {
    let lo = guess - search - INTERP_HALF - 1;
    let hi = guess + search + INTERP_HALF + 1;
    let mut r = Vec::with_capacity((hi - lo + 1) as usize);
    for l in lo..=hi {
        r.push(xcorr_at(reference, probe, k0, w, l)?);
    }
    let off = INTERP_HALF + 1;
    // Integer peak inside the search range proper.
    let (mut pk, mut pv) = (guess - search, f64::MIN);
    for l in (guess - search)..=(guess + search) {
        let v = r[(l - lo) as usize];
        if v > pv {
            pv = v;
            pk = l;
        }
    }
    let at_edge = pk == guess - search || pk == guess + search;
    // Kernel input: the integer lags pk-off..=pk+off.
    let base = pk - off;
    let seg = &r[(base - lo) as usize..=(pk + off - lo) as usize];
    let step = 1.0 / FINE_STEPS as f64;
    let (mut bf, mut bv) = (0.0, f64::MIN);
    for i in -FINE_STEPS..=FINE_STEPS {
        let f = i as f64 * step;
        let v = interp_r(seg, base, pk as f64 + f);
        if v > bv {
            bv = v;
            bf = f;
        }
    }
    let y0 = interp_r(seg, base, pk as f64 + bf - step);
    let y2 = interp_r(seg, base, pk as f64 + bf + step);
    let denom = y0 - 2.0 * bv + y2;
    let frac = if denom < 0.0 {
        (0.5 * (y0 - y2) / denom).clamp(-1.0, 1.0) * step
    } else {
        0.0
    };
    let lag = pk as f64 + bf + frac;
    let start = (k0 as i64 - pk) as usize;
    let er: f64 = reference[start..start + w].iter().map(|v| v * v).sum();
    let ep: f64 = probe[k0..k0 + w].iter().map(|v| v * v).sum();
    let corr = if er > 0.0 && ep > 0.0 {
        bv / (er * ep).sqrt()
    } else {
        0.0
    };
    Some(LagEstimate {
        lag,
        corr: corr.clamp(-1.0, 1.0),
        at_edge,
    })
}

/// One analysed window of a (reference, probe) pair.
#[derive(Debug, Clone, Copy)]
pub struct WindowResult {
    /// Centre of the window in the probe, frames.
    pub probe_frame: f64,
    /// Probe-relative position in seconds (centre / rate).
    pub probe_s: f64,
    /// Lag at the centre, samples (from a line fitted to the sub-windows).
    pub lag: f64,
    /// Slope of the lag across the window, ppm: positive when the probe
    /// consumes content slower than real time (it falls behind).
    pub slew_ppm: f64,
    /// Fidelity: energy-weighted mean normalized correlation of the
    /// sub-windows, each at its own lag.
    pub corr: f64,
    /// Window length, frames.
    pub window: usize,
    /// Play time of this content in the probe minus play time of the same
    /// content in the reference, ns (`None` without timestamps).
    pub delta_ns: Option<f64>,
}

/// All windows of one pair, plus how many sub-windows had signal but could
/// not be matched.
#[derive(Debug, Clone, Default)]
pub struct Track {
    /// Matched windows, in probe order.
    pub windows: Vec<WindowResult>,
    /// Sub-windows with signal above the silence level that found no match
    /// (correlation below `min_corr`): garbage, dropouts, a lost stream.
    pub unmatched: usize,
    /// Sub-windows with signal whose content lies outside the reference
    /// recording (it started later or ended earlier): not counted against
    /// the probe.
    pub uncovered: usize,
    /// The aligned sub-windows themselves, in probe order.
    pub subs: Vec<Sub>,
    /// Discontinuities between tracking segments.
    pub jumps: Vec<Jump>,
}

/// Integer lag maximizing the cross-correlation of probe window
/// `[k0, k0+w)` within `centre ± half` lags, by FFT (for wide searches,
/// where direct evaluation would cost `2·half·w`). `None` if the reference
/// does not cover the range.
fn wide_lag(
    reference: &[f64],
    probe: &[f64],
    k0: usize,
    w: usize,
    centre: i64,
    half: i64,
) -> Option<i64> {
    // Reference span that any lag in range can touch.
    let r0 = k0 as i64 - centre - half;
    let r1 = k0 as i64 - centre + half + w as i64;
    if r0 < 0 || r1 as usize > reference.len() || k0 + w > probe.len() {
        return None;
    }
    let rs = &reference[r0 as usize..r1 as usize];
    let n = (rs.len() + w).next_power_of_two();
    let mut planner = FftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let mut a: Vec<Complex<f64>> = rs.iter().map(|&v| Complex::new(v, 0.0)).collect();
    a.resize(n, Complex::new(0.0, 0.0));
    let mut b: Vec<Complex<f64>> = probe[k0..k0 + w]
        .iter()
        .map(|&v| Complex::new(v, 0.0))
        .collect();
    b.resize(n, Complex::new(0.0, 0.0));
    fwd.process(&mut a);
    fwd.process(&mut b);
    for (x, y) in a.iter_mut().zip(&b) {
        *x *= y.conj();
    }
    inv.process(&mut a);
    // a[m] = sum_i rs[i + m] p[i]: the probe matches reference offset
    // r0 + m, i.e. lag l = k0 - r0 - m, for m in 0..=2·half.
    // Normalize by the energy of each reference segment: raw correlation
    // favours loud passages, and music repeats (a louder beat 20 ms away
    // can out-score the quieter truth).
    let mut cum = Vec::with_capacity(rs.len() + 1);
    cum.push(0.0);
    for v in rs {
        cum.push(cum.last().copied().unwrap_or(0.0) + v * v);
    }
    let mut best = (0usize, f64::MIN);
    for (m, v) in a.iter().enumerate().take((2 * half + 1) as usize) {
        let e = cum[m + w] - cum[m];
        if e <= 0.0 {
            continue;
        }
        let score = v.re / e.sqrt();
        if score > best.1 {
            best = (m, score);
        }
    }
    Some(k0 as i64 - r0 - best.0 as i64)
}

/// A short aligned piece of the probe (stage 1 of [`track`]).
#[derive(Debug, Clone, Copy)]
pub struct Sub {
    /// Centre in the probe, frames.
    pub centre: f64,
    /// Lag, samples.
    pub lag: f64,
    /// Normalized correlation at the lag.
    pub corr: f64,
    /// Probe energy in the piece (sum of squares).
    pub energy: f64,
    /// Tracking segment: increments at every (re)acquisition, so a lag
    /// jump (skipped or repeated audio) separates two segments.
    pub segment: u32,
}

/// A discontinuity between two tracking segments.
#[derive(Debug, Clone, Copy)]
pub struct Jump {
    /// Probe position, s: the end of the last piece matched before it.
    pub at_s: f64,
    /// Change of lag, samples (content skipped in the probe if negative,
    /// repeated if positive).
    pub lag_change: f64,
    /// Change of latency across it, ms (`None` without timestamps). Near
    /// zero when the jump is explained by the recordings' own timestamp
    /// gaps (a recorder missed a cycle); else the receiver really skipped
    /// or repeated audio.
    pub latency_change_ms: Option<f64>,
}

/// Align `probe` against `reference`.
/// Both must have the same sample rate (see [`resample`]).
///
/// Two stages. (1) Short sub-windows (`sub_s`, 20 ms) are aligned one
/// after the other, each searching near the previous lag and falling back
/// to a wide FFT search when lost. (2) For each reporting window
/// (`window_s`), a line is fitted to its sub-window lags (energy-weighted,
/// outliers dropped): its value at the centre is the lag, its slope the
/// slew. Short pieces keep a slewing receiver (a drift controller changing
/// the rate by hundreds of ppm or more) from smearing the correlation
/// peak, which would both bias the lag and understate fidelity; the fit
/// gives back the accuracy of a long window.
pub fn track(reference: &Recording, probe: &Recording, p: &Params) -> Result<Track> {
    if reference.rate != probe.rate {
        bail!(
            "rates differ ({} vs {} Hz): resample first",
            reference.rate,
            probe.rate
        );
    }
    let rate = f64::from(probe.rate);
    let sub = ((p.sub_s * rate).round() as usize).max(64);
    let search = ((p.search_s * rate).round() as i64).max(2);
    let wide = (0.05 * rate) as i64;
    // Coarse lag range: from the timestamps when both have them (latency
    // within ±max_latency), else anything.
    let (lo, hi) = match (reference.time_at(0.0), probe.time_at(0.0)) {
        (Some(tr), Some(tp)) => {
            // delta(l) = tp + k/rate - (tr + (k - l)/rate) = tp - tr + l/rate.
            let base = (tp - tr) / 1e9 * rate;
            let span = p.max_latency_ms / 1e3 * rate;
            ((-span - base).floor() as i64, (span - base).ceil() as i64)
        }
        _ => (i64::MIN / 2, i64::MAX / 2),
    };
    let Some(coarse) = coarse_lag(&reference.mono, &probe.mono, 4, lo, hi) else {
        bail!("no overlap between recordings");
    };
    let thr = dbfs_to_lin(p.silence_dbfs);
    let mut out = Track::default();
    let good = |e: &Option<LagEstimate>| e.is_some_and(|e| !e.at_edge && e.corr >= p.min_corr);

    // Stage 1: sub-windows, tracked. Each short piece is searched only a
    // few samples around the lag predicted from the pieces before it
    // (last lag + recent slope): a 20 ms piece of tonal music correlates
    // almost as well one period off as at the truth, so a wide search per
    // piece would lock onto aliases. (Re)acquisition uses a long window,
    // which is unambiguous, searched widely by FFT.
    let long = ((p.window_s * rate).round() as usize).max(sub);
    let mut subs: Vec<Sub> = Vec::new();
    let mut hist: std::collections::VecDeque<(f64, f64)> = std::collections::VecDeque::new();
    let mut cur = coarse;
    let mut fails = 0usize;
    let mut segment = 0u32;
    let margin = wide + INTERP_HALF + 2;
    let mut k0 = 0usize;
    while k0 + sub <= probe.mono.len() {
        let centre = k0 as f64 + sub as f64 / 2.0;
        let energy: f64 = probe.mono[k0..k0 + sub].iter().map(|v| v * v).sum();
        if (energy / sub as f64).sqrt() < thr {
            k0 += sub;
            continue;
        }
        // Content the reference never had (recording started later or
        // stopped earlier) is not a failure to match.
        let rs = k0 as i64 - cur;
        if rs - margin < 0 || rs + long as i64 + margin > reference.mono.len() as i64 {
            out.uncovered += 1;
            k0 += sub;
            continue;
        }
        if hist.is_empty() {
            // Acquire: long window from here, wide search around the last
            // lag and the coarse one, keep the better.
            // The long window gives the integer lag; a 60 ms one refines it
            // within ±0.5 ms, because a slewing receiver's lag changes across
            // the long window and smears its correlation peak.
            let w = long.min(probe.mono.len() - k0);
            let w_ref = (3 * sub).min(w);
            let acq_search = (0.0005 * rate) as i64;
            let mut best: Option<LagEstimate> = None;
            for c in [cur, coarse] {
                let Some(l) = wide_lag(&reference.mono, &probe.mono, k0, w, c, wide) else {
                    continue;
                };
                let e = window_lag(&reference.mono, &probe.mono, k0, w_ref, l, acq_search);
                if let Some(e) = e {
                    if best.is_none_or(|b| e.corr > b.corr) {
                        best = Some(e);
                    }
                }
            }
            match best {
                Some(e) if good(&Some(e)) => {
                    cur = e.lag.round() as i64;
                    hist.push_back((centre, e.lag));
                    segment += 1;
                }
                _ => {
                    out.unmatched += 1;
                    k0 += sub;
                    continue;
                }
            }
        }
        let pred = predict(&hist, centre);
        let est = window_lag(
            &reference.mono,
            &probe.mono,
            k0,
            sub,
            pred.round() as i64,
            search,
        );
        match est {
            Some(e) if good(&est) => {
                cur = e.lag.round() as i64;
                fails = 0;
                subs.push(Sub {
                    centre,
                    lag: e.lag,
                    corr: e.corr,
                    energy,
                    segment,
                });
                hist.push_back((centre, e.lag));
                // Keep ~200 ms of history for the slope.
                while hist.len() > 10 {
                    hist.pop_front();
                }
            }
            _ => {
                out.unmatched += 1;
                fails += 1;
                // A real jump (skipped or repeated audio) or a lost lock:
                // after 3 misses in a row, reacquire from scratch.
                if fails >= 3 {
                    hist.clear();
                    fails = 0;
                }
            }
        }
        k0 += sub;
    }

    // A piece right before a jump straddles it (part old content, part
    // new) and scores low for that alone: drop it from the figures.
    let straddling: Vec<bool> = (0..subs.len())
        .map(|i| i + 1 < subs.len() && subs[i + 1].segment != subs[i].segment)
        .collect();
    let kept: Vec<Sub> = subs
        .iter()
        .zip(&straddling)
        .filter(|(_, st)| !**st)
        .map(|(s, _)| *s)
        .collect();

    // Stage 2: reporting windows.
    let w = (p.window_s * rate).round() as usize;
    let hop = ((p.hop_s * rate).round() as usize).max(1);
    // Want most of a window covered, else the fit extrapolates.
    let need = ((w / sub) / 2).max(2);
    let mut start = 0usize;
    while start + w <= probe.mono.len() {
        let (a, b) = (start as f64, (start + w) as f64);
        let i0 = kept.partition_point(|s| s.centre < a);
        let i1 = kept.partition_point(|s| s.centre < b);
        let centre = a + w as f64 / 2.0;
        // Never fit across a jump: keep the segment at the centre.
        let ws: Vec<Sub> = match kept[i0..i1].iter().min_by(|x, y| {
            (x.centre - centre)
                .abs()
                .total_cmp(&(y.centre - centre).abs())
        }) {
            Some(mid) => kept[i0..i1]
                .iter()
                .filter(|s| s.segment == mid.segment)
                .copied()
                .collect(),
            None => Vec::new(),
        };
        if ws.len() >= need {
            if let Some((lag, slope, corr)) = fit(&ws, centre) {
                let delta_ns = match (probe.time_at(centre), reference.time_at(centre - lag)) {
                    (Some(x), Some(y)) => Some(x - y),
                    _ => None,
                };
                out.windows.push(WindowResult {
                    probe_frame: centre,
                    probe_s: centre / rate,
                    lag,
                    slew_ppm: slope * 1e6,
                    corr,
                    window: w,
                    delta_ns,
                });
            }
        }
        start += hop;
    }
    // Jumps: where a new segment starts with a different lag.
    let sub_delta = |s: &Sub| match (probe.time_at(s.centre), reference.time_at(s.centre - s.lag)) {
        (Some(x), Some(y)) => Some(x - y),
        _ => None,
    };
    for pair in subs.windows(2) {
        let (x, y) = (&pair[0], &pair[1]);
        if x.segment != y.segment && (y.lag - x.lag).abs() > 1.0 {
            out.jumps.push(Jump {
                // End of the last piece before it: the earliest place the
                // discontinuity can be (pieces after it were unmatched).
                at_s: (x.centre + sub as f64 / 2.0) / rate,
                lag_change: y.lag - x.lag,
                latency_change_ms: match (sub_delta(x), sub_delta(y)) {
                    (Some(a), Some(b)) => Some((b - a) / 1e6),
                    _ => None,
                },
            });
        }
    }
    out.subs = subs;
    Ok(out)
}

/// Lag expected at `at` from recent (centre, lag) history: the newest lag
/// plus the slope over the history (0 with under 60 ms of it).
fn predict(hist: &std::collections::VecDeque<(f64, f64)>, at: f64) -> f64 {
    let (Some(first), Some(last)) = (hist.front(), hist.back()) else {
        return 0.0;
    };
    let span = last.0 - first.0;
    // 2880 frames = 60 ms at 48 kHz; below that the slope is noise.
    let slope = if span >= 2880.0 {
        (last.1 - first.1) / span
    } else {
        0.0
    };
    last.1 + slope * (at - last.0)
}

/// Weighted least-squares line through (centre, lag) of `subs`, evaluated
/// at `at`; sub-windows more than max(0.5 sample, 3 median deviations) off
/// the first fit are dropped and the line refitted. Returns (lag at `at`,
/// slope in samples per sample, energy-weighted mean correlation).
fn fit(subs: &[Sub], at: f64) -> Option<(f64, f64, f64)> {
    let line = |ss: &[&Sub]| -> Option<(f64, f64)> {
        let sw: f64 = ss.iter().map(|s| s.energy).sum();
        if sw <= 0.0 {
            return None;
        }
        let mx = ss.iter().map(|s| s.energy * (s.centre - at)).sum::<f64>() / sw;
        let my = ss.iter().map(|s| s.energy * s.lag).sum::<f64>() / sw;
        let sxx: f64 = ss
            .iter()
            .map(|s| s.energy * (s.centre - at - mx).powi(2))
            .sum();
        let sxy: f64 = ss
            .iter()
            .map(|s| s.energy * (s.centre - at - mx) * (s.lag - my))
            .sum();
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        Some((my - slope * mx, slope))
    };
    let all: Vec<&Sub> = subs.iter().collect();
    let (a0, b0) = line(&all)?;
    let res: Vec<f64> = all
        .iter()
        .map(|s| (s.lag - (a0 + b0 * (s.centre - at))).abs())
        .collect();
    let mut sorted = res.clone();
    sorted.sort_by(|x, y| x.total_cmp(y));
    let lim = (3.0 * sorted[sorted.len() / 2]).max(0.5);
    let kept: Vec<&Sub> = all
        .iter()
        .zip(&res)
        .filter(|(_, r)| **r <= lim)
        .map(|(s, _)| *s)
        .collect();
    let (a, b) = if kept.len() >= 2 {
        line(&kept)?
    } else {
        (a0, b0)
    };
    let sw: f64 = subs.iter().map(|s| s.energy).sum();
    let corr = subs.iter().map(|s| s.energy * s.corr).sum::<f64>() / sw;
    Some((a, b, corr))
}

/// A run of digital silence in the probe while the reference had signal.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    /// First silent frame in the probe.
    pub frame: usize,
    /// Length, frames.
    pub frames: usize,
    /// Position in the probe, s.
    pub at_s: f64,
}

/// Find dropouts of `probe` inside the program (between the first and last
/// matched window of `tr`): runs of |x| <= eps at least `dropout_min_s`
/// long where the aligned reference is not silent.
pub fn silence_dropouts(
    reference: &Recording,
    probe: &Recording,
    tr: &Track,
    p: &Params,
) -> Vec<Dropout> {
    let (Some(first), Some(last)) = (tr.windows.first(), tr.windows.last()) else {
        return Vec::new();
    };
    let rate = f64::from(probe.rate);
    let half_w = p.window_s * rate / 2.0;
    let start = (first.probe_frame - half_w).max(0.0) as usize;
    let end = ((last.probe_frame + half_w) as usize).min(probe.mono.len());
    let min_len = (p.dropout_min_s * rate).round().max(1.0) as usize;
    let thr = dbfs_to_lin(p.silence_dbfs);
    let lag_at = |frame: f64| -> f64 {
        let i = tr.windows.partition_point(|w| w.probe_frame <= frame);
        let w = &tr.windows[i.min(tr.windows.len() - 1)];
        w.lag
    };
    let mut out = Vec::new();
    let mut k = start;
    while k < end {
        if probe.mono[k].abs() > p.silence_eps {
            k += 1;
            continue;
        }
        let s = k;
        while k < end && probe.mono[k].abs() <= p.silence_eps {
            k += 1;
        }
        let len = k - s;
        if len < min_len {
            continue;
        }
        let lag = lag_at(s as f64 + len as f64 / 2.0);
        let rs = (s as f64 - lag).round();
        if rs < 0.0 {
            continue;
        }
        let rs = rs as usize;
        let re = (rs + len).min(reference.mono.len());
        if rs >= re {
            continue;
        }
        if rms(&reference.mono[rs..re]) >= thr {
            out.push(Dropout {
                frame: s,
                frames: len,
                at_s: s as f64 / rate,
            });
        }
    }
    out
}

/// Runs of digital silence at least `dropout_min_s` long *inside* the
/// reference's program (after its first and before its last sample above
/// the silence level): audio the sender's graph never got (an xrun of the
/// player or of the sender's graph). Receivers cannot be blamed for these,
/// and [`silence_dropouts`] does not see them (the reference is silent
/// too), so they are counted on their own.
pub fn reference_silence_runs(reference: &Recording, p: &Params) -> Vec<Dropout> {
    let rate = f64::from(reference.rate);
    let min_len = (p.dropout_min_s * rate).round().max(1.0) as usize;
    let thr = dbfs_to_lin(p.silence_dbfs);
    let x = &reference.mono;
    let (Some(first), Some(last)) = (
        x.iter().position(|v| v.abs() > thr),
        x.iter().rposition(|v| v.abs() > thr),
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut k = first;
    while k <= last {
        if x[k].abs() > p.silence_eps {
            k += 1;
            continue;
        }
        let s = k;
        while k <= last && x[k].abs() <= p.silence_eps {
            k += 1;
        }
        if k - s >= min_len {
            out.push(Dropout {
                frame: s,
                frames: k - s,
                at_s: s as f64 / rate,
            });
        }
    }
    out
}

/// Timestamp gaps of `probe` inside the program span of `tr`.
pub fn program_time_gaps(probe: &Recording, tr: &Track, p: &Params) -> Vec<(u64, f64)> {
    let (Some(first), Some(last)) = (tr.windows.first(), tr.windows.last()) else {
        return Vec::new();
    };
    let (a, b) = (first.probe_frame as u64, last.probe_frame as u64);
    probe
        .time_gaps(p.gap_tol_ns)
        .into_iter()
        .filter(|(f, _)| *f >= a && *f <= b)
        .collect()
}

/// Resample a recording to `to` Hz (synchronous FFT resampler), keeping
/// its time map exact: stamps move to the nearest output frame and their
/// times shift by the rounding.
pub fn resample(rec: &Recording, to: u32) -> Result<Recording> {
    use rubato::{FftFixedIn, Resampler};
    if rec.rate == to {
        return Ok(rec.clone());
    }
    let chunk = 4096;
    let mut rs = FftFixedIn::<f64>::new(rec.rate as usize, to as usize, chunk, 2, 1)?;
    let delay = rs.output_delay();
    let want = (rec.mono.len() as f64 * f64::from(to) / f64::from(rec.rate)).round() as usize;
    let mut out: Vec<f64> = Vec::with_capacity(want + delay + 2 * chunk);
    let mut pos = 0;
    while pos + chunk <= rec.mono.len() {
        let o = rs.process(&[&rec.mono[pos..pos + chunk]], None)?;
        out.extend_from_slice(&o[0]);
        pos += chunk;
    }
    let o = rs.process_partial(Some(&[&rec.mono[pos..]]), None)?;
    out.extend_from_slice(&o[0]);
    // Flush the filter's delay line.
    while out.len() < want + delay {
        let o = rs.process_partial::<&[f64]>(None, None)?;
        if o[0].is_empty() {
            break;
        }
        out.extend_from_slice(&o[0]);
    }
    let mono: Vec<f64> = out.into_iter().skip(delay).take(want).collect();
    let ratio = f64::from(to) / f64::from(rec.rate);
    let stamps = rec
        .stamps
        .iter()
        .map(|s| {
            let exact = s.frame as f64 * ratio;
            let frame = exact.round();
            Stamp {
                frame: frame as u64,
                frames: (f64::from(s.frames) * ratio).round() as u32,
                t_first_ns: s.t_first_ns + ((frame - exact) / f64::from(to) * 1e9).round() as i64,
                ..*s
            }
        })
        .collect();
    Ok(Recording {
        rate: to,
        channels: rec.channels,
        mono,
        stamps,
    })
}

/// Nearest-rank percentile (0..=100) of `v`; `None` if empty.
pub fn percentile(v: &[f64], pct: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((pct / 100.0) * s.len() as f64).ceil() as usize;
    Some(s[rank.clamp(1, s.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic xorshift so tests need no RNG crate and never flake.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A band-limited "music-like" signal that can be evaluated at any
    /// real time, so an exact fractional delay is just a time shift.
    struct Multitone {
        parts: Vec<(f64, f64, f64)>, // (Hz, phase rad, amplitude)
    }
    impl Multitone {
        fn new(seed: u64, n: usize, fmax: f64) -> Self {
            let mut r = Rng(seed);
            let parts = (0..n)
                .map(|_| {
                    (
                        40.0 + r.next() * (fmax - 40.0),
                        r.next() * std::f64::consts::TAU,
                        (0.5 / (n as f64).sqrt()) * (0.3 + r.next()),
                    )
                })
                .collect();
            Multitone { parts }
        }
        fn at(&self, t: f64) -> f64 {
            // Slow amplitude envelope so successive windows differ.
            let env = 0.6 + 0.4 * (t * 0.7).sin();
            env * self
                .parts
                .iter()
                .map(|(f, ph, a)| a * (std::f64::consts::TAU * f * t + ph).sin())
                .sum::<f64>()
        }
        /// Samples at `rate` Hz for `secs`, content delayed by `delay_s`
        /// (output sample n holds signal time n/rate - delay_s).
        fn render(&self, rate: u32, secs: f64, delay_s: f64) -> Vec<f64> {
            self.render_slow(rate, secs, 0.0, delay_s)
        }
        /// As [`Self::render`], played `slow` (a fraction: 100e-6 = 100 ppm)
        /// slower: sample n holds signal time (n/rate)(1 - slow) - delay_s.
        fn render_slow(&self, rate: u32, secs: f64, slow: f64, delay_s: f64) -> Vec<f64> {
            let n = (secs * f64::from(rate)) as usize;
            (0..n)
                .map(|i| self.at(i as f64 / f64::from(rate) * (1.0 - slow) - delay_s))
                .collect()
        }
        /// `secs` of this signal at 48 kHz as the reference, the same
        /// played `slow` slower and `delay_s` later as the probe (both
        /// stamped from 0), and the track of the probe against it.
        fn slowed(&self, secs: f64, slow: f64, delay_s: f64) -> (Recording, Recording, Track) {
            let a = rec(48000, self.render(48000, secs, 0.0), Some(0));
            let b = rec(48000, self.render_slow(48000, secs, slow, delay_s), Some(0));
            let tr = track(&a, &b, &Params::default()).unwrap();
            (a, b, tr)
        }
    }

    fn rec(rate: u32, mono: Vec<f64>, t0_ns: Option<i64>) -> Recording {
        let stamps = match t0_ns {
            None => vec![],
            Some(t0) => {
                let q = 1024u32;
                (0..mono.len() as u64 / u64::from(q) + 1)
                    .map(|b| Stamp {
                        frame: b * u64::from(q),
                        frames: q,
                        t_first_ns: t0
                            + (b as f64 * f64::from(q) * 1e9 / f64::from(rate)).round() as i64,
                        now_ns: 0,
                        delay: 0,
                        rate_num: 1,
                        rate_den: rate,
                        ticks: 0,
                        queued: 0,
                        backlog: 0,
                    })
                    .collect()
            }
        };
        Recording {
            rate,
            channels: 1,
            mono,
            stamps,
        }
    }

    #[test]
    fn fractional_delay_is_measured_to_a_microsecond() {
        let rate = 48000;
        let sig = Multitone::new(7, 200, 16000.0);
        let d = 12.3 / f64::from(rate);
        let a = sig.render(rate, 1.0, 0.0);
        let b = sig.render(rate, 1.0, d);
        let e = window_lag(&a, &b, 4000, 9600, 0, 40).unwrap();
        let err_us = (e.lag - 12.3) / f64::from(rate) * 1e6;
        assert!(err_us.abs() < 1.0, "lag {} (err {err_us} us)", e.lag);
        assert!(e.corr > 0.999, "corr {}", e.corr);
        assert!(!e.at_edge);
    }

    #[test]
    fn parabola_on_integer_lags_alone_would_be_worse() {
        // Guards the reason for the fine grid: check several fractions.
        let rate = 48000;
        let sig = Multitone::new(11, 300, 20000.0);
        let a = sig.render(rate, 0.5, 0.0);
        for frac in [0.1, 0.25, 0.5, 0.77] {
            let b = sig.render(rate, 0.5, (3.0 + frac) / f64::from(rate));
            let e = window_lag(&a, &b, 2000, 9600, 0, 10).unwrap();
            let err_us = (e.lag - 3.0 - frac) / f64::from(rate) * 1e6;
            assert!(
                err_us.abs() < 1.0,
                "frac {frac}: lag {} err {err_us} us",
                e.lag
            );
        }
    }

    #[test]
    fn negative_lag_and_edge_flag() {
        let rate = 48000;
        let sig = Multitone::new(3, 100, 12000.0);
        let a = sig.render(rate, 0.5, 0.0);
        let b = sig.render(rate, 0.5, -5.5 / f64::from(rate));
        let e = window_lag(&a, &b, 3000, 4800, 0, 20).unwrap();
        assert!((e.lag + 5.5).abs() < 0.05, "lag {}", e.lag);
        // Searching 0..=2 only: the peak is outside, so it must say so.
        let e = window_lag(&a, &b, 3000, 4800, 1, 1).unwrap();
        assert!(e.at_edge);
    }

    #[test]
    fn coarse_lag_finds_large_offset() {
        let rate = 48000;
        let sig = Multitone::new(5, 100, 8000.0);
        let a = sig.render(rate, 3.0, 0.0);
        let b = sig.render(rate, 3.0, 0.6132);
        let l = coarse_lag(&a, &b, 4, i64::MIN / 2, i64::MAX / 2).unwrap();
        let want = 0.6132 * f64::from(rate);
        assert!((l as f64 - want).abs() <= 8.0, "coarse {l}, want {want}");
    }

    #[test]
    fn track_gives_latency_from_timestamps() {
        // Receiver plays content 150 ms + 12.3 samples after the reference;
        // its recording also started 40 ms later in wall time.
        let rate = 48000;
        let sig = Multitone::new(9, 150, 15000.0);
        let lat_s = 0.150 + 12.3 / f64::from(rate);
        let t0 = 5_000_000_000i64;
        let rec_start = 0.040;
        let a = rec(rate, sig.render(rate, 4.0, 0.0), Some(t0));
        // Probe sample n is heard at t0 + rec_start + n/rate and carries
        // content time (rec_start + n/rate) - lat_s.
        let b = rec(
            rate,
            sig.render(rate, 4.0, lat_s - rec_start),
            Some(t0 + (rec_start * 1e9) as i64),
        );
        let tr = track(&a, &b, &Params::default()).unwrap();
        assert!(tr.windows.len() > 30, "{} windows", tr.windows.len());
        for w in &tr.windows {
            let err_us = (w.delta_ns.unwrap() / 1e3) - lat_s * 1e6;
            assert!(
                err_us.abs() < 1.0,
                "window at {} s: err {err_us} us",
                w.probe_s
            );
            assert!(w.corr > 0.999);
        }
        assert_eq!(tr.unmatched, 0);
    }

    #[test]
    fn track_follows_drift() {
        // Probe content drifts by +100 ppm: lag grows 4.8 samples/s.
        let (_, _, tr) = Multitone::new(21, 150, 15000.0).slowed(4.0, 100e-6, 0.001);
        // 4 s, a window every 100 ms: an empty track must not pass.
        assert!(tr.windows.len() > 30, "{} windows", tr.windows.len());
        for w in &tr.windows {
            let t = w.probe_s;
            // Content at probe time t is signal time t(1-1e-4) - 1 ms,
            // heard in the reference at that time: delta = t - that.
            let want_us = (t * 100e-6 + 0.001) * 1e6;
            let err = w.delta_ns.unwrap() / 1e3 - want_us;
            // Within a 200 ms window the lag changes by 1 sample; the
            // estimate is the window average, i.e. the centre value.
            assert!(err.abs() < 2.0, "t {t}: err {err} us");
        }
    }

    #[test]
    fn slewing_receiver_is_tracked_and_keeps_fidelity() {
        // 400 ppm stretch: whole 200 ms windows would decorrelate; the
        // sub-window track must keep both the lag and the fidelity.
        let (a, b, tr) = Multitone::new(23, 200, 16000.0).slowed(3.0, 400e-6, 0.002);
        assert!(tr.windows.len() > 20, "{} windows", tr.windows.len());
        for w in &tr.windows {
            let want_us = (w.probe_s * 400e-6 + 0.002) * 1e6;
            let err = w.delta_ns.unwrap() / 1e3 - want_us;
            assert!(err.abs() < 1.0, "t {}: err {err} us", w.probe_s);
            assert!((w.slew_ppm - 400.0).abs() < 20.0, "slew {}", w.slew_ppm);
            // 8 µs of stretch inside a 20 ms piece still costs a little
            // at 16 kHz; music (less treble) loses less.
            assert!(w.corr > 0.985, "fidelity {}", w.corr);
        }
        // A damaged receiver must score low: add strong noise.
        let mut r = Rng(99);
        let noisy = rec(
            b.rate,
            b.mono.iter().map(|v| v + (r.next() - 0.5) * 1.2).collect(),
            Some(0),
        );
        let p = Params {
            min_corr: 0.1,
            ..Params::default()
        };
        let tr = track(&a, &noisy, &p).unwrap();
        assert!(!tr.windows.is_empty());
        let mean = tr.windows.iter().map(|w| w.corr).sum::<f64>() / tr.windows.len() as f64;
        assert!(mean < 0.9, "noisy fidelity {mean}");
    }

    #[test]
    fn resampling_44k1_to_48k_keeps_time() {
        // Reference at 44.1 kHz, receiver at 48 kHz 30 ms + 7.7 samples@48k
        // later; the analysis must still see the right latency.
        let sig = Multitone::new(13, 150, 15000.0);
        let lat_s = 0.030 + 7.7 / 48000.0;
        let a = rec(44100, sig.render(44100, 3.0, 0.0), Some(1_000_000_000));
        let b = rec(48000, sig.render(48000, 3.0, lat_s), Some(1_000_000_000));
        let a48 = resample(&a, 48000).unwrap();
        assert_eq!(a48.rate, 48000);
        let tr = track(&a48, &b, &Params::default()).unwrap();
        assert!(tr.windows.len() > 20);
        let errs: Vec<f64> = tr
            .windows
            .iter()
            .map(|w| w.delta_ns.unwrap() / 1e3 - lat_s * 1e6)
            .collect();
        let worst = errs.iter().fold(0f64, |m, e| m.max(e.abs()));
        assert!(worst < 2.0, "worst {worst} us");
        assert!(tr.windows.iter().all(|w| w.corr > 0.99));
    }

    #[test]
    fn dropouts_are_found_only_where_reference_has_signal() {
        let rate = 48000;
        let sig = Multitone::new(17, 100, 10000.0);
        let mut refv = sig.render(rate, 3.0, 0.0);
        // The reference itself is silent for 50 ms at 1.0 s: not a dropout.
        for v in &mut refv[48000..48000 + 2400] {
            *v = 0.0;
        }
        let mut probe = refv.clone();
        // The receiver drops 5 ms at 2.0 s.
        for v in &mut probe[96000..96000 + 240] {
            *v = 0.0;
        }
        let a = rec(rate, refv, Some(0));
        let b = rec(rate, probe, Some(0));
        let p = Params::default();
        let tr = track(&a, &b, &p).unwrap();
        let d = silence_dropouts(&a, &b, &tr, &p);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].frame, 96000);
        assert_eq!(d[0].frames, 240);
        // The reference's own 50 ms hole is counted on the sender's side.
        let r = reference_silence_runs(&a, &p);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!((r[0].frame, r[0].frames), (48000, 2400));
        assert!(reference_silence_runs(&b, &p).len() == 2);
    }

    #[test]
    fn jumps_are_found_and_not_smeared_into_windows() {
        // The receiver skips 5 ms of audio at 1.5 s (latency drops 5 ms),
        // and the reference recorder missed 256 frames at 2.5 s but its
        // stamps say so (latency unchanged).
        let rate = 48000;
        let sig = Multitone::new(31, 150, 12000.0);
        let n = 4 * rate as usize;
        let skip = 240;
        let probe: Vec<f64> = (0..n)
            .map(|i| {
                let c = if i >= 72000 { i + skip } else { i };
                sig.at(c as f64 / 48000.0 - 0.01)
            })
            .collect();
        let b = rec(rate, probe, Some(1_000_000_000));
        let mut refv: Vec<f64> = (0..n + 1000).map(|i| sig.at(i as f64 / 48000.0)).collect();
        refv.drain(120_000..120_256);
        let mut a = rec(rate, refv, Some(1_000_000_000));
        // Rebuild the reference stamps with the gap at frame 120000.
        a.stamps = vec![
            Stamp {
                frame: 0,
                frames: 120_000,
                t_first_ns: 1_000_000_000,
                ..a.stamps[0]
            },
            Stamp {
                frame: 120_000,
                frames: 200_000,
                t_first_ns: 1_000_000_000 + (120_256.0 / 48000.0 * 1e9) as i64,
                ..a.stamps[0]
            },
        ];
        let tr = track(&a, &b, &Params::default()).unwrap();
        let real: Vec<&Jump> = tr
            .jumps
            .iter()
            .filter(|j| j.latency_change_ms.unwrap().abs() > 0.5)
            .collect();
        assert_eq!(real.len(), 1, "{:?}", tr.jumps);
        assert!((real[0].at_s - 1.5).abs() < 0.05, "{:?}", real[0]);
        assert!((real[0].latency_change_ms.unwrap() + 5.0).abs() < 0.01);
        assert!(
            tr.jumps.len() >= 2,
            "reference gap not seen: {:?}",
            tr.jumps
        );
        assert!(tr.windows.len() > 20, "{} windows", tr.windows.len());
        for w in &tr.windows {
            let want = if w.probe_s < 1.5 { 10.0 } else { 5.0 };
            let got = w.delta_ns.unwrap() / 1e6;
            // Windows straddling the skip belong to one side or the other.
            assert!(
                (got - want).abs() < 0.002 || (got - (15.0 - want)).abs() < 0.002,
                "t {} latency {got}",
                w.probe_s
            );
        }
    }

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}

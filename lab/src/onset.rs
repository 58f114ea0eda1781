//! Onsets: the first frame of each run of audio after silence, and whether
//! every receiver played it, and everything after it, at the right instant.
//!
//! A *run* in the reference (what entered the sender's sink, recorded
//! without keeping it awake) starts at the first frame above
//! [`OnsetParams::threshold`] after at least [`OnsetParams::min_gap_s`] of
//! digital silence or of no buffers at all (the sink suspended), and ends
//! where the next such silence begins. For each run and receiver:
//!
//! - the receiver's play time of the run's first 20 ms, by cross-correlation
//!   with sub-sample refinement ([`crate::analysis::window_lag`]), minus the
//!   reference's time of them and the expected latency: the *onset error*;
//! - the *head*: energy of the receiver's first 2 ms of the run against the
//!   reference's, and their correlation: a clipped start reads ~0;
//! - the run, block by block (10 ms), near the onset's lag (each block
//!   matched within ±0.5 ms of it): blocks where the receiver is silent
//!   (digital silence over ≥ 1 ms while the reference has signal) are
//!   *missing*; blocks correlating below 0.9 at their best lag are
//!   *damaged*.

use crate::analysis::window_lag;
use crate::recording::Recording;
use crate::stalls::Stall;

/// Tunables of the onset analysis.
#[derive(Debug, Clone)]
pub struct OnsetParams {
    /// Silence (or missing buffers) before a run, s.
    pub min_gap_s: f64,
    /// |sample| above this starts a run (full scale 1.0).
    pub threshold: f64,
    /// |sample| at or below this is digital silence.
    pub silence_eps: f64,
    /// Window correlated to place the onset, s.
    pub window_s: f64,
    /// Half-width of the lag search around the expected instant, s.
    pub search_s: f64,
    /// Head compared sample for sample, s.
    pub head_s: f64,
    /// Block length for the run check, s.
    pub block_s: f64,
    /// Blocks correlating below this count as damaged.
    pub min_block_corr: f64,
}

impl Default for OnsetParams {
    fn default() -> Self {
        OnsetParams {
            min_gap_s: 0.05,
            threshold: 1e-4,
            silence_eps: 1e-6,
            window_s: 0.02,
            search_s: 0.01,
            head_s: 0.002,
            block_s: 0.01,
            min_block_corr: 0.9,
        }
    }
}

/// A run of audio in the reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Run {
    /// First frame (index into the reference).
    pub start: usize,
    /// One past the last frame with signal.
    pub end: usize,
    /// CLOCK_MONOTONIC ns at which `start` entered the sink.
    pub t_ns: f64,
}

/// How one receiver played one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Played {
    /// Receiver play time of the run's first frame minus (reference time +
    /// latency), µs; NaN if the run could not be found.
    pub error_us: f64,
    /// Correlation of the onset window.
    pub corr: f64,
    /// Energy of the receiver's head over the reference's (1 = all there).
    pub head_ratio: f64,
    /// Correlation of the head.
    pub head_corr: f64,
    /// 10 ms blocks of the run checked.
    pub blocks: usize,
    /// Blocks with ≥ 1 ms of digital silence where the reference has signal.
    pub missing_blocks: usize,
    /// Blocks correlating below [`OnsetParams::min_block_corr`].
    pub damaged_blocks: usize,
    /// Missing or damaged blocks heard within the reach of a stall of the
    /// machine itself ([`crate::stalls`]); counted here, not above.
    pub stalled_blocks: usize,
    /// Times the reference's stamps jump within the run (the sender's
    /// graph skipped a cycle, or its recorder missed one): blocks end at
    /// each, so that a receiver playing the skipped time as silence is
    /// judged right.
    pub sender_gaps: usize,
    /// Where the first missing or damaged blocks start, s after the run's
    /// first frame (at most [`MAX_BAD_LISTED`]).
    pub bad_at_s: [f64; MAX_BAD_LISTED],
    /// How many of `bad_at_s` are set.
    pub bad_listed: usize,
}

/// A jump of the reference's stamps larger than this is a gap in the
/// sender's timeline, ns (0.5 ms: a graph's cycle times are smooth to
/// microseconds, and its smallest quantum is 0.7 ms).
pub const REFERENCE_GAP_NS: f64 = 500_000.0;

/// Bad blocks whose positions [`Played`] lists.
pub const MAX_BAD_LISTED: usize = 8;

/// The runs of the reference, in order.
pub fn runs(reference: &Recording, p: &OnsetParams) -> Vec<Run> {
    let rate = f64::from(reference.rate);
    let x = &reference.mono;
    let time = |k: usize| reference.time_at(k as f64).unwrap_or(k as f64 * 1e9 / rate);
    let gap_ns = p.min_gap_s * 1e9;
    let mut out: Vec<Run> = Vec::new();
    // Time of the last frame with signal; none yet (the recording starts
    // in silence, or with the sink waking).
    let mut last_signal: Option<usize> = None;
    for (k, v) in x.iter().enumerate() {
        if v.abs() <= p.threshold {
            continue;
        }
        let new_run = match last_signal {
            None => true,
            Some(j) => {
                // Quiet by samples, or by time (no buffers while the
                // sink was suspended). Quiet is below the onset threshold,
                // not digital silence: a player's or resampler's ring-down
                // leaves samples of -100 dBFS before the sink suspends,
                // and they must not join two runs into one.
                let quiet = x[j + 1..k].iter().all(|v| v.abs() <= p.threshold);
                quiet && time(k) - time(j) >= gap_ns
            }
        };
        if new_run {
            if let (Some(r), Some(j)) = (out.last_mut(), last_signal) {
                r.end = j + 1;
            }
            out.push(Run {
                start: k,
                end: x.len(),
                t_ns: time(k),
            });
        }
        last_signal = Some(k);
    }
    if let (Some(r), Some(j)) = (out.last_mut(), last_signal) {
        r.end = j + 1;
    }
    out
}

/// The frame of `rec` played at CLOCK_MONOTONIC `t_ns` (fractional), from
/// its stamps.
fn frame_at(rec: &Recording, t_ns: f64) -> Option<f64> {
    let rate = f64::from(rec.rate);
    let i = rec
        .stamps
        .partition_point(|s| (s.t_first_ns as f64) <= t_ns)
        .checked_sub(1)?;
    let s = &rec.stamps[i];
    Some(s.frame as f64 + (t_ns - s.t_first_ns as f64) * rate / 1e9)
}

fn energy(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum()
}

fn corr(a: &[f64], b: &[f64]) -> f64 {
    let (ea, eb) = (energy(a), energy(b));
    if ea <= 0.0 || eb <= 0.0 {
        return 0.0;
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / (ea * eb).sqrt()
}

/// How receiver `probe` played `run` of `reference`, expected
/// `latency_ns` after it entered the sink. Bad blocks heard within the
/// reach of one of `stalls` count as `stalled_blocks`. `None` if the probe
/// does not cover the expected instant.
pub fn played(
    reference: &Recording,
    probe: &Recording,
    run: &Run,
    latency_ns: f64,
    stalls: &[Stall],
    p: &OnsetParams,
) -> Option<Played> {
    let rate = f64::from(reference.rate);
    let n = |s: f64| (s * rate).round() as usize;
    let expect = frame_at(probe, run.t_ns + latency_ns)?;
    let k0 = expect.round() as i64;
    if k0 < 0 {
        return None;
    }
    let k0 = k0 as usize;
    let w = n(p.window_s).min(run.end - run.start).max(16);
    // probe[k] ≈ reference[k − lag]: the run's first frame at probe frame
    // start + lag. Search around the expected one.
    let guess = k0 as i64 - run.start as i64;
    let search = n(p.search_s) as i64;
    // Correlate a window a little into the run, so that every lag searched
    // finds reference samples (a run may begin with the recording). The lag
    // is the same.
    let into = (search as usize + 64).min((run.end - run.start).saturating_sub(w));
    // The raw cross-correlation's peak leans towards a decaying sound's
    // louder past (as for the blocks below): at a resume that lands on a
    // decaying note it sat 193 frames off, and every block after it was
    // judged there. Take the lag whose normalized correlation is best, then
    // refine it within ±2 frames.
    let k = k0 + into;
    let ncorr = |l: i64| -> f64 {
        let s = k as i64 - l;
        if s < 0 || s as usize + w > reference.mono.len() || k + w > probe.mono.len() {
            return f64::MIN;
        }
        corr(
            &reference.mono[s as usize..s as usize + w],
            &probe.mono[k..k + w],
        )
    };
    let best = (guess - search..=guess + search).max_by(|&a, &b| ncorr(a).total_cmp(&ncorr(b)))?;
    let est = window_lag(&reference.mono, &probe.mono, k, w, best, 2)?;
    let at = run.start as f64 + est.lag;
    let t_rx = probe.time_at(at)?;
    let error_us = (t_rx - run.t_ns - latency_ns) / 1e3;
    let lag = est.lag.round() as i64;
    let head = n(p.head_s);
    let r0 = run.start;
    let p0 = (r0 as i64 + lag).max(0) as usize;
    let (head_ratio, head_corr) =
        if p0 + head <= probe.mono.len() && r0 + head <= reference.mono.len() {
            let a = &reference.mono[r0..r0 + head];
            let b = &probe.mono[p0..p0 + head];
            let ea = energy(a);
            (if ea > 0.0 { energy(b) / ea } else { 0.0 }, corr(a, b))
        } else {
            (0.0, 0.0)
        };
    let block = n(p.block_s);
    let one_ms = n(0.001);
    let (mut blocks, mut missing, mut damaged, mut stalled) = (0, 0, 0, 0);
    let mut bad_at_s = [0.0; MAX_BAD_LISTED];
    let mut bad_listed = 0;
    // Where the probe holds reference frame k: from the two recordings'
    // stamps (the onset's measured error kept), so that a cycle one
    // recorder missed (a stall) shifts nothing after it; the onset's lag
    // where a recording has no stamps there.
    let probe_at = |k: usize| -> i64 {
        reference
            .time_at(k as f64)
            .and_then(|t| frame_at(probe, t + latency_ns + error_us * 1e3))
            .map_or(k as i64 + lag, |f| f.round() as i64)
    };
    // Where the sender's graph skipped time (an xrun of its own: PipeWire
    // 0.3.65 skips a cycle when a client joins a running graph, once in
    // ten) or the reference's recorder missed a cycle: the file runs on
    // while its stamps jump. The receivers rightly play the skipped time as
    // silence, so no block may straddle the jump: a block ends at it and
    // the next begins there (a piece under a quarter block is too short to
    // judge and is passed over).
    let cuts: Vec<usize> = reference
        .time_gaps(REFERENCE_GAP_NS)
        .into_iter()
        .map(|(f, _)| f as usize)
        .filter(|&f| f > r0 && f < run.end)
        .collect();
    let mut k = r0;
    while k + block <= run.end {
        let len = cuts
            .iter()
            .find(|&&f| f > k && f < k + block)
            .map_or(block, |&f| f - k);
        if len < block / 4 {
            k += len;
            continue;
        }
        let pk = probe_at(k);
        if pk < 0 || pk as usize + len > probe.mono.len() {
            break;
        }
        let a = &reference.mono[k..k + len];
        let b = &probe.mono[pk as usize..pk as usize + len];
        if energy(a) / len as f64 > p.threshold * p.threshold {
            blocks += 1;
            let mut zeros = 0;
            let mut silent = false;
            for v in b {
                zeros = if v.abs() <= p.silence_eps {
                    zeros + 1
                } else {
                    0
                };
                silent |= zeros >= one_ms;
            }
            // Each block is matched around its expected lag (±0.5 ms): the
            // receivers' play times wander by microseconds within a run, and
            // at a fixed lag a few µs already decorrelate high frequencies.
            // Damage (a fade, other audio) does not match at any lag.
            // The search picks the peak of the raw cross-correlation, which
            // a decaying sound biases towards lags that reach into its
            // louder past (a drum's tail decorrelates to 0.92 one period
            // off): the expected lag is judged as well, and the better
            // figure counts.
            let searched = window_lag(
                &reference.mono,
                &probe.mono,
                pk as usize,
                len,
                pk - k as i64,
                n(0.0005) as i64,
            )
            .map_or(-1.0, |e| e.corr);
            let block_corr = searched.max(corr(a, b));
            let bad = silent || block_corr < p.min_block_corr;
            let in_stall = bad
                && probe
                    .time_at(pk as f64)
                    .is_some_and(|t| crate::stalls::any_covers(stalls, t));
            let bad = if in_stall {
                stalled += 1;
                true
            } else if silent {
                missing += 1;
                true
            } else if block_corr < p.min_block_corr {
                damaged += 1;
                true
            } else {
                false
            };
            if bad && bad_listed < MAX_BAD_LISTED {
                bad_at_s[bad_listed] = (k - r0) as f64 / rate;
                bad_listed += 1;
            }
        }
        k += len;
    }
    Some(Played {
        sender_gaps: cuts.len(),
        error_us,
        corr: est.corr,
        head_ratio,
        head_corr,
        blocks,
        missing_blocks: missing,
        damaged_blocks: damaged,
        stalled_blocks: stalled,
        bad_at_s,
        bad_listed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::Stamp;

    fn stamped(mono: Vec<f64>, t0: i64, gaps: &[(usize, i64)]) -> Recording {
        // One stamp per 480 frames; `gaps` add time before a frame.
        let mut stamps = Vec::new();
        let mut t = t0;
        for f in (0..mono.len()).step_by(480) {
            for &(at, ns) in gaps {
                if at == f {
                    t += ns;
                }
            }
            stamps.push(Stamp {
                frame: f as u64,
                frames: 480,
                t_first_ns: t,
                now_ns: t,
                delay: 0,
                rate_num: 1,
                rate_den: 48_000,
                ticks: 0,
                queued: 0,
                backlog: 0,
            });
            t += 10_000_000;
        }
        Recording {
            rate: 48_000,
            channels: 1,
            mono,
            stamps,
        }
    }

    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.5
            })
            .collect()
    }

    /// Two runs in the reference (the second after the sink was suspended
    /// for 2 s: no buffers); a receiver that plays both 40 ms later, one
    /// that clips 5 ms of the second, one that is 80 µs late.
    #[test]
    fn finds_runs_and_judges_each_receiver() {
        let burst = noise(24_000, 3);
        let mut r = vec![];
        r.extend_from_slice(&burst);
        let second = r.len();
        r.extend_from_slice(&noise(24_000, 5));
        let reference = stamped(r.clone(), 1_000_000_000, &[(second, 2_000_000_000)]);
        let runs = runs(&reference, &OnsetParams::default());
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(runs[0].start, 0);
        assert_eq!(runs[1].start, second);
        assert_eq!(runs[1].t_ns - runs[0].t_ns, 2.5e9);
        // A receiver recording continuously from 0.5 s before, playing
        // each run 40 ms after its reference time.
        let make = |clip: usize, late_ns: f64| {
            let span = 3.2e9 + 1e9;
            let frames = (span * 48e-6) as usize;
            let mut x = vec![0.0; frames];
            for run in &runs {
                let at = ((run.t_ns + 40e6 + late_ns - 0.5e9) * 48e-6).round() as usize;
                for (j, v) in r[run.start..run.end].iter().enumerate() {
                    if at + j < x.len() && j >= clip {
                        x[at + j] = *v;
                    }
                }
            }
            stamped(x, 500_000_000, &[])
        };
        let p = OnsetParams::default();
        let good = make(0, 0.0);
        for run in &runs {
            let q = played(&reference, &good, run, 40e6, &[], &p).unwrap();
            assert!(q.error_us.abs() < 1.0, "{q:?}");
            assert!(q.head_ratio > 0.99 && q.head_corr > 0.99, "{q:?}");
            assert!(
                q.blocks >= 49 && q.missing_blocks == 0 && q.damaged_blocks == 0,
                "{q:?}"
            );
        }
        let clipped = make(240, 0.0);
        let q = played(&reference, &clipped, &runs[1], 40e6, &[], &p).unwrap();
        assert!(q.head_ratio < 0.01, "{q:?}");
        assert!(q.missing_blocks >= 1, "{q:?}");
        // The same clip within a stall of the machine is reported apart.
        let stall = Stall {
            start_ns: runs[1].t_ns + 30e6,
            len_ns: 20e6,
        };
        let s = played(&reference, &clipped, &runs[1], 40e6, &[stall], &p).unwrap();
        assert_eq!(
            (s.missing_blocks, s.stalled_blocks),
            (0, q.missing_blocks),
            "{s:?}"
        );
        let late = make(0, 83_333.0);
        let q = played(&reference, &late, &runs[0], 40e6, &[], &p).unwrap();
        assert!((q.error_us - 83.3).abs() < 1.0, "{q:?}");
    }

    /// A sound that decays fast (a drum: a 200 Hz hit falling by 40 dB
    /// in 5 ms, every 100 ms, over a quiet bed) played perfectly: its
    /// blocks are whole, although the raw cross-correlation of a hit peaks
    /// at the edge of the search, where the normalized one is about 0.8.
    #[test]
    fn a_decaying_hit_played_whole_is_not_damaged() {
        let bed = noise(48_000, 7);
        let tail: Vec<f64> = (0..48_000)
            .map(|i| {
                let t = (i % 4800) as f64 / 48e3;
                let hit = (-t * 1000.0).exp() * (2.0 * std::f64::consts::PI * 200.0 * t).sin();
                0.5 * hit + 0.02 * bed[i]
            })
            .collect();
        let reference = stamped(tail.clone(), 1_000_000_000, &[]);
        let p = OnsetParams::default();
        let runs = runs(&reference, &p);
        assert_eq!(runs.len(), 1, "{runs:?}");
        let mut x = vec![0.0; 24_000 + 1920];
        x.extend_from_slice(&tail);
        x.extend(vec![0.0; 4800]);
        let probe = stamped(x, 500_000_000, &[]);
        for run in &runs {
            let q = played(&reference, &probe, run, 40e6, &[], &p).unwrap();
            assert!(q.blocks >= 95, "{q:?}");
            assert_eq!((q.missing_blocks, q.damaged_blocks), (0, 0), "{q:?}");
        }
    }

    /// The sender's graph skipped one 2048-frame cycle (42.7 ms) inside a
    /// 10 ms block: the reference's file runs on, its stamps jump; the
    /// receiver rightly plays the skipped time as silence. Nothing is
    /// missing; a receiver that played over the jump is found out.
    #[test]
    fn time_the_sender_skipped_is_heard_as_silence() {
        let mut sound = vec![0.0; 100];
        sound.extend(noise(48_000, 11));
        let cut = 19_200; // not a block boundary: blocks start at frame 100
        let reference = stamped(sound.clone(), 1_000_000_000, &[(cut, 42_666_667)]);
        let p = OnsetParams::default();
        let runs = runs(&reference, &p);
        assert_eq!(runs.len(), 1, "{runs:?}");
        let make = |hole: usize| {
            let mut x = vec![0.0; 24_000 + 1920];
            x.extend_from_slice(&sound[..cut]);
            x.extend(vec![0.0; hole]);
            x.extend_from_slice(&sound[cut..]);
            x.extend(vec![0.0; 4800]);
            stamped(x, 500_000_000, &[])
        };
        let q = played(&reference, &make(2048), &runs[0], 40e6, &[], &p).unwrap();
        assert_eq!(q.sender_gaps, 1, "{q:?}");
        assert!(q.blocks >= 95, "{q:?}");
        assert_eq!((q.missing_blocks, q.damaged_blocks), (0, 0), "{q:?}");
        let q = played(&reference, &make(0), &runs[0], 40e6, &[], &p).unwrap();
        assert!(q.damaged_blocks + q.missing_blocks >= 50, "{q:?}");
    }

    /// The reference's recorder missed one 10 ms cycle (a stall): its file
    /// lacks those frames, its stamps show the gap. The receiver played
    /// everything; nothing after the gap may count as damaged.
    #[test]
    fn a_cycle_the_reference_missed_shifts_nothing_after_it() {
        let sound = noise(48_000, 9);
        let cut = 19_200; // 0.4 s in, on a stamp boundary
        let mut r = sound[..cut].to_vec();
        r.extend_from_slice(&sound[cut + 480..]);
        let reference = stamped(r, 1_000_000_000, &[(cut, 10_000_000)]);
        let runs = runs(&reference, &OnsetParams::default());
        assert_eq!(runs.len(), 1, "{runs:?}");
        // The receiver: 40 ms later, recorded from 0.5 s before.
        let mut x = vec![0.0; 24_000 + 1920];
        x.extend_from_slice(&sound);
        x.extend(vec![0.0; 4800]);
        let probe = stamped(x, 500_000_000, &[]);
        let q = played(
            &reference,
            &probe,
            &runs[0],
            40e6,
            &[],
            &OnsetParams::default(),
        )
        .unwrap();
        assert!(q.error_us.abs() < 1.0, "{q:?}");
        assert!(q.blocks >= 95, "{q:?}");
        assert_eq!((q.missing_blocks, q.damaged_blocks), (0, 0), "{q:?}");
    }
}

//! bark-lab-pulse: the lab's recorder and player for PulseAudio hosts.
//!
//! `record` records a source (a sink's `.monitor`) and `play` plays noise or
//! a WAV into a sink; both write `x.wav` plus `x.ts.csv` in the lab's stamp
//! format (lab/src/recording.rs), so `bark-lab-analyze` compares them with
//! PipeWire hosts' recordings directly. All hosts share one kernel, hence
//! one CLOCK_MONOTONIC: the stamps are comparable across hosts.
//!
//! ## Timestamps
//!
//! Both derive "frame n is heard at t" from PulseAudio's timing reports, as
//! bark-pulse does (pulse-module/src/timing.rs has the derivation from the
//! 16.1 sources): for `play`, the playback path (`sink_usec`, read and write
//! index); for `record` of a monitor, the monitor path (the monitored
//! sink's latency against the record queue's write index, exact when the
//! sink runs with `norewinds=1`, as the lab's speakers do). The lab's
//! speaker is a null sink: its play-out clock is CLOCK_MONOTONIC at exactly
//! the nominal rate, so within a run every report says the same thing,
//! `play − n·period` = constant, up to the one-sided delay between the
//! server's snapshot and its reply stamp. The tool keeps every report and,
//! at the end, stamps each buffer with the *lowest* such offset among the
//! reports within ±1 s of it (offline, both sides of the buffer), which is
//! the snapshot instant.
//!
//! The two paths go through different server code (sink input vs monitor
//! source), so `lab/selftest-pulse.sh` playing into a speaker and recording
//! its monitor checks one against the other.

mod session;

use anyhow::{bail, Context, Result};
use bark_lab::args::{check_seconds, Capture};
use bark_lab::recording::{read_wav, stamps_path, write_stamps, write_wav, Stamp};
use bark_pulse::clock::{monotonic_ns, ClockPair};
use bark_pulse::timing::Info;
use clap::{Parser, Subcommand};
use libpulse_binding as pulse;
use pulse::def::BufferAttr;
use pulse::stream::{FlagSet, PeekResult, SeekMode, Stream};
use session::Session;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Reports within this distance (ns) of a buffer vote on its stamp.
const WINDOW_NS: f64 = 1e9;

#[derive(Parser, Debug)]
#[command(about = "Record or play on a PulseAudio host with per-buffer CLOCK_MONOTONIC play times")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Measure `PA_STREAM_VARIABLE_RATE`: play silence into a sink while
    /// stepping the stream rate (`pa_stream_update_sample_rate`), and report
    /// per step the rate the sink really consumed at (from the timing
    /// reports) and how long after the request it took effect.
    RateProbe {
        /// Sink (default: the default sink).
        #[arg(long)]
        device: Option<String>,
        /// Stream rates to step through, Hz.
        #[arg(long, default_value = "48000,48001,48000,47999,48000,48002")]
        steps: String,
        /// Seconds per step.
        #[arg(long, default_value_t = 4.0)]
        step_seconds: f64,
    },
    /// Record a source (e.g. `speaker.monitor`): when each frame was played.
    Record {
        /// Source to record.
        #[arg(long)]
        device: String,
        #[command(flatten)]
        capture: Capture,
        /// Also write every raw timing report here (CSV), for debugging.
        #[arg(long)]
        reports: Option<PathBuf>,
    },
    /// Play noise (or `--wav`) into a sink: when each frame will be heard.
    Play {
        /// Sink to play into (default: the default sink).
        #[arg(long)]
        device: Option<String>,
        /// Seconds to play.
        #[arg(long)]
        seconds: f64,
        /// Where to write what was played, with stamps.
        #[arg(long)]
        out: PathBuf,
        /// Play this WAV (float or integer, at --rate, stereo) instead of noise.
        #[arg(long)]
        wav: Option<PathBuf>,
        /// Rate, Hz.
        #[arg(long, default_value_t = 48000)]
        rate: u32,
        /// Target buffer of the stream, ms.
        #[arg(long, default_value_t = 20.0)]
        buffer_ms: f64,
    },
}

/// One timing report: frame 0 heard at `offset` (ns), known at `t`.
#[derive(Clone, Copy)]
struct Rep {
    t: u64,
    offset: f64,
    raw: Info,
}

/// One buffer: first frame index, frames, when it was handled (ns).
#[derive(Clone, Copy)]
struct Buf {
    frame: u64,
    frames: u32,
    t: u64,
}

/// Stamps every buffer from the lower envelope of the reports around it:
/// the lowest offset in the second before it and the lowest in the second
/// after, joined by a line. (A null sink's play-out clock is not exactly
/// nominal: it advances by whole µs per rendered chunk, so it runs tens of
/// ppm off, and a flat minimum over two seconds would err by that.)
/// Buffers with no report near them are left out.
fn stamp(bufs: &[Buf], reps: &[Rep], rate: u32) -> Vec<Stamp> {
    let period = 1e9 / rate as f64;
    let mut out = Vec::with_capacity(bufs.len());
    let lowest = |from: f64, to: f64| -> Option<(f64, f64)> {
        let a = reps.partition_point(|r| (r.t as f64) < from);
        let b = reps.partition_point(|r| (r.t as f64) <= to);
        reps[a..b]
            .iter()
            .map(|r| (r.t as f64, r.offset))
            .reduce(|x, y| if y.1 < x.1 { y } else { x })
    };
    for b in bufs {
        let t = b.t as f64;
        let off = match (lowest(t - WINDOW_NS, t), lowest(t, t + WINDOW_NS)) {
            (Some((tl, ol)), Some((tr, or))) if tr > tl => ol + (or - ol) * (t - tl) / (tr - tl),
            (Some((_, o)), _) | (None, Some((_, o))) => o,
            (None, None) => continue,
        };
        let t_first = off + b.frame as f64 * period;
        out.push(Stamp {
            frame: b.frame,
            frames: b.frames,
            t_first_ns: t_first.round() as i64,
            now_ns: b.t as i64,
            delay: 0,
            rate_num: 1,
            rate_den: rate,
            ticks: b.frame,
            queued: 0,
            backlog: 0,
        });
    }
    out
}

/// A `Rep` from a monitor record stream's report (frames at `period` ns).
fn monitor_rep(info: Info, clocks: &ClockPair, fb: usize, period: f64) -> Option<Rep> {
    let r = info.monitor_record(clocks, fb)?;
    Some(Rep {
        t: r.t_ns,
        offset: r.play_ns - r.frame as f64 * period,
        raw: info,
    })
}

/// Drain the record stream, handing each fragment to `data`: `Ok(bytes)`,
/// or `Err(n)` for a hole of `n` bytes. (A fragment must be peeked before
/// it can be dropped.)
fn drain(s: &mut Stream, mut data: impl FnMut(Result<&[u8], usize>)) {
    while s.readable_size().unwrap_or(0) > 0 {
        match s.peek() {
            Ok(PeekResult::Data(d)) => data(Ok(d)),
            Ok(PeekResult::Hole(n)) => data(Err(n)),
            _ => break,
        }
        let _ = s.discard();
    }
}

fn record(device: &str, cap: &Capture, reports: Option<&Path>) -> Result<()> {
    let want = cap.frames()?;
    let (rate, channels) = (cap.rate, cap.channels);
    let fb = 4 * channels as usize;
    let start = Instant::now();
    let mut sess = Session::open("bark-lab-record", rate, channels)?;
    // No ADJUST_LATENCY and a large fragment: the recorder must not drive
    // the sink's block size (the system under test does that).
    let attr = BufferAttr {
        maxlength: u32::MAX,
        tlength: u32::MAX,
        prebuf: u32::MAX,
        minreq: u32::MAX,
        fragsize: sess.bytes(50_000),
    };
    sess.s
        .connect_record(Some(device), Some(&attr), FlagSet::DONT_MOVE)
        .with_context(|| format!("recording {device}"))?;
    let mut samples: Vec<f32> =
        Vec::with_capacity((want as usize + rate as usize) * channels as usize);
    let mut bufs = Vec::with_capacity(want as usize / 64 + 64);
    let mut reps: Vec<Rep> = Vec::with_capacity(cap.seconds as usize * 110 + 500);
    let mut frames_in = 0u64;
    let mut first_kept: Option<u64> = None;
    let hard_end = start + Duration::from_secs_f64(cap.start_timeout + cap.seconds + 10.0);
    let period = 1e9 / rate as f64;
    loop {
        if !sess.turn("record", Some(hard_end))? {
            continue;
        }
        if let Some((info, clocks)) = sess.report() {
            reps.extend(monitor_rep(info, &clocks, fb, period));
        }
        let now = monotonic_ns();
        drain(&mut sess.s, |d| match d {
            Ok(d) => {
                let n = d.len() / fb;
                if first_kept.is_none() && !reps.is_empty() {
                    first_kept = Some(frames_in);
                }
                if first_kept.is_some() {
                    samples.extend(
                        d[..n * fb]
                            .chunks_exact(4)
                            .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
                    );
                    bufs.push(Buf {
                        frame: frames_in,
                        frames: n as u32,
                        t: now,
                    });
                }
                frames_in += n as u64;
            }
            Err(hole) => frames_in += (hole / fb) as u64,
        });
        let kept = first_kept.map_or(0, |f| frames_in - f);
        if first_kept.is_none() && start.elapsed().as_secs_f64() > cap.start_timeout {
            bail!("no audio from {device} within {} s", cap.start_timeout);
        }
        if kept >= want {
            break;
        }
    }
    // A second of reports after the end, so the last buffers have reports
    // on both sides too.
    let tail_end = Instant::now() + Duration::from_millis(1000);
    while Instant::now() < tail_end {
        sess.lp.iterate()?;
        if let Some((info, clocks)) = sess.report() {
            reps.extend(monitor_rep(info, &clocks, fb, period));
        }
        drain(&mut sess.s, |_| {});
    }
    sess.close();
    let base = first_kept.unwrap_or(0);
    let keep_frames = want as usize;
    samples.truncate(keep_frames * channels as usize);
    let mut stamps = stamp(&bufs, &reps, rate);
    for st in &mut stamps {
        st.frame -= base;
    }
    stamps.retain(|st| (st.frame as usize) < keep_frames);
    if let Some(p) = reports {
        let mut t = String::from(
            "t_ns,offset_ns,timestamp_us,sink_usec,source_usec,write_index,read_index\n",
        );
        for r in &reps {
            t.push_str(&format!(
                "{},{:.0},{},{},{},{},{}\n",
                r.t,
                r.offset,
                r.raw.timestamp_us,
                r.raw.sink_usec,
                r.raw.source_usec,
                r.raw.write_index.unwrap_or(-1),
                r.raw.read_index.unwrap_or(-1)
            ));
        }
        std::fs::write(p, t).with_context(|| format!("writing {}", p.display()))?;
    }
    finish(
        &cap.out,
        rate,
        channels,
        &samples,
        &stamps,
        &reps,
        &format!("record {device}"),
    )
}

fn finish(
    out: &Path,
    rate: u32,
    channels: u8,
    samples: &[f32],
    stamps: &[Stamp],
    reps: &[Rep],
    what: &str,
) -> Result<()> {
    if stamps.is_empty() {
        bail!("no stamped buffers ({} reports)", reps.len());
    }
    write_wav(out, rate, channels as u16, samples)?;
    // The spread of the report offsets: how late the server's stamps were
    // (for the log; the lowest is used).
    let mut offs: Vec<f64> = reps.iter().map(|r| r.offset).collect();
    offs.sort_by(f64::total_cmp);
    let lo = offs.first().copied().unwrap_or(0.0);
    let p50 = offs.get(offs.len() / 2).copied().unwrap_or(0.0) - lo;
    let p99 = offs.get(offs.len() * 99 / 100).copied().unwrap_or(0.0) - lo;
    let meta = format!(
        "bark-lab-pulse {what}; {} reports, offset spread p50 {:.1} us p99 {:.1} us",
        reps.len(),
        p50 / 1e3,
        p99 / 1e3
    );
    write_stamps(&stamps_path(out), &meta, stamps)?;
    eprintln!(
        "{}: {} frames, {} buffers; {meta}",
        out.display(),
        samples.len() / channels as usize,
        stamps.len()
    );
    Ok(())
}

/// Deterministic noise with a slowly varying level: no periodicity, so
/// cross-correlation finds one peak.
struct Noise {
    x: u64,
    level: f32,
    n: u64,
}

impl Noise {
    fn uniform(&mut self) -> f32 {
        self.x = self
            .x
            .wrapping_mul(0x5851_f42d_4c95_7f2d)
            .wrapping_add(0x1405_7b7e_f767_814f);
        ((self.x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn next(&mut self) -> f32 {
        if self.n.is_multiple_of(2400) {
            self.level = 0.1 + 0.2 * (self.uniform() * 0.5 + 0.5);
        }
        self.n += 1;
        self.uniform() * self.level
    }
}

fn load_wav(path: &Path, rate: u32) -> Result<Vec<f32>> {
    let (spec, samples) = read_wav(path)?;
    if spec.sample_rate != rate || spec.channels != 2 {
        bail!(
            "{}: need {rate} Hz stereo, got {} Hz {} ch",
            path.display(),
            spec.sample_rate,
            spec.channels
        );
    }
    Ok(samples.into_iter().map(|v| v as f32).collect())
}

fn play(
    device: Option<&str>,
    seconds: f64,
    out: &Path,
    wav: Option<&Path>,
    rate: u32,
    buffer_ms: f64,
) -> Result<()> {
    check_seconds(seconds)?;
    let channels = 2u8;
    let fb = 8usize;
    let total = (seconds * rate as f64) as usize;
    let src: Vec<f32> = match wav {
        Some(p) => {
            let mut v = load_wav(p, rate)?;
            v.truncate(total * 2);
            v
        }
        None => {
            let mut n = Noise {
                x: 42,
                level: 0.2,
                n: 0,
            };
            (0..total)
                .flat_map(|_| {
                    let v = n.next();
                    [v, v * 0.8]
                })
                .collect()
        }
    };
    let frames_total = src.len() / 2;
    let start = Instant::now();
    let mut sess = Session::open("bark-lab-play", rate, channels)?;
    sess.connect_playback(device, (buffer_ms * 1000.0) as u64, FlagSet::NOFLAGS)?;
    let mut reps = Vec::new();
    let mut bufs = Vec::new();
    let mut written = 0usize;
    let hard_end = start + Duration::from_secs_f64(seconds + 20.0);
    let period = 1e9 / rate as f64;
    // Play on for a second of silence past the end, for reports on both
    // sides of the last buffers.
    let silence_tail = rate as usize;
    loop {
        if !sess.turn("playback", Some(hard_end))? {
            continue;
        }
        if let Some((info, clocks)) = sess.report() {
            if let Some(r) = info.playback(&clocks, written as u64, fb, rate) {
                reps.push(Rep {
                    t: r.t_ns,
                    offset: r.play_ns - r.frame as f64 * period,
                    raw: info,
                });
            }
        }
        let now = monotonic_ns();
        let n = sess.s.writable_size().unwrap_or(0) / fb;
        if n > 0 {
            let mut chunk = vec![0f32; n * 2];
            if written < frames_total {
                let m = n.min(frames_total - written);
                chunk[..m * 2].copy_from_slice(&src[written * 2..(written + m) * 2]);
            }
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_ne_bytes()).collect();
            sess.s
                .write_copy(&bytes, 0, SeekMode::Relative)
                .context("writing")?;
            if written < frames_total {
                bufs.push(Buf {
                    frame: written as u64,
                    frames: n.min(frames_total - written) as u32,
                    t: now,
                });
            }
            written += n;
        }
        if written >= frames_total + silence_tail {
            break;
        }
    }
    sess.close();
    let stamps = stamp(&bufs, &reps, rate);
    finish(
        out,
        rate,
        channels,
        &src,
        &stamps,
        &reps,
        &format!("play {}", device.unwrap_or("(default)")),
    )
}

/// A line through the lower envelope of (t, offset) points: 100 ms bucket
/// minima, least squares. Returns (slope, value at `t_ref`), ns/ns and ns.
fn envelope_line(pts: &[(f64, f64)], t_ref: f64) -> Option<(f64, f64)> {
    let mut mins: Vec<(f64, f64)> = Vec::new();
    for &(t, o) in pts {
        let b = (t / 1e8).floor();
        match mins.last_mut() {
            Some(m) if (m.0 / 1e8).floor() == b => {
                if o < m.1 {
                    *m = (t, o);
                }
            }
            _ => mins.push((t, o)),
        }
    }
    if mins.len() < 5 {
        return None;
    }
    let n = mins.len() as f64;
    let tm = mins.iter().map(|p| p.0).sum::<f64>() / n;
    let om = mins.iter().map(|p| p.1).sum::<f64>() / n;
    let sto: f64 = mins.iter().map(|p| (p.0 - tm) * (p.1 - om)).sum();
    let stt: f64 = mins.iter().map(|p| (p.0 - tm) * (p.0 - tm)).sum();
    let b = sto / stt;
    Some((b, om + b * (t_ref - tm)))
}

fn rate_probe(device: Option<&str>, steps: &str, step_seconds: f64) -> Result<()> {
    let rates: Vec<u32> = steps
        .split(',')
        .map(|r| r.trim().parse().context("--steps: rates in Hz"))
        .collect::<Result<_>>()?;
    if rates.is_empty() || !(1.0..=60.0).contains(&step_seconds) {
        bail!("need at least one rate and 1..60 s per step");
    }
    let nominal = rates[0];
    let fb = 8usize;
    let mut sess = Session::open("bark-lab-rate-probe", nominal, 2)?;
    sess.connect_playback(device, 20_000, FlagSet::VARIABLE_RATE)?;
    // Offsets at the *nominal* period: a stream consumed at rate r makes
    // them move by (1 − r/nominal) per second.
    let period = 1e9 / nominal as f64;
    let mut pts: Vec<Vec<(f64, f64)>> = vec![Vec::new(); rates.len()];
    let mut req_t = vec![0f64; rates.len()];
    let mut ack_ms = vec![f64::NAN; rates.len()];
    let acked = Rc::new(Cell::new(None::<u64>));
    let mut written = 0u64;
    let mut step = 0usize;
    let mut step_started: Option<Instant> = None;
    let zeros = vec![0u8; 1 << 20];
    loop {
        if !sess.turn("playback", None)? {
            continue;
        }
        let now = monotonic_ns();
        if step_started.is_none() {
            step_started = Some(Instant::now());
            req_t[0] = now as f64;
        }
        if let Some(t) = acked.take() {
            ack_ms[step] = (t as f64 - req_t[step]) / 1e6;
        }
        if step_started.is_some_and(|t| t.elapsed().as_secs_f64() >= step_seconds) {
            step += 1;
            if step == rates.len() {
                break;
            }
            step_started = Some(Instant::now());
            req_t[step] = now as f64;
            let a = acked.clone();
            let g = sess.lp.guard.clone();
            let _ = sess.s.update_sample_rate(rates[step], move |ok| {
                g.run("rate", || {
                    if ok {
                        a.set(Some(monotonic_ns()));
                    }
                });
            });
        }
        if let Some((info, clocks)) = sess.report() {
            if let Some(r) = info.playback(&clocks, written, fb, nominal) {
                pts[step].push((r.t_ns as f64, r.play_ns - r.frame as f64 * period));
            }
        }
        let n = sess.s.writable_size().unwrap_or(0).min(zeros.len()) / fb * fb;
        if n > 0 {
            sess.s
                .write_copy(&zeros[..n], 0, SeekMode::Relative)
                .context("writing")?;
            written += (n / fb) as u64;
        }
    }
    sess.close();
    println!("step,rate_hz,expected_ppm,measured_ppm,ack_ms,effect_after_ms");
    let mut prev: Option<(f64, f64)> = None;
    for (i, &r) in rates.iter().enumerate() {
        // Skip the first second of each step (the change settling in).
        let settled: Vec<(f64, f64)> = pts[i]
            .iter()
            .copied()
            .filter(|p| p.0 >= req_t[i] + 1e9)
            .collect();
        let Some((b, _)) = envelope_line(&settled, req_t[i]) else {
            continue;
        };
        let expected = (1.0 - r as f64 / nominal as f64) * 1e6;
        // Where the new line meets the previous one: the change took
        // effect there (meaningless when the slope did not change).
        let line_here = envelope_line(&settled, 0.0);
        let effect = match (prev, line_here) {
            (Some((b0, a0)), Some((b1, a1))) if (b1 - b0).abs() > 5e-6 => {
                ((a0 - a1) / (b1 - b0) - req_t[i]) / 1e6
            }
            _ => f64::NAN,
        };
        println!(
            "{i},{r},{expected:.2},{:.2},{:.2},{effect:.1}",
            b * 1e6,
            ack_ms[i]
        );
        prev = line_here;
    }
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::RateProbe {
            device,
            steps,
            step_seconds,
        } => rate_probe(device.as_deref(), &steps, step_seconds),
        Cmd::Record {
            device,
            capture,
            reports,
        } => record(&device, &capture, reports.as_deref()),
        Cmd::Play {
            device,
            seconds,
            out,
            wav,
            rate,
            buffer_ms,
        } => play(
            device.as_deref(),
            seconds,
            &out,
            wav.as_deref(),
            rate,
            buffer_ms,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_follow_the_lower_envelope() {
        let reps: Vec<Rep> = (0..300)
            .map(|i| Rep {
                t: i * 10_000_000,
                offset: 5_000.0 + if i % 7 == 0 { 0.0 } else { 40_000.0 },
                raw: Info::default(),
            })
            .collect();
        let bufs = [
            Buf {
                frame: 0,
                frames: 480,
                t: 0,
            },
            Buf {
                frame: 48_000,
                frames: 480,
                t: 1_000_000_000,
            },
            // No report within a second: dropped.
            Buf {
                frame: 960_000,
                frames: 480,
                t: 20_000_000_000,
            },
        ];
        let s = stamp(&bufs, &reps, 48_000);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].t_first_ns, 5_000);
        assert_eq!(s[1].t_first_ns, 1_000_005_000);
        // A play-out clock 50 ppm fast: offsets fall 50 us per second.
        let reps: Vec<Rep> = (0..300)
            .map(|i| Rep {
                t: i * 10_000_000,
                offset: -50e-6 * (i * 10_000_000) as f64 + if i % 5 == 0 { 0.0 } else { 30_000.0 },
                raw: Info::default(),
            })
            .collect();
        let s = stamp(
            &[Buf {
                frame: 0,
                frames: 480,
                t: 1_500_000_000,
            }],
            &reps,
            48_000,
        );
        assert!(
            (s[0].t_first_ns + 75_000).abs() <= 1_000,
            "{}",
            s[0].t_first_ns
        );
    }
}

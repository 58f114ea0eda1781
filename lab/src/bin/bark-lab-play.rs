//! bark-lab-play: play a test signal (or a WAV file) into a sink and log,
//! per buffer, the CLOCK_MONOTONIC time at which its first frame will be
//! presented. The log (`--out x.wav` + `x.ts.csv`) has the same format as a
//! `bark-lab-record` recording, so it serves as a reference timeline, and
//! it checks the recorder: recording the same sink's monitor must give the
//! same times (see lab/README.md).
//!
//! ## Timestamp derivation (PipeWire 0.3.65, playback stream)
//!
//! With `RT_PROCESS`, `process()` runs inside the cycle that consumes the
//! buffer it fills: `impl_node_process_output` finds no queued buffer,
//! calls `process()`, and hands the freshly queued buffer to the graph in
//! the same cycle. `pw_time.now` is that cycle's start (CLOCK_MONOTONIC),
//! `delay` the downstream latency to the device in ticks, `queued` what
//! was queued before (0 here: we never queue ahead). So the first frame is
//! presented at `t_first = now + (delay + queued) * rate.num / rate.denom`.

use anyhow::{bail, Result};
use bark_lab::args::check_seconds;
use bark_lab::pwutil::{self, ticks_to_ns};
use bark_lab::recording::{read_wav, stamps_path, write_stamps, write_wav, Stamp};
use clap::Parser;
use pipewire as pw;
use pw::properties::properties;
use pw::spa::utils::Direction;
use pw::stream::StreamFlags;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "Play a test signal into a sink, logging per-buffer presentation times")]
struct Args {
    /// Sink to play into (node.name or id); default: the default sink.
    #[arg(long)]
    target: Option<String>,
    /// Seconds to play.
    #[arg(long)]
    seconds: f64,
    /// Play this WAV instead of the built-in noise (must be at --rate).
    #[arg(long)]
    wav: Option<PathBuf>,
    /// Where to write what was played, with stamps (`.ts.csv` beside it).
    #[arg(long)]
    out: PathBuf,
    /// Stream rate, Hz (use the graph rate: no resampler in the path).
    #[arg(long, default_value_t = 48000)]
    rate: u32,
    /// Seconds of leading silence (lets the graph settle first).
    #[arg(long, default_value_t = 0.5)]
    lead_in: f64,
    /// Peak amplitude of the noise, full scale 1.0.
    #[arg(long, default_value_t = 0.3)]
    level: f32,
}

/// Band-limited noise with a slow, irregular envelope: unique at every
/// lag (no periodicity for cross-correlation to confuse), broadband
/// enough for a sharp correlation peak. Deterministic.
struct Noise {
    s: u64,
    lp: f32,
    env: f32,
    env_target: f32,
    n: u64,
}

impl Noise {
    fn white(&mut self) -> f32 {
        self.s ^= self.s << 13;
        self.s ^= self.s >> 7;
        self.s ^= self.s << 17;
        ((self.s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn next(&mut self) -> f32 {
        if self.n.is_multiple_of(4800) {
            self.env_target = 0.3 + 0.7 * (self.white() * 0.5 + 0.5);
        }
        self.n += 1;
        self.env += (self.env_target - self.env) * 0.001;
        // One-pole low-pass at roughly 8 kHz: music-like spectrum tilt.
        self.lp += 0.6 * (self.white() - self.lp);
        self.lp * self.env
    }
}

struct Play {
    /// Interleaved stereo source material.
    src: Vec<f32>,
    pos: usize,
    stamps: Vec<Stamp>,
    done: bool,
}

fn main() -> Result<()> {
    let a = Args::parse();
    check_seconds(a.seconds)?;
    let ch = 2usize;
    let lead = (a.lead_in * f64::from(a.rate)) as usize;
    let total = (a.seconds * f64::from(a.rate)) as usize;
    let mut src = vec![0f32; total * ch];
    match &a.wav {
        None => {
            let mut n = Noise {
                s: 0x2545_f491_4f6c_dd1d,
                lp: 0.0,
                env: 0.5,
                env_target: 0.5,
                n: 0,
            };
            for f in lead..total {
                let v = n.next() * a.level;
                src[f * ch] = v;
                src[f * ch + 1] = v;
            }
        }
        Some(p) => {
            let (spec, v) = read_wav(p)?;
            if spec.sample_rate != a.rate {
                bail!(
                    "{} is {} Hz, want {}",
                    p.display(),
                    spec.sample_rate,
                    a.rate
                );
            }
            let c = spec.channels as usize;
            for (i, fr) in v.chunks_exact(c).enumerate() {
                let f = lead + i;
                if f >= total {
                    break;
                }
                src[f * ch] = fr[0] as f32;
                src[f * ch + 1] = fr[c.min(2) - 1] as f32;
            }
        }
    }

    let state = Arc::new(Mutex::new(Play {
        src,
        pos: 0,
        stamps: Vec::with_capacity(total / 32 + 64),
        done: false,
    }));
    let (mainloop, _context, core) = pwutil::connect()?;
    let mut props = properties! {
        *pw::keys::MEDIA_TYPE => "Audio",
        *pw::keys::MEDIA_CATEGORY => "Playback",
        *pw::keys::MEDIA_ROLE => "Music",
        *pw::keys::NODE_NAME => "bark-lab-play",
    };
    if let Some(t) = &a.target {
        props.insert(*pw::keys::TARGET_OBJECT, t.as_str());
    }
    let stream = pw::stream::StreamBox::new(&core, "bark-lab-play", props)?;
    let st = state.clone();
    let _listener = stream
        .add_local_listener_with_user_data(())
        .process(move |stream, _| {
            let Some(mut buf) = stream.dequeue_buffer() else {
                return;
            };
            let time = stream.time().ok();
            let req = buf.requested() as usize;
            let datas = buf.datas_mut();
            if datas.is_empty() {
                return;
            }
            let d = &mut datas[0];
            let Some(bytes) = d.data() else { return };
            let cap_frames = bytes.len() / (4 * ch);
            let frames = if req > 0 {
                req.min(cap_frames)
            } else {
                cap_frames.min(1024)
            };
            if let Ok(mut p) = st.try_lock() {
                let start = p.pos;
                let avail = p.src.len() / ch - start;
                let n = frames.min(avail);
                for i in 0..n * ch {
                    let v = p.src[start * ch + i].to_le_bytes();
                    bytes[i * 4..i * 4 + 4].copy_from_slice(&v);
                }
                // Past the end: silence, so the graph keeps running until we quit.
                bytes[n * ch * 4..frames * ch * 4].fill(0);
                if n > 0 {
                    if let Some(t) = &time {
                        let (num, den) = (t.rate().num, t.rate().denom);
                        let ahead = t.delay() + t.queued() as i64;
                        p.stamps.push(Stamp {
                            frame: start as u64,
                            frames: n as u32,
                            t_first_ns: t.now() + ticks_to_ns(ahead, num, den),
                            now_ns: t.now(),
                            delay: t.delay(),
                            rate_num: num,
                            rate_den: den,
                            ticks: t.ticks(),
                            queued: t.queued(),
                            backlog: 0,
                        });
                    }
                }
                p.pos += n;
                if p.pos * ch >= p.src.len() {
                    p.done = true;
                }
            } else {
                // The main thread is writing out (only at the very end).
                bytes[..frames * 4 * ch].fill(0);
            }
            let c = d.chunk_mut();
            *c.offset_mut() = 0;
            *c.stride_mut() = (4 * ch) as i32;
            *c.size_mut() = (frames * 4 * ch) as u32;
        })
        .register()?;

    pwutil::connect_f32(
        &stream,
        Direction::Output,
        StreamFlags::AUTOCONNECT,
        a.rate,
        2,
    )?;

    let started = std::time::Instant::now();
    let deadline = Duration::from_secs_f64(a.seconds * 1.5 + 10.0);
    let st = state.clone();
    let outcome = pwutil::run(&mainloop, Duration::from_millis(50), move || {
        if st.lock().map(|p| p.done).unwrap_or(true) {
            Some("done")
        } else if started.elapsed() > deadline {
            Some("deadline")
        } else {
            None
        }
    });
    let _ = stream.disconnect();

    let p = state.lock().map_err(|_| anyhow::anyhow!("lock poisoned"))?;
    write_wav(&a.out, a.rate, ch as u16, &p.src[..p.pos * ch])?;
    let meta = format!(
        "tool=bark-lab-play target={} rate={} outcome={} t=now+delay+queued",
        a.target.as_deref().unwrap_or("(default)"),
        a.rate,
        outcome
    );
    write_stamps(&stamps_path(&a.out), &meta, &p.stamps)?;
    eprintln!(
        "bark-lab-play: {} frames in {} buffers -> {} ({})",
        p.pos,
        p.stamps.len(),
        a.out.display(),
        outcome
    );
    if p.stamps.is_empty() {
        bail!("nothing was played (no timing from the stream)");
    }
    Ok(())
}

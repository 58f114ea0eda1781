//! bark-lab-record: record a sink's monitor (or a source) with, per buffer,
//! the CLOCK_MONOTONIC time at which the buffer's first frame was played.
//!
//! Writes `<out>` (WAV, f32) and `<out minus .wav>.ts.csv` (stamps).
//!
//! ## Timestamp derivation (PipeWire 0.3.65)
//!
//! In `process()` (run on the data thread, `RT_PROCESS`, right after the
//! stream copied the graph position for this cycle) `pw_stream_get_time_n`
//! gives:
//! - `now`: `spa_io_position.clock.nsec`, the CLOCK_MONOTONIC time at which
//!   the driver started this graph cycle. For the lab's null sink (a
//!   timerfd driver on CLOCK_MONOTONIC) that is the moment the sink
//!   consumes the cycle's quantum, i.e. "plays" it.
//! - `delay`: in 0.3.65 `copy_position` sets it to 0 and `get_time_n` adds
//!   the latency the port reported (`SPA_PARAM_Latency`: quantum, rate and
//!   ns parts). For a capture stream it is how long ago, in ticks of
//!   `rate`, the captured samples left the device.
//!
//! A monitor port of a *follower* sink hands out, in the same cycle, what
//! the sink consumed in that cycle (the recorder is scheduled after the
//! sink), so the first frame of the buffer was played at
//! `t_first = now - delay * rate.num / rate.denom` (seconds → ns).
//!
//! If the sink is the graph *driver* (`spa_io_position.clock.id` equals the
//! target's node id), the recorder is triggered at the start of the cycle,
//! before the sink runs, and reads what the sink produced at the end of the
//! previous cycle: one quantum earlier, so we subtract
//! `clock.duration` ticks. That read races with the sink's end-of-cycle
//! write (duplicated or skipped quanta at small quanta), which is why the
//! lab makes its speaker a follower of the Dummy-Driver. Both cases are
//! checked against a signal whose play-out time is known
//! (`bark-lab-play`); see lab/README.md.

use anyhow::{bail, Result};
use bark_lab::args;
use bark_lab::pwutil::{self, ticks_to_ns};
use bark_lab::recording::{stamps_path, write_stamps, write_wav, Stamp};
use clap::Parser;
use pipewire as pw;
use pw::properties::properties;
use pw::spa;
use pw::spa::utils::Direction;
use pw::stream::StreamFlags;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most buffers taken in one process() call (a bound, far above the few
/// a stream ever holds).
const MAX_DRAIN: usize = 64;

#[derive(Parser, Debug)]
#[command(about = "Record a PipeWire sink monitor with per-buffer CLOCK_MONOTONIC play times")]
struct Args {
    /// Node to record (node.name or object id). A sink is recorded through
    /// its monitor unless --source is given.
    #[arg(long)]
    target: String,
    /// Record from an Audio/Source instead of a sink's monitor.
    #[arg(long)]
    source: bool,
    #[command(flatten)]
    capture: args::Capture,
    /// node.name of the recording stream.
    #[arg(long, default_value = "bark-lab-record")]
    name: String,
    /// Record without keeping the target awake (`node.passive = true`,
    /// what pavucontrol's level meters use): an idle sink still suspends,
    /// and recording starts with the first cycle that runs it. For
    /// start-of-playback cases, whose reference must not wake the sink.
    #[arg(long)]
    passive: bool,
    /// Stop after this many seconds of wall time, however much audio came
    /// (a passive recording of a sink that idles part of the time).
    #[arg(long)]
    wall_seconds: Option<f64>,
}

/// What the data thread fills and the main thread writes out.
struct Capture {
    samples: Vec<f32>,
    stamps: Vec<Stamp>,
    frames: u64,
    want_frames: u64,
    done: bool,
    /// Buffers that arrived while the main thread held the lock (only at
    /// the very end) or after the target was reached.
    dropped: u64,
    /// Buffers whose size was not a whole number of frames.
    odd: u64,
    /// Buffers recorded while the target sink was the graph driver.
    driver_cycles: u64,
    /// process() calls that found more than one buffer (we were late).
    late_calls: u64,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let opt = &a.capture;
    let want_frames = opt.frames()?;
    let ch = usize::from(opt.channels);
    // Preallocate so the data thread does not allocate in the steady state.
    let cap = Arc::new(Mutex::new(Capture {
        samples: Vec::with_capacity((want_frames as usize + 8192) * ch),
        stamps: Vec::with_capacity(want_frames as usize / 32 + 64),
        frames: 0,
        want_frames,
        done: false,
        dropped: 0,
        odd: 0,
        driver_cycles: 0,
        late_calls: 0,
    }));

    let (mainloop, _context, core) = pwutil::connect()?;
    let mut props = properties! {
        *pw::keys::MEDIA_TYPE => "Audio",
        *pw::keys::MEDIA_CATEGORY => "Capture",
        *pw::keys::MEDIA_ROLE => "Production",
        *pw::keys::NODE_NAME => a.name.as_str(),
        *pw::keys::TARGET_OBJECT => a.target.as_str(),
        // Never wander to another node if the target goes away: a silent
        // recording of the wrong thing is worse than a short one.
        *pw::keys::NODE_DONT_RECONNECT => "true",
    };
    if !a.source {
        props.insert(*pw::keys::STREAM_CAPTURE_SINK, "true");
    }
    if a.passive {
        props.insert("node.passive", "true");
    }
    let stream = pw::stream::StreamBox::new(&core, "bark-lab-record", props)?;

    // Which node is our target? (To tell whether it drives the graph.)
    let target_id = Arc::new(AtomicU32::new(u32::MAX));
    let registry = core.get_registry_rc()?;
    let tid = target_id.clone();
    let want = a.target.clone();
    let _reg_listener = registry
        .add_listener_local()
        .global(move |g| {
            if g.type_ != pw::types::ObjectType::Node {
                return;
            }
            let name = g.props.and_then(|p| p.get("node.name"));
            if name == Some(want.as_str()) || g.id.to_string() == want {
                tid.store(g.id, Ordering::Relaxed);
            }
        })
        .register();
    // spa_io_position of our node, handed over by io_changed.
    let position = Arc::new(AtomicPtr::<spa::sys::spa_io_position>::new(
        std::ptr::null_mut(),
    ));
    let pos_io = position.clone();
    let pos_rt = position.clone();
    let tid_rt = target_id.clone();
    let driver_monitor = !a.source;

    let cap_rt = cap.clone();
    let frame_bytes = 4 * ch;
    let _listener = stream
        .add_local_listener_with_user_data(())
        .io_changed(move |_, _, id, area, size| {
            if id == spa::sys::SPA_IO_Position
                && size as usize >= std::mem::size_of::<spa::sys::spa_io_position>()
            {
                pos_io.store(area.cast(), Ordering::Release);
            } else if id == spa::sys::SPA_IO_Position {
                pos_io.store(std::ptr::null_mut(), Ordering::Release);
            }
        })
        .process(move |stream, _| {
            let time = stream.time().ok();
            let Ok(mut c) = cap_rt.try_lock() else {
                // Main thread is writing out: discard, bounded.
                for _ in 0..MAX_DRAIN {
                    if stream.dequeue_buffer().is_none() {
                        break;
                    }
                }
                return;
            };
            let (now, delay, num, den, ticks, queued) = match &time {
                Some(t) => (
                    t.now(),
                    t.delay(),
                    t.rate().num,
                    t.rate().denom,
                    t.ticks(),
                    t.queued(),
                ),
                None => (pwutil::monotonic_ns(), 0, 0, 0, 0, 0),
            };
            // Driver-monitor case: the data is from the previous cycle.
            let mut back = 0i64;
            let pos = pos_rt.load(Ordering::Acquire);
            if driver_monitor && !pos.is_null() {
                // SAFETY: PipeWire keeps the position area alive while it
                // is set on the stream (io_changed clears it first), and we
                // only read plain integers from it on the data thread.
                let clock = unsafe { &(*pos).clock };
                if clock.id == tid_rt.load(Ordering::Relaxed) {
                    back = ticks_to_ns(clock.duration as i64, 1, clock.rate.denom);
                    c.driver_cycles += 1;
                    if c.driver_cycles == 1 {
                        // The first read of a driver's monitor is the
                        // cycle before we were linked: silence that was
                        // never played. Drop it.
                        for _ in 0..MAX_DRAIN {
                            if stream.dequeue_buffer().is_none() {
                                break;
                            }
                        }
                        return;
                    }
                }
            }
            // Drain every queued buffer, not just one: if this thread was
            // ever late (no RT scheduling in the lab), buffers pile up in
            // the stream, and taking one per cycle would keep a permanent
            // backlog whose data is then stamped cycles too late.
            let first_new = c.stamps.len();
            for _ in 0..MAX_DRAIN {
                let Some(mut buf) = stream.dequeue_buffer() else {
                    break;
                };
                let datas = buf.datas_mut();
                if datas.is_empty() {
                    continue;
                }
                let d = &mut datas[0];
                let (off, size) = (d.chunk().offset() as usize, d.chunk().size() as usize);
                let Some(bytes) = d.data() else { continue };
                if c.done {
                    c.dropped += 1;
                    continue;
                }
                let end = (off + size).min(bytes.len());
                let bytes = &bytes[off.min(end)..end];
                if bytes.len() % frame_bytes != 0 {
                    c.odd += 1;
                }
                let frames = bytes.len() / frame_bytes;
                if frames == 0 {
                    continue;
                }
                let stamp = Stamp {
                    frame: c.frames,
                    frames: frames as u32,
                    t_first_ns: 0,
                    now_ns: now,
                    delay,
                    rate_num: num,
                    rate_den: den,
                    ticks,
                    queued,
                    backlog: 0,
                };
                c.stamps.push(stamp);
                for s in bytes[..frames * frame_bytes].chunks_exact(4) {
                    c.samples.push(f32::from_le_bytes([s[0], s[1], s[2], s[3]]));
                }
                c.frames += frames as u64;
                if c.frames >= c.want_frames {
                    c.done = true;
                }
            }
            // The newest buffer is this cycle's; older ones (a backlog)
            // directly precede it, frame for frame.
            let n_new = c.stamps.len() - first_new;
            let mut t = now - ticks_to_ns(delay, num, den) - back;
            let mut tk = ticks as i64;
            let rate = if den > 0 { i64::from(den) } else { 48000 };
            for (k, s) in c.stamps[first_new..].iter_mut().rev().enumerate() {
                if k > 0 {
                    // An older buffer ends where its successor begins.
                    t -= i64::from(s.frames) * 1_000_000_000 / rate;
                    tk -= i64::from(s.frames);
                }
                s.t_first_ns = t;
                s.ticks = tk.max(0) as u64;
                s.backlog = k as u32;
            }
            if n_new > 1 {
                c.late_calls += 1;
            }
        })
        .register()?;

    let channels = u32::from(opt.channels);
    pwutil::connect_f32(
        &stream,
        Direction::Input,
        StreamFlags::AUTOCONNECT,
        opt.rate,
        channels,
    )?;

    // Poll from the main loop: quit when done, on a signal, or when the
    // deadline passes (every wait in the lab is bounded).
    let started = std::time::Instant::now();
    let deadline = Duration::from_secs_f64(
        opt.start_timeout + opt.seconds * 1.5 + a.wall_seconds.unwrap_or(0.0) + 5.0,
    );
    let cap_main = cap.clone();
    let start_timeout = Duration::from_secs_f64(opt.start_timeout);
    let wall = a.wall_seconds.map(Duration::from_secs_f64);
    let outcome = pwutil::run(&mainloop, Duration::from_millis(50), move || {
        let (done, frames) = match cap_main.lock() {
            Ok(c) => (c.done, c.frames),
            Err(_) => (true, 0),
        };
        let el = started.elapsed();
        if done || wall.is_some_and(|w| el >= w) {
            Some("done")
        } else if frames == 0 && el > start_timeout {
            Some("no-data")
        } else if el > deadline {
            Some("deadline")
        } else {
            None
        }
    });
    let _ = stream.disconnect();

    let c = cap
        .lock()
        .map_err(|_| anyhow::anyhow!("capture lock poisoned"))?;
    let meta = format!(
        "tool=bark-lab-record target={} monitor={} rate={} channels={} outcome={} dropped={} odd={} driver_cycles={} late_calls={} t=now-delay{}",
        a.target,
        !a.source,
        opt.rate,
        opt.channels,
        outcome,
        c.dropped,
        c.odd,
        c.driver_cycles,
        c.late_calls,
        if c.driver_cycles > 0 { "-quantum" } else { "" }
    );
    if c.driver_cycles > 0 {
        eprintln!(
            "bark-lab-record: warning: {} drives the graph; its monitor is read one cycle late and may skip or repeat quanta",
            a.target
        );
    }
    write_wav(&opt.out, opt.rate, u16::from(opt.channels), &c.samples)?;
    write_stamps(&stamps_path(&opt.out), &meta, &c.stamps)?;
    eprintln!(
        "bark-lab-record: {} frames ({:.2} s) in {} buffers from {} -> {} ({})",
        c.frames,
        c.frames as f64 / f64::from(opt.rate),
        c.stamps.len(),
        a.target,
        opt.out.display(),
        outcome
    );
    match outcome {
        "no-data" => bail!("no audio from {} within {} s", a.target, opt.start_timeout),
        _ => Ok(()),
    }
}

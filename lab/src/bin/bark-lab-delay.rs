//! bark-lab-delay: an `Audio/Sink` that plays what it receives into another
//! sink N ms later, and *reports* those N ms as latency, so that a stream
//! playing into it sees them in `pw_stream_get_time().delay` (plus whatever
//! the target sink reports). It stands for "a device, or a chain of filters,
//! N ms behind the stream" when testing receivers.
//!
//! ## Mechanism (PipeWire 0.3.65 and 1.x)
//!
//! Two nodes in one client:
//!
//! - `<name>` (default `delay`): a capture `pw_stream` with
//!   `media.class = Audio/Sink`, as `pw-loopback` makes one. The session
//!   manager treats it as a sink (`target.object`, default sink) and, as for
//!   any sink, gives its adapter monitor ports. The stream itself discards
//!   what it receives.
//! - `<name>-out`: a `pw_filter` (raw pipewire-sys calls: pipewire-rs 0.10
//!   has no filter binding) with two DSP input ports, which this tool links
//!   to the sink's monitor ports, and two DSP output ports, which it links to
//!   the target's `FL/FR` inputs. It has no media class, so the session
//!   manager leaves it alone.
//!
//! Why not one filter: WirePlumber 0.4 only accepts a sink whose node
//! advertises an audio `EnumFormat`, and 0.3.65's filter.c has no node-level
//! EnumFormat ("no usable format found for node"). Why not two streams (the
//! loopback way): the playback stream does not depend on the capture stream,
//! so their order inside a cycle is not fixed and a delay shorter than a
//! quantum cannot be exact. Here the links order everything: player →
//! sink (its monitor carries this cycle's input: audioconvert copies it in
//! the same process call) → filter → target, all in one cycle (the filter
//! uses `RT_PROCESS`), so the delay is exactly the ring offset, in frames of
//! the graph clock, for any N ≥ 0.
//!
//! Latency: the daemon propagates ports' `SPA_PARAM_Latency` along links
//! (src/pipewire/impl-port.c, `pw_impl_port_recalc_latency`), and a
//! `pw_stream` adds its port's latency to `pw_time.delay`. The filter
//! connects with `PW_FILTER_FLAG_CUSTOM_LATENCY`, so the target's latency
//! reaches us (`param_changed`, Latency, direction INPUT, on an output port)
//! instead of being combined by filter.c. We publish `downstream + D
//! frames` with `pw_stream_update_params(Latency)` on the sink stream: its
//! adapter copies a follower port's latency to the converter
//! (audioadapter.c, `recalc_latency`), whose input ports then carry it —
//! what 0.3.65's module-loopback does to pass its playback side's latency
//! on. The same figure goes on the filter's input ports (audioconvert
//! ignores latency on monitor ports, so it is not counted twice) and the
//! filter node carries a `ProcessLatency` param (`rate` = D) for
//! inspection. The report starts at D frames, before the target's latency
//! is known: a zero-latency target never sends an update.
//!
//! On PipeWire 1.x the stream's adapter also pushes the converter's latency
//! back into the stream, and setting a Latency param on a stream port
//! replaces all of them, our report included; the adapter reads the
//! stream's list again at its next reconfiguration, so a lost report shows
//! up as 0 later. We publish again from the stream's `param_changed`, as
//! 1.x's module-loopback does (see `Delay::stream_latency`).
//!
//! The filter's outputs report no latency in the OUTPUT ("captured this long
//! ago") direction: it would reach a recorder of the target's monitor,
//! which would stamp what the target plays D too early.
//!
//! The delay is reported in the `rate` fields (frames at the graph rate),
//! i.e. exactly what the ring delays by.
//!
//! ## Usage
//!
//! ```text
//! bark-lab-delay --msec 50 [--name delay] [--target speaker] [--control FILE] &
//! pw-play --target delay music.wav          # or a Bark receiver with
//!                                           # target.object = delay,
//!                                           # or wpctl set-default <id>
//! echo 80 > FILE                            # 80 ms from now on
//! ```
//!
//! Delays chain: `--name d2 --target speaker` plus `--target d2` gives the
//! sum, and the first one reports it. Stderr logs every latency it reports
//! and, at exit (INT/TERM), cycle counters.
//!
//! Checked in the lab (one host, `bark-lab-play` into it, `bark-lab-record`
//! on the speaker, quanta 1024 and 256, PipeWire 0.3.65 and 1.4.2): the
//! player's `delay` column holds the report (2400 frames for 50 ms; 3840 for
//! 50 ms behind a 30 ms one) and the analyzer finds the speaker's audio
//! 0.000 ms (±5 ns) from the player's stamps, i.e. N ms after the stamps
//! minus the report; the same after run-time changes (80, 5, 0 ms). A Bark
//! receiver behind a 20 ms one plays 1 µs (p50) from a receiver without.
//!
//! ## Changing the delay at run time
//!
//! - `--control FILE`: the file is polled every 200 ms; when its content (a
//!   number of ms) changes, the delay follows;
//! - on PipeWire 1.x also `pw-cli set-param <sink node id> ProcessLatency
//!   '{ rate: 3840 }'` (frames; or `ns`): the adapter hands it to the
//!   stream. 0.3.65's stream refuses it. (Not `Props latencyOffsetNsec`:
//!   1.x's converter adds that offset to the reported latency itself, so it
//!   would be counted twice.)
//!
//! A change takes effect in the audio at the next cycle (the output jumps)
//! and in the reported latency when the daemon has propagated it: a stream
//! sees both within a few cycles, not atomically.
//!
//! ## Real-time path
//!
//! The filter's `process` does no allocation, takes no lock and does not
//! log: the ring (one per channel, a power of two ≥ `--max-msec` of frames
//! plus the largest quantum) is allocated up front. It is indexed by the
//! graph position (`clock.position`), so a skipped cycle or a pause leaves
//! the delay exact; the frames nobody wrote are zeroed. The sink stream's
//! `process` only returns its buffers.

use anyhow::{bail, Context, Result};
use bark_lab::pwutil;
use clap::Parser;
use pipewire as pw;
use pw::properties::properties;
use pw::spa;
use pw::spa::sys as spa_sys;
use pw::sys as pw_sys;
use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::PathBuf;
use std::ptr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Channels (FL, FR).
const CHANNELS: usize = 2;
/// Channel names, in port order.
const CHANNEL_NAMES: [&str; CHANNELS] = ["FL", "FR"];
/// Largest cycle handled, frames (PipeWire's largest max-quantum is 8192).
const MAX_CYCLE: usize = 16384;
/// Deepest nesting of `Delay::report` (PipeWire calls back into it).
const MAX_REPORT_DEPTH: u32 = 4;
/// Most buffers the sink stream returns in one `process` call.
const MAX_DRAIN: usize = 64;

#[derive(Parser, Debug)]
#[command(
    about = "Audio/Sink that plays into another sink N ms later and reports the N ms as latency"
)]
struct Args {
    /// node.name of the delay sink (what players target).
    #[arg(long, default_value = "delay")]
    name: String,
    /// Sink to play the delayed audio into (node.name or id).
    #[arg(long, default_value = "speaker")]
    target: String,
    /// Delay, ms (rounded to whole frames at --rate).
    #[arg(long)]
    msec: f64,
    /// Largest delay a run-time change may ask for, ms (sizes the ring);
    /// default: max(--msec, 2000).
    #[arg(long)]
    max_msec: Option<f64>,
    /// Graph rate, Hz: the sink's format, and the rate the delay in frames
    /// is computed at.
    #[arg(long, default_value_t = 48000)]
    rate: u32,
    /// Poll this file every 200 ms; a changed number (ms) sets the delay.
    #[arg(long)]
    control: Option<PathBuf>,
}

/// Data thread state: touched only by the filter's `process`.
struct Rt {
    /// One ring per channel, `mask + 1` frames each, indexed by graph
    /// position.
    ring: [Vec<f32>; CHANNELS],
    mask: u64,
    /// Graph position the next cycle should start at (None: never ran).
    next_pos: Option<u64>,
}

/// Main thread state: touched only from main-loop callbacks.
struct Main {
    /// Latency reported to our output ports by the target (direction INPUT).
    downstream: [spa_sys::spa_latency_info; CHANNELS],
    /// Latency the sink stream's adapter reported upstream of it
    /// (direction OUTPUT), kept on the stream's port beside ours.
    upstream: Option<spa_sys::spa_latency_info>,
    /// Last report logged (to log changes only).
    last_logged: Option<(u32, u32, u64, u64, u32, u32)>,
}

/// Everything the filter's C callbacks see through their `data` pointer.
///
/// Threads: `rt` and the counters are the data thread's, `main` and the
/// raw pointers the main thread's (the port pointers are set before the
/// filter connects and never change); `delay_frames` is shared.
struct Delay {
    filter: Cell<*mut pw_sys::pw_filter>,
    stream: Cell<*mut pw_sys::pw_stream>,
    ins: [Cell<*mut c_void>; CHANNELS],
    outs: [Cell<*mut c_void>; CHANNELS],
    /// Current delay, frames (main writes, data thread reads).
    delay_frames: AtomicU32,
    max_frames: u32,
    rate: u32,
    rt: UnsafeCell<Rt>,
    main: RefCell<Main>,
    /// Nesting of report() (PipeWire calls back into it).
    report_depth: Cell<u32>,
    /// Reports skipped because they nested too deep.
    too_deep: Cell<u64>,
    /// Reports published again after the stream's Latency was replaced.
    republished: Cell<u64>,
    cycles: AtomicU64,
    gaps: AtomicU64,
    no_input: AtomicU64,
    short_out: AtomicU64,
    /// Graph rate seen by the data thread (0: not yet).
    seen_rate: AtomicU32,
    hook: UnsafeCell<spa_sys::spa_hook>,
}

fn zero_latency(dir: u32) -> spa_sys::spa_latency_info {
    spa_sys::spa_latency_info {
        direction: dir,
        min_quantum: 0.0,
        max_quantum: 0.0,
        min_rate: 0,
        max_rate: 0,
        min_ns: 0,
        max_ns: 0,
    }
}

/// `infos` combined as PipeWire combines ports (min of mins, max of maxes),
/// then `frames` added.
fn combined_plus(
    infos: &[spa_sys::spa_latency_info],
    dir: u32,
    frames: u32,
) -> spa_sys::spa_latency_info {
    let mut out = zero_latency(dir);
    // SAFETY: plain structs we own; the spa helpers only read/write them.
    unsafe {
        spa_sys::spa_latency_info_combine_start(&mut out, dir);
        for i in infos {
            spa_sys::spa_latency_info_combine(&mut out, i);
        }
        spa_sys::spa_latency_info_combine_finish(&mut out);
    }
    out.direction = dir;
    out.min_rate = out.min_rate.saturating_add(frames);
    out.max_rate = out.max_rate.saturating_add(frames);
    out
}

/// Build a Latency param pod into `buf` (NULL if it does not fit).
fn latency_pod(buf: &mut [u8], info: &spa_sys::spa_latency_info) -> *const spa_sys::spa_pod {
    // SAFETY: the builder writes into `buf` only, bounded by its length.
    unsafe {
        let mut b: spa_sys::spa_pod_builder = std::mem::zeroed();
        spa_sys::spa_pod_builder_init(&mut b, buf.as_mut_ptr().cast(), buf.len() as u32);
        spa_sys::spa_latency_build(&mut b, spa_sys::SPA_PARAM_Latency, info)
    }
}

/// Build a ProcessLatency param pod (`rate` = frames) into `buf`.
fn process_latency_pod(buf: &mut [u8], frames: u32) -> *const spa_sys::spa_pod {
    let info = spa_sys::spa_process_latency_info {
        quantum: 0.0,
        rate: frames,
        ns: 0,
    };
    // SAFETY: as in latency_pod.
    unsafe {
        let mut b: spa_sys::spa_pod_builder = std::mem::zeroed();
        spa_sys::spa_pod_builder_init(&mut b, buf.as_mut_ptr().cast(), buf.len() as u32);
        spa_sys::spa_process_latency_build(&mut b, spa_sys::SPA_PARAM_ProcessLatency, &info)
    }
}

impl Delay {
    fn ms_to_frames(&self, ms: f64) -> u32 {
        (ms * f64::from(self.rate) / 1000.0).round().max(0.0) as u32
    }

    fn frames_to_ms(&self, frames: u32) -> f64 {
        f64::from(frames) * 1000.0 / f64::from(self.rate)
    }

    /// Set the delay (main thread) and publish the new latency.
    fn set_delay_frames(&self, frames: u32, why: &str) {
        let f = frames.min(self.max_frames);
        if f != frames {
            eprintln!(
                "bark-lab-delay: {frames} frames asked ({why}) exceed --max-msec: using {f} frames"
            );
        }
        let old = self.delay_frames.swap(f, Ordering::Relaxed);
        if old != f {
            eprintln!(
                "bark-lab-delay: delay {old} -> {f} frames ({:.3} ms) ({why})",
                self.frames_to_ms(f)
            );
        }
        self.report();
    }

    /// Publish the latency (main thread): `downstream + D` on the sink
    /// stream and the filter's inputs, `D` as the filter's ProcessLatency;
    /// log it when it changed.
    ///
    /// The filter's outputs keep the default (zero) latency in the OUTPUT
    /// direction: "how long ago was this captured" would reach a recorder
    /// of the target's monitor, which would then stamp what the target
    /// plays D too early.
    fn report(&self) {
        // PipeWire calls back into us from inside the updates (see
        // stream_latency), and we must publish again from there: nesting is
        // expected, but bounded.
        let depth = self.report_depth.get();
        if depth >= MAX_REPORT_DEPTH {
            self.too_deep.set(self.too_deep.get() + 1);
            return;
        }
        self.report_depth.set(depth + 1);
        self.publish();
        self.report_depth.set(depth);
    }

    fn publish(&self) {
        let filter = self.filter.get();
        let stream = self.stream.get();
        let d = self.delay_frames.load(Ordering::Relaxed);
        // Copy what we need: PipeWire may call back into us (param_changed)
        // from inside the update calls below.
        let Ok(m) = self.main.try_borrow() else {
            return;
        };
        let (downstream, upstream) = (m.downstream, m.upstream);
        drop(m);
        let inl = combined_plus(&downstream, spa_sys::SPA_DIRECTION_INPUT, d);
        let mut buf = [0u8; 1024];
        let mut buf2 = [0u8; 1024];
        if !stream.is_null() {
            // Both directions: a stream's port keeps only the Latency params
            // of the last update, and the upstream one belongs to the
            // adapter.
            let pod = latency_pod(&mut buf, &inl);
            let up = upstream.map_or(ptr::null(), |u| latency_pod(&mut buf2, &u));
            if !pod.is_null() {
                let mut params = [pod, up];
                let n = if up.is_null() { 1 } else { 2 };
                // SAFETY: our live stream; the pods are copied.
                unsafe { pw_sys::pw_stream_update_params(stream, params.as_mut_ptr(), n) };
            }
        }
        if !filter.is_null() {
            for p in &self.ins {
                let pod = latency_pod(&mut buf, &inl);
                if !pod.is_null() && !p.get().is_null() {
                    let mut params = [pod];
                    // SAFETY: port data of our live filter; the pod is
                    // copied.
                    unsafe {
                        pw_sys::pw_filter_update_params(filter, p.get(), params.as_mut_ptr(), 1)
                    };
                }
            }
            let pod = process_latency_pod(&mut buf, d);
            if !pod.is_null() {
                let mut params = [pod];
                // SAFETY: NULL port data = node params; the pod is copied.
                unsafe {
                    pw_sys::pw_filter_update_params(filter, ptr::null_mut(), params.as_mut_ptr(), 1)
                };
            }
        }
        let key = (
            inl.min_rate,
            inl.max_rate,
            inl.min_ns,
            inl.max_ns,
            inl.min_quantum.to_bits(),
            inl.max_quantum.to_bits(),
        );
        // Read afresh: a nested report may have logged this already.
        match self.main.try_borrow_mut() {
            Ok(mut m) if m.last_logged != Some(key) => m.last_logged = Some(key),
            _ => return,
        }
        let ds = combined_plus(&downstream, spa_sys::SPA_DIRECTION_INPUT, 0);
        eprintln!(
            "bark-lab-delay: reporting latency: quantum {}-{}, rate {}-{} frames, ns {}-{} \
             (downstream: quantum {}-{}, rate {}-{}, ns {}-{}; plus {d} frames = {:.3} ms at {} Hz)",
            inl.min_quantum,
            inl.max_quantum,
            inl.min_rate,
            inl.max_rate,
            inl.min_ns,
            inl.max_ns,
            ds.min_quantum,
            ds.max_quantum,
            ds.min_rate,
            ds.max_rate,
            ds.min_ns,
            ds.max_ns,
            self.frames_to_ms(d),
            self.rate
        );
    }

    /// The sink stream got a Latency param from its adapter (main thread).
    /// Setting one on a stream port replaces all of them (stream.c
    /// `impl_port_set_param`), our report included. PipeWire 1.x's adapter
    /// does that each time its converter's latency changes — including in
    /// answer to our own update, from inside it — and reads the stream's
    /// list again on its next reconfiguration (PortConfig): a report not
    /// restored here is lost then. So note the upstream figure and publish
    /// both again, right away, as 1.x's module-loopback does; the adapter
    /// does not echo an update made from inside its own recalculation.
    fn stream_latency(&self, info: spa_sys::spa_latency_info) {
        if info.direction == spa_sys::SPA_DIRECTION_OUTPUT {
            if let Ok(mut m) = self.main.try_borrow_mut() {
                m.upstream = Some(info);
            }
        }
        self.republished.set(self.republished.get() + 1);
        self.report();
    }
}

/// Dequeue the input buffer on `port` and view its samples (data thread).
///
/// # Safety
/// `port` is a live input port of the filter; called from `process`. The
/// slice is valid until the returned buffer is queued back: the caller
/// queues it after its last use of the slice.
unsafe fn input_samples<'a>(port: *mut c_void) -> (Option<&'a [f32]>, *mut pw_sys::pw_buffer) {
    // SAFETY: a live port, from `process` (the contract).
    let b = unsafe { pw_sys::pw_filter_dequeue_buffer(port) };
    if b.is_null() {
        return (None, b);
    }
    // SAFETY: a dequeued buffer is ours and valid until queued back; each
    // pointer is checked before it is followed; with MAP_BUFFERS `data`
    // maps `maxsize` bytes, and the chunk's region is clamped into them,
    // checked for f32 alignment and cut to whole samples.
    let samples = unsafe {
        let buf = (*b).buffer;
        if buf.is_null() || (*buf).n_datas == 0 || (*buf).datas.is_null() {
            return (None, b);
        }
        let d = &*(*buf).datas;
        if d.data.is_null() || d.chunk.is_null() {
            return (None, b);
        }
        let c = *d.chunk;
        let off = (c.offset as usize).min(d.maxsize as usize);
        let size = (c.size as usize).min(d.maxsize as usize - off);
        let p = d.data.cast::<u8>().add(off);
        if !(p as usize).is_multiple_of(std::mem::align_of::<f32>()) {
            return (None, b);
        }
        std::slice::from_raw_parts(p.cast::<f32>(), size / 4)
    };
    (Some(samples), b)
}

/// The filter's real-time callback: input into the ring at the cycle's
/// graph position, output from D frames earlier.
unsafe extern "C" fn on_process(data: *mut c_void, position: *mut spa_sys::spa_io_position) {
    // SAFETY: `data` is the Delay registered with the listener, alive
    // until the filter is destroyed at the end of main.
    let dl = unsafe { &*(data as *const Delay) };
    if position.is_null() {
        return;
    }
    // SAFETY: `rt` is touched only here, in the filter's process callback,
    // which PipeWire never runs twice at once.
    let rt = unsafe { &mut *dl.rt.get() };
    // SAFETY: checked non-NULL; PipeWire keeps the position area valid
    // for the cycle.
    let clock = unsafe { &(*position).clock };
    let n = (clock.duration as usize).min(MAX_CYCLE);
    let pos = clock.position;
    if dl.seen_rate.load(Ordering::Relaxed) != clock.rate.denom {
        dl.seen_rate.store(clock.rate.denom, Ordering::Relaxed);
    }
    let cap = rt.mask + 1;
    // Frames between the last cycle and this one were never written: zero
    // them (the whole ring after a long pause or a driver change).
    match rt.next_pos {
        Some(e) if e == pos => {}
        Some(e) if pos > e && pos - e < cap => {
            dl.gaps.fetch_add(1, Ordering::Relaxed);
            for r in rt.ring.iter_mut() {
                for i in e..pos {
                    r[(i & rt.mask) as usize] = 0.0;
                }
            }
        }
        Some(_) => {
            dl.gaps.fetch_add(1, Ordering::Relaxed);
            for r in rt.ring.iter_mut() {
                r.fill(0.0);
            }
        }
        None => {}
    }
    rt.next_pos = Some(pos.wrapping_add(n as u64));
    let delay = u64::from(dl.delay_frames.load(Ordering::Relaxed));
    let start = pos.wrapping_sub(delay);
    for ch in 0..CHANNELS {
        let ring = &mut rt.ring[ch];
        // SAFETY: our input port (set before the filter connected), from
        // `process`; `inp` is last used before `ib` is queued back below.
        let (inp, ib) = unsafe { input_samples(dl.ins[ch].get()) };
        let inp = inp.unwrap_or(&[]);
        let have = inp.len().min(n);
        if have < n {
            dl.no_input.fetch_add(1, Ordering::Relaxed);
        }
        for i in 0..n {
            let v = if i < have { inp[i] } else { 0.0 };
            ring[(pos.wrapping_add(i as u64) & rt.mask) as usize] = v;
        }
        if !ib.is_null() {
            // SAFETY: the buffer dequeued from this port above, queued back
            // once, after the last use of its samples.
            unsafe { pw_sys::pw_filter_queue_buffer(dl.ins[ch].get(), ib) };
        }
        // SAFETY: our output port, from `process`.
        let ob = unsafe { pw_sys::pw_filter_dequeue_buffer(dl.outs[ch].get()) };
        if ob.is_null() {
            continue;
        }
        // SAFETY: a dequeued buffer is ours until queued back below; each
        // pointer is checked before it is followed; with MAP_BUFFERS `data`
        // maps `maxsize` bytes, and the slice is at most that many whole,
        // aligned samples, dropped before the buffer is queued.
        unsafe {
            let buf = (*ob).buffer;
            if !buf.is_null() && (*buf).n_datas > 0 && !(*buf).datas.is_null() {
                let d = &mut *(*buf).datas;
                if !d.data.is_null() && !d.chunk.is_null() && d.data.cast::<f32>().is_aligned() {
                    let m = n.min(d.maxsize as usize / 4);
                    if m < n {
                        dl.short_out.fetch_add(1, Ordering::Relaxed);
                    }
                    let out = std::slice::from_raw_parts_mut(d.data.cast::<f32>(), m);
                    for (i, o) in out.iter_mut().enumerate() {
                        *o = ring[(start.wrapping_add(i as u64) & rt.mask) as usize];
                    }
                    let c = &mut *d.chunk;
                    c.offset = 0;
                    c.size = (m * 4) as u32;
                    c.stride = 4;
                    c.flags = 0;
                }
            }
        }
        // SAFETY: the buffer dequeued from this port above, queued once.
        unsafe { pw_sys::pw_filter_queue_buffer(dl.outs[ch].get(), ob) };
    }
    dl.cycles.fetch_add(1, Ordering::Relaxed);
}

unsafe extern "C" fn on_filter_state(
    _data: *mut c_void,
    old: pw_sys::pw_filter_state,
    state: pw_sys::pw_filter_state,
    error: *const c_char,
) {
    let name = |s| {
        // SAFETY: pw_filter_state_as_string returns a static string for
        // any state.
        unsafe { CStr::from_ptr(pw_sys::pw_filter_state_as_string(s)) }.to_string_lossy()
    };
    let err = if error.is_null() {
        String::new()
    } else {
        // SAFETY: a non-NULL error is a NUL-terminated string that
        // PipeWire keeps alive for the call.
        format!(": {}", unsafe { CStr::from_ptr(error) }.to_string_lossy())
    };
    eprintln!(
        "bark-lab-delay: filter {} -> {}{err}",
        name(old),
        name(state)
    );
}

unsafe extern "C" fn on_filter_param(
    data: *mut c_void,
    port: *mut c_void,
    id: u32,
    param: *const spa_sys::spa_pod,
) {
    // SAFETY: main-loop callback; `data` is our Delay, alive until the
    // filter is destroyed at the end of main.
    let dl = unsafe { &*(data as *const Delay) };
    if param.is_null() || port.is_null() || id != spa_sys::SPA_PARAM_Latency {
        return;
    }
    let mut info = zero_latency(spa_sys::SPA_DIRECTION_INPUT);
    // SAFETY: `param` is a non-NULL pod PipeWire keeps valid for the call;
    // `info` is ours.
    if unsafe { spa_sys::spa_latency_parse(param, &mut info) } < 0
        || info.direction != spa_sys::SPA_DIRECTION_INPUT
    {
        return;
    }
    let Some(ch) = (0..CHANNELS).find(|&c| dl.outs[c].get() == port) else {
        return;
    };
    if let Ok(mut m) = dl.main.try_borrow_mut() {
        m.downstream[ch] = info;
    }
    eprintln!(
        "bark-lab-delay: downstream latency ({}): quantum {}-{}, rate {}-{}, ns {}-{}",
        CHANNEL_NAMES[ch],
        info.min_quantum,
        info.max_quantum,
        info.min_rate,
        info.max_rate,
        info.min_ns,
        info.max_ns
    );
    dl.report();
}

/// What one of the graph's ports is, from the registry.
struct PortInfo {
    node: u32,
    output: bool,
    monitor: bool,
    channel: String,
}

/// Nodes and ports seen in the registry, and the links we made.
#[derive(Default)]
struct Graph {
    /// node id -> node.name
    nodes: HashMap<u32, String>,
    ports: HashMap<u32, PortInfo>,
    /// sink monitor -> filter inputs: links and the port ids they join.
    in_links: Vec<pw::link::Link>,
    in_ports: Vec<u32>,
    /// filter outputs -> target: target node id, links, port ids.
    out_target: Option<u32>,
    out_links: Vec<pw::link::Link>,
    out_ports: Vec<u32>,
}

impl Graph {
    fn node_by_name(&self, target: &str) -> Option<u32> {
        self.nodes
            .iter()
            .find(|(id, name)| name.as_str() == target || id.to_string() == target)
            .map(|(id, _)| *id)
    }

    /// Port ids, FL then FR, of `node` in the given direction (outputs:
    /// monitor ports or not).
    fn ports_of(&self, node: u32, output: bool, monitor: bool) -> Option<Vec<u32>> {
        CHANNEL_NAMES
            .iter()
            .map(|ch| {
                self.ports
                    .iter()
                    .find(|(_, p)| {
                        p.node == node
                            && p.output == output
                            && (!output || p.monitor == monitor)
                            && p.channel == *ch
                    })
                    .map(|(id, _)| *id)
            })
            .collect()
    }
}

/// Link `from` (output ports of node `on`) to `to` (input ports of `inn`).
fn make_links(
    core: &pw::core::Core,
    on: u32,
    from: &[u32],
    inn: u32,
    to: &[u32],
) -> Vec<pw::link::Link> {
    let mut v = Vec::new();
    for (o, i) in from.iter().zip(to) {
        let props = properties! {
            "link.output.node" => on.to_string(),
            "link.output.port" => o.to_string(),
            "link.input.node" => inn.to_string(),
            "link.input.port" => i.to_string(),
            "object.linger" => "false",
        };
        match core.create_object::<pw::link::Link>("link-factory", &props) {
            Ok(l) => v.push(l),
            Err(e) => eprintln!("bark-lab-delay: linking port {o} -> {i}: {e}"),
        }
    }
    v
}

/// Make whichever of our two link sets is missing, once its ports exist.
fn try_link(g: &mut Graph, core: &pw::core::Core, sink: u32, filter: u32, target: &str) {
    if sink == spa_sys::SPA_ID_INVALID || filter == spa_sys::SPA_ID_INVALID {
        return;
    }
    if g.in_links.is_empty() {
        if let (Some(mon), Some(fin)) = (
            g.ports_of(sink, true, true),
            g.ports_of(filter, false, false),
        ) {
            g.in_links = make_links(core, sink, &mon, filter, &fin);
            g.in_ports = mon.iter().chain(&fin).copied().collect();
            eprintln!("bark-lab-delay: linked sink {sink} monitor -> filter {filter}");
        }
    }
    if g.out_target.is_none() {
        let Some(tid) = g.node_by_name(target) else {
            return;
        };
        if tid == sink || tid == filter {
            return;
        }
        if let (Some(fout), Some(tin)) = (
            g.ports_of(filter, true, false),
            g.ports_of(tid, false, false),
        ) {
            g.out_links = make_links(core, filter, &fout, tid, &tin);
            g.out_ports = fout.iter().chain(&tin).copied().collect();
            g.out_target = Some(tid);
            eprintln!("bark-lab-delay: linked filter {filter} -> {target} (node {tid})");
        }
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    if !(0.0..=60_000.0).contains(&a.msec) {
        bail!("--msec must be in [0, 60000]");
    }
    let max_msec = a.max_msec.unwrap_or(a.msec.max(2000.0));
    if !(a.msec..=60_000.0).contains(&max_msec) {
        bail!("--max-msec must be in [--msec, 60000]");
    }
    if a.rate == 0 {
        bail!("--rate must be > 0");
    }
    let max_frames = (max_msec * f64::from(a.rate) / 1000.0).round() as u32;
    let cap = (max_frames as usize + MAX_CYCLE).next_power_of_two();
    let dl = Box::new(Delay {
        filter: Cell::new(ptr::null_mut()),
        stream: Cell::new(ptr::null_mut()),
        ins: Default::default(),
        outs: Default::default(),
        delay_frames: AtomicU32::new(0),
        max_frames,
        rate: a.rate,
        rt: UnsafeCell::new(Rt {
            ring: [vec![0.0; cap], vec![0.0; cap]],
            mask: cap as u64 - 1,
            next_pos: None,
        }),
        main: RefCell::new(Main {
            downstream: [zero_latency(spa_sys::SPA_DIRECTION_INPUT); CHANNELS],
            upstream: None,
            last_logged: None,
        }),
        report_depth: Cell::new(0),
        too_deep: Cell::new(0),
        republished: Cell::new(0),
        cycles: AtomicU64::new(0),
        gaps: AtomicU64::new(0),
        no_input: AtomicU64::new(0),
        short_out: AtomicU64::new(0),
        seen_rate: AtomicU32::new(0),
        // SAFETY: spa_hook is a plain C struct; all-zero is its init state.
        hook: UnsafeCell::new(unsafe { std::mem::zeroed() }),
    });
    // Touch every page of the ring now, not in the data thread's first
    // cycles (a zeroed allocation is mapped lazily).
    // SAFETY: nothing else uses the ring yet.
    for r in unsafe { &mut (*dl.rt.get()).ring } {
        for i in (0..r.len()).step_by(1024) {
            // SAFETY: in bounds; volatile so the store is not elided.
            unsafe { ptr::write_volatile(r.as_mut_ptr().add(i), 0.0) };
        }
    }
    let frames = dl.ms_to_frames(a.msec);
    dl.delay_frames.store(frames, Ordering::Relaxed);
    let dlp: *const Delay = &*dl;

    let (mainloop, _context, core) = pwutil::connect()?;

    // The filter: sink monitor in, target out.
    let fname = format!("{}-out", a.name);
    let fprops = properties! {
        *pw::keys::MEDIA_TYPE => "Audio",
        *pw::keys::NODE_NAME => fname.as_str(),
        *pw::keys::NODE_DESCRIPTION => format!("Bark lab delay {} -> {}", a.name, a.target),
    };
    let cname = CString::new(fname.as_str()).context("--name")?;
    // SAFETY: core is live; pw_filter_new takes ownership of the props.
    let filter =
        unsafe { pw_sys::pw_filter_new(core.as_raw_ptr(), cname.as_ptr(), fprops.into_raw()) };
    if filter.is_null() {
        bail!("pw_filter_new failed");
    }
    dl.filter.set(filter);
    let events = Box::new(pw_sys::pw_filter_events {
        version: pw_sys::PW_VERSION_FILTER_EVENTS,
        destroy: None,
        state_changed: Some(on_filter_state),
        io_changed: None,
        param_changed: Some(on_filter_param),
        add_buffer: None,
        remove_buffer: None,
        process: Some(on_process),
        drained: None,
        command: None,
    });
    // SAFETY: filter, hook, events and dl outlive the listener (the filter
    // is destroyed at the end of main, before they are dropped).
    unsafe { pw_sys::pw_filter_add_listener(filter, dl.hook.get(), &*events, dlp as *mut c_void) };
    let mut buf = [0u8; 1024];
    for (dir, ports, prefix) in [
        (spa_sys::SPA_DIRECTION_INPUT, &dl.ins, "input"),
        (spa_sys::SPA_DIRECTION_OUTPUT, &dl.outs, "output"),
    ] {
        // Inputs report the delay from the start (a zero-latency target
        // never sends an update); outputs keep zero (see Delay::report).
        let lat = combined_plus(&[], dir, frames);
        let n_params = u32::from(dir == spa_sys::SPA_DIRECTION_INPUT);
        for (ch, cell) in ports.iter().enumerate() {
            let port_props = properties! {
                "format.dsp" => "32 bit float mono audio",
                "port.name" => format!("{prefix}_{}", CHANNEL_NAMES[ch]),
                "audio.channel" => CHANNEL_NAMES[ch],
            };
            let pod = latency_pod(&mut buf, &lat);
            let mut params = [pod];
            // SAFETY: filter is live; the props pass to PipeWire; the pod
            // is copied.
            let p = unsafe {
                pw_sys::pw_filter_add_port(
                    filter,
                    dir,
                    pw_sys::pw_filter_port_flags_PW_FILTER_PORT_FLAG_MAP_BUFFERS,
                    0,
                    port_props.into_raw(),
                    params.as_mut_ptr(),
                    if pod.is_null() { 0 } else { n_params },
                )
            };
            if p.is_null() {
                bail!("pw_filter_add_port failed");
            }
            cell.set(p);
        }
    }
    let pod = process_latency_pod(&mut buf, frames);
    let mut params = [pod];
    // SAFETY: filter is live; the params are copied.
    let res = unsafe {
        pw_sys::pw_filter_connect(
            filter,
            pw_sys::pw_filter_flags_PW_FILTER_FLAG_RT_PROCESS
                | pw_sys::pw_filter_flags_PW_FILTER_FLAG_CUSTOM_LATENCY,
            params.as_mut_ptr(),
            u32::from(!pod.is_null()),
        )
    };
    if res < 0 {
        bail!(
            "pw_filter_connect: {}",
            std::io::Error::from_raw_os_error(-res)
        );
    }

    // The sink: a capture stream the session manager sees as an Audio/Sink.
    let desc = format!("Bark lab delay {} ms -> {}", a.msec, a.target);
    let sprops = properties! {
        *pw::keys::MEDIA_TYPE => "Audio",
        *pw::keys::MEDIA_CLASS => "Audio/Sink",
        *pw::keys::NODE_NAME => a.name.as_str(),
        *pw::keys::NODE_DESCRIPTION => desc.as_str(),
    };
    let stream = pw::stream::StreamBox::new(&core, &a.name, sprops)?;
    dl.stream.set(stream.as_raw_ptr());
    let _sl = stream
        .add_local_listener_with_user_data(())
        .process(|s, _| {
            // Its audio reaches the filter through the monitor ports.
            for _ in 0..MAX_DRAIN {
                if s.dequeue_buffer().is_none() {
                    break;
                }
            }
        })
        .state_changed(|_, _, old, new| {
            eprintln!("bark-lab-delay: sink {old:?} -> {new:?}");
        })
        .param_changed(move |_, _, id, pod| {
            let Some(pod) = pod else { return };
            // SAFETY: dl outlives the stream listener; the pod is valid for
            // the duration of the call.
            let dl = unsafe { &*dlp };
            if id == spa_sys::SPA_PARAM_Latency {
                let mut info = zero_latency(spa_sys::SPA_DIRECTION_OUTPUT);
                // SAFETY: the pod is valid for the call; `info` is ours.
                if unsafe { spa_sys::spa_latency_parse(pod.as_raw_ptr(), &mut info) } >= 0 {
                    dl.stream_latency(info);
                }
                return;
            }
            // PipeWire 1.x: `pw-cli set-param <id> ProcessLatency {...}`.
            if id != spa_sys::SPA_PARAM_ProcessLatency {
                return;
            }
            let mut info = spa_sys::spa_process_latency_info {
                quantum: 0.0,
                rate: 0,
                ns: 0,
            };
            // SAFETY: the pod is valid for the call; `info` is ours.
            if unsafe { spa_sys::spa_process_latency_parse(pod.as_raw_ptr(), &mut info) } >= 0 {
                if info.quantum != 0.0 {
                    eprintln!("bark-lab-delay: ProcessLatency: quantum part ignored");
                }
                let f = info
                    .rate
                    .saturating_add(dl.ms_to_frames(info.ns as f64 / 1e6));
                dl.set_delay_frames(f, "ProcessLatency param");
            }
        })
        .register()?;
    pwutil::connect_f32(
        &stream,
        spa::utils::Direction::Input,
        pw::stream::StreamFlags::empty(),
        a.rate,
        CHANNELS as u32,
    )?;
    eprintln!(
        "bark-lab-delay: sink {} -> {}: delay {frames} frames ({:.3} ms at {} Hz), ring {cap} frames/channel",
        a.name,
        a.target,
        dl.frames_to_ms(frames),
        a.rate,
    );
    dl.report();

    // Link monitor -> filter -> target as soon as the ports show up.
    let graph = Rc::new(RefCell::new(Graph::default()));
    let registry = core.get_registry_rc()?;
    let sptr = stream.as_raw_ptr();
    let (g1, c1, t1) = (graph.clone(), core.clone(), a.target.clone());
    let (g2, t2) = (graph.clone(), a.target.clone());
    let reg = registry
        .add_listener_local()
        .global(move |o| {
            let Some(p) = o.props else { return };
            let mut g = g1.borrow_mut();
            match o.type_ {
                pw::types::ObjectType::Node => {
                    if let Some(n) = p.get("node.name") {
                        g.nodes.insert(o.id, n.to_string());
                    }
                }
                pw::types::ObjectType::Port => {
                    let Some(node) = p.get("node.id").and_then(|s| s.parse::<u32>().ok()) else {
                        return;
                    };
                    g.ports.insert(
                        o.id,
                        PortInfo {
                            node,
                            output: p.get("port.direction") == Some("out"),
                            monitor: p.get("port.monitor") == Some("true"),
                            channel: p.get("audio.channel").unwrap_or("").to_string(),
                        },
                    );
                }
                _ => return,
            }
            // SAFETY: stream and filter live until after this listener.
            let (sid, fid) = unsafe {
                (
                    pw_sys::pw_stream_get_node_id(sptr),
                    pw_sys::pw_filter_get_node_id(filter),
                )
            };
            try_link(&mut g, &c1, sid, fid, &t1);
        })
        .global_remove(move |id| {
            let mut g = g2.borrow_mut();
            g.nodes.remove(&id);
            g.ports.remove(&id);
            // A port of ours or the target's went away (node removed, or
            // ports rebuilt by a reconfiguration): link again once the new
            // ones show up.
            if g.out_target == Some(id) || g.out_ports.contains(&id) {
                eprintln!("bark-lab-delay: {t2} or its ports went away; will link again");
                g.out_target = None;
                g.out_links.clear();
                g.out_ports.clear();
            }
            if g.in_ports.contains(&id) {
                eprintln!("bark-lab-delay: sink monitor ports went away; will link again");
                g.in_links.clear();
                g.in_ports.clear();
            }
        })
        .register();

    // Housekeeping: control file, link retries, warnings from the data
    // thread.
    let last_ctl: RefCell<Option<String>> = RefCell::new(None);
    let warned_rate = Cell::new(false);
    let (g3, c3, t3) = (graph.clone(), core.clone(), a.target.clone());
    let control = a.control.clone();
    let rate = a.rate;
    let housekeeping = move || {
        // SAFETY: dl outlives the main loop run.
        let dl = unsafe { &*dlp };
        let seen = dl.seen_rate.load(Ordering::Relaxed);
        if seen != 0 && seen != rate && !warned_rate.get() {
            warned_rate.set(true);
            eprintln!(
                "bark-lab-delay: warning: graph runs at {seen} Hz, not {rate}: delay and report are in frames at {seen} Hz"
            );
        }
        // SAFETY: stream and filter are live while the loop runs.
        let (sid, fid) = unsafe {
            (
                pw_sys::pw_stream_get_node_id(sptr),
                pw_sys::pw_filter_get_node_id(filter),
            )
        };
        try_link(&mut g3.borrow_mut(), &c3, sid, fid, &t3);
        let Some(path) = &control else { return };
        let Ok(s) = std::fs::read_to_string(path) else {
            return;
        };
        let s = s.trim().to_string();
        let mut last = last_ctl.borrow_mut();
        if last.as_deref() == Some(s.as_str()) {
            return;
        }
        match s.parse::<f64>() {
            Ok(ms) if (0.0..=60_000.0).contains(&ms) => {
                dl.set_delay_frames(dl.ms_to_frames(ms), &format!("{} = {s} ms", path.display()));
            }
            _ if s.is_empty() => {}
            _ => eprintln!(
                "bark-lab-delay: {}: not a delay in ms: {s:?}",
                path.display()
            ),
        }
        *last = Some(s);
    };
    pwutil::run(&mainloop, Duration::from_millis(200), move || {
        housekeeping();
        None
    });

    drop(reg);
    {
        let mut g = graph.borrow_mut();
        g.in_links.clear();
        g.out_links.clear();
    }
    let _ = stream.disconnect();
    dl.stream.set(ptr::null_mut());
    // SAFETY: filter is live; destroy removes our listener, after which no
    // callback touches dl or events.
    unsafe {
        pw_sys::pw_filter_disconnect(filter);
        pw_sys::pw_filter_destroy(filter);
    }
    dl.filter.set(ptr::null_mut());
    eprintln!(
        "bark-lab-delay: {} cycles, {} discontinuities, {} channel-cycles without full input, {} short output buffers, {} reports re-published ({} nested too deep)",
        dl.cycles.load(Ordering::Relaxed),
        dl.gaps.load(Ordering::Relaxed),
        dl.no_input.load(Ordering::Relaxed),
        dl.short_out.load(Ordering::Relaxed),
        dl.republished.get(),
        dl.too_deep.get()
    );
    drop(_sl);
    drop(stream);
    drop(events);
    Ok(())
}

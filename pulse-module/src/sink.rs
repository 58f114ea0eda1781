//! `bark-pulse sink`: the sender.
//!
//! Loads `module-null-sink` named `bark_sink` ("Bark Network") through the
//! introspection API, records its monitor, stamps every chunk with the time
//! it was played into the sink, and sends it with [`bark_core::Sender`].
//!
//! Life cycle, per connection to the server:
//! 1. look the sink name up: a `bark_sink` left by a crashed bark-pulse
//!    (its `bark.pulse.pid` is dead) is unloaded; one that belongs to a
//!    running bark-pulse or to someone else is an error;
//! 2. load the null sink (float32, the configured rate and channels,
//!    `norewinds=1` on PulseAudio ≥ 13, see [`crate::timing`]);
//! 3. record `<name>.monitor` and send.
//!
//! The null sink is unloaded on exit (SIGINT, SIGTERM). When the server
//! goes away the client reconnects with backoff and loads it again. The
//! record stream does not keep the sink awake: when nothing plays it
//! suspends (module-suspend-on-idle) and nothing is sent.

use crate::clock::{monotonic_ns, realtime_ns, ClockMap, ClockPair};
use crate::config::SinkConfig;
use crate::frameclock::FrameClock;
use crate::keyed::Warnings;
use crate::net::{self, UdpSocket};
use crate::pa::{self, Backoff, Conn, Loop, Slot};
use crate::timing::{CycleQuantum, Info};
use anyhow::{anyhow, bail, Context as _, Result};
use bark_core::endpoint::SenderEndpoint;
use libpulse_binding as pulse;
use pulse::callbacks::ListResult;
use pulse::context::State as CtxState;
use pulse::def::BufferAttr;
use pulse::proplist::Proplist;
use pulse::sample::{Format, Spec};
use pulse::stream::{FlagSet as StreamFlags, PeekResult, State as StreamState, Stream};
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Property on the null sink naming the bark-pulse process that loaded it.
pub const PID_PROP: &str = "bark.pulse.pid";
/// Property on the null sink naming the host of that process.
pub const HOST_PROP: &str = "bark.pulse.host";
/// Most datagrams handled per loop turn, so a flood cannot starve audio.
const MAX_RX_PER_TURN: usize = 64;
/// Timing requests while streaming, ns apart.
const TIMING_PERIOD_NS: u64 = 10_000_000;
/// Main loop tick, µs: the timing-request pace.
const TICK_US: u64 = 5_000;
/// Fragment size of the monitor recording, µs. With `ADJUST_LATENCY` it is
/// also the latency the null sink is asked for, hence how often it renders:
/// 10 ms blocks, each delivered as soon as rendered, ahead of its play time.
const FRAGMENT_US: u64 = 10_000;
/// Largest chunk handed to the core at once, frames (a scratch bound).
const MAX_CHUNK_FRAMES: usize = 8192;
/// A stamp further than this from now (ns) means the estimate is stale.
/// Sanity bounds on a stamp, ns from now: a monitor hands out audio that
/// the null sink rendered at most one block (≤ 50 ms) ahead, so a stamp
/// further in the future is a wrong estimate (it would make every receiver
/// play late); one further in the past than a long stall is wrong too.
const MAX_STAMP_AHEAD_NS: f64 = 100e6;
const MAX_STAMP_BEHIND_NS: f64 = 1e9;

/// Everything network-side; lives across reconnections.
struct Net {
    ep: SenderEndpoint,
    sock: UdpSocket,
    dest: SocketAddr,
    clock: ClockMap,
    sent: u64,
    send_errors: u64,
    warnings: Warnings,
}

impl Net {
    /// Hands queued datagrams to the endpoint and sends what it returns:
    /// time replies, sync messages while the sink is idle, status.
    fn serve(&mut self) {
        let d = self.sock.drain(MAX_RX_PER_TURN, |data, from, at| {
            let t2 = self.clock.map(at.mono_ns);
            let _ = self.ep.handle_datagram(t2, at.real_ns, data, from.into());
        });
        if let Some(e) = d.error {
            log::debug!("receive error: {e}");
        }
        let poll = |b: &mut [u8]| {
            let now = self.clock.map(monotonic_ns());
            self.ep.poll_transmit(now, realtime_ns(), b)
        };
        let sent = |r: std::io::Result<()>, _| match r {
            Ok(()) => self.sent += 1,
            Err(_) => self.send_errors += 1,
        };
        self.sock.transmit(self.dest, usize::MAX, poll, sent);
        self.warnings.warn(self.ep.wire().auth());
    }

    /// Sends one chunk whose first frame was played into the sink at
    /// `t_ns` (CLOCK_MONOTONIC). No allocation.
    fn push(&mut self, t_ns: u64, samples: &[f32]) {
        let Net {
            ep,
            sock,
            dest,
            clock,
            sent,
            send_errors,
            ..
        } = self;
        let wall = realtime_ns();
        // `t_ns` is the estimated play time of the chunk, not now: the
        // sync message gets the time it actually leaves.
        let send_ns = clock.map(monotonic_ns());
        ep.push(
            clock.map(t_ns),
            send_ns,
            wall,
            samples,
            &mut |pkt| match sock.send_to(pkt, *dest) {
                Ok(()) => *sent += 1,
                Err(_) => *send_errors += 1,
            },
        );
    }
}

/// What the sink lookup found.
#[derive(Debug, Clone)]
struct Found {
    owner_module: Option<u32>,
    pid: Option<u32>,
    host: Option<String>,
}

/// Where a connection is in its set-up.
enum Step {
    /// Waiting for the context to be ready.
    Connecting,
    /// Server info and the sink lookup are on their way.
    Lookup {
        /// Server version, and whether it is pipewire-pulse.
        version: Slot<(String, bool)>,
        sink: Slot<Option<Found>>,
    },
    /// A stale sink (module `idx`) is being unloaded.
    Unloading { result: Slot<bool>, idx: u32 },
    /// Module `idx` was loaded: does the sink by our name belong to it?
    Verifying {
        sink: Slot<Option<Found>>,
        idx: u32,
        norewinds: bool,
    },
    /// The null sink is being loaded.
    Loading { result: Slot<u32>, norewinds: bool },
    /// The record stream is being set up or running.
    Streaming,
    /// The stream failed; look again after this instant.
    Retry(Instant),
}

/// Flags the record stream's callbacks raise.
#[derive(Default)]
struct StreamNotes {
    state_changed: Cell<bool>,
    suspended_changed: Cell<bool>,
    timing: Cell<Option<u64>>,
    overflow: Cell<bool>,
}

struct Session {
    conn: Conn,
    step: Step,
    module: Option<u32>,
    stream: Option<Stream>,
    notes: Rc<StreamNotes>,
    timing_gen: u64,
    timing_in_flight: bool,
    next_timing_ns: u64,
    frames_read: u64,
    fc: FrameClock,
    scratch: Vec<f32>,
    logged_streaming: bool,
    dropped_frames: u64,
    /// A sink being unloaded (module index) and until when to wait for it.
    going: Option<(u32, Instant)>,
    /// Loads that did not give a sink by our name.
    attempts: u32,
    /// The server is pipewire-pulse: its reports come from the last graph
    /// cycle and scatter by up to a quantum.
    pipewire: bool,
    quantum: CycleQuantum,
    /// State of the timing requests' jitter.
    rng: u64,
}

/// Escapes `v` for a double-quoted PulseAudio property value inside a
/// single-quoted module argument.
fn modarg_prop(key: &str, v: &str) -> String {
    let inner: String = v
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("{key}=\"{inner}\"")
}

/// The `module-null-sink` argument string.
pub fn null_sink_args(c: &SinkConfig, pid: u32, host: &str, norewinds: bool) -> String {
    let props = [
        modarg_prop("device.description", &c.description),
        modarg_prop(PID_PROP, &pid.to_string()),
        modarg_prop(HOST_PROP, host),
        modarg_prop("bark.stream", &c.stream),
        modarg_prop("device.icon_name", "network-wireless"),
    ]
    .join(" ");
    let quoted: String = props
        .chars()
        .flat_map(|ch| match ch {
            '\'' | '\\' => vec!['\\', ch],
            ch => vec![ch],
        })
        .collect();
    let mut a = format!(
        "sink_name={} sink_properties='{quoted}' format=float32le rate={} channels={}",
        c.name, c.format.rate, c.format.channels
    );
    if norewinds {
        a.push_str(" norewinds=1");
    }
    a
}

/// Whether process `pid` is a live bark-pulse: not a recycled PID, and not
/// a zombie (killed, not yet reaped by its parent).
fn bark_pulse_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": comm may hold spaces and parentheses, so split at
    // the last ')'.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].trim_start().chars().next();
    comm == "bark-pulse" && !matches!(state, Some('Z') | Some('X') | None)
}

/// Major version of a server version string ("16.1", "15.0.0").
fn major(version: &str) -> u32 {
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

impl Session {
    fn new(conn: Conn, rate: u32, channels: usize) -> Session {
        Session {
            conn,
            step: Step::Connecting,
            module: None,
            stream: None,
            notes: Rc::new(StreamNotes::default()),
            timing_gen: 0,
            timing_in_flight: false,
            next_timing_ns: 0,
            frames_read: 0,
            fc: FrameClock::new(rate),
            scratch: vec![0.0; MAX_CHUNK_FRAMES * channels],
            logged_streaming: false,
            dropped_frames: 0,
            going: None,
            attempts: 0,
            pipewire: false,
            quantum: CycleQuantum::default(),
            rng: bark_io::node::random_nonzero_u64(),
        }
    }

    /// Advances the set-up; `Err` for problems no retry can fix.
    fn step(&mut self, lp: &Loop, cfg: &SinkConfig, host: &str) -> Result<()> {
        match &self.step {
            Step::Connecting => {
                if self.conn.state() == CtxState::Ready {
                    log::info!(
                        "connected to PulseAudio ({})",
                        self.conn.ctx.get_server().unwrap_or_default()
                    );
                    self.start_lookup(lp, cfg);
                }
            }
            Step::Lookup { version, sink } => {
                let (Some((v, pipewire)), Some(found)) =
                    (version.borrow().clone(), sink.borrow().clone())
                else {
                    return Ok(());
                };
                self.pipewire = pipewire;
                let norewinds = major(&v) >= 13;
                let Some(f) = found else {
                    self.going = None;
                    self.load(lp, cfg, host, norewinds);
                    return Ok(());
                };
                if let Some((idx, until)) = self.going {
                    // PulseAudio acknowledges an unload before it happens
                    // (it is deferred): wait until the sink is really gone,
                    // or a new one of that name would get a ".2" suffix.
                    if f.owner_module == Some(idx) {
                        if Instant::now() > until {
                            bail!(
                                "the stale sink {:?} (module {idx}) does not go away",
                                cfg.name
                            );
                        }
                        self.step = Step::Retry(Instant::now() + Duration::from_millis(50));
                        return Ok(());
                    }
                }
                let ours = f.host.as_deref() == Some(host);
                match (f.pid, f.owner_module) {
                    (None, _) => bail!(
                        "a sink named {:?} exists and was not made by bark-pulse; choose another --name",
                        cfg.name
                    ),
                    (Some(pid), _) if !ours => bail!(
                        "sink {:?} belongs to bark-pulse (pid {pid}) on host {:?}; choose another --name",
                        cfg.name,
                        f.host.unwrap_or_default()
                    ),
                    (Some(pid), _) if pid != std::process::id() && bark_pulse_alive(pid) => bail!(
                        "sink {:?} belongs to a running bark-pulse (pid {pid}); stop it or choose another --name",
                        cfg.name
                    ),
                    (Some(pid), Some(idx)) => {
                        log::warn!(
                            "unloading stale sink {:?} (module {idx}) left by bark-pulse pid {pid}",
                            cfg.name
                        );
                        let r = pa::slot();
                        let rr = r.clone();
                        let g = lp.guard.clone();
                        self.conn.ctx.introspect().unload_module(idx, move |ok| {
                            g.run("unload", || *rr.borrow_mut() = Some(ok));
                        });
                        self.step = Step::Unloading { result: r, idx };
                    }
                    (Some(_), None) => {
                        bail!("sink {:?} has no owner module to unload", cfg.name)
                    }
                }
            }
            Step::Unloading { result, idx } => {
                let Some(ok) = *result.borrow() else {
                    return Ok(());
                };
                if !ok {
                    bail!(
                        "could not unload the stale sink {:?}: {}",
                        cfg.name,
                        self.conn.error()
                    );
                }
                self.going = Some((*idx, Instant::now() + Duration::from_secs(3)));
                self.start_lookup(lp, cfg);
            }
            Step::Verifying {
                sink,
                idx,
                norewinds,
            } => {
                let Some(found) = sink.borrow().clone() else {
                    return Ok(());
                };
                let (idx, norewinds) = (*idx, *norewinds);
                if found.and_then(|f| f.owner_module) != Some(idx) {
                    // Someone else's sink took the name in between: ours
                    // got a suffixed name. Take it away and look again.
                    self.attempts += 1;
                    log::warn!(
                        "module {idx} did not create a sink named {:?}; unloading it",
                        cfg.name
                    );
                    self.conn.ctx.introspect().unload_module(idx, |_| {});
                    if self.attempts > 5 {
                        bail!("could not create the sink {:?}", cfg.name);
                    }
                    self.step = Step::Retry(Instant::now() + Duration::from_millis(200));
                    return Ok(());
                }
                log::info!(
                    "loaded {:?} ({}) as module {idx}{}",
                    cfg.name,
                    cfg.description,
                    if norewinds { "" } else { " without norewinds" }
                );
                self.module = Some(idx);
                self.start_stream(lp, cfg)?;
            }
            Step::Loading { result, norewinds } => {
                let Some(idx) = *result.borrow() else {
                    return Ok(());
                };
                let norewinds = *norewinds;
                if idx == u32::MAX {
                    if norewinds {
                        // Servers that reject the argument: the monitor then
                        // holds back audio for rewinds, and stamps err late
                        // by up to the sink's latency.
                        log::warn!(
                            "module-null-sink refused norewinds=1 ({}); loading without it",
                            self.conn.error()
                        );
                        self.load(lp, cfg, host, false);
                        return Ok(());
                    }
                    bail!("could not load module-null-sink: {}", self.conn.error());
                }
                // Unload it at exit even if the check below fails.
                self.module = Some(idx);
                let sink = self.lookup_sink(lp, cfg);
                self.step = Step::Verifying {
                    sink,
                    idx,
                    norewinds,
                };
            }
            Step::Streaming => {
                if self.notes.state_changed.replace(false) {
                    match self.stream.as_ref().map(|s| s.get_state()) {
                        Some(StreamState::Ready) => {
                            log::info!("recording {}.monitor", cfg.name);
                        }
                        Some(StreamState::Failed) | Some(StreamState::Terminated) => {
                            log::warn!(
                                "the monitor recording stopped ({}); setting up again",
                                self.conn.error()
                            );
                            self.drop_stream();
                            self.module = None;
                            self.step = Step::Retry(Instant::now() + Duration::from_millis(500));
                        }
                        _ => {}
                    }
                }
            }
            Step::Retry(at) => {
                if Instant::now() >= *at {
                    // The sink may have been unloaded by hand: look again.
                    self.start_lookup(lp, cfg);
                }
            }
        }
        Ok(())
    }

    fn start_lookup(&mut self, lp: &Loop, cfg: &SinkConfig) {
        let version = pa::slot();
        let v = version.clone();
        let g = lp.guard.clone();
        self.conn.ctx.introspect().get_server_info(move |i| {
            g.run("server info", || {
                let pipewire = i
                    .server_name
                    .as_deref()
                    .is_some_and(|n| n.contains("PipeWire"));
                *v.borrow_mut() = Some((
                    i.server_version.as_deref().unwrap_or("0").to_string(),
                    pipewire,
                ));
            });
        });
        let sink = self.lookup_sink(lp, cfg);
        self.step = Step::Lookup { version, sink };
    }

    /// Looks the sink up by name: `Some(None)` when there is none.
    fn lookup_sink(&mut self, lp: &Loop, cfg: &SinkConfig) -> Slot<Option<Found>> {
        let sink = pa::slot();
        let s = sink.clone();
        let g = lp.guard.clone();
        self.conn
            .ctx
            .introspect()
            .get_sink_info_by_name(&cfg.name, move |r| {
                g.run("sink info", || match r {
                    ListResult::Item(i) => {
                        let pid = i.proplist.get_str(PID_PROP).and_then(|p| p.parse().ok());
                        *s.borrow_mut() = Some(Some(Found {
                            owner_module: i.owner_module,
                            pid,
                            host: i.proplist.get_str(HOST_PROP),
                        }));
                    }
                    // No such sink (the server answers with an error), or
                    // the end of a list that had no item.
                    ListResult::Error | ListResult::End => {
                        let mut b = s.borrow_mut();
                        if b.is_none() {
                            *b = Some(None);
                        }
                    }
                });
            });
        sink
    }

    fn load(&mut self, lp: &Loop, cfg: &SinkConfig, host: &str, norewinds: bool) {
        let args = null_sink_args(cfg, std::process::id(), host, norewinds);
        log::debug!("load-module module-null-sink {args}");
        let r = pa::slot();
        let rr = r.clone();
        let g = lp.guard.clone();
        self.conn
            .ctx
            .introspect()
            .load_module("module-null-sink", &args, move |idx| {
                g.run("load", || *rr.borrow_mut() = Some(idx));
            });
        self.step = Step::Loading {
            result: r,
            norewinds,
        };
    }

    fn start_stream(&mut self, lp: &Loop, cfg: &SinkConfig) -> Result<()> {
        let spec = Spec {
            format: Format::FLOAT32NE,
            rate: cfg.format.rate,
            channels: cfg.format.channels,
        };
        let mut pl = Proplist::new().ok_or_else(|| anyhow!("cannot create a property list"))?;
        let _ = pl.set_str(
            pulse::proplist::properties::MEDIA_NAME,
            &format!("{} (sending)", cfg.description),
        );
        let _ = pl.set_str("bark.role", "sender");
        let mut s =
            Stream::new_with_proplist(&mut self.conn.ctx, "Bark sender", &spec, None, &mut pl)
                .ok_or_else(|| anyhow!("cannot create the record stream: {}", self.conn.error()))?;
        let notes = Rc::new(StreamNotes::default());
        let (n1, n2, n3) = (notes.clone(), notes.clone(), notes.clone());
        let (g1, g2, g3) = (lp.guard.clone(), lp.guard.clone(), lp.guard.clone());
        s.set_state_callback(Some(Box::new(move || {
            g1.run("stream state", || n1.state_changed.set(true));
        })));
        s.set_suspended_callback(Some(Box::new(move || {
            g2.run("suspended", || n2.suspended_changed.set(true));
        })));
        s.set_overflow_callback(Some(Box::new(move || {
            g3.run("overflow", || n3.overflow.set(true));
        })));
        let frag = (spec.usec_to_bytes(pulse::time::MicroSeconds(FRAGMENT_US))) as u32;
        let attr = BufferAttr {
            maxlength: u32::MAX,
            tlength: u32::MAX,
            prebuf: u32::MAX,
            minreq: u32::MAX,
            fragsize: frag,
        };
        let flags = StreamFlags::ADJUST_LATENCY
            | StreamFlags::DONT_MOVE
            | StreamFlags::DONT_INHIBIT_AUTO_SUSPEND;
        s.connect_record(Some(&format!("{}.monitor", cfg.name)), Some(&attr), flags)
            .map_err(|e| anyhow!("cannot record {}.monitor: {e}", cfg.name))?;
        self.stream = Some(s);
        self.notes = notes;
        self.frames_read = 0;
        self.quantum.reset();
        self.fc.reset();
        self.timing_gen += 1;
        self.timing_in_flight = false;
        self.step = Step::Streaming;
        Ok(())
    }

    fn drop_stream(&mut self) {
        if let Some(mut s) = self.stream.take() {
            s.set_state_callback(None);
            s.set_suspended_callback(None);
            s.set_overflow_callback(None);
            let _ = s.disconnect();
        }
    }

    /// Reads and sends what the monitor has; requests timing reports.
    fn service_stream(&mut self, lp: &Loop, net: &mut Net, frame_bytes: usize) {
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        if s.get_state() != StreamState::Ready {
            return;
        }
        let now = monotonic_ns();
        if self.notes.suspended_changed.replace(false) {
            // A resumed null sink starts a new play-out clock; a suspended
            // one delivers nothing. Either way the old estimate is void.
            let suspended = s.is_suspended().unwrap_or(false);
            log::debug!("sink {}", if suspended { "suspended" } else { "resumed" });
            self.fc.reset();
            self.timing_gen += 1;
        }
        if self.notes.overflow.replace(false) {
            log::warn!("monitor recording overflowed (the main loop was late); resynchronizing");
            self.fc.reset();
            self.timing_gen += 1;
        }
        // Timing report that arrived?
        if let Some(gen) = self.notes.timing.take() {
            self.timing_in_flight = false;
            if gen == self.timing_gen {
                if let Some(ti) = s.get_timing_info() {
                    let pair = ClockPair::now();
                    let info = Info::from_pa(ti);
                    if self.pipewire {
                        if let Some(w) = info.write_index {
                            self.quantum.observe(w, frame_bytes);
                        }
                        if let Some(q) = self.quantum.frames() {
                            self.fc.set_step_ns(1.5 * q as f64 * self.fc.period_ns());
                        }
                    }
                    if let Some(r) = info.monitor_record(&pair, frame_bytes) {
                        if log::log_enabled!(log::Level::Trace) {
                            let est = self.fc.play_ns(r.frame, r.t_ns).unwrap_or(r.play_ns);
                            log::trace!(
                                "report t {} frame {} residual {:.1} us drift {:.1} ppm",
                                r.t_ns,
                                r.frame,
                                (r.play_ns - est) / 1e3,
                                self.fc.drift_ppm()
                            );
                        }
                        if self.fc.add(r.t_ns, r.frame, r.play_ns) {
                            log::debug!("sink play-out clock stepped; restarted its estimate");
                        }
                    }
                }
            }
        }
        if !self.timing_in_flight && now >= self.next_timing_ns {
            self.next_timing_ns = now + pa::jittered(TIMING_PERIOD_NS, &mut self.rng);
            let n = self.notes.clone();
            let gen = self.timing_gen;
            let g = lp.guard.clone();
            let _ = s.update_timing_info(Some(Box::new(move |ok| {
                g.run("timing", || {
                    if ok {
                        n.timing.set(Some(gen));
                    } else {
                        n.timing.set(Some(u64::MAX));
                    }
                });
            })));
            self.timing_in_flight = true;
        }
        // Audio: bounded per turn so sockets and timing keep their pace.
        for _ in 0..64 {
            match s.readable_size() {
                Some(n) if n > 0 => {}
                _ => break,
            }
            let data = match s.peek() {
                Ok(PeekResult::Data(d)) => d,
                Ok(PeekResult::Hole(n)) => {
                    self.frames_read += (n / frame_bytes) as u64;
                    let _ = s.discard();
                    continue;
                }
                Ok(PeekResult::Empty) | Err(_) => break,
            };
            let frames = data.len() / frame_bytes;
            let first = self.frames_read;
            self.frames_read += frames as u64;
            let ch = frame_bytes / 4;
            let mut done = 0;
            while done < frames {
                let n = (frames - done).min(self.scratch.len() / ch);
                let t = self.fc.play_ns(first + done as u64, now);
                let last = t.map(|t| t + n as f64 * self.fc.period_ns());
                if let (Some(t), Some(last)) = (t, last) {
                    if last > now as f64 + MAX_STAMP_AHEAD_NS
                        || t < now as f64 - MAX_STAMP_BEHIND_NS
                    {
                        log::debug!(
                            "stamp {:.1} ms from now is impossible; restarting the estimate",
                            (t - now as f64) / 1e6
                        );
                        self.fc.reset();
                        self.timing_gen += 1;
                    }
                }
                match self.fc.play_ns(first + done as u64, now) {
                    Some(t) => {
                        let bytes = &data[done * frame_bytes..(done + n) * frame_bytes];
                        for (o, b) in self.scratch[..n * ch].iter_mut().zip(bytes.chunks_exact(4)) {
                            *o = f32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                        }
                        net.push(t.max(0.0) as u64, &self.scratch[..n * ch]);
                        if !self.logged_streaming {
                            self.logged_streaming = true;
                            log::info!("sending to {}", net.dest);
                        }
                    }
                    _ => {
                        // No play-out estimate yet (first ~10 ms after a
                        // start or resume): these frames cannot be stamped.
                        self.dropped_frames += n as u64;
                    }
                }
                done += n;
            }
            let _ = s.discard();
        }
    }

    /// Unloads our sink (bounded wait); at exit.
    fn unload(&mut self, lp: &mut Loop, cfg: &SinkConfig) {
        self.drop_stream();
        let Some(idx) = self.module.take() else {
            return;
        };
        if self.conn.state() != CtxState::Ready {
            return;
        }
        let done = Rc::new(Cell::new(false));
        let d = done.clone();
        let g = lp.guard.clone();
        self.conn.ctx.introspect().unload_module(idx, move |ok| {
            g.run("unload", || {
                if !ok {
                    log::warn!("unloading the sink failed");
                }
                d.set(true);
            });
        });
        if pa::run_until(lp, Duration::from_secs(2), || done.get()) {
            log::info!("unloaded {:?} (module {idx})", cfg.name);
        } else {
            log::warn!("timed out unloading {:?} (module {idx})", cfg.name);
        }
    }
}

/// Runs the sender until SIGINT/SIGTERM.
///
/// # Errors
/// Setup failures (socket, a sink name taken by someone else) and panics.
pub fn run(cfg: SinkConfig) -> Result<()> {
    let host = bark_io::node::hostname();
    let clock = ClockMap::from_env(monotonic_ns()).map_err(|e| anyhow!(e))?;
    if !clock.is_identity() {
        log::warn!("test clock skew active ({})", crate::clock::TEST_CLOCK_ENV);
    }
    let session_id = bark_io::node::random_nonzero_u64();
    let key = crate::keyed::load(cfg.key_file.as_deref())?;
    let ep = SenderEndpoint::new(
        cfg.sender_config(session_id, host.clone()),
        key.as_ref(),
        cfg.encrypt,
        bark_io::node::random_nonzero_u64(),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let sock = net::sender_socket(&cfg).context("setting up the network")?;
    let local = sock.local_addr()?;
    log::info!(
        "{}; {} frames/packet, session {session_id:016x}, time requests on {local}{}",
        cfg.summary(),
        ep.sender().packet_frames(),
        key.as_ref()
            .map(|k| format!(", key id {}", k.id()))
            .unwrap_or_default()
    );
    let mut net = Net {
        ep,
        sock,
        dest: cfg.destination.into(),
        clock,
        sent: 0,
        send_errors: 0,
        warnings: Warnings::default(),
    };
    let frame_bytes = 4 * cfg.format.channels as usize;
    let mut lp = Loop::new(TICK_US)?;
    log::debug!("scheduling: {}", pa::raise_priority());
    let _watch = lp.watch_readable(net.sock.fd())?;
    let mut backoff = Backoff::default();
    let mut session: Option<Session> = None;
    let mut retry_at = Instant::now();
    let mut last_report = Instant::now();
    let result = loop {
        if let Some(sig) = lp.quit_signal() {
            log::info!("signal {sig}: stopping");
            break Ok(());
        }
        if lp.guard.tripped() {
            break Err(anyhow!("a callback panicked (see above)"));
        }
        net.serve();
        if session.is_none() && Instant::now() >= retry_at {
            match Conn::connect(&lp, "Bark", "sender", cfg.server.as_deref()) {
                Ok(c) => {
                    session = Some(Session::new(
                        c,
                        cfg.format.rate,
                        cfg.format.channels as usize,
                    ))
                }
                Err(e) => {
                    log::warn!("{e:#}");
                    retry_at = Instant::now() + backoff.step();
                }
            }
        }
        if let Some(s) = session.as_mut() {
            if s.conn.is_dead() {
                log::warn!("lost PulseAudio ({}); reconnecting", s.conn.error());
                s.drop_stream();
                session = None;
                retry_at = Instant::now() + backoff.step();
            } else {
                if let Err(e) = s.step(&lp, &cfg, &host) {
                    break Err(e);
                }
                if matches!(s.step, Step::Streaming) {
                    backoff.reset();
                }
                s.service_stream(&lp, &mut net, frame_bytes);
            }
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            if let Some(s) = session.as_ref() {
                log::debug!(
                    "sent {} datagrams ({} errors, {} malformed in, {} dropped by authentication), {} frames unstamped, play-out drift {:.1} ppm, {} clock restarts",
                    net.sent,
                    net.send_errors,
                    net.ep.wire().counts().malformed,
                    net.ep.wire().auth().total(),
                    s.dropped_frames,
                    s.fc.drift_ppm(),
                    s.fc.resets()
                );
            }
        }
        if let Err(e) = lp.iterate() {
            break Err(e);
        }
    };
    if let Some(mut s) = session.take() {
        s.unload(&mut lp, &cfg);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigFile, SinkFlags};

    #[test]
    fn module_arguments_quote_the_description() {
        let mut c = SinkConfig::resolve(&SinkFlags::default(), &ConfigFile::default()).unwrap();
        c.description = "Tom's \"big\" net".into();
        let a = null_sink_args(&c, 42, "vm", true);
        assert!(
            a.starts_with("sink_name=bark_sink sink_properties='"),
            "{a}"
        );
        assert!(
            a.contains(r#"device.description=\"Tom\'s \\\"big\\\" net\""#)
                || a.contains(r#"device.description="Tom\'s \\"big\\" net""#),
            "{a}"
        );
        assert!(a.contains("bark.pulse.pid=\"42\""), "{a}");
        assert!(a.ends_with("rate=48000 channels=2 norewinds=1"), "{a}");
        assert!(!null_sink_args(&c, 42, "vm", false).contains("norewinds"));
    }

    #[test]
    fn liveness_of_the_owner() {
        // This test binary is not called bark-pulse.
        assert!(!bark_pulse_alive(std::process::id()));
        assert!(!bark_pulse_alive(u32::MAX));
    }

    #[test]
    fn versions() {
        assert_eq!(major("16.1"), 16);
        assert_eq!(major("15.0.0"), 15);
        assert_eq!(major("x"), 0);
    }
}

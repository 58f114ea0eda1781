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

use crate::clock::{monotonic_ns, realtime_ns, ClockMap};
use crate::config::SinkConfig;
use crate::driver::{self, Role, SessionOf, Start};
use crate::keyed::Warnings;
use crate::pa::{self, Conn, Loop, Slot};
use crate::session::{Session, Step};
use anyhow::{anyhow, bail, Context as _, Result};
use bark_core::endpoint::SenderEndpoint;
use bark_core::latency::LatencyWatch;
use bark_io::command::{CommandPort, Identity};
use bark_io::net::{self, FrontEnd, UdpSocket};
use libpulse_binding as pulse;
use pulse::callbacks::ListResult;
use pulse::context::State as CtxState;
use pulse::def::BufferAttr;
use pulse::stream::{FlagSet as StreamFlags, PeekResult};
use pulse::time::MicroSeconds;
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
/// Main loop tick, µs: the timing-request pace.
const TICK_US: u64 = 5_000;
/// Fragment size of the monitor recording, µs. With `ADJUST_LATENCY` it is
/// also the latency the null sink is asked for, hence how often it renders:
/// 10 ms blocks, each delivered as soon as rendered, ahead of its play time.
const FRAGMENT_US: u64 = 10_000;
/// Largest chunk handed to the core at once, frames (a scratch bound).
const MAX_CHUNK_FRAMES: usize = 8192;
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
    latency: LatencyWatch,
    /// Unicast subscribers last logged.
    subscribers: usize,
    /// Commands (`bark set`: stream name, priority, name).
    cmd: CommandPort,
    /// The DNS-SD advertisement, while running.
    _advert: Option<bark_io::discovery::Advertiser>,
}

impl Net {
    /// Hands queued datagrams to the endpoint and sends what it returns:
    /// time replies, sync messages while the sink is idle, status.
    fn serve(&mut self) {
        let d = self.sock.drain(MAX_RX_PER_TURN, |data, from, at| {
            let t2 = self.clock.map(at.mono_ns);
            let _ = self.ep.handle_datagram(t2, at.real_ns, data, from.into());
        });
        let (changed, warning) = self.cmd.serve(monotonic_ns(), realtime_ns());
        if let Some(w) = warning {
            log::warn!("{w}");
        }
        if changed != 0 {
            let s = *self.cmd.responder().settings();
            log::info!("a controller changed the settings: {s:?}");
            self.ep.sender_mut().set_settings(&s, self.cmd.port());
            if let Some(w) = self.cmd.save() {
                log::warn!("{w}");
            }
        }
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
        let sl = self.ep.sender().session_latency();
        let need = sl.largest_need(self.clock.map(monotonic_ns()));
        if let Some(change) = self.latency.observe(sl.current(), need) {
            log::info!("{change}");
        }
        let subscribers = self.ep.fanout().len();
        if subscribers != std::mem::replace(&mut self.subscribers, subscribers) {
            log::info!("{subscribers} unicast subscribers (receivers with sender = this host)");
        }
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
        let clock = *clock;
        let mut send_ns = || clock.map(monotonic_ns());
        ep.push(
            clock.map(t_ns),
            &mut send_ns,
            wall,
            samples,
            &mut |pkt, to| match sock.send_to(pkt, to.or_group(*dest)) {
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

/// The sender's own set-up steps, per connection to the server.
enum Setup {
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
}

/// The sender's state of one connection.
struct Sending {
    /// Our null sink's module, once loaded.
    module: Option<u32>,
    frames_read: u64,
    scratch: Vec<f32>,
    logged_streaming: bool,
    dropped_frames: u64,
    /// A sink being unloaded (module index) and until when to wait for it.
    going: Option<(u32, Instant)>,
    /// Loads that did not give a sink by our name.
    attempts: u32,
}

type S = SessionOf<Sender>;

/// The sender across connections: its settings and network side.
struct Sender {
    cfg: SinkConfig,
    host: String,
    net: Net,
}

/// `v` with a backslash before each of `special`.
fn escaped(v: &str, special: [char; 2]) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Escapes `v` for a double-quoted PulseAudio property value inside a
/// single-quoted module argument.
fn modarg_prop(key: &str, v: &str) -> String {
    format!("{key}=\"{}\"", escaped(v, ['"', '\\']))
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
    let quoted = escaped(&props, ['\'', '\\']);
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

impl Role for Sender {
    type Setup = Setup;
    type State = Sending;
    const NAME: &'static str = "sender";
    const LOG_TARGET: &'static str = module_path!();

    fn server(&self) -> Option<&str> {
        self.cfg.server.as_deref()
    }

    fn open(&self, conn: Conn) -> S {
        let f = &self.cfg.format;
        let sending = Sending {
            module: None,
            frames_read: 0,
            scratch: vec![0.0; MAX_CHUNK_FRAMES * f.channels as usize],
            logged_streaming: false,
            dropped_frames: 0,
            going: None,
            attempts: 0,
        };
        Session::new(conn, f.rate, f.channels, sending)
    }

    fn serve(&mut self, _lp: &Loop) {
        self.net.serve();
    }

    /// Looks the sink up; after a retry too, since it may have been
    /// unloaded by hand.
    fn begin(&mut self, s: &mut S, lp: &Loop) {
        self.start_lookup(s, lp);
    }

    fn setup(&mut self, s: &mut S, lp: &Loop) -> Result<()> {
        let Step::Setup(step) = &s.step else {
            return Ok(());
        };
        let cfg = &self.cfg;
        match step {
            Setup::Lookup { version, sink } => {
                let (Some((v, pipewire)), Some(found)) =
                    (version.borrow().clone(), sink.borrow().clone())
                else {
                    return Ok(());
                };
                s.est.pipewire = pipewire;
                let norewinds = major(&v) >= 13;
                let Some(f) = found else {
                    s.role.going = None;
                    self.load(s, lp, norewinds);
                    return Ok(());
                };
                if let Some((idx, until)) = s.role.going {
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
                        s.step = Step::Retry(Instant::now() + Duration::from_millis(50));
                        return Ok(());
                    }
                }
                let ours = f.host.as_deref() == Some(self.host.as_str());
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
                        let (result, done) = pa::answer(lp, "unload");
                        s.conn.ctx.introspect().unload_module(idx, done);
                        s.step = Step::Setup(Setup::Unloading { result, idx });
                    }
                    (Some(_), None) => {
                        bail!("sink {:?} has no owner module to unload", cfg.name)
                    }
                }
            }
            Setup::Unloading { result, idx } => {
                let Some(ok) = *result.borrow() else {
                    return Ok(());
                };
                if !ok {
                    bail!(
                        "could not unload the stale sink {:?}: {}",
                        cfg.name,
                        s.conn.error()
                    );
                }
                s.role.going = Some((*idx, Instant::now() + Duration::from_secs(3)));
                self.start_lookup(s, lp);
            }
            Setup::Verifying {
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
                    s.role.attempts += 1;
                    log::warn!(
                        "module {idx} did not create a sink named {:?}; unloading it",
                        cfg.name
                    );
                    s.conn.ctx.introspect().unload_module(idx, |_| {});
                    if s.role.attempts > 5 {
                        bail!("could not create the sink {:?}", cfg.name);
                    }
                    s.step = Step::Retry(Instant::now() + Duration::from_millis(200));
                    return Ok(());
                }
                log::info!(
                    "loaded {:?} ({}) as module {idx}{}",
                    cfg.name,
                    cfg.description,
                    if norewinds { "" } else { " without norewinds" }
                );
                s.role.module = Some(idx);
                self.start_stream(s, lp)?;
            }
            Setup::Loading { result, norewinds } => {
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
                            s.conn.error()
                        );
                        self.load(s, lp, false);
                        return Ok(());
                    }
                    bail!("could not load module-null-sink: {}", s.conn.error());
                }
                // Unload it at exit even if the check below fails.
                s.role.module = Some(idx);
                let sink = self.lookup_sink(s, lp);
                s.step = Step::Setup(Setup::Verifying {
                    sink,
                    idx,
                    norewinds,
                });
            }
        }
        Ok(())
    }

    fn ready(&mut self, _s: &mut S) {
        log::info!("recording {}.monitor", self.cfg.name);
    }

    fn stopped(&mut self, s: &mut S) {
        log::warn!(
            "the monitor recording stopped ({}); setting up again",
            s.conn.error()
        );
        s.role.module = None;
    }

    /// Reads and sends what the monitor has; requests timing reports.
    fn service(&mut self, s: &mut S, lp: &Loop, now: u64) {
        let frame_bytes = s.frame_bytes();
        if s.notes.suspended.replace(false) {
            // A resumed null sink starts a new play-out clock; a suspended
            // one delivers nothing. Either way the old estimate is void.
            let suspended = s
                .stream
                .as_ref()
                .is_some_and(|st| st.is_suspended().unwrap_or(false));
            log::debug!("sink {}", if suspended { "suspended" } else { "resumed" });
            s.est.restart();
        }
        if s.notes.overflow.replace(false) {
            log::warn!("monitor recording overflowed (the main loop was late); resynchronizing");
            s.est.restart();
        }
        if let Some((info, pair)) = s.poll_timing(now, lp) {
            let est = &mut s.est;
            if est.pipewire {
                est.observe_quantum(info.write_index, frame_bytes);
            }
            if let Some(r) = info.monitor_record(&pair, frame_bytes) {
                if log::log_enabled!(log::Level::Trace) {
                    let fc = &est.fc;
                    let predicted = fc.play_ns(r.frame, r.t_ns).unwrap_or(r.play_ns);
                    log::trace!(
                        "report t {} frame {} residual {:.1} us drift {:.1} ppm",
                        r.t_ns,
                        r.frame,
                        (r.play_ns - predicted) / 1e3,
                        fc.drift_ppm()
                    );
                }
                if est.fc.add(r.t_ns, r.frame, r.play_ns) {
                    log::debug!("sink play-out clock stepped; restarted its estimate");
                }
            }
        }
        self.read(s, now, frame_bytes);
    }

    fn report(&self, s: Option<&S>) {
        let Some(s) = s else {
            return;
        };
        let net = &self.net;
        log::debug!(
            "sent {} datagrams ({} errors, {} malformed in, {} dropped by authentication), {} frames unstamped, play-out drift {:.1} ppm, {} clock restarts",
            net.sent,
            net.send_errors,
            net.ep.wire().counts().malformed,
            net.ep.wire().auth().total(),
            s.role.dropped_frames,
            s.est.fc.drift_ppm(),
            s.est.fc.resets()
        );
    }

    /// Unloads our sink (bounded wait).
    fn close(&mut self, mut s: S, lp: &mut Loop) {
        s.drop_stream();
        let Some(idx) = s.role.module.take() else {
            return;
        };
        if s.conn.state() != CtxState::Ready {
            return;
        }
        let done = Rc::new(Cell::new(false));
        let d = done.clone();
        let g = lp.guard.clone();
        s.conn.ctx.introspect().unload_module(idx, move |ok| {
            g.run("unload", || {
                if !ok {
                    log::warn!("unloading the sink failed");
                }
                d.set(true);
            });
        });
        if pa::run_until(lp, Duration::from_secs(2), || done.get()) {
            log::info!("unloaded {:?} (module {idx})", self.cfg.name);
        } else {
            log::warn!("timed out unloading {:?} (module {idx})", self.cfg.name);
        }
    }
}

impl Sender {
    fn start_lookup(&self, s: &mut S, lp: &Loop) {
        let version = s.server_info(lp, |i| {
            i.server_version.as_deref().unwrap_or("0").to_string()
        });
        let sink = self.lookup_sink(s, lp);
        s.step = Step::Setup(Setup::Lookup { version, sink });
    }

    /// Looks the sink up by name: `Some(None)` when there is none.
    fn lookup_sink(&self, s: &S, lp: &Loop) -> Slot<Option<Found>> {
        let sink = pa::slot();
        let sl = sink.clone();
        let g = lp.guard.clone();
        s.conn
            .ctx
            .introspect()
            .get_sink_info_by_name(&self.cfg.name, move |r| {
                g.run("sink info", || match r {
                    ListResult::Item(i) => {
                        let pid = i.proplist.get_str(PID_PROP).and_then(|p| p.parse().ok());
                        *sl.borrow_mut() = Some(Some(Found {
                            owner_module: i.owner_module,
                            pid,
                            host: i.proplist.get_str(HOST_PROP),
                        }));
                    }
                    // No such sink (the server answers with an error), or
                    // the end of a list that had no item.
                    ListResult::Error | ListResult::End => {
                        let mut b = sl.borrow_mut();
                        if b.is_none() {
                            *b = Some(None);
                        }
                    }
                });
            });
        sink
    }

    fn load(&self, s: &mut S, lp: &Loop, norewinds: bool) {
        let args = null_sink_args(&self.cfg, std::process::id(), &self.host, norewinds);
        log::debug!("load-module module-null-sink {args}");
        let (result, done) = pa::answer(lp, "load");
        s.conn
            .ctx
            .introspect()
            .load_module("module-null-sink", &args, done);
        s.step = Step::Setup(Setup::Loading { result, norewinds });
    }

    fn start_stream(&self, s: &mut S, lp: &Loop) -> Result<()> {
        let cfg = &self.cfg;
        let media_name = format!("{} (sending)", cfg.description);
        let props = [
            (pulse::proplist::properties::MEDIA_NAME, media_name.as_str()),
            ("bark.role", "sender"),
        ];
        s.start_stream(lp, "record", "Bark sender", &props, |st, spec| {
            let frag = spec.usec_to_bytes(MicroSeconds(FRAGMENT_US)) as u32;
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
            st.connect_record(Some(&format!("{}.monitor", cfg.name)), Some(&attr), flags)
                .map_err(|e| anyhow!("cannot record {}.monitor: {e}", cfg.name))
        })?;
        s.role.frames_read = 0;
        Ok(())
    }

    /// Reads the monitor, stamps and sends it. Bounded per turn so sockets
    /// and timing keep their pace. No allocation.
    fn read(&mut self, s: &mut S, now: u64, frame_bytes: usize) {
        let Some(st) = s.stream.as_mut() else {
            return;
        };
        let (est, c) = (&mut s.est, &mut s.role);
        let ch = frame_bytes / 4;
        for _ in 0..64 {
            match st.readable_size() {
                Some(n) if n > 0 => {}
                _ => break,
            }
            let data = match st.peek() {
                Ok(PeekResult::Data(d)) => d,
                Ok(PeekResult::Hole(n)) => {
                    c.frames_read += (n / frame_bytes) as u64;
                    let _ = st.discard();
                    continue;
                }
                Ok(PeekResult::Empty) | Err(_) => break,
            };
            let frames = data.len() / frame_bytes;
            let first = c.frames_read;
            c.frames_read += frames as u64;
            let mut done = 0;
            while done < frames {
                let n = (frames - done).min(c.scratch.len() / ch);
                let t = est.fc.play_ns(first + done as u64, now);
                let last = t.map(|t| t + n as f64 * est.fc.period_ns());
                if let (Some(t), Some(last)) = (t, last) {
                    if last > now as f64 + MAX_STAMP_AHEAD_NS
                        || t < now as f64 - MAX_STAMP_BEHIND_NS
                    {
                        log::debug!(
                            "stamp {:.1} ms from now is impossible; restarting the estimate",
                            (t - now as f64) / 1e6
                        );
                        est.restart();
                    }
                }
                match est.fc.play_ns(first + done as u64, now) {
                    Some(t) => {
                        let bytes = &data[done * frame_bytes..(done + n) * frame_bytes];
                        for (o, b) in c.scratch[..n * ch].iter_mut().zip(bytes.chunks_exact(4)) {
                            *o = f32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                        }
                        self.net.push(t.max(0.0) as u64, &c.scratch[..n * ch]);
                        if !c.logged_streaming {
                            c.logged_streaming = true;
                            log::info!("sending to {}", self.net.dest);
                        }
                    }
                    _ => {
                        // No play-out estimate yet (first ~10 ms after a
                        // start or resume): these frames cannot be stamped.
                        c.dropped_frames += n as u64;
                    }
                }
                done += n;
            }
            let _ = st.discard();
        }
    }
}

/// Runs the sender until SIGINT/SIGTERM.
///
/// # Errors
/// Setup failures (socket, a sink name taken by someone else) and panics.
pub fn run(cfg: SinkConfig) -> Result<()> {
    let start = Start::load(cfg.key_file.as_deref(), Sender::LOG_TARGET)?;
    let session_id = start.id;
    let node_id = bark_io::node::random_nonzero_u64();
    let mut ep = SenderEndpoint::new(
        cfg.sender_config(session_id, start.host.clone()),
        start.key.as_ref(),
        cfg.encrypt,
        node_id,
    )
    .map_err(|e| anyhow!("{e}"))?;
    if let Some(w) = ep.sender().fec_advice() {
        log::warn!("{w}");
    }
    let configured = *ep.sender().settings();
    let id = Identity {
        node_name: &cfg.name,
        description: &cfg.description,
        node_id,
        role: bark_core::protocol::Role::Sender,
        port: cfg.command_port,
    };
    let given = bark_core::command::configured_mask(&cfg.settings, bark_core::settings::Role::Sink);
    // Its rate limit runs on the plain monotonic clock, not the test one.
    let (cmd, warning) =
        CommandPort::restored(&id, &configured, given, start.key.as_ref(), monotonic_ns())
            .context("opening the command socket (command-port)")?;
    if let Some(w) = warning {
        log::warn!("{w}");
    }
    let initial = *cmd.responder().settings();
    ep.sender_mut().set_settings(&initial, cmd.port());
    let sock = net::sender_socket(&cfg.net, FrontEnd::Pulse).context("setting up the network")?;
    let local = sock.local_addr()?;
    let (advert, said) = bark_io::discovery::advertise(
        &cmd.advert(&cfg.name, Some(local.port()), start.key.as_ref()),
        cfg.net.destination,
        cfg.net.ifname.as_deref(),
        &start.host,
        FrontEnd::Pulse,
        cfg.discovery,
    );
    log::info!("{said}");
    ep.list_destinations(&cfg.net.copies)
        .map_err(|e| anyhow!("{e}"))?;
    log::info!(
        "{}; {} frames/packet, session {session_id:016x}, time requests on {local}, command port {}{}",
        cfg.summary(),
        ep.sender().packet_frames(),
        cmd.port(),
        start.key_note()
    );
    let net = Net {
        ep,
        sock,
        dest: cfg.net.destination.into(),
        clock: start.clock,
        sent: 0,
        send_errors: 0,
        warnings: Warnings::default(),
        latency: LatencyWatch::default(),
        subscribers: 0,
        cmd,
        _advert: advert,
    };
    let mut sender = Sender {
        cfg,
        host: start.host,
        net,
    };
    let mut lp = Loop::new(TICK_US)?;
    let _watch = lp.watch_readable(sender.net.sock.fd())?;
    let _watch_cmd = lp.watch_readable(sender.net.cmd.fd())?;
    driver::run(&mut sender, &mut lp)
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

//! `bark-pulse source`: the receiver.
//!
//! A playback stream into the default sink (or `--sink`), fed by
//! [`bark_core::Receiver`]. Each write is filled for the instant its first
//! frame will be heard, which [`crate::frameclock`] estimates from the
//! stream's timing reports ([`crate::timing`]). Drift is handled by the
//! core's resampler, not `PA_STREAM_VARIABLE_RATE` (see docs/BENCHMARKS.md
//! for why).
//!
//! The network side (sockets, clock exchanges, the core's state) outlives
//! connections to the server: when PulseAudio restarts, the receiver keeps
//! its clock estimate and plays again as soon as a new stream runs.

use crate::clock::{monotonic_ns, realtime_ns, ClockMap, ClockPair};
use crate::config::SourceConfig;
use crate::frameclock::FrameClock;
use crate::keyed::Warnings;
use crate::net::{self, UdpSocket};
use crate::pa::{self, Backoff, Conn, Loop, Slot};
use crate::sink::PID_PROP;
use crate::timing::{CycleQuantum, Info};
use anyhow::{anyhow, Context as _, Result};
use bark_core::endpoint::ReceiverEndpoint;
use bark_core::receiver::{BUSY_INTERVAL_NS, FAST_INTERVAL_NS};
use bark_core::SampleFormat;
use libpulse_binding as pulse;
use pulse::callbacks::ListResult;
use pulse::context::State as CtxState;
use pulse::def::BufferAttr;
use pulse::proplist::Proplist;
use pulse::sample::{Format, Spec};
use pulse::stream::{FlagSet as StreamFlags, SeekMode, State as StreamState, Stream};
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Most datagrams handled per socket per loop turn.
const MAX_RX_PER_TURN: usize = 64;
/// Most datagrams the receiver may send per loop turn.
const MAX_TX_PER_TURN: usize = 16;
/// Timing requests, ns apart.
const TIMING_PERIOD_NS: u64 = 10_000_000;
/// Sanity bounds on a write's play time, ns from now: it is heard after the
/// stream's buffer and the sink's latency (tens of ms); an underrun may
/// leave it slightly in the past.
const MAX_PLAY_AHEAD_NS: f64 = 2e9;
const MAX_PLAY_BEHIND_NS: f64 = 200e6;
/// Largest write filled at once, frames (bounds the scratch buffer).
const MAX_WRITE_FRAMES: usize = 16_384;

/// Everything network-side; lives across reconnections.
struct Net {
    ep: ReceiverEndpoint,
    group: UdpSocket,
    control: UdpSocket,
    group_addr: SocketAddr,
    clock: ClockMap,
    send_errors: u64,
    warnings: Warnings,
}

impl Net {
    /// Feeds queued datagrams to the endpoint and sends what it returns
    /// (time requests, status to the group and to the sender). No
    /// allocation.
    fn pump(&mut self) {
        for sock in [&mut self.group, &mut self.control] {
            let d = sock.drain(MAX_RX_PER_TURN, |data, from, at| {
                let t = self.clock.map(at.mono_ns);
                let _ = self.ep.handle_datagram(t, at.real_ns, data, from.into());
            });
            if let Some(e) = d.error {
                log::debug!("receive error: {e}");
            }
        }
        let poll = |b: &mut [u8]| {
            let now = self.clock.map(monotonic_ns());
            self.ep.poll_transmit(now, realtime_ns(), b)
        };
        let sent = |r: std::io::Result<()>, _| self.send_errors += r.is_err() as u64;
        self.control
            .transmit(self.group_addr, MAX_TX_PER_TURN, poll, sent);
        self.warnings.warn(self.ep.wire().auth());
    }
}

/// A sink as seen when choosing where to play.
#[derive(Clone, Debug)]
struct SinkEntry {
    name: String,
    bark: bool,
}

enum Step {
    Connecting,
    /// Server info (default sink) and the sink list are on their way.
    Choosing {
        /// Default sink, and whether the server is pipewire-pulse.
        default: Slot<(String, bool)>,
        sinks: Slot<Vec<SinkEntry>>,
    },
    Streaming,
    Retry(Instant),
}

#[derive(Default)]
struct StreamNotes {
    state_changed: Cell<bool>,
    timing: Cell<Option<u64>>,
    reset: Cell<bool>,
    underflow: Cell<bool>,
}

struct Session {
    conn: Conn,
    step: Step,
    stream: Option<Stream>,
    notes: Rc<StreamNotes>,
    timing_gen: u64,
    timing_in_flight: bool,
    next_timing_ns: u64,
    written: u64,
    fc: FrameClock,
    /// The estimate before the last restart, used until the new one has
    /// its first report (~10 ms), so a move does not cost a gap.
    fallback: Option<FrameClock>,
    scratch: Vec<f32>,
    sink_name: String,
    underflows: u64,
    /// The server is pipewire-pulse (see [`CycleQuantum`]).
    pipewire: bool,
    quantum: CycleQuantum,
    /// State of the timing requests' jitter.
    rng: u64,
}

/// Whether a sink is a Bark sender (ours on PulseAudio, or the PipeWire
/// module's seen through pipewire-pulse): playing into it would loop the
/// network stream back to the network.
fn is_bark_sink(name: &str, pl: &Proplist) -> bool {
    pl.get_str(PID_PROP).is_some()
        || pl.get_str("node.link-group").as_deref() == Some("bark")
        || pl.get_str("bark.stream").is_some() && name.starts_with("bark")
}

/// Where to play: the configured sink, else the default one unless it is a
/// Bark sink, else the first sink that is not.
fn choose_sink(configured: Option<&str>, default: &str, sinks: &[SinkEntry]) -> Option<String> {
    if let Some(c) = configured {
        return Some(c.to_owned());
    }
    if sinks.iter().any(|s| s.name == default && !s.bark) {
        return Some(default.to_owned());
    }
    sinks.iter().find(|s| !s.bark).map(|s| s.name.clone())
}

impl Session {
    fn new(conn: Conn, rate: u32, channels: usize) -> Session {
        Session {
            conn,
            step: Step::Connecting,
            stream: None,
            notes: Rc::new(StreamNotes::default()),
            timing_gen: 0,
            timing_in_flight: false,
            next_timing_ns: 0,
            written: 0,
            fc: FrameClock::new(rate),
            fallback: None,
            scratch: vec![0.0; MAX_WRITE_FRAMES * channels],
            sink_name: String::new(),
            underflows: 0,
            pipewire: false,
            quantum: CycleQuantum::default(),
            rng: bark_io::node::random_nonzero_u64(),
        }
    }

    fn step(&mut self, lp: &Loop, cfg: &SourceConfig) -> Result<()> {
        match &self.step {
            Step::Connecting => {
                if self.conn.state() == CtxState::Ready {
                    log::info!(
                        "connected to PulseAudio ({})",
                        self.conn.ctx.get_server().unwrap_or_default()
                    );
                    self.start_choosing(lp);
                }
            }
            Step::Choosing { default, sinks, .. } => {
                let (Some((d, pipewire)), Some(list)) =
                    (default.borrow().clone(), sinks.borrow().clone())
                else {
                    return Ok(());
                };
                if pipewire && !self.pipewire {
                    log::info!("the server is pipewire-pulse: correcting its per-cycle timing reports by one quantum");
                }
                self.pipewire = pipewire;
                match choose_sink(cfg.sink.as_deref(), &d, &list) {
                    Some(name) => {
                        if list.iter().any(|s| s.name == name && s.bark) {
                            log::warn!("playing into {name:?}, a Bark sink: the stream will loop back to the network");
                        } else if name != d {
                            log::info!(
                                "the default sink {d:?} is a Bark sink; playing into {name:?}"
                            );
                        }
                        self.start_stream(lp, cfg, &name)?;
                    }
                    None => {
                        log::warn!("no sink to play into (only Bark sinks); looking again in 2 s");
                        self.step = Step::Retry(Instant::now() + Duration::from_secs(2));
                    }
                }
            }
            Step::Streaming => {
                if self.notes.state_changed.replace(false) {
                    match self.stream.as_ref().map(|s| s.get_state()) {
                        Some(StreamState::Ready) => {
                            let dev = self
                                .stream
                                .as_ref()
                                .and_then(|s| s.get_device_name())
                                .map(|d| d.into_owned())
                                .unwrap_or_default();
                            log::info!("playing into {dev:?}");
                        }
                        Some(StreamState::Failed) | Some(StreamState::Terminated) => {
                            log::warn!(
                                "the playback stream into {:?} stopped ({}); setting up again",
                                self.sink_name,
                                self.conn.error()
                            );
                            self.drop_stream();
                            self.step = Step::Retry(Instant::now() + Duration::from_millis(500));
                        }
                        _ => {}
                    }
                }
            }
            Step::Retry(at) => {
                if Instant::now() >= *at {
                    self.start_choosing(lp);
                }
            }
        }
        Ok(())
    }

    fn start_choosing(&mut self, lp: &Loop) {
        let default = pa::slot();
        let sinks = pa::slot();
        let partial = Rc::new(std::cell::RefCell::new(Vec::new()));
        let (d, s, p) = (default.clone(), sinks.clone(), partial.clone());
        let (g1, g2) = (lp.guard.clone(), lp.guard.clone());
        let intro = self.conn.ctx.introspect();
        intro.get_server_info(move |i| {
            g1.run("server info", || {
                let pipewire = i
                    .server_name
                    .as_deref()
                    .is_some_and(|n| n.contains("PipeWire"));
                *d.borrow_mut() = Some((
                    i.default_sink_name.as_deref().unwrap_or("").to_string(),
                    pipewire,
                ));
            });
        });
        intro.get_sink_info_list(move |r| {
            g2.run("sink list", || match r {
                ListResult::Item(i) => {
                    let name = i.name.as_deref().unwrap_or("").to_string();
                    let bark = is_bark_sink(&name, &i.proplist);
                    p.borrow_mut().push(SinkEntry { name, bark });
                }
                ListResult::End | ListResult::Error => {
                    *s.borrow_mut() = Some(std::mem::take(&mut *p.borrow_mut()));
                }
            });
        });
        self.step = Step::Choosing { default, sinks };
    }

    fn start_stream(&mut self, lp: &Loop, cfg: &SourceConfig, sink: &str) -> Result<()> {
        let spec = Spec {
            format: Format::FLOAT32NE,
            rate: cfg.rate,
            channels: cfg.channels,
        };
        let mut pl = Proplist::new().ok_or_else(|| anyhow!("cannot create a property list"))?;
        let _ = pl.set_str(pulse::proplist::properties::MEDIA_NAME, &cfg.description);
        let _ = pl.set_str(pulse::proplist::properties::MEDIA_ROLE, "music");
        let _ = pl.set_str("node.name", &cfg.name);
        let _ = pl.set_str("bark.role", "receiver");
        let mut s = Stream::new_with_proplist(&mut self.conn.ctx, &cfg.name, &spec, None, &mut pl)
            .ok_or_else(|| anyhow!("cannot create the playback stream: {}", self.conn.error()))?;
        let notes = Rc::new(StreamNotes::default());
        let (n1, n2, n3, n4) = (notes.clone(), notes.clone(), notes.clone(), notes.clone());
        let (g1, g2, g3, g4) = (
            lp.guard.clone(),
            lp.guard.clone(),
            lp.guard.clone(),
            lp.guard.clone(),
        );
        s.set_state_callback(Some(Box::new(move || {
            g1.run("stream state", || n1.state_changed.set(true));
        })));
        // With prebuf = 0 an underrun keeps every frame's slot in time
        // (the late ones are dropped), so the estimate stays; only count it.
        s.set_underflow_callback(Some(Box::new(move || {
            g2.run("underflow", || n2.underflow.set(true));
        })));
        // A move or a suspend puts the stream on another play-out clock:
        // start the estimate again.
        s.set_moved_callback(Some(Box::new(move || {
            g3.run("moved", || n3.reset.set(true));
        })));
        s.set_suspended_callback(Some(Box::new(move || {
            g4.run("suspended", || n4.reset.set(true));
        })));
        let tlength = spec.usec_to_bytes(pulse::time::MicroSeconds(cfg.buffer_ns / 1000)) as u32;
        let attr = BufferAttr {
            maxlength: u32::MAX,
            tlength,
            // Play as soon as connected and never pause on an underrun:
            // frames keep their slot in time, so an underrun costs the
            // late frames only, not a shift of everything after.
            prebuf: 0,
            minreq: u32::MAX,
            fragsize: u32::MAX,
        };
        let flags = StreamFlags::ADJUST_LATENCY | StreamFlags::START_UNMUTED;
        s.connect_playback(Some(sink), Some(&attr), flags, None, None)
            .map_err(|e| anyhow!("cannot play into {sink:?}: {e}"))?;
        self.stream = Some(s);
        self.notes = notes;
        self.sink_name = sink.to_owned();
        self.written = 0;
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
            s.set_underflow_callback(None);
            s.set_moved_callback(None);
            s.set_suspended_callback(None);
            let _ = s.disconnect();
        }
    }

    /// Timing reports and audio writes.
    fn service_stream(&mut self, lp: &Loop, net: &mut Net, cfg: &SourceConfig) {
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        if s.get_state() != StreamState::Ready {
            return;
        }
        let ch = cfg.channels as usize;
        let frame_bytes = 4 * ch;
        let now = monotonic_ns();
        if self.notes.underflow.replace(false) {
            self.underflows += 1;
            log::debug!("playback underflow ({} so far)", self.underflows);
        }
        if self.notes.reset.replace(false) {
            log::debug!("stream moved or (un)suspended: restarting the play-out estimate");
            if self.fc.is_valid() {
                self.fallback = Some(self.fc.clone());
            }
            self.fc.reset();
            self.timing_gen += 1;
        }
        if let Some(gen) = self.notes.timing.take() {
            self.timing_in_flight = false;
            if gen == self.timing_gen {
                if let Some(ti) = s.get_timing_info() {
                    let pair = ClockPair::now();
                    let info = Info::from_pa(ti);
                    let mut report = info.playback(&pair, self.written, frame_bytes, cfg.rate);
                    if self.pipewire {
                        if let Some(ri) = info.read_index {
                            self.quantum.observe(ri, frame_bytes);
                        }
                        // Until the quantum is known the report is useless.
                        report = match (report, self.quantum.frames()) {
                            (Some(mut r), Some(q)) => {
                                let q_ns = q as f64 * 1e9 / cfg.rate as f64;
                                r.play_ns += q_ns;
                                // Its reports scatter by up to a quantum.
                                self.fc.set_step_ns(1.5 * q_ns);
                                Some(r)
                            }
                            _ => None,
                        };
                    }
                    if let Some(r) = report {
                        if self.fc.add(r.t_ns, r.frame, r.play_ns) {
                            log::debug!("play-out clock stepped; restarted its estimate");
                        }
                        self.fallback = None;
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
                    n.timing.set(Some(if ok { gen } else { u64::MAX }))
                });
            })));
            self.timing_in_flight = true;
        }
        let Some(writable) = s.writable_size() else {
            return;
        };
        let mut frames = writable / frame_bytes;
        while frames > 0 {
            let n = frames.min(MAX_WRITE_FRAMES);
            let out = &mut self.scratch[..n * ch];
            let est = self.fc.play_ns(self.written, now).or_else(|| {
                self.fallback
                    .as_ref()
                    .and_then(|f| f.play_ns(self.written, now))
            });
            if est.is_some_and(|t| {
                t < now as f64 - MAX_PLAY_BEHIND_NS || t > now as f64 + MAX_PLAY_AHEAD_NS
            }) {
                // A write is heard after the stream's buffer, never long
                // before or after: the estimate is wrong. Start again.
                log::debug!("play time estimate out of bounds; restarting it");
                self.fc.reset();
                self.fallback = None;
                self.timing_gen += 1;
            }
            let est = self.fc.play_ns(self.written, now).or_else(|| {
                self.fallback
                    .as_ref()
                    .and_then(|f| f.play_ns(self.written, now))
            });
            match est {
                Some(t) if t > 0.0 => {
                    // Filled now, heard at `t`: what follows the stream
                    // (its buffer, the sink, the device) is the output's
                    // downstream latency.
                    let downstream = (t - now as f64).max(0.0) as u64;
                    net.ep.fill(net.clock.map(t as u64), downstream, out)
                }
                // No estimate yet (the first ~10 ms of a stream): silence.
                _ => out.fill(0.0),
            }
            let bytes = f32_bytes(out);
            if s.write_copy(bytes, 0, SeekMode::Relative).is_err() {
                break;
            }
            self.written += n as u64;
            frames -= n;
        }
    }
}

/// The bytes of `s`, native endian (the stream is FLOAT32NE).
fn f32_bytes(s: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any bit pattern is a valid u8; the
    // length is the same memory, 4 bytes per sample; u8 needs no alignment.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
}

/// Runs the receiver until SIGINT/SIGTERM.
///
/// # Errors
/// Setup failures (sockets) and panics.
pub fn run(cfg: SourceConfig) -> Result<()> {
    let host = bark_io::node::hostname();
    let clock = ClockMap::from_env(monotonic_ns()).map_err(|e| anyhow!(e))?;
    if !clock.is_identity() {
        log::warn!("test clock skew active ({})", crate::clock::TEST_CLOCK_ENV);
    }
    let node_id = bark_io::node::random_nonzero_u64();
    let key = crate::keyed::load(cfg.key_file.as_deref())?;
    // Status goes to the group, where `bark stats` and the other nodes
    // listen (to a unicast address it would only reach us), and to the
    // followed sender.
    let ep = ReceiverEndpoint::new(
        cfg.receiver_config(node_id, host),
        key.as_ref(),
        cfg.group.ip().is_multicast(),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let (group, control) = net::receiver_sockets(&cfg).context("setting up the network")?;
    log::info!(
        "{}; control port {}, node {node_id:016x}{}",
        cfg.summary(),
        control.local_addr()?.port(),
        key.as_ref()
            .map(|k| format!(", key id {}", k.id()))
            .unwrap_or_default()
    );
    let mut net = Net {
        ep,
        group,
        control,
        group_addr: cfg.group.into(),
        clock,
        send_errors: 0,
        warnings: Warnings::default(),
    };
    let mut lp = Loop::new(FAST_INTERVAL_NS / 1000)?;
    log::debug!("scheduling: {}", pa::raise_priority());
    let _w1 = lp.watch_readable(net.group.fd())?;
    let _w2 = lp.watch_readable(net.control.fd())?;
    let mut backoff = Backoff::default();
    let mut session: Option<Session> = None;
    let mut retry_at = Instant::now();
    let mut last_report = Instant::now();
    let mut was_playing = false;
    let mut last_session = None;
    let result = loop {
        if let Some(sig) = lp.quit_signal() {
            log::info!("signal {sig}: stopping");
            break Ok(());
        }
        if lp.guard.tripped() {
            break Err(anyhow!("a callback panicked (see above)"));
        }
        net.pump();
        // The core wants a call at least every 2 ms while it syncs its
        // clock; once playing, its busy-network pace (10 ms) suffices.
        lp.set_tick_us(if net.ep.receiver().playing() {
            BUSY_INTERVAL_NS / 2 / 1000
        } else {
            FAST_INTERVAL_NS / 1000
        });
        if session.is_none() && Instant::now() >= retry_at {
            match Conn::connect(&lp, "Bark", "receiver", cfg.server.as_deref()) {
                Ok(c) => session = Some(Session::new(c, cfg.rate, cfg.channels as usize)),
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
                if let Err(e) = s.step(&lp, &cfg) {
                    break Err(e);
                }
                if matches!(s.step, Step::Streaming) {
                    backoff.reset();
                }
                s.service_stream(&lp, &mut net, &cfg);
            }
        }
        let playing = net.ep.receiver().playing();
        if playing != was_playing || net.ep.receiver().session() != last_session {
            if playing {
                let f = net.ep.receiver().format();
                log::info!(
                    "playing session {:016x}{}",
                    net.ep.receiver().session().unwrap_or(0),
                    f.map(|f| format!(
                        " ({} {} Hz {} ch)",
                        SampleFormat::name(f.sample),
                        f.rate,
                        f.channels
                    ))
                    .unwrap_or_default()
                );
            } else if was_playing {
                log::info!("stopped playing (sender gone or changed)");
            }
            was_playing = playing;
            last_session = net.ep.receiver().session();
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            let k = net.ep.receiver().counters();
            log::debug!(
                "playing {}: sync error {} us, buffer {} us, lost {}, late {}, underruns {}, jumps {}, malformed {}, dropped by authentication {}; play-out drift {:.1} ppm, estimate restarts {}",
                playing,
                k.sync_error_ns / 1000,
                k.buffer_us,
                k.lost,
                k.late,
                k.underruns,
                net.ep.receiver().jumps(),
                net.ep.wire().counts().malformed,
                net.ep.wire().auth().total(),
                session.as_ref().map_or(0.0, |s| s.fc.drift_ppm()),
                session.as_ref().map_or(0, |s| s.fc.resets()),
            );
        }
        if let Err(e) = lp.iterate() {
            break Err(e);
        }
    };
    if let Some(mut s) = session.take() {
        s.drop_stream();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, bark: bool) -> SinkEntry {
        SinkEntry {
            name: name.into(),
            bark,
        }
    }

    #[test]
    fn never_plays_into_a_bark_sink_by_default() {
        let sinks = [e("bark_sink", true), e("speaker", false), e("hdmi", false)];
        assert_eq!(
            choose_sink(None, "speaker", &sinks).as_deref(),
            Some("speaker")
        );
        assert_eq!(
            choose_sink(None, "bark_sink", &sinks).as_deref(),
            Some("speaker")
        );
        assert_eq!(
            choose_sink(Some("hdmi"), "speaker", &sinks).as_deref(),
            Some("hdmi")
        );
        assert_eq!(
            choose_sink(None, "bark_sink", &[e("bark_sink", true)]),
            None
        );
    }

    #[test]
    fn recognizes_bark_sinks() {
        let mut pl = Proplist::new().unwrap();
        assert!(!is_bark_sink("speaker", &pl));
        pl.set_str(PID_PROP, "12").unwrap();
        assert!(is_bark_sink("anything", &pl));
        let mut pw = Proplist::new().unwrap();
        pw.set_str("node.link-group", "bark").unwrap();
        assert!(is_bark_sink("bark_sink", &pw));
    }
}

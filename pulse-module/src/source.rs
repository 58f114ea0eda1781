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

use crate::clock::{monotonic_ns, realtime_ns, ClockMap};
use crate::config::SourceConfig;
use crate::config::DEFAULT_TTL;
use crate::driver::{self, Role, SessionOf, Start};
use crate::frameclock::FrameClock;
use crate::keyed::Warnings;
use crate::pa::{self, Conn, Loop, Slot};
use crate::session::{Session, Step};
use crate::sink::PID_PROP;
use anyhow::{anyhow, Context as _, Result};
use bark_core::endpoint::ReceiverEndpoint;
use bark_core::latency::LateNote;
use bark_core::protocol::Role as ProtoRole;
use bark_core::receiver::{BUSY_INTERVAL_NS, FAST_INTERVAL_NS};
use bark_core::SampleFormat;
use bark_io::command::{CommandPort, Identity};
use bark_io::net::{self, FrontEnd, UdpSocket};
use libpulse_binding as pulse;
use pulse::callbacks::ListResult;
use pulse::def::BufferAttr;
use pulse::proplist::{properties, Proplist};
use pulse::stream::{FlagSet as StreamFlags, SeekMode};
use pulse::time::MicroSeconds;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Most datagrams handled per socket per loop turn.
const MAX_RX_PER_TURN: usize = 64;
/// Most datagrams the receiver may send per loop turn.
const MAX_TX_PER_TURN: usize = 16;
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
    /// Commands, and the stream's volume, mute and name.
    remote: crate::remote::Remote,
    /// The DNS-SD advertisement, while running.
    _advert: Option<bark_io::discovery::Advertiser>,
    /// `unicast`: the search for the sender of its stream.
    finder: Option<bark_io::discovery::SenderFinder>,
}

impl Net {
    /// `unicast`: subscribes to the sender found (again when it changes).
    fn find_sender(&mut self) {
        if let Some((to, line)) = self.finder.as_mut().and_then(|f| f.poll_logged()) {
            log::info!("{line}");
            self.ep.subscribe_to(to);
        }
    }

    /// Serves the command socket; the receiver takes what changed.
    fn serve_commands(&mut self) {
        if let Some(s) = self.remote.serve(monotonic_ns(), realtime_ns()) {
            let port = self.remote.port.port();
            self.ep.receiver_mut().set_settings(&s, port, false);
        }
    }

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

/// The receiver's own set-up step: server info (default sink) and the
/// sink list are on their way.
struct Choosing {
    /// Default sink, and whether the server is pipewire-pulse.
    default: Slot<(String, bool)>,
    sinks: Slot<Vec<SinkEntry>>,
}

/// The receiver's state of one connection.
struct Playing {
    /// Frames written to the stream.
    written: u64,
    /// The estimate before the last restart, used until the new one has
    /// its first report (~10 ms), so a move does not cost a gap.
    fallback: Option<FrameClock>,
    scratch: Vec<f32>,
    sink_name: String,
    underflows: u64,
}

impl Playing {
    /// When frame `written` is heard: the estimate, else the fallback.
    fn play_ns(&self, fc: &FrameClock, now: u64) -> Option<f64> {
        fc.play_ns(self.written, now).or_else(|| {
            self.fallback
                .as_ref()
                .and_then(|f| f.play_ns(self.written, now))
        })
    }
}

type S = SessionOf<Receiver>;

/// The receiver across connections: its settings, network side, and what
/// it last said about playing.
struct Receiver {
    cfg: SourceConfig,
    net: Net,
    was_playing: bool,
    last_session: Option<u64>,
    /// Whether it last played later than the session latency.
    was_late: bool,
}

impl Role for Receiver {
    type Setup = Choosing;
    type State = Playing;
    const NAME: &'static str = "receiver";
    const LOG_TARGET: &'static str = module_path!();

    fn server(&self) -> Option<&str> {
        self.cfg.server.as_deref()
    }

    fn open(&self, conn: Conn) -> S {
        let playing = Playing {
            written: 0,
            fallback: None,
            scratch: vec![0.0; MAX_WRITE_FRAMES * self.cfg.channels as usize],
            sink_name: String::new(),
            underflows: 0,
        };
        Session::new(conn, self.cfg.rate, self.cfg.channels, playing)
    }

    fn serve(&mut self, lp: &Loop) {
        self.net.pump();
        self.net.serve_commands();
        self.net.find_sender();
        // The core wants a call at least every 2 ms while it syncs its
        // clock; once playing, its busy-network pace (10 ms) suffices.
        lp.set_tick_us(if self.net.ep.receiver().playing() {
            BUSY_INTERVAL_NS / 2 / 1000
        } else {
            FAST_INTERVAL_NS / 1000
        });
    }

    /// Asks for the default sink and the sink list.
    fn begin(&mut self, s: &mut S, lp: &Loop) {
        let default = s.server_info(lp, |i| {
            i.default_sink_name.as_deref().unwrap_or("").to_string()
        });
        let sinks = pa::slot();
        let p = Rc::new(RefCell::new(Vec::new()));
        let (sl, g) = (sinks.clone(), lp.guard.clone());
        s.conn.ctx.introspect().get_sink_info_list(move |r| {
            g.run("sink list", || match r {
                ListResult::Item(i) => {
                    let name = i.name.as_deref().unwrap_or("").to_string();
                    let bark = is_bark_sink(&name, &i.proplist);
                    p.borrow_mut().push(SinkEntry { name, bark });
                }
                ListResult::End | ListResult::Error => {
                    *sl.borrow_mut() = Some(std::mem::take(&mut *p.borrow_mut()));
                }
            });
        });
        s.step = Step::Setup(Choosing { default, sinks });
    }

    /// Chooses the sink and plays into it, once the answers are in.
    fn setup(&mut self, s: &mut S, lp: &Loop) -> Result<()> {
        let Step::Setup(Choosing { default, sinks }) = &s.step else {
            return Ok(());
        };
        let (Some((d, pipewire)), Some(list)) = (default.borrow().clone(), sinks.borrow().clone())
        else {
            return Ok(());
        };
        if pipewire && !s.est.pipewire {
            log::info!("the server is pipewire-pulse: correcting its per-cycle timing reports by one quantum");
        }
        s.est.pipewire = pipewire;
        match choose_sink(self.cfg.sink.as_deref(), &d, &list) {
            Some(name) => {
                if list.iter().any(|e| e.name == name && e.bark) {
                    log::warn!("playing into {name:?}, a Bark sink: the stream will loop back to the network");
                } else if name != d {
                    log::info!("the default sink {d:?} is a Bark sink; playing into {name:?}");
                }
                self.start_stream(s, lp, &name)?;
            }
            None => {
                log::warn!("no sink to play into (only Bark sinks); looking again in 2 s");
                s.step = Step::Retry(Instant::now() + Duration::from_secs(2));
            }
        }
        Ok(())
    }

    fn ready(&mut self, s: &mut S) {
        let dev = s
            .stream
            .as_ref()
            .and_then(|st| st.get_device_name())
            .map(|d| d.into_owned())
            .unwrap_or_default();
        log::info!("playing into {dev:?}");
        self.net.remote.new_stream();
    }

    fn stopped(&mut self, s: &mut S) {
        log::warn!(
            "the playback stream into {:?} stopped ({}); setting up again",
            s.role.sink_name,
            s.conn.error()
        );
    }

    /// Timing reports and audio writes.
    fn service(&mut self, s: &mut S, lp: &Loop, now: u64) {
        let frame_bytes = s.frame_bytes();
        // With prebuf = 0 an underrun keeps every frame's slot in time
        // (the late ones are dropped), so the estimate stays; only count it.
        if s.notes.underflow.replace(false) {
            s.role.underflows += 1;
            log::debug!("playback underflow ({} so far)", s.role.underflows);
        }
        // A move or a suspend puts the stream on another play-out clock:
        // start the estimate again.
        let moved = s.notes.moved.replace(false);
        let suspended = s.notes.suspended.replace(false);
        if moved || suspended {
            log::debug!("stream moved or (un)suspended: restarting the play-out estimate");
            if s.est.fc.is_valid() {
                s.role.fallback = Some(s.est.fc.clone());
            }
            s.est.restart();
        }
        if let Some((info, pair)) = s.poll_timing(now, lp) {
            let (est, c) = (&mut s.est, &mut s.role);
            let mut report = info.playback(&pair, c.written, frame_bytes, s.spec.rate);
            if est.pipewire {
                // Until the quantum is known the report is useless.
                let q_ns = est.observe_quantum(info.read_index, frame_bytes);
                report = report.zip(q_ns).map(|(mut r, q_ns)| {
                    r.play_ns += q_ns;
                    r
                });
            }
            if let Some(r) = report {
                if est.fc.add(r.t_ns, r.frame, r.play_ns) {
                    log::debug!("play-out clock stepped; restarted its estimate");
                }
                c.fallback = None;
            }
        }
        self.write(s, now, frame_bytes);
        if let Some(st) = s.stream.as_mut() {
            let ch = self.cfg.channels;
            if let Some(local) = self.net.remote.sync(&s.conn.ctx, st, ch, lp) {
                let port = self.net.remote.port.port();
                self.net.ep.receiver_mut().set_settings(&local, port, false);
            }
        }
    }

    /// Says when the receiver starts or stops playing a session.
    fn after_turn(&mut self, _s: Option<&S>) {
        let r = self.net.ep.receiver();
        let playing = r.playing();
        if playing != self.was_playing || r.session() != self.last_session {
            if playing {
                log::info!(
                    "playing session {:016x}{}",
                    r.session().unwrap_or(0),
                    r.format()
                        .map(|f| format!(
                            " ({} {} Hz {} ch)",
                            SampleFormat::name(f.sample),
                            f.rate,
                            f.channels
                        ))
                        .unwrap_or_default()
                );
            } else if self.was_playing {
                log::info!("stopped playing (sender gone or changed)");
            }
            self.was_playing = playing;
            self.last_session = r.session();
        }
        let late = playing && r.late();
        if late != std::mem::replace(&mut self.was_late, late) {
            let note = LateNote::new(
                late,
                r.play_latency_ns(),
                r.session_latency_ns(),
                r.need_ns(),
                r.downstream_ns(),
            );
            if late {
                log::warn!("{note}");
            } else {
                log::info!("{note}");
            }
        }
    }

    fn report(&self, s: Option<&S>) {
        let ep = &self.net.ep;
        let k = ep.receiver().counters();
        log::debug!(
            "playing {}: sync error {} us, buffer {} us, lost {}, late {}, repaired {}, underruns {}, jumps {}, malformed {}, dropped by authentication {}; need {:.1} ms at a session latency of {:.1} ms; play-out drift {:.1} ppm, estimate restarts {}",
            ep.receiver().playing(),
            k.sync_error_ns / 1000,
            k.buffer_us,
            k.lost,
            k.late,
            k.repaired,
            k.underruns,
            ep.receiver().jumps(),
            ep.wire().counts().malformed,
            ep.wire().auth().total(),
            ep.receiver().need_ns() as f64 / 1e6,
            ep.receiver().session_latency_ns() as f64 / 1e6,
            s.map_or(0.0, |s| s.est.fc.drift_ppm()),
            s.map_or(0, |s| s.est.fc.resets()),
        );
    }

    fn close(&mut self, mut s: S, _lp: &mut Loop) {
        s.drop_stream();
    }
}

impl Receiver {
    fn start_stream(&self, s: &mut S, lp: &Loop, sink: &str) -> Result<()> {
        let cfg = &self.cfg;
        let props = [
            (properties::MEDIA_NAME, cfg.description.as_str()),
            (properties::MEDIA_ROLE, "music"),
            ("node.name", cfg.name.as_str()),
            ("bark.role", "receiver"),
        ];
        s.start_stream(lp, "playback", &cfg.name, &props, |st, spec| {
            let tlength = spec.usec_to_bytes(MicroSeconds(cfg.buffer_ns / 1000)) as u32;
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
            st.connect_playback(Some(sink), Some(&attr), flags, None, None)
                .map_err(|e| anyhow!("cannot play into {sink:?}: {e}"))
        })?;
        s.role.sink_name = sink.to_owned();
        s.role.written = 0;
        Ok(())
    }

    /// Fills what the stream can take for the instants it will be heard.
    /// No allocation.
    fn write(&mut self, s: &mut S, now: u64, frame_bytes: usize) {
        let Some(st) = s.stream.as_mut() else {
            return;
        };
        let Some(writable) = st.writable_size() else {
            return;
        };
        let (est, c) = (&mut s.est, &mut s.role);
        let ch = frame_bytes / 4;
        let mut frames = writable / frame_bytes;
        while frames > 0 {
            let n = frames.min(MAX_WRITE_FRAMES);
            if c.play_ns(&est.fc, now).is_some_and(|t| {
                t < now as f64 - MAX_PLAY_BEHIND_NS || t > now as f64 + MAX_PLAY_AHEAD_NS
            }) {
                // A write is heard after the stream's buffer, never long
                // before or after: the estimate is wrong. Start again.
                log::debug!("play time estimate out of bounds; restarting it");
                est.restart();
                c.fallback = None;
            }
            let play = c.play_ns(&est.fc, now);
            // After an underrun (the server was starved and its sink
            // rendered the missed time at once) the write index lies
            // behind the play position, and the server drops what lands
            // before it. Those frames are never heard: silence, and no
            // `fill`, which would count the whole catch-up as one output
            // quantum and report a need far above this output's own
            // (raising every receiver's latency for nothing).
            let past = play.map_or(0, |t| frames_behind(t, now, s.spec.rate, n));
            let n = if past > 0 { past } else { n };
            let out = &mut c.scratch[..n * ch];
            match play {
                Some(_) if past > 0 => out.fill(0.0),
                Some(t) if t > 0.0 => {
                    // Filled now, heard at `t`: what follows the stream
                    // (its buffer, the sink, the device) is the output's
                    // downstream latency.
                    let downstream = (t - now as f64).max(0.0) as u64;
                    let net = &mut self.net;
                    net.ep.fill(net.clock.map(t as u64), downstream, out)
                }
                // No estimate yet (the first ~10 ms of a stream): silence.
                _ => out.fill(0.0),
            }
            if st
                .write_copy(f32_bytes(out), 0, SeekMode::Relative)
                .is_err()
            {
                break;
            }
            c.written += n as u64;
            frames -= n;
        }
    }
}

/// How many of the `n` frames of a write whose first frame is heard at
/// `play_ns` lie before `now_ns` (the server drops them), at `rate` Hz.
fn frames_behind(play_ns: f64, now_ns: u64, rate: u32, n: usize) -> usize {
    let behind_ns = now_ns as f64 - play_ns;
    if behind_ns > 0.0 {
        ((behind_ns * f64::from(rate) / 1e9).ceil() as usize).min(n)
    } else {
        0
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
    let start = Start::load(cfg.key_file.as_deref(), Receiver::LOG_TARGET)?;
    let node_id = start.id;
    // Status goes to the group, where `bark stats` and the other nodes
    // listen (to a unicast address it would only reach us), and to the
    // followed sender.
    let mut ep = ReceiverEndpoint::new(
        cfg.receiver_config(node_id, start.host.clone()),
        start.key.as_ref(),
        cfg.group.ip().is_multicast(),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let configured = *ep.receiver().settings();
    let id = Identity {
        node_name: &cfg.name,
        description: &cfg.description,
        node_id,
        role: ProtoRole::Receiver,
        port: cfg.command_port,
    };
    // Its rate limit runs on the plain monotonic clock, not the test one.
    let (cmd, warning) = CommandPort::restored(
        &id,
        &configured,
        cfg.given(),
        start.key.as_ref(),
        monotonic_ns(),
    )
    .context("opening the command socket (command-port)")?;
    if let Some(w) = warning {
        log::warn!("{w}");
    }
    let initial = *cmd.responder().settings();
    ep.receiver_mut().set_settings(&initial, cmd.port(), false);
    let (advert, said) = bark_io::discovery::advertise(
        &cmd.advert(&cfg.name, None, start.key.as_ref()),
        cfg.sender.unwrap_or(cfg.configured_group),
        cfg.interface.as_deref(),
        &start.host,
        FrontEnd::Pulse,
        cfg.discovery,
    );
    log::info!("{said}");
    let finder = if cfg.unicast {
        let stream = initial.stream.as_str();
        let fe = FrontEnd::Pulse;
        let iface = cfg.interface.as_deref();
        Some(
            bark_io::discovery::SenderFinder::for_receiver(cfg.configured_group, iface, fe, stream)
                .map_err(|e| anyhow!("{e}"))?,
        )
    } else {
        None
    };
    let (group, control) = net::receiver_sockets(
        cfg.group,
        cfg.interface.as_deref(),
        DEFAULT_TTL,
        FrontEnd::Pulse,
    )
    .context("setting up the network")?;
    log::info!(
        "{}; control port {}, command port {}, node {node_id:016x}{}",
        cfg.summary(),
        control.local_addr()?.port(),
        cmd.port(),
        start.key_note()
    );
    let net = Net {
        ep,
        group,
        control,
        group_addr: cfg.group.into(),
        clock: start.clock,
        send_errors: 0,
        warnings: Warnings::default(),
        remote: crate::remote::Remote::new(cmd),
        _advert: advert,
        finder,
    };
    let mut receiver = Receiver {
        cfg,
        net,
        was_playing: false,
        was_late: false,
        last_session: None,
    };
    let mut lp = Loop::new(FAST_INTERVAL_NS / 1000)?;
    let _w1 = lp.watch_readable(receiver.net.group.fd())?;
    let _w2 = lp.watch_readable(receiver.net.control.fd())?;
    let _w3 = lp.watch_readable(receiver.net.remote.port.fd())?;
    driver::run(&mut receiver, &mut lp)
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
    fn a_write_behind_the_play_position_skips_only_the_past() {
        // 20 ms behind at 48 kHz: 960 frames are never heard.
        assert_eq!(frames_behind(980e6, 1_000_000_000, 48_000, 1920), 960);
        assert_eq!(frames_behind(980e6, 1_000_000_000, 48_000, 500), 500);
        assert_eq!(frames_behind(1_001e6, 1_000_000_000, 48_000, 1920), 0);
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

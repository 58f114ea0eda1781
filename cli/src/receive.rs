//! `bark receive`: the full receive path against a simulated output clock.
//!
//! One thread, one loop, as a PipeWire data loop would run it, around a
//! [`ReceiverEndpoint`] (which opens and seals datagrams, and paces the
//! status packets):
//! - datagrams from the group and control sockets go to
//!   [`ReceiverEndpoint::handle_datagram`] with their kernel arrival stamps;
//! - [`ReceiverEndpoint::poll_transmit`] is called after every read and
//!   at its own deadlines; what it returns goes out: time requests, NACKs
//!   and Hellos to the followed sender, status to it and to the group once
//!   a second (at once when this receiver needs more latency than the
//!   session gives);
//! - the simulated output device asks for one quantum every
//!   `quantum / rate` seconds of the local clock, exactly on schedule, as a
//!   sound card's clock would; each buffer is heard `--output-delay-msec`
//!   after its cycle starts, and [`ReceiverEndpoint::fill`] is told that
//!   instant and that downstream latency (from which the latency this
//!   receiver needs follows, reported to the sender).
//!
//! Between output cycles the loop waits on both sockets (`ppoll`) and on
//! the endpoint's next deadline. Timing does not need it (every datagram
//! carries its kernel arrival stamp), repair does: a lost packet has about
//! 20 ms at the default latency, and reading and asking only once a 5.3 ms
//! cycle left it two or three NACK rounds (5 of 15 500 losses unrepaired
//! with 32 receivers at 3 % loss; 0 since). The wake-ups this adds did not
//! add scheduling noise in that run: 32 receivers on 2 cores had fewer late
//! cycles (5 each, from 30) and the same sync error.
//!
//! The output clock's schedule is fixed in advance, so a late wake-up of this
//! process changes when a buffer is computed, never when it is heard: the
//! WAV and its timestamps are what a device with that clock would play. A
//! cycle computed after its own play time would have been an xrun on a real
//! device; those are counted (`late_cycles`).

use crate::cli::{OutputTarget, ReceiveArgs};
use crate::clock::{monotonic_ns, TestClock};
use crate::keyed::{wall_now, Auth};
use crate::net;
use crate::stamps::{Stamp, StampedWav};
use crate::summary::{self, traffic_json};
use crate::util;
use anyhow::{anyhow, Context, Result};
use bark_core::channels::Selection;
use bark_core::endpoint::{ReceiverEndpoint, STATUS_PERIOD_NS};
use bark_core::latency::LateNote;
use bark_core::netmodel::Rng;
use bark_core::ReceiverConfig;
use serde_json::json;
use std::net::{SocketAddr, SocketAddrV4};

/// Most datagrams read per socket per loop turn.
const MAX_RX_PER_TURN: usize = 256;
/// Most datagrams sent per loop turn.
const MAX_TX_PER_TURN: usize = 16;
/// Most overdue cycles caught up in one loop turn.
const MAX_CATCH_UP: usize = 64;
/// Most waits for datagrams in one turn of the loop (one per datagram
/// burst or due request, a few per cycle); past it the turn goes on to
/// the stop check and the cycles due, and the next turn waits again.
const MAX_WAITS_PER_TURN: usize = 256;
/// The shortest wait for datagrams, ns: a request the endpoint reports
/// due but does not send yet cannot make the loop spin.
const MIN_WAIT_NS: u64 = 100_000;

/// The endpoint and the sockets it is served on. Everything is allocated
/// before the first cycle (the waits on the sockets too: a poll set of two
/// is on the stack).
struct Link {
    ep: ReceiverEndpoint,
    /// Commands (`bark set`): read between cycles, applied to the
    /// receiver, volume and mute included (no audio server here).
    cmd: bark_io::command::CommandPort,
    /// `--unicast`: the search for the sender of its stream (DNS-SD).
    finder: Option<bark_io::discovery::SenderFinder>,
    gsock: net::UdpSocket,
    csock: net::UdpSocket,
    group: SocketAddrV4,
    clk: TestClock,
    auth: Auth,
    /// `--test-loss`: the draw and the share (0..1) of received datagrams
    /// dropped, and how many were.
    loss: Option<(Rng, f64, u64)>,
    /// Datagrams cut by a too-small buffer (cannot happen below 64 KiB).
    truncated: u64,
    send_errors: u64,
}

impl Link {
    /// Hands every queued datagram of both sockets to the endpoint. No
    /// allocation.
    fn drain(&mut self) {
        let wall = wall_now(self.ep.wire().keyed());
        for sock in [&mut self.gsock, &mut self.csock] {
            let d = sock.drain(MAX_RX_PER_TURN, |data, from, at| {
                if let Some((rng, p, n)) = self.loss.as_mut() {
                    if rng.chance(*p) {
                        *n += 1;
                        return;
                    }
                }
                let t = self.clk.map(at.mono_ns);
                if let Err(e) = self.ep.handle_datagram(t, wall, data, from.into()) {
                    self.auth.dropped(e, from, self.ep.wire().auth());
                }
            });
            net::tally(d, &mut self.truncated);
        }
    }

    /// Sends what the endpoint has to send now: time requests, status.
    /// No allocation.
    fn transmit(&mut self) {
        let poll = |b: &mut [u8]| {
            // t1 of a time request: read right before the send.
            let now = self.clk.map(monotonic_ns());
            self.ep
                .poll_transmit(now, wall_now(self.ep.wire().keyed()), b)
        };
        let sent = |r: std::io::Result<()>, to| {
            if let Err(e) = r {
                self.send_errors += 1;
                log::debug!("sending to {to}: {e}");
            }
        };
        self.csock
            .transmit(self.group.into(), MAX_TX_PER_TURN, poll, sent);
    }

    /// Applies the commands queued on the command socket.
    fn serve_commands(&mut self) {
        let now = monotonic_ns();
        // The rate limit runs on the plain monotonic clock.
        let (changed, warning) = self.cmd.serve(now, crate::clock::realtime_ns());
        if let Some(w) = warning {
            log::warn!("{w}");
        }
        if changed != 0 {
            let s = *self.cmd.responder().settings();
            log::info!("settings changed by a controller: {s:?}");
            self.ep
                .receiver_mut()
                .set_settings(&s, self.cmd.port(), true);
        }
    }

    /// `--unicast`: subscribes to the sender found (again when it
    /// changes).
    fn find_sender(&mut self) {
        if let Some((to, line)) = self.finder.as_mut().and_then(|f| f.poll_logged()) {
            log::info!("{line}");
            self.ep.subscribe_to(to);
        }
    }

    /// When the endpoint wants `poll_transmit` next, CLOCK_MONOTONIC ns.
    fn due(&self) -> u64 {
        self.clk.unmap(self.ep.poll_timeout())
    }
}

/// Runs `bark receive`.
///
/// # Errors
/// Bad settings, socket set-up, output file errors.
pub fn run(a: &ReceiveArgs) -> Result<()> {
    let stop = util::shutdown_flag()?;
    let start = monotonic_ns();
    let clk =
        TestClock::from_spec_or_env(a.run.test_clock.as_deref(), start).map_err(|e| anyhow!(e))?;
    let unicast = a.sender.is_some() || a.unicast;
    let group = bark_core::settings::listen_addr(a.net.source_ip, a.net.port, unicast);
    let ifname = a.net.local_ifname.as_deref();
    let node_id = bark_io::node::random_nonzero_u64();
    let auth = Auth::new(a.key.key_file.as_deref(), false)?;
    // Status goes to the group, where `bark stats` and the other nodes
    // listen (with a unicast address it would only reach this host), and
    // to the followed sender.
    let multicast = group.ip().is_multicast();
    let ep = ReceiverEndpoint::new(
        ReceiverConfig {
            rate: a.rate,
            channels: a.channels,
            latency_ns: a.latency_msec.map(|ms| (ms * 1e6).round() as u64),
            delay_ns: (a.delay_msec * 1e6).round() as i64,
            stream: a.stream.clone(),
            node_id,
            node_name: a.node_name.clone(),
            host: bark_io::node::hostname(),
            repair: a.repair,
            fec: a.fec,
            sender: a.sender.map(SocketAddr::V4),
            latency_floor_ns: bark_core::settings::latency_floor_ns(
                a.latency_min_msec.map(|ms| (ms * 1e6).round() as u64),
                &a.profile,
            ),
            // The output has the default layout of its channel count.
            layout: None,
            selection: Selection::parse(&a.play_channels).map_err(|e| anyhow!(e))?,
        },
        auth.key(),
        multicast,
    )
    .map_err(|e| anyhow!("{e}"))?;
    let (gsock, csock) = bark_io::net::receiver_sockets(group, ifname, a.ttl, net::NAMES)?;
    let mut ep = ep;
    let initial = *ep.receiver().settings();
    let cmd = bark_io::command::CommandPort::open(
        a.command_port,
        node_id,
        bark_core::protocol::Role::Receiver,
        initial,
        auth.key(),
        start,
    )
    .context("--command-port")?;
    ep.receiver_mut().set_settings(&initial, cmd.port(), true);
    let (_advert, said) = bark_io::discovery::advertise(
        &cmd.advert(&a.node_name, None, auth.key()),
        a.sender
            .unwrap_or(SocketAddrV4::new(a.net.source_ip, a.net.port)),
        ifname,
        &bark_io::node::hostname(),
        net::NAMES,
        a.discovery,
    );
    log::info!("{said}");
    let finder = if a.unicast && a.sender.is_none() {
        let configured = SocketAddrV4::new(a.net.source_ip, a.net.port);
        let stream = a.stream.as_deref().unwrap_or("");
        Some(
            bark_io::discovery::SenderFinder::for_receiver(configured, ifname, net::NAMES, stream)
                .map_err(|e| anyhow!("--unicast: {e}"))?,
        )
    } else {
        None
    };

    let ch = a.channels as usize;
    let q = a.quantum as usize;
    let period_ns = q as f64 * 1e9 / a.rate as f64;
    let out_delay_ns = a.output_delay_msec.map_or(period_ns, |ms| ms * 1e6);
    // The simulated device's latency is all this receiver adds after
    // `fill`: its downstream latency.
    let downstream_ns = out_delay_ns.round() as u64;
    let delay_frames = (out_delay_ns * a.rate as f64 / 1e9).round() as i64;
    let total_cycles = a
        .seconds
        .map(|s| (s * a.rate as f64 / q as f64).ceil() as u64);
    let mut wav = match &a.output {
        OutputTarget::Wav(p) => Some(StampedWav::create(
            p,
            a.rate,
            a.channels as u16,
            &format!(
                "bark receive {} node {node_id:016x} quantum {q} output-delay-ns {out_delay_ns:.0}",
                a.node_name
            ),
        )?),
        OutputTarget::Null => None,
    };
    log::info!(
        "receiving on {group}{}, control port {}, command port {}, output {} Hz {} ch, quantum {q} ({:.2} ms), output delay {:.2} ms, node {} ({node_id:016x}), {}{}",
        ifname.map(|i| format!(" via {i}")).unwrap_or_default(),
        csock.local_addr().map(|a| a.port()).unwrap_or(0),
        cmd.port(),
        a.rate,
        a.channels,
        period_ns / 1e6,
        out_delay_ns / 1e6,
        a.node_name,
        auth.describe(),
        if clk.is_identity() { "" } else { " [test clock]" },
    );
    let mut link = Link {
        ep,
        cmd,
        finder,
        gsock,
        csock,
        group,
        clk,
        auth,
        loss: a.test_loss.map(|pct| (Rng::new(node_id), pct / 100.0, 0)),
        truncated: 0,
        send_errors: 0,
    };

    let mut buf = vec![0f32; q * ch];
    let cycles_per_s = ((a.rate as usize / q).max(1)) as u64;
    // The first cycle starts one period from now on the local clock.
    let l0 = clk.map(start) as f64 + period_ns;
    let mut k: u64 = 0;
    let mut late_cycles: u64 = 0;
    let mut next_report = start;
    let mut was_playing = false;
    let mut was_late = false;
    let mut clock_resets = 0u64;
    // Packets lost or late so far, for the once-a-second note on new ones.
    let mut unrepaired = (0u64, 0u64);
    let mut abs_err_us: Vec<f32> = Vec::new();
    // With a test clock the truth is known if the sender runs on the real
    // clock (as in lab/test-robust.sh): the clock estimate's own error,
    // signed, about once a second (every rate / quantum cycles), so a lab
    // tells the clock's share of the skew from the output loop's.
    let mut clock_err_us: Vec<f32> = Vec::new();
    let mut playing_cycles = 0u64;
    let mut playing_late_cycles = 0u64;

    loop {
        if util::stopping(&stop) || total_cycles.is_some_and(|t| k >= t) {
            break;
        }
        let wake = clk.unmap((l0 + k as f64 * period_ns) as u64);
        // Datagrams as they come, requests when due (module docs: repair).
        for _ in 0..MAX_WAITS_PER_TURN {
            let now = monotonic_ns();
            if now >= wake {
                break;
            }
            // Bounded so that a signal is noticed within 100 ms.
            let until = wake
                .min(link.due().max(now + MIN_WAIT_NS))
                .min(now + 100_000_000);
            net::wait_readable(&[&link.gsock, &link.csock, link.cmd.socket()], until - now);
            link.drain();
            link.serve_commands();
            link.find_sender();
            link.transmit();
            if util::stopping(&stop) {
                break;
            }
        }
        link.drain();

        let now = monotonic_ns();
        for _ in 0..MAX_CATCH_UP {
            let cycle_local = l0 + k as f64 * period_ns;
            let wake = clk.unmap(cycle_local as u64);
            if now < wake || total_cycles.is_some_and(|t| k >= t) {
                break;
            }
            let play_local = (cycle_local + out_delay_ns) as u64;
            link.ep.fill(play_local, downstream_ns, &mut buf);
            let play_true = clk.unmap(play_local);
            if now > play_true {
                late_cycles += 1;
            }
            let r = link.ep.receiver();
            if r.playing() {
                playing_cycles += 1;
                playing_late_cycles += u64::from(r.late());
                abs_err_us.push((r.sync_error_ns().abs() / 1e3) as f32);
            }
            if !clk.is_identity() && k.is_multiple_of(cycles_per_s) {
                if let Some(e) = r.clock().estimate() {
                    let err = e.to_sender(play_local as i64) - play_true as f64;
                    clock_err_us.push((err / 1e3) as f32);
                }
            }
            if let Some(w) = wav.as_mut() {
                w.write(
                    &buf,
                    ch,
                    Stamp {
                        frame: k * q as u64,
                        frames: q as u32,
                        t_first_ns: play_true as i64,
                        now_ns: wake as i64,
                        delay_frames,
                        backlog: late_cycles.min(u32::MAX as u64) as u32,
                    },
                )
                .context("writing the output")?;
            }
            k += 1;
        }
        let r = link.ep.receiver();
        if r.playing() != was_playing {
            was_playing = r.playing();
            if was_playing {
                let f = r.format();
                log::info!(
                    "playing session {:016x}{} at {:.1} ms latency (downstream {:.1} ms, needs {:.1} ms)",
                    r.session().unwrap_or(0),
                    f.map(|f| format!(" ({} {} Hz {} ch)", f.sample.name(), f.rate, f.channels))
                        .unwrap_or_default(),
                    r.play_latency_ns() as f64 / 1e6,
                    downstream_ns as f64 / 1e6,
                    r.need_ns() as f64 / 1e6,
                );
            } else {
                log::info!("stopped playing (no stream, or clock not yet known)");
            }
        }
        if r.late() != was_late {
            was_late = r.late();
            let note = LateNote::new(
                was_late,
                r.play_latency_ns(),
                r.session_latency_ns(),
                r.need_ns(),
                downstream_ns,
            );
            if was_late {
                log::warn!("{note}");
            } else {
                log::info!("{note}");
            }
        }

        link.transmit();
        if now >= next_report {
            next_report = (next_report + STATUS_PERIOD_NS).max(now);
            let r = link.ep.receiver();
            if r.clock().resets() != clock_resets {
                clock_resets = r.clock().resets();
                log::warn!(
                    "the sender's clock stepped: clock sync restarted ({clock_resets} so far)"
                );
            }
            let c = r.counters();
            if (c.lost, c.late) != unrepaired {
                log::warn!(
                    "{} packets lost and {} late (not repaired in time) in the last second; {} repaired so far",
                    c.lost.saturating_sub(unrepaired.0),
                    c.late.saturating_sub(unrepaired.1),
                    c.repaired
                );
                unrepaired = (c.lost, c.late);
            }
            log::debug!(
                "sync error {:+.1} us, buffer {:.1} ms, latency {:.1} ms (session {:.1} ms, downstream {:.1} ms, need {:.1} ms{}), offset {:.1} us, rate {:+.3} ppm, exchange jitter {:.1} us, packets {} lost {} late {} repaired {} dup {} concealed {} underruns {}, late cycles {late_cycles}",
                c.sync_error_ns as f64 / 1e3,
                c.buffer_us as f64 / 1e3,
                r.play_latency_ns() as f64 / 1e6,
                c.latency_us as f64 / 1e3,
                c.downstream_us as f64 / 1e3,
                c.need_us as f64 / 1e3,
                if r.late() { ", LATE" } else { "" },
                c.clock_offset_ns as f64 / 1e3,
                c.rate_error_ppb as f64 / 1e3,
                r.clock().jitter_ns() / 1e3,
                c.packets,
                c.lost,
                c.late,
                c.repaired,
                c.duplicated,
                c.concealed_frames,
                c.underruns
            );
        }
    }
    // A subscriber says it leaves, so that the sender stops sending to it
    // now rather than when the lease runs out.
    link.ep.leave();
    link.transmit();

    let wall_s = (monotonic_ns() - start) as f64 * 1e-9;
    let cpu_s = util::cpu_seconds();
    let written = wav.as_ref().map_or(0, StampedWav::frames);
    if let Some(w) = wav.take() {
        w.finish().context("finishing the output file")?;
    }
    let r = link.ep.receiver();
    let c = r.counters();
    let counts = *link.ep.wire().counts();
    let rep = *r.repair();
    let fec = r.fec();
    let opus = r.opus();
    abs_err_us.sort_by(f32::total_cmp);
    let pct = |p: f64| -> Option<f32> {
        (!abs_err_us.is_empty())
            .then(|| abs_err_us[((abs_err_us.len() - 1) as f64 * p).round() as usize])
    };
    let run = summary::Run {
        role: "receiver",
        node_id,
        node_name: &a.node_name,
        wall_s,
        cpu_s,
    };
    log::info!(
        "done after {wall_s:.1} s: {} cycles ({} playing, {playing_late_cycles} of them late, {late_cycles} xruns), {} audio packets in, lost {}, late {}, repaired {}, underruns {}, |sync error| p50 {:.1} us p99 {:.1} us, latency {:.1} ms (downstream {:.1} ms, need {:.1} ms), CPU {:.1} %, {} datagrams dropped by authentication",
        k,
        playing_cycles,
        counts.rx_audio.packets,
        c.lost,
        c.late,
        c.repaired,
        c.underruns,
        pct(0.5).unwrap_or(f32::NAN),
        pct(0.99).unwrap_or(f32::NAN),
        r.play_latency_ns() as f64 / 1e6,
        c.downstream_us as f64 / 1e3,
        c.need_us as f64 / 1e3,
        run.cpu_percent(),
        link.ep.wire().auth().total(),
    );
    if let Some(path) = &a.run.summary {
        let v = json!({
            "cycles": k,
            "playing_cycles": playing_cycles,
            "playing_late_cycles": playing_late_cycles,
            "late_cycles": late_cycles,
            "frames_written": written,
            "jumps": r.jumps(),
            "clock_resets": r.clock().resets(),
            "clock_jitter_ns": r.clock().jitter_ns(),
            "clock_error_us": clock_err_us,
            "abs_sync_error_us": {
                "p50": pct(0.5), "p99": pct(0.99), "max": abs_err_us.last(),
            },
            "rx": {
                "audio": traffic_json(counts.rx_audio),
                "time_reply": traffic_json(counts.rx_time_reply),
                "sync": traffic_json(counts.rx_sync),
                "status": traffic_json(counts.rx_status),
                "cookie": traffic_json(counts.rx_cookie),
                "other": traffic_json(counts.rx_time_request),
                "malformed": counts.malformed + link.truncated,
                "test_loss_dropped": link.loss.as_ref().map_or(0, |l| l.2),
            },
            "auth": link.auth.counters_json(link.ep.wire().auth()),
            "tx": {
                "time_request": traffic_json(counts.tx_time_request),
                "status": traffic_json(counts.tx_status),
                "nack": traffic_json(counts.tx_nack),
                "hello": traffic_json(counts.tx_hello),
                "send_errors": link.send_errors,
            },
            "counters": {
                "rate_hz": c.rate,
                "latency_us": c.latency_us,
                "downstream_us": c.downstream_us,
                "need_us": c.need_us,
                "play_latency_us": c.play_latency_us,
                "playing_late": r.late(),
                "clock_offset_ns": c.clock_offset_ns,
                "rate_error_ppb": c.rate_error_ppb,
                "sync_error_ns": c.sync_error_ns,
                "buffer_us": c.buffer_us,
                "packets": c.packets,
                "lost": c.lost,
                "late": c.late,
                "duplicated": c.duplicated,
                "concealed_frames": c.concealed_frames,
                "underruns": c.underruns,
                "repaired": c.repaired,
                "repair": {
                    "missing": rep.missing,
                    "recovered": rep.recovered,
                    "resent": rep.resent,
                    "nacks": rep.nacks,
                    "asked": rep.asked,
                    "expired": rep.expired,
                    "overflow": rep.overflow,
                    "hellos": rep.hellos,
                    "cookies": rep.cookies,
                },
                "fec": {
                    "repairs": fec.repairs,
                    "blocks": fec.blocks,
                    "recovered": fec.recovered,
                    "refused": fec.refused,
                },
                // Opus packets decoded, concealed by the decoder (lost
                // for good), refused as invalid (all 0 for PCM).
                "opus": {
                    "decoded": opus.decoded,
                    "concealed": opus.concealed,
                    "invalid": opus.invalid,
                },
            },
            "subscription": link.ep.subscription().map(|s| {
                let c = s.counts();
                json!({
                    "sender": s.sender().to_string(),
                    "session": s.session().map(|id| format!("{id:016x}")),
                    "hellos": c.hellos,
                    "cookies": c.cookies,
                    "subscribes": c.subscribes,
                    "sessions": c.sessions,
                })
            }),
        });
        run.write(path, v)?;
    }
    Ok(())
}

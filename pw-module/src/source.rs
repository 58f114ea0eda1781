//! `libpipewire-module-bark-source`: the receiver. A playback stream (or a
//! virtual `Audio/Source`) fed by [`bark_core::Receiver`].
//!
//! Everything here runs on the data thread from `process`: feed queued
//! datagrams to the endpoint ([`bark_core::endpoint::ReceiverEndpoint`]),
//! send what it returns, then fill the buffer for the instant it will be
//! heard.

use crate::args::DEFAULT_TTL;
use crate::args::{Resampler, SourceArgs};
use crate::clock::{monotonic_ns, realtime_ns, ClockMap};
use crate::module::{LoadError, Setup};
use crate::pw::{self, Buffer};
use crate::stats::Counters;
use crate::timing::{play_ns, StreamTime};
use bark_core::command::Settings;
use bark_core::endpoint::ReceiverEndpoint;
use bark_core::protocol::PacketType;
use bark_core::protocol::Role;
use bark_core::ratematch::{pipewire_rate, RateMatchLoop};
use bark_core::ReceiverConfig;
use bark_io::command::{CommandPort, Identity};
use bark_io::net::{self, FrontEnd, UdpSocket};
use libspa_sys as spa;
use pipewire_sys as pws;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

/// Most datagrams handled per socket per `process` call.
const MAX_RX_PER_CYCLE: usize = 64;
/// Most datagrams the receiver may send per `process` call.
const MAX_TX_PER_CYCLE: usize = 16;

/// The receiver's data-thread state. Everything is allocated at load.
pub struct RtSource {
    ep: ReceiverEndpoint,
    group: UdpSocket,
    control: UdpSocket,
    group_addr: SocketAddr,
    clock: ClockMap,
    rate: u32,
    channels: usize,
    next_publish_ns: u64,
    timer_ns: u64,
    resampler: Resampler,
    rm: RateMatchLoop,
    buffer_min_us: i64,
    last_process_ns: u64,
    socket_wakeups: bool,
    /// The output quantum chosen for the configured latency, frames, when
    /// the receiver chooses it (`None`: `node.latency` in `stream.props`).
    default_quantum: Option<u32>,
    /// The quantum asked for now, frames, and whether the core still
    /// plans with it as a hint (until the buffers have that size).
    wanted_quantum: u32,
    hinting: bool,
}

/// Graph cycles this far apart (ns) or more count as stopped: the sockets
/// wake the data loop again.
const GRAPH_IDLE_NS: u64 = 100_000_000;
/// Timer period (ns) while no stream is followed: nothing to send but the
/// status packet; a new stream's first datagram wakes the loop itself.
const IDLE_TIMER_NS: u64 = 100_000_000;
/// Timer period (ns) while graph cycles run and do the socket work: a
/// watchdog that notices the graph stopping (then the sockets and a short
/// timer take over again).
const WATCHDOG_TIMER_NS: u64 = 50_000_000;
/// The watchdog's period (ns) while the sender answers NACKs: `process`,
/// which finds a lost packet, may run on another thread and cannot re-arm
/// this loop's timer, so the timer looks often enough for a missing packet
/// to get its NACK (and the resend its wake-up) within 5 ms of the cycle
/// that found it, not a 50 ms watchdog tick later.
const REPAIR_WATCH_TIMER_NS: u64 = 5_000_000;
/// Timer period (ns) while playing without graph cycles (a suspended or
/// stalled graph): the core's busy-network exchange pace, halved.
const STALLED_TIMER_NS: u64 = bark_core::receiver::BUSY_INTERVAL_NS / 2;

/// The `node.latency` the receiver asks of its graph unless `stream.props`
/// says otherwise: the largest power of two not above 55 % of the target
/// latency, between 64 and 1024 frames. A frame must have arrived one
/// output quantum before it is heard, so the quantum is bounded by the
/// latency; the other 45 % covers the sender's cycle and the network.
/// At 48 kHz that is 1024 frames at the default 40 ms (PipeWire's own
/// default quantum: the receiver forces no extra wake-ups on the graph;
/// the lab's least buffered audio at 1024 is 31 ms, docs/BENCHMARKS.md)
/// and 256 at 10 ms (the lab-tested low-latency quantum). The graph runs
/// at the smallest quantum any node asks for: a player that asks for 2048
/// frames (pw-play does) would otherwise stretch the quantum past a 40 ms
/// latency and starve the receiver.
/// Share of the target latency the default output quantum may take (see
/// [`output_quantum`]).
const QUANTUM_SHARE: f64 = 0.55;

fn output_quantum(a: &SourceArgs) -> String {
    format!("{}/{}", output_quantum_frames(a), a.rate)
}

fn output_quantum_frames(a: &SourceArgs) -> u32 {
    let latency = a
        .latency_ns
        .unwrap_or(bark_core::sender::DEFAULT_LATENCY_NS);
    let frames = (latency as f64 * QUANTUM_SHARE * a.rate as f64 / 1e9) as u32;
    let pow2 = if frames == 0 {
        64
    } else {
        1 << (31 - frames.leading_zeros())
    };
    pow2.clamp(64, 1024)
}

/// Checks the arguments, opens the sockets and builds the receiver.
pub fn setup(a: &SourceArgs, clock: ClockMap, host: &str) -> Result<(RtSource, Setup), LoadError> {
    let (node_id, key) =
        crate::args::id_and_key(a.key_file.as_deref()).map_err(LoadError::invalid)?;
    // Status goes to the group, where `bark stats` and the other nodes
    // listen (with a unicast address it would only reach us), and to the
    // followed sender.
    let ep = ReceiverEndpoint::new(
        ReceiverConfig {
            rate: a.rate,
            channels: a.channels,
            latency_ns: a.latency_ns,
            delay_ns: a.delay_ns,
            stream: a.stream.clone(),
            node_id,
            node_name: a.node_name.clone(),
            host: host.to_owned(),
            repair: a.repair,
            fec: a.fec,
            sender: a.sender.map(SocketAddr::V4),
            latency_floor_ns: a.latency_floor_ns,
            layout: crate::format::layout(&a.positions),
            selection: a.selection,
        },
        key.as_ref(),
        a.group.ip().is_multicast(),
    )
    .map_err(|e| LoadError::invalid(e.to_string()))?;
    let mut ep = ep;
    let configured = *ep.receiver().settings();
    let id = Identity {
        node_name: &a.node_name,
        description: &a.node_description,
        node_id,
        role: Role::Receiver,
        port: a.command_port,
    };
    // The command port's rate limit runs on the plain monotonic clock
    // (the main loop serves it so), not the test clock.
    let (command, warning) =
        CommandPort::restored(&id, &configured, a.given, key.as_ref(), monotonic_ns())
            .map_err(LoadError::io)?;
    if let Some(w) = warning {
        crate::log_warn!("{}: {w}", a.node_name);
    }
    let initial = *command.responder().settings();
    ep.receiver_mut()
        .set_settings(&initial, command.port(), false);
    let (advert, said) = bark_io::discovery::advertise(
        &command.advert(&a.node_name, None, key.as_ref()),
        a.sender.unwrap_or(a.configured_group),
        a.ifname.as_deref(),
        host,
        FrontEnd::PipeWire,
        a.discovery,
    );
    let finder = if a.unicast {
        let (stream, iface) = (initial.stream.as_str(), a.ifname.as_deref());
        let fe = FrontEnd::PipeWire;
        Some(
            bark_io::discovery::SenderFinder::for_receiver(a.configured_group, iface, fe, stream)
                .map_err(LoadError::invalid)?,
        )
    } else {
        None
    };
    let (group, control) = net::receiver_sockets(
        a.group,
        a.ifname.as_deref(),
        DEFAULT_TTL,
        FrontEnd::PipeWire,
    )
    .map_err(LoadError::io)?;
    let ctl = control.local_addr().map_err(LoadError::io)?;

    let mut props = crate::node_props(
        a.stream_props.as_deref(),
        &a.node_name,
        initial.name.as_str(),
        a.class.media_class(),
        a.rate,
        a.channels,
    );
    // The quantum is the receiver's to choose unless stream.props sets it:
    // it shrinks to keep the session latency when the output adds delay
    // (core's plan_quantum), applied from the main loop.
    let default_quantum = props
        .get("node.latency")
        .is_none()
        .then(|| output_quantum_frames(a));
    props.set_default("node.latency", &output_quantum(a));

    let security = bark_io::keyfile::describe(key.as_ref(), false, "bark.key-file");
    let info = format!(
        "{} ({}, {}) listening on {}{}, control port {}, command port {} ({said}), output {} Hz {} ch, latency {}, delay {} ms, stream {}, resampler {}, node {node_id:016x}, {security}",
        a.node_description,
        a.node_name,
        a.class.media_class(),
        a.group,
        a.ifname.as_deref().map(|i| format!(" on {i}")).unwrap_or_default(),
        ctl.port(),
        command.port(),
        a.rate,
        a.channels,
        a.latency_ns.map_or("from sender".to_owned(), |l| format!("{} ms", l as f64 / 1e6)),
        a.delay_ns as f64 / 1e6,
        a.stream.as_deref().unwrap_or("(best)"),
        a.resampler.name(),
    );
    let rt = RtSource {
        ep,
        group,
        control,
        group_addr: a.group.into(),
        clock,
        rate: a.rate,
        channels: a.channels as usize,
        next_publish_ns: 0,
        timer_ns: bark_core::receiver::FAST_INTERVAL_NS,
        resampler: a.resampler,
        rm: RateMatchLoop::default(),
        buffer_min_us: i64::MAX,
        last_process_ns: 0,
        socket_wakeups: true,
        default_quantum,
        wanted_quantum: default_quantum.unwrap_or(0),
        hinting: false,
    };
    let setup = Setup {
        name: a.node_name.clone(),
        props,
        direction: spa::SPA_DIRECTION_OUTPUT,
        flags: pws::pw_stream_flags_PW_STREAM_FLAG_AUTOCONNECT
            | pws::pw_stream_flags_PW_STREAM_FLAG_MAP_BUFFERS
            | pws::pw_stream_flags_PW_STREAM_FLAG_RT_PROCESS,
        format_pod: crate::format::enum_format_pod(a.rate, &a.positions),
        rate: a.rate,
        channels: a.channels,
        info,
        command: Some(command),
        advert,
        finder,
    };
    Ok((rt, setup))
}

impl RtSource {
    /// Settings a controller (or the desktop's volume) changed, posted
    /// from the main loop: the receiver follows the new stream, delay and
    /// enabled, and reports them with the volume and mute (which
    /// PipeWire applies, in the stream's adapter). No allocation.
    pub fn apply_settings(&mut self, s: &Settings, port: u16) {
        self.ep.receiver_mut().set_settings(s, port, false);
    }

    /// Subscribes to a sender found with DNS-SD (`bark.unicast`), posted
    /// from the main loop. No allocation.
    pub fn subscribe_to(&mut self, to: SocketAddr) {
        self.ep.subscribe_to(to);
    }

    /// One graph cycle (data thread). No allocation, no blocking.
    /// `rate_match` is the adapter's rate-match area, or null.
    ///
    /// # Safety
    /// Only from the process callback of the live `stream`; `rate_match`
    /// null or the area the stream's `io_changed` gave.
    pub unsafe fn process(
        &mut self,
        stream: *mut pws::pw_stream,
        rate_match: *mut spa::spa_io_rate_match,
        c: &Counters,
    ) {
        self.pump(c);
        let now = monotonic_ns();
        self.last_process_ns = now;
        // SAFETY: the caller is the stream's process callback; the stream
        // is an output (the receiver plays).
        let Some(mut b) = (unsafe { Buffer::dequeue(stream, spa::SPA_DIRECTION_OUTPUT) }) else {
            return;
        };
        // SAFETY: live stream, data thread.
        let t = StreamTime::from(&unsafe { pw::stream_time(stream) });
        let play_local = play_ns(&t, self.rate, now);
        // How long before it is heard this buffer is filled: the graph's
        // downstream latency as PipeWire reports it (delay, queued and
        // resampler data), from the cycle start.
        let cycle = if t.now > 0 { t.now as u64 } else { now };
        let downstream = play_local.saturating_sub(cycle);
        let play = self.clock.map(play_local);
        self.plan_quantum(downstream, b.requested() as usize, c);
        let requested = b.requested() as usize;
        let ch = self.channels;
        let steer = self.resampler == Resampler::PipeWire && !rate_match.is_null();
        if let Some(out) = b.samples_mut() {
            let max_frames = out.len() / ch;
            let frames = if requested > 0 {
                requested.min(max_frames)
            } else {
                max_frames
            };
            if steer {
                let ratio = self.fill_rate_matched(play, downstream, &mut out[..frames * ch], c);
                // SAFETY: the adapter's area, valid while the stream is;
                // only the data thread writes it (the converter reads it
                // later in this same cycle).
                unsafe {
                    (*rate_match).rate = pipewire_rate(ratio, self.rate);
                    (*rate_match).flags |= spa::SPA_IO_RATE_MATCH_FLAG_ACTIVE;
                }
            } else {
                self.fill(play, downstream, &mut out[..frames * ch], c);
            }
            b.commit(frames, ch);
            b.set_size(frames as u64);
        }
    }

    /// `bark.resampler = pipewire`: fills `out` for the virtual clock of
    /// [`RateMatchLoop`] and returns the consumption ratio for PipeWire's
    /// resampler. `play_ns` is the real (mapped) time the buffer is heard,
    /// `downstream_ns` how long before that it is filled.
    pub fn fill_rate_matched(
        &mut self,
        play_ns: u64,
        downstream_ns: u64,
        out: &mut [f32],
        c: &Counters,
    ) -> f64 {
        let v = self.rm.virtual_time(play_ns);
        self.ep.fill(v, downstream_ns, out);
        Counters::bump(&c.cycles);
        self.note_buffer();
        let frames = out.len() / self.channels.max(1);
        let ratio = self.rm.advance_after_fill(self.ep.receiver(), frames);
        c.rate_match_ppb
            .store((self.rm.correction() * 1e9) as i64, Relaxed);
        ratio
    }

    /// The rate-match loop (`bark.resampler = pipewire`).
    pub fn rate_match_loop(&self) -> &RateMatchLoop {
        &self.rm
    }

    /// Fills `out` (interleaved) with what is heard from `play_ns` on, a
    /// (mapped) local CLOCK_MONOTONIC time, filled `downstream_ns` before
    /// that. No allocation.
    pub fn fill(&mut self, play_ns: u64, downstream_ns: u64, out: &mut [f32], c: &Counters) {
        self.ep.fill(play_ns, downstream_ns, out);
        Counters::bump(&c.cycles);
        self.note_buffer();
    }

    /// Chooses the output quantum for the downstream latency and the
    /// session latency (core's `plan_quantum`), publishes it for the main
    /// loop to ask the graph for, and has the core plan with it meanwhile.
    /// `frames` is this cycle's buffer size. No allocation.
    fn plan_quantum(&mut self, downstream_ns: u64, frames: usize, c: &Counters) {
        let Some(default) = self.default_quantum else {
            return;
        };
        let latency = self.ep.receiver().session_latency_ns();
        let want = bark_core::receiver::plan_quantum(latency, downstream_ns, self.rate, default);
        if c.wanted_quantum.load(Relaxed) == 0 {
            // The quantum asked at load, so that the main loop logs changes.
            c.wanted_quantum.store(self.wanted_quantum as u64, Relaxed);
        }
        if want != self.wanted_quantum {
            self.wanted_quantum = want;
            // For the main loop's log line, the figures it was chosen on.
            c.downstream_ns.store(downstream_ns as i64, Relaxed);
            c.latency_ns.store(latency as i64, Relaxed);
            c.wanted_quantum.store(want as u64, Relaxed);
            let ns = want as u64 * 1_000_000_000 / self.rate.max(1) as u64;
            self.ep.receiver_mut().set_quantum_hint_ns(Some(ns));
            self.hinting = true;
        } else if self.hinting && frames == want as usize {
            self.ep.receiver_mut().set_quantum_hint_ns(None);
            self.hinting = false;
        }
    }

    /// Keeps the least buffered audio of this status period.
    fn note_buffer(&mut self) {
        if self.ep.receiver().playing() {
            let b = self.ep.receiver().counters().buffer_us as i64;
            self.buffer_min_us = self.buffer_min_us.min(b);
        }
    }

    /// The period the data-loop timer should have at `now_ns`, ns: slow
    /// while no stream is followed (nothing to send; a datagram wakes the
    /// loop); the core's fast exchange pace until playback runs (clock sync
    /// at start or after a change of sender); while playing with graph
    /// cycles running, only a watchdog, because `process` then drains the
    /// sockets and sends the time requests that fell due (each request is
    /// stamped when sent, so sending it up to one quantum late costs no
    /// precision, and the ~40 timer wakeups a second are saved).
    pub fn timer_schedule(&self, now_ns: u64) -> u64 {
        if self.ep.receiver().session().is_none() {
            IDLE_TIMER_NS
        } else if !self.ep.receiver().playing() || self.ep.receiver().repair_pending() {
            // Also while packets are missing: their NACKs are due within
            // milliseconds, not at the next graph cycle.
            bark_core::receiver::FAST_INTERVAL_NS
        } else if self.graph_running(now_ns) {
            if self.ep.receiver().repair_armed() {
                REPAIR_WATCH_TIMER_NS
            } else {
                WATCHDOG_TIMER_NS
            }
        } else {
            STALLED_TIMER_NS
        }
    }

    fn graph_running(&self, now_ns: u64) -> bool {
        now_ns.saturating_sub(self.last_process_ns) < GRAPH_IDLE_NS
    }

    /// Whether datagrams should wake the data loop at `now_ns`. Not while
    /// the receiver plays and graph cycles run: `process` drains both
    /// sockets before every buffer and the timer at least every 25 ms, and
    /// arrival times are the kernel's receive stamps, so nothing is gained
    /// by handling each datagram at once, and some 300 wakeups a second are
    /// saved (one per audio packet and time reply).
    pub fn wants_socket_wakeups(&self, now_ns: u64) -> bool {
        // While packets are missing, a resend is drained as it arrives,
        // not up to a quantum later.
        !(self.ep.receiver().playing() && self.graph_running(now_ns))
            || self.ep.receiver().repair_pending()
    }

    /// Whether the sockets' sources currently wake the loop.
    pub fn socket_wakeups(&self) -> bool {
        self.socket_wakeups
    }

    /// Records whether the sockets' sources wake the loop.
    pub fn set_socket_wakeups(&mut self, on: bool) {
        self.socket_wakeups = on;
    }

    /// The period the timer was last set to, ns.
    pub fn current_interval_ns(&self) -> u64 {
        self.timer_ns
    }

    /// Records the period the timer was set to, ns.
    pub fn set_current_interval_ns(&mut self, ns: u64) {
        self.timer_ns = ns;
    }

    /// The sockets, for data-loop sources.
    pub fn fds(&self) -> [std::os::fd::RawFd; 2] {
        [self.group.fd(), self.control.fd()]
    }

    /// After a panic: output silence, touch nothing else.
    ///
    /// # Safety
    /// Only from the process callback of the live `stream`.
    pub unsafe fn idle(&mut self, stream: *mut pws::pw_stream) {
        // SAFETY: the caller is the stream's process callback; the stream
        // is an output (the receiver plays).
        if let Some(mut b) = unsafe { Buffer::dequeue(stream, spa::SPA_DIRECTION_OUTPUT) } {
            let ch = self.channels;
            if let Some(out) = b.samples_mut() {
                let frames = out.len() / ch;
                out.fill(0.0);
                b.commit(frames, ch);
            }
        }
    }

    /// Feeds queued datagrams to the endpoint, sends what it returns (time
    /// requests, status to the group and to the sender), and publishes the
    /// receiver's counters once a second.
    ///
    /// Runs from `process`, from the sockets' data-loop sources when a
    /// datagram arrives, and from the data-loop timer (so that time requests
    /// keep their pace when no graph cycle runs, e.g. an unrecorded
    /// `Audio/Source`). Data thread only; no allocation.
    pub fn pump(&mut self, c: &Counters) {
        for sock in [&mut self.group, &mut self.control] {
            let d = sock.drain(MAX_RX_PER_CYCLE, |data, from, at| {
                let t = self.clock.map(at.mono_ns);
                match self.ep.handle_datagram(t, at.real_ns, data, from.into()) {
                    Ok(PacketType::Audio) => Counters::bump(&c.audio_received),
                    Ok(_) => {}
                    Err(e) => c.count_drop(e, self.ep.wire().auth()),
                }
            });
            c.count_drain(&d);
        }
        c.playing.store(self.ep.receiver().playing(), Relaxed);
        let poll = |b: &mut [u8]| {
            let now = self.clock.map(monotonic_ns());
            self.ep.poll_transmit(now, realtime_ns(), b)
        };
        let sent = |r, _| c.count_send(r);
        self.control
            .transmit(self.group_addr, MAX_TX_PER_CYCLE, poll, sent);
        let now = monotonic_ns();
        if now >= self.next_publish_ns {
            self.next_publish_ns = now + bark_core::endpoint::STATUS_PERIOD_NS;
            self.publish(c);
        }
    }

    /// Copies the receiver's figures into the counters the main loop
    /// reports (data thread, once a second).
    fn publish(&mut self, c: &Counters) {
        let r = self.ep.receiver();
        let k = r.counters();
        c.lost.store(k.lost, Relaxed);
        c.late.store(k.late, Relaxed);
        c.repaired.store(k.repaired, Relaxed);
        c.underruns.store(k.underruns, Relaxed);
        c.buffer_us.store(k.buffer_us as i64, Relaxed);
        c.latency_ns.store(k.latency_us as i64 * 1000, Relaxed);
        c.need_ns.store(r.need_ns() as i64, Relaxed);
        c.downstream_ns
            .store(k.downstream_us as i64 * 1000, Relaxed);
        c.play_latency_ns.store(r.play_latency_ns() as i64, Relaxed);
        c.playing_late.store(r.late(), Relaxed);
        let min = std::mem::replace(&mut self.buffer_min_us, i64::MAX);
        c.buffer_min_us
            .store(if min == i64::MAX { -1 } else { min }, Relaxed);
        // With PipeWire's resampler the core's error is against the
        // virtual clock; the real output is off by the loop's error too.
        let rm_err = if self.resampler == Resampler::PipeWire && self.rm.locked() {
            self.rm.error_ns() as i64
        } else {
            0
        };
        c.sync_error_ns
            .store(k.sync_error_ns as i64 + rm_err, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args(pairs: &[(&str, &str)]) -> SourceArgs {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SourceArgs::parse(&m).unwrap()
    }

    #[test]
    fn output_quantum_fits_in_the_latency() {
        // 40 ms default: 22 ms = 1056 frames, down to 1024.
        assert_eq!(output_quantum(&args(&[])), "1024/48000");
        let q = |lat: &str, rate: &str| {
            output_quantum(&args(&[("sess.latency.msec", lat), ("audio.rate", rate)]))
        };
        assert_eq!(q("200", "48000"), "1024/48000");
        assert_eq!(q("2", "48000"), "64/48000");
        // 10 ms: 5.5 ms = 264 frames, down to 256; 30 ms: 792, down to 512.
        assert_eq!(q("10", "48000"), "256/48000");
        assert_eq!(q("30", "48000"), "512/48000");
        assert_eq!(q("40", "96000"), "1024/96000");
    }
}

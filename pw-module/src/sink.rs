//! `libpipewire-module-bark-sink`: the sender. An `Audio/Sink` stream named
//! "Bark Network" whose buffers go to the network through
//! [`bark_core::Sender`].
//!
//! Everything here runs on the data thread: `process` stamps and sends
//! the buffer; the socket's data-loop source and timer hand what arrives
//! to the endpoint and send what it returns (time replies, idle syncs,
//! status), through [`bark_core::endpoint::SenderEndpoint`].

use crate::args::SinkArgs;
use crate::clock::{monotonic_ns, realtime_ns, ClockMap};
use crate::module::{LoadError, Setup};
use crate::pw::{self, Buffer};
use crate::stats::Counters;
use bark_core::command::Settings;
use bark_core::endpoint::SenderEndpoint;
use bark_core::protocol::Role;
use bark_core::SenderConfig;
use bark_io::command::{CommandPort, Identity};
use bark_io::net::{self, FrontEnd, UdpSocket};
use libspa_sys as spa;
use pipewire_sys as pws;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

/// Most datagrams handled per wake-up, so that a flood cannot stall the
/// data thread.
const MAX_RX_PER_CYCLE: usize = 64;

/// The sender's data-thread state. Everything is allocated at load.
pub struct RtSink {
    ep: SenderEndpoint,
    sock: UdpSocket,
    dest: SocketAddr,
    clock: ClockMap,
}

/// Checks the arguments, opens the socket and builds the sender.
pub fn setup(a: &SinkArgs, clock: ClockMap, host: &str) -> Result<(RtSink, Setup), LoadError> {
    let (session_id, key) =
        crate::args::id_and_key(a.key_file.as_deref()).map_err(LoadError::invalid)?;
    let node_id = bark_io::node::random_nonzero_u64();
    let mut ep = SenderEndpoint::new(
        SenderConfig {
            format: a.format,
            stream: a.stream.clone(),
            priority: a.priority,
            latency_ns: a.latency_ns,
            max_latency_ns: a.max_latency_ns,
            mtu: a.mtu,
            session_id,
            node_name: a.node_name.clone(),
            host: host.to_owned(),
            sync_interval_ns: bark_core::sender::SYNC_INTERVAL_NS,
            // The cycle times are the driver's clock: smooth.
            input_step_ns: bark_core::sender::SMOOTH_INPUT_STEP_NS,
            repair: a.repair,
            fec: a.fec,
            layout: crate::format::layout(&a.positions),
            opus: a.opus,
        },
        key.as_ref(),
        a.encrypt,
        node_id,
    )
    .map_err(|e| LoadError::invalid(e.to_string()))?;
    if let Some(w) = ep.sender().fec_advice() {
        crate::log_warn!("{}: {w}", a.node_name);
    }
    ep.list_destinations(&a.net.copies)
        .map_err(|e| LoadError::invalid(e.to_string()))?;
    let sock = net::sender_socket(&a.net, FrontEnd::PipeWire).map_err(LoadError::io)?;
    let local = sock.local_addr().map_err(LoadError::io)?;
    let configured = *ep.sender().settings();
    let id = Identity {
        node_name: &a.node_name,
        description: &a.node_description,
        node_id,
        role: Role::Sender,
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
    ep.sender_mut().set_settings(&initial, command.port());

    let (advert, said) = bark_io::discovery::advertise(
        &command.advert(&a.node_name, Some(local.port()), key.as_ref()),
        a.net.destination,
        a.net.ifname.as_deref(),
        host,
        FrontEnd::PipeWire,
        a.discovery,
    );
    let mut props = crate::node_props(
        a.stream_props.as_deref(),
        &a.node_name,
        initial.name.as_str(),
        "Audio/Sink",
        a.format.rate,
        a.format.channels,
    );
    props.set("bark.stream", initial.stream.as_str());

    let security = bark_io::keyfile::describe(key.as_ref(), a.encrypt, "bark.key-file");
    let info = format!(
        "{} ({}) sending {} {} Hz {} ch to {} from {local}, command port {} ({said}), {} frames/packet, latency {} ms (rises to at most {} ms to cover receivers), session {session_id:016x}, {security}",
        a.node_description,
        a.node_name,
        a.format.sample.name(),
        a.format.rate,
        a.format.channels,
        a.net.targets(),
        command.port(),
        ep.sender().packet_frames(),
        a.latency_ns as f64 / 1e6,
        a.max_latency_ns.max(a.latency_ns) as f64 / 1e6,
    );
    let rt = RtSink {
        ep,
        sock,
        dest: a.net.destination.into(),
        clock,
    };
    let setup = Setup {
        name: a.node_name.clone(),
        props,
        direction: spa::SPA_DIRECTION_INPUT,
        flags: pws::pw_stream_flags_PW_STREAM_FLAG_AUTOCONNECT
            | pws::pw_stream_flags_PW_STREAM_FLAG_MAP_BUFFERS
            | pws::pw_stream_flags_PW_STREAM_FLAG_RT_PROCESS,
        format_pod: crate::format::enum_format_pod(a.format.rate, &a.positions),
        rate: a.format.rate,
        channels: a.format.channels,
        info,
        command: Some(command),
        advert,
        finder: None,
    };
    Ok((rt, setup))
}

impl RtSink {
    /// Settings a controller changed, posted from the main loop: the
    /// stream name and priority of the next packets, and what the status
    /// reports. No allocation.
    pub fn apply_settings(&mut self, s: &Settings, port: u16) {
        self.ep.sender_mut().set_settings(s, port);
    }

    /// One graph cycle (data thread): send the buffer, then serve the
    /// socket. No allocation, no blocking.
    ///
    /// # Safety
    /// Only from the process callback of the live `stream`.
    pub unsafe fn process(&mut self, stream: *mut pws::pw_stream, c: &Counters) {
        // SAFETY: the caller is the stream's process callback; the stream
        // is an input (the sink captures).
        if let Some(b) = unsafe { Buffer::dequeue(stream, spa::SPA_DIRECTION_INPUT) } {
            // SAFETY: live stream, data thread.
            let t = unsafe { pw::stream_time(stream) };
            let now = if t.now > 0 {
                t.now as u64
            } else {
                monotonic_ns()
            };
            if let Some(samples) = b.samples() {
                self.send_samples(now, samples, c);
            }
        }
        self.serve(c);
    }

    /// Stamps interleaved `samples` that entered the sink at local
    /// CLOCK_MONOTONIC `now_ns` and sends them. No allocation.
    pub fn send_samples(&mut self, now_ns: u64, samples: &[f32], c: &Counters) {
        let RtSink {
            ep,
            sock,
            dest,
            clock,
            ..
        } = self;
        let wall = if ep.wire().keyed() { realtime_ns() } else { 0 };
        // The audio is stamped with the cycle's start; the sync message
        // with the time it leaves (this callback runs later in the cycle).
        let clock = *clock;
        let mut send_ns = || clock.map(monotonic_ns());
        ep.push(
            clock.map(now_ns),
            &mut send_ns,
            wall,
            samples,
            &mut |pkt, to| c.count_send(sock.send_to(pkt, to.or_group(*dest))),
        );
        Counters::bump(&c.cycles);
    }

    /// The socket, for the data-loop source.
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.sock.fd()
    }

    /// After a panic: keep the graph going, touch nothing else.
    ///
    /// # Safety
    /// Only from the process callback of the live `stream`.
    pub unsafe fn idle(&mut self, stream: *mut pws::pw_stream) {
        // SAFETY: the caller is the stream's process callback; the stream
        // is an input (the sink captures).
        drop(unsafe { Buffer::dequeue(stream, spa::SPA_DIRECTION_INPUT) });
    }

    /// Hands queued datagrams to the endpoint and sends what it returns:
    /// time replies, sync messages while the sink is idle (they keep the
    /// receivers locked on this session, so the first frame after an idle
    /// span is heard at its instant), the periodic status packet. Runs
    /// from `process`, from the socket's data-loop source and from the
    /// timer, so that requests are answered when they arrive even while
    /// nothing plays. Data thread only; no allocation.
    pub fn serve(&mut self, c: &Counters) {
        let d = self.sock.drain(MAX_RX_PER_CYCLE, |data, from, at| {
            let t2 = self.clock.map(at.mono_ns);
            if let Err(e) = self.ep.handle_datagram(t2, at.real_ns, data, from.into()) {
                c.count_drop(e, self.ep.wire().auth());
            }
        });
        c.count_drain(&d);
        let poll = |b: &mut [u8]| {
            let now = self.clock.map(monotonic_ns());
            self.ep.poll_transmit(now, realtime_ns(), b)
        };
        let sent = |r, _| c.count_send(r);
        self.sock.transmit(self.dest, usize::MAX, poll, sent);
        let sl = self.ep.sender().session_latency();
        c.latency_ns.store(sl.current() as i64, Relaxed);
        let now = self.clock.map(monotonic_ns());
        if let Some((need, node)) = sl.largest_need(now) {
            c.need_ns.store(need as i64, Relaxed);
            c.need_node.store(node, Relaxed);
        }
        c.idle.store(self.ep.sender().idle(now), Relaxed);
        if let Some(r) = self.ep.resends() {
            c.repaired.store(r.resent, Relaxed);
        }
        c.subscribers.store(self.ep.fanout().len() as u64, Relaxed);
    }
}

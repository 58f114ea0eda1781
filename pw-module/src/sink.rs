//! `libpipewire-module-bark-sink`: the sender. An `Audio/Sink` stream named
//! "Bark Network" whose buffers go to the network through
//! [`bark_core::Sender`].
//!
//! Everything here runs on the data thread from `process`: stamp and send
//! the buffer, answer time requests, send a status packet once a second.

use crate::args::SinkArgs;
use crate::clock::{monotonic_ns, realtime_ns, ClockMap, ClockPair};
use crate::ffi::Properties;
use crate::module::{LoadError, Setup};
use crate::net::{self, UdpSocket};
use crate::pw::{self, Buffer};
use crate::stats::Counters;
use bark_core::auth::{self, Opener, Sealer};
use bark_core::protocol::{MAX_STATUS_LEN, TIME_LEN};
use bark_core::{Sender, SenderConfig};
use libspa_sys as spa;
use pipewire_sys as pws;
use socket2::SockAddr;

/// Most datagrams handled per `process` call, so that a flood cannot stall
/// the data thread.
const MAX_RX_PER_CYCLE: usize = 64;
/// Status packet period, ns.
const STATUS_PERIOD_NS: u64 = 1_000_000_000;

/// The sender's data-thread state. Everything is allocated at load.
pub struct RtSink {
    sender: Sender,
    sock: UdpSocket,
    dest: SockAddr,
    clock: ClockMap,
    node_id: u64,
    rx: Vec<u8>,
    reply: [u8; TIME_LEN + auth::OVERHEAD],
    status: Vec<u8>,
    next_status_ns: u64,
    /// Seals what we send (a no-op without `bark.key-file`).
    sealer: Sealer,
    /// Opens what we receive (drops sealed datagrams without a key).
    opener: Opener,
    /// An audio packet being sealed: the core's packet plus the trailer.
    tx: Vec<u8>,
}

/// Checks the arguments, opens the socket and builds the sender.
pub fn setup(a: &SinkArgs, clock: ClockMap, host: &str) -> Result<(RtSink, Setup), LoadError> {
    let session_id = crate::random_nonzero_u64();
    let key = crate::args::load_key(a.key_file.as_deref()).map_err(LoadError::invalid)?;
    let (sealer, opener) = match &key {
        Some(k) => (
            Sealer::new(k, a.encrypt)
                .map_err(|e| LoadError::invalid(format!("no randomness: {e}")))?,
            Opener::new(k),
        ),
        None => (Sealer::keyless(), Opener::keyless()),
    };
    // The trailer takes room from the audio: fewer frames per packet, so
    // that sealed datagrams still fit net.mtu.
    let overhead = sealer.overhead();
    let sender = Sender::new(SenderConfig {
        format: a.format,
        stream: a.stream.clone(),
        priority: a.priority,
        latency_ns: a.latency_ns,
        mtu: a.mtu.saturating_sub(overhead),
        session_id,
        node_name: a.node_name.clone(),
        host: host.to_owned(),
        sync_interval_ns: bark_core::sender::SYNC_INTERVAL_NS,
        // The cycle times are the driver's clock: smooth.
        input_step_ns: bark_core::sender::SMOOTH_INPUT_STEP_NS,
    })
    .map_err(|e| {
        LoadError::invalid(if overhead > 0 {
            format!("{e} (net.mtu less the {overhead}-byte authentication trailer)")
        } else {
            e.to_string()
        })
    })?;
    let sock = net::sender_socket(a).map_err(LoadError::io)?;
    let local = sock.local_addr().map_err(LoadError::io)?;

    let mut props = Properties::new();
    // Users' stream.props first, so that ours cannot be overridden into
    // something that is not a sink.
    if let Some(sp) = &a.stream_props {
        props.update_json(sp);
    }
    props.set("node.name", &a.node_name);
    props.set("node.description", &a.node_description);
    props.set("media.class", "Audio/Sink");
    props.set_default("media.name", &a.node_description);
    // WirePlumber never links nodes of one link group to each other: this
    // keeps a receiver from playing into a Bark sink on the same host (a
    // feedback loop), even when that sink is the default.
    props.set_default("node.link-group", crate::LINK_GROUP);
    props.set("audio.rate", &a.format.rate.to_string());
    props.set("audio.channels", &a.format.channels.to_string());
    props.set("bark.stream", &a.stream);

    let security = match &key {
        Some(k) if a.encrypt => format!("authenticated and encrypted, key id {}", k.id()),
        Some(k) => format!("authenticated, key id {}", k.id()),
        None => "open (no bark.key-file)".to_owned(),
    };
    let info = format!(
        "{} ({}) sending {} {} Hz {} ch to {} from {local}, {} frames/packet, latency {} ms, session {session_id:016x}, {security}",
        a.node_description,
        a.node_name,
        a.format.sample.name(),
        a.format.rate,
        a.format.channels,
        a.destination,
        sender.packet_frames(),
        a.latency_ns as f64 / 1e6,
    );
    let tx_len = bark_core::protocol::AUDIO_HEADER_LEN
        + sender.packet_frames() * a.format.frame_bytes()
        + overhead;
    let rt = RtSink {
        sender,
        sock,
        dest: a.destination.into(),
        clock,
        node_id: crate::random_nonzero_u64(),
        tx: vec![0; tx_len],
        rx: vec![0; 65_536],
        reply: [0; TIME_LEN + auth::OVERHEAD],
        status: vec![0; MAX_STATUS_LEN + auth::OVERHEAD],
        next_status_ns: 0,
        sealer,
        opener,
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
    };
    Ok((rt, setup))
}

impl RtSink {
    /// One graph cycle (data thread): send the buffer, then serve the
    /// socket. No allocation, no blocking.
    ///
    /// # Safety
    /// Only from the process callback of the live `stream`.
    pub unsafe fn process(&mut self, stream: *mut pws::pw_stream, c: &Counters) {
        // SAFETY: the caller is the stream's process callback.
        if let Some(mut b) = unsafe { Buffer::dequeue(stream) } {
            // SAFETY: live stream, data thread.
            let t = unsafe { pw::stream_time(stream) };
            let now = if t.now > 0 {
                t.now as u64
            } else {
                monotonic_ns()
            };
            if let Some(d) = b.data() {
                self.send_samples(now, pw::read_samples(d), c);
            }
        }
        self.serve(c);
    }

    /// Stamps interleaved `samples` that entered the sink at local
    /// CLOCK_MONOTONIC `now_ns` and sends them. No allocation.
    pub fn send_samples(&mut self, now_ns: u64, samples: &[f32], c: &Counters) {
        let RtSink {
            sender,
            sock,
            dest,
            clock,
            sealer,
            tx,
            ..
        } = self;
        let wall = if sealer.keyed() { realtime_ns() } else { 0 };
        // The audio is stamped with the cycle's start; the sync message
        // with the time it leaves (this callback runs later in the cycle).
        let send_ns = clock.map(monotonic_ns());
        sender.push_at(clock.map(now_ns), send_ns, samples, &mut |pkt| {
            if !sealer.keyed() {
                return sock.send_counted(pkt, dest, c);
            }
            let Some(room) = tx.get_mut(..pkt.len()) else {
                return Counters::bump(&c.send_errors);
            };
            room.copy_from_slice(pkt);
            match sealer.seal(tx, pkt.len(), wall) {
                Some(n) => sock.send_counted(&tx[..n], dest, c),
                None => Counters::bump(&c.send_errors),
            }
        });
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
        // SAFETY: the caller is the stream's process callback.
        drop(unsafe { Buffer::dequeue(stream) });
    }

    /// Answers queued time requests and sends the periodic status packet.
    /// Runs from `process` and from the socket's data-loop source and timer,
    /// so that requests are answered when they arrive, even while nothing
    /// plays. Data thread only; no allocation.
    pub fn serve(&mut self, c: &Counters) {
        for _ in 0..MAX_RX_PER_CYCLE {
            let d = match self.sock.recv(&mut self.rx) {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(_) => {
                    Counters::bump(&c.recv_errors);
                    break;
                }
            };
            Counters::bump(&c.received);
            if d.truncated {
                Counters::bump(&c.malformed);
                continue;
            }
            let pair = ClockPair::now();
            let n = match self.opener.open(&mut self.rx[..d.len], pair.real) {
                Ok(n) => n,
                Err(e) => {
                    c.count_auth(e, &self.opener);
                    continue;
                }
            };
            let t2 = self
                .clock
                .map(d.kernel_real_ns.map_or(pair.mono, |r| pair.to_mono(r)));
            let t3 = self.clock.map(monotonic_ns());
            match self
                .sender
                .handle_packet(t2, t3, &self.rx[..n], &mut self.reply)
            {
                Ok(Some(n)) => {
                    if let Some(n) = self.sealer.seal(&mut self.reply, n, pair.real) {
                        self.sock
                            .send_counted(&self.reply[..n], &SockAddr::from(d.from), c)
                    }
                }
                Ok(None) => {}
                Err(_) => Counters::bump(&c.malformed),
            }
        }
        let now = monotonic_ns();
        if now >= self.next_status_ns {
            self.next_status_ns = now + STATUS_PERIOD_NS;
            let n = self
                .sender
                .write_status(self.node_id, &mut self.status)
                .and_then(|n| self.sealer.seal(&mut self.status, n, realtime_ns()));
            if let Some(n) = n {
                self.sock.send_counted(&self.status[..n], &self.dest, c);
            }
        }
    }
}

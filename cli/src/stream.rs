//! `bark stream`: a headless sender. The input is decoded ahead in a thread
//! ([`crate::decode`]); this loop paces it in real time with a simulated
//! input clock (one quantum every `quantum / rate` seconds of the local
//! clock, on a fixed schedule, as a sink's graph cycle would) and hands
//! each quantum to a [`SenderEndpoint`] stamped with its cycle time. The
//! endpoint seals what leaves, answers time requests, sends the status
//! packet once a second and, while no audio flows, the idle sync messages.
//!
//! Before the first audio packet comes a lead-in (`--lead-in-msec`): the
//! endpoint announces the session with idle sync messages, so receivers
//! that have never heard this sender lock their clocks first and play its
//! first frame at its instant instead of joining some 100 ms into it.
//!
//! While streaming it wakes up once per cycle, not per request: a request's
//! arrival (t2) is the kernel's receive stamp and the reply's departure
//! (t3) is read when the endpoint writes it, right before it is sent, so
//! the time a request waits for the next cycle is in neither the forward
//! nor the backward delay the receiver measures. That keeps the sender's
//! wake-ups (and most of its CPU) independent of the number of receivers.

use crate::cli::StreamArgs;
use crate::clock::{self, monotonic_ns, TestClock};
use crate::decode;
use crate::keyed::{wall_now, Auth};
use crate::net;
use crate::stamps::{Stamp, StampedWav};
use crate::summary::{self, traffic_json};
use anyhow::{anyhow, Context, Result};
use bark_core::endpoint::{SenderEndpoint, Traffic};
use bark_core::format::AudioFormat;
use bark_core::protocol::IP_UDP_OVERHEAD;
use bark_core::SenderConfig;
use serde_json::json;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::mpsc::{Receiver as ChunkRx, RecvTimeoutError, TryRecvError};
use std::time::Duration;

/// Most datagrams read per loop turn.
const MAX_RX_PER_TURN: usize = 256;
/// How long the first decoded audio may take to appear.
const FIRST_CHUNK_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest sleep while no audio flows (lead-in, a stalled decoder), ns:
/// the endpoint's idle syncs are due every 100 ms, so it is asked at
/// least twice as often.
const IDLE_POLL_NS: u64 = 50_000_000;
/// A decoder this late (ns) with a cycle's audio costs that cycle: the
/// timeline moves on and the audio, when it comes, is a gap later.
const STALL_NS: u64 = 1_000_000_000;

/// Sum of several [`Traffic`]s.
fn sum(ts: &[Traffic]) -> Traffic {
    ts.iter().fold(Traffic::default(), |a, t| Traffic {
        packets: a.packets + t.packets,
        bytes: a.bytes + t.bytes,
    })
}

/// The endpoint and the socket it is served on. Everything is allocated
/// before the first cycle.
struct Link {
    ep: SenderEndpoint,
    sock: net::UdpSocket,
    /// Commands (`bark set`: stream name, priority, name).
    cmd: bark_io::command::CommandPort,
    dest: SocketAddrV4,
    clk: TestClock,
    auth: Auth,
    /// Datagrams cut by a too-small buffer (cannot happen below 64 KiB).
    truncated: u64,
    send_errors: u64,
}

impl Link {
    /// One cycle's audio: `samples` entered the simulated sink at local
    /// time `cycle_local` (mapped); sent sealed to the group. No allocation.
    fn push(&mut self, cycle_local: u64, samples: &[f32]) {
        let wall = wall_now(self.ep.wire().keyed());
        let Link {
            ep,
            sock,
            dest,
            clk,
            send_errors,
            ..
        } = self;
        // The cycle's nominal time stamps the audio; the sync message needs
        // the time it actually leaves (the wake-up may be late, the decoder
        // may have been waited for).
        let clk = *clk;
        let mut now = || clk.map(monotonic_ns());
        ep.push(cycle_local, &mut now, wall, samples, &mut |pkt, to| {
            let to = to.or_group(SocketAddr::V4(*dest));
            count_send(sock.send_to(pkt, to), to, send_errors)
        });
    }

    /// Hands every queued datagram to the endpoint, then sends what it
    /// returns (time replies, idle syncs, the status packet). No allocation.
    fn serve(&mut self) {
        let wall = wall_now(self.ep.wire().keyed());
        let d = self.sock.drain(MAX_RX_PER_TURN, |data, from, at| {
            let t2 = self.clk.map(at.mono_ns);
            if let Err(e) = self.ep.handle_datagram(t2, wall, data, from.into()) {
                self.auth.dropped(e, from, self.ep.wire().auth());
            }
        });
        net::tally(d, &mut self.truncated);
        let (changed, warning) = self.cmd.serve(monotonic_ns(), crate::clock::realtime_ns());
        if let Some(w) = warning {
            log::warn!("{w}");
        }
        if changed != 0 {
            let s = *self.cmd.responder().settings();
            log::info!("settings changed by a controller: {s:?}");
            self.ep.sender_mut().set_settings(&s, self.cmd.port());
        }
        let poll = |b: &mut [u8]| {
            // t3 of a time reply and of an idle sync: read right before
            // the send.
            let now = self.clk.map(monotonic_ns());
            self.ep
                .poll_transmit(now, wall_now(self.ep.wire().keyed()), b)
        };
        let sent = |r, to| count_send(r, to, &mut self.send_errors);
        self.sock.transmit(self.dest.into(), usize::MAX, poll, sent);
    }

    /// When the endpoint wants `poll_transmit` next, CLOCK_MONOTONIC ns.
    fn due(&self) -> u64 {
        let now = self.clk.map(monotonic_ns());
        self.clk.unmap(self.ep.poll_timeout(now))
    }

    /// Serves the socket until CLOCK_MONOTONIC `until` (or `stop`), waking
    /// on datagrams and at the endpoint's deadlines.
    fn serve_until(&mut self, until: u64, stop: &std::sync::atomic::AtomicBool) {
        loop {
            self.serve();
            let now = monotonic_ns();
            if now >= until || crate::util::stopping(stop) {
                return;
            }
            let next = until.min(self.due()).min(now + IDLE_POLL_NS);
            net::wait_readable(&[&self.sock, self.cmd.socket()], next.saturating_sub(now));
        }
    }
}

/// Counts a failed send in `errors` and logs it, once per thousand so that
/// a dead route does not flood the log.
fn count_send(r: std::io::Result<()>, to: SocketAddr, errors: &mut u64) {
    if let Err(e) = r {
        *errors += 1;
        if (*errors - 1).is_multiple_of(1000) {
            log::warn!("sending to {to}: {e} ({errors} errors so far)");
        }
    }
}

/// What the lead-in ended with.
enum LeadIn {
    /// The first chunk of audio, due now.
    Audio(Vec<f32>),
    /// The input ended before any audio.
    Empty,
    /// SIGINT or SIGTERM.
    Stopped,
}

/// Announces the session (the endpoint's idle syncs, replies, status) for
/// at least `lead_in_ns` and until the decoder has the first chunk. The
/// socket is served at least every [`IDLE_POLL_NS`].
fn lead_in(
    link: &mut Link,
    chunks: &ChunkRx<Vec<f32>>,
    lead_in_ns: u64,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<LeadIn> {
    let t0 = monotonic_ns();
    let end = t0 + lead_in_ns;
    let give_up = t0 + FIRST_CHUNK_TIMEOUT.as_nanos() as u64;
    let mut first = None;
    loop {
        if first.is_none() {
            match chunks.try_recv() {
                Ok(c) => first = Some(c),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return Ok(LeadIn::Empty),
            }
        }
        let now = monotonic_ns();
        if now >= end {
            if let Some(c) = first.take() {
                return Ok(LeadIn::Audio(c));
            }
        }
        if crate::util::stopping(stop) {
            return Ok(LeadIn::Stopped);
        }
        if now >= give_up {
            anyhow::bail!("the input produced no audio in 10 s");
        }
        if now >= end {
            // Only the decoder is awaited: wake when it delivers. With
            // --lead-in-msec 0 nothing goes out before the first audio
            // packet unless the decoder takes longer than this.
            match chunks.recv_timeout(Duration::from_nanos(IDLE_POLL_NS)) {
                Ok(c) => first = Some(c),
                Err(RecvTimeoutError::Timeout) => link.serve(),
                Err(RecvTimeoutError::Disconnected) => return Ok(LeadIn::Empty),
            }
            continue;
        }
        link.serve();
        let next = link.due().min(now + IDLE_POLL_NS).min(end);
        net::wait_readable(&[&link.sock, link.cmd.socket()], next.saturating_sub(now));
    }
}

/// Runs `bark stream`.
///
/// # Errors
/// Bad settings, an unreadable input, socket set-up, output file errors.
pub fn run(a: &StreamArgs) -> Result<()> {
    let stop = crate::util::shutdown_flag()?;
    let format = AudioFormat {
        sample: a.format,
        rate: a.rate,
        channels: a.channels,
    };
    let node_id = bark_io::node::random_nonzero_u64();
    let session_id = bark_io::node::random_nonzero_u64();
    let auth = Auth::new(a.key.key_file.as_deref(), a.encrypt)?;
    let latency_ns = (a.latency_msec * 1e6).round() as u64;
    let max_latency_ns = (a.latency_max_msec * 1e6).round() as u64;
    let mut ep = SenderEndpoint::new(
        SenderConfig {
            format,
            stream: a.stream.clone(),
            priority: a.priority,
            latency_ns,
            max_latency_ns,
            // The endpoint takes the sealing trailer out of it.
            mtu: a.net.mtu,
            session_id,
            node_name: a.node_name.clone(),
            host: bark_io::node::hostname(),
            sync_interval_ns: bark_core::sender::SYNC_INTERVAL_NS,
            // Cycle times follow a nominal schedule: smooth.
            input_step_ns: bark_core::sender::SMOOTH_INPUT_STEP_NS,
            repair: a.repair,
            fec: bark_core::fec::parse_shape(&a.fec),
            // A decoded file's channels in the default layout of their
            // count.
            layout: None,
            opus: bark_core::opus::OpusConfig::new(a.opus_bitrate, &a.opus_frame_msec),
        },
        auth.key(),
        auth.encrypt(),
        node_id,
    )
    .map_err(|e| anyhow!("{e}"))?;
    if let Some(w) = ep.sender().fec_advice() {
        log::warn!("{w}");
    }
    let (first, more) = bark_core::settings::destinations(&a.net.destination_ip)
        .map_err(|why| anyhow!("--destination-ip {}: {why}", a.net.destination_ip))?;
    let dest = SocketAddrV4::new(first, a.net.port);
    let copies: Vec<SocketAddrV4> = more
        .into_iter()
        .map(|ip| SocketAddrV4::new(ip, a.net.port))
        .collect();
    ep.list_destinations(&copies).map_err(|e| anyhow!("{e}"))?;
    let path = bark_io::net::SendPath {
        destination: dest,
        copies,
        source_ip: a.net.source_ip,
        ifname: a.net.local_ifname.clone(),
        ttl: a.net.ttl,
        control_port: a.net.control_port,
        multicast_loop: a.net.multicast_loop,
    };
    let sock = bark_io::net::sender_socket(&path, net::NAMES)?;
    let initial = *ep.sender().settings();
    let cmd = bark_io::command::CommandPort::open(
        a.command_port,
        node_id,
        bark_core::protocol::Role::Sender,
        initial,
        auth.key(),
        monotonic_ns(),
    )
    .context("--command-port")?;
    ep.sender_mut().set_settings(&initial, cmd.port());
    let (_advert, said) = bark_io::discovery::advertise(
        &cmd.advert(
            &a.node_name,
            sock.local_addr().ok().map(|l| l.port()),
            auth.key(),
        ),
        dest,
        a.net.local_ifname.as_deref(),
        &bark_io::node::hostname(),
        net::NAMES,
        a.discovery,
    );
    log::info!("{said}");
    let ch = a.channels as usize;
    let packet_frames = ep.sender().packet_frames();
    let q = a.quantum.map_or(packet_frames, |q| q as usize);
    let src = decode::start(&a.input, a.repeat, a.rate, ch, q)?;
    let mut record = match &a.record {
        Some(p) => Some(StampedWav::create(
            p,
            a.rate,
            a.channels as u16,
            &format!(
                "bark stream {} session {session_id:016x} (input times)",
                a.node_name
            ),
        )?),
        None => None,
    };
    log::info!(
        "streaming {} ({} {} Hz {} ch) to {} from port {} as {} {} Hz {} ch, {} frames/packet, latency {} ms (rises to at most {} ms to cover receivers), lead-in {} ms, stream {:?} priority {}, session {session_id:016x}, {}",
        if a.input == "-" { "stdin" } else { &a.input },
        src.info.codec,
        src.info.rate,
        src.info.channels,
        path.targets(),
        sock.local_addr().map(|a| a.port()).unwrap_or(0),
        format.sample.name(),
        a.rate,
        a.channels,
        packet_frames,
        a.latency_msec,
        a.latency_max_msec.max(a.latency_msec),
        a.lead_in_msec,
        a.stream,
        a.priority,
        auth.describe()
    );
    let boot = monotonic_ns();
    let clk =
        TestClock::from_spec_or_env(a.run.test_clock.as_deref(), boot).map_err(|e| anyhow!(e))?;
    let mut link = Link {
        ep,
        sock,
        cmd,
        dest,
        clk,
        auth,
        truncated: 0,
        send_errors: 0,
    };

    // The lead-in also covers the decoder's start (opening, probing), so
    // that a slow start is not a gap in the stream.
    let lead_in_ns = (a.lead_in_msec * 1e6).round() as u64;
    let mut next_chunk = match lead_in(&mut link, &src.chunks, lead_in_ns, &stop)? {
        LeadIn::Audio(c) => Some(c),
        LeadIn::Empty => return src.join(),
        LeadIn::Stopped => None,
    };
    let lead_in_counts = *link.ep.wire().counts();
    let start = monotonic_ns();
    let lead_in_s = (start - boot) as f64 * 1e-9;
    let clk = link.clk;
    let period_ns = q as f64 * 1e9 / a.rate as f64;
    let l0 = clk.map(start) as f64;
    let max_frames = a.seconds.map(|s| (s * a.rate as f64).round() as u64);
    let mut k: u64 = 0;
    let mut frames_sent: u64 = 0;
    let mut late_cycles = 0u64;
    let mut underflows = 0u64;

    'run: loop {
        if crate::util::stopping(&stop) {
            break;
        }
        let cycle_local = l0 + k as f64 * period_ns;
        let wake = clk.unmap(cycle_local as u64);
        // Sleep until the cycle is due, serving the socket when the
        // endpoint has something due (the status packet).
        loop {
            let now = monotonic_ns();
            if now >= wake || crate::util::stopping(&stop) {
                break;
            }
            clock::sleep_until(wake.min(link.due()).min(now + 100_000_000));
            link.serve();
        }
        if monotonic_ns() > wake + period_ns as u64 {
            late_cycles += 1;
        }
        // The cycle's audio: decoded well ahead; a decoder that falls
        // behind is waited for (a gap the sender's timeline absorbs), the
        // socket served meanwhile (idle syncs once it counts as idle).
        let mut chunk = match next_chunk.take() {
            Some(c) => c,
            None => {
                let since = monotonic_ns();
                loop {
                    match src.chunks.recv_timeout(Duration::from_nanos(IDLE_POLL_NS)) {
                        Ok(c) => {
                            underflows += 1;
                            break c;
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            link.serve();
                            if monotonic_ns() - since >= STALL_NS || crate::util::stopping(&stop) {
                                underflows += 1;
                                k += 1;
                                continue 'run;
                            }
                        }
                        Err(RecvTimeoutError::Disconnected) => break 'run,
                    }
                }
            }
        };
        if let Some(m) = max_frames {
            let left = m.saturating_sub(frames_sent) as usize;
            chunk.truncate(left * ch);
            if chunk.is_empty() {
                break;
            }
        }
        link.push(cycle_local as u64, &chunk);
        if let Some(r) = record.as_mut() {
            r.write(
                &chunk,
                ch,
                Stamp {
                    frame: frames_sent,
                    frames: (chunk.len() / ch) as u32,
                    t_first_ns: wake as i64,
                    now_ns: wake as i64,
                    delay_frames: 0,
                    backlog: late_cycles.min(u32::MAX as u64) as u32,
                },
            )
            .context("writing --record")?;
        }
        // Then the time requests that came in since the last cycle.
        link.serve();
        frames_sent += (chunk.len() / ch) as u64;
        k += 1;
        if max_frames.is_some_and(|m| frames_sent >= m) {
            break;
        }
        next_chunk = match src.chunks.try_recv() {
            Ok(c) => Some(c),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => break,
        };
    }
    let wall_s = (monotonic_ns() - start) as f64 * 1e-9;
    // The last frames are heard one session latency after they were sent:
    // receivers still ask for the time until then.
    let tail = link.ep.sender().latency_ns();
    // A last status tells `bark stats` the totals.
    link.ep.status_now();
    link.serve_until(monotonic_ns() + tail, &stop);
    let cpu_s = crate::util::cpu_seconds();
    if let Some(r) = record.take() {
        r.finish().context("finishing --record")?;
    }
    let decode_result = src.join();
    let c = *link.ep.wire().counts();
    let sl = link.ep.sender().session_latency();
    let run = summary::Run {
        role: "sender",
        node_id,
        node_name: &a.node_name,
        wall_s,
        cpu_s,
    };
    log::info!(
        "done: {:.1} s of audio in {wall_s:.1} s after a {lead_in_s:.2} s lead-in ({} sync messages), {} audio packets ({:.1} kbit/s with IP/UDP headers), {} unicast copies to {} subscribers, {} sync messages, {} time replies, {} status, session latency {:.1} ms (changed {} times), {late_cycles} late cycles, {underflows} decoder stalls, CPU {:.1} %",
        frames_sent as f64 / a.rate as f64,
        lead_in_counts.tx_sync.packets,
        c.tx_audio.packets,
        (c.tx_audio.bytes + IP_UDP_OVERHEAD as u64 * c.tx_audio.packets) as f64 * 8.0
            / 1e3
            / wall_s.max(1e-9),
        c.tx_fanout.packets,
        link.ep.fanout().counts().joined,
        c.tx_sync.packets,
        c.tx_time_reply.packets,
        c.tx_status.packets,
        sl.current() as f64 / 1e6,
        sl.changes(),
        run.cpu_percent(),
    );
    if let Some(path) = &a.run.summary {
        let f = link.ep.fanout();
        let fc = f.counts();
        let subscriptions = json!({
            "live": f.len(),
            "listed": f.listed().count(),
            "joined": fc.joined,
            "renewed": fc.renewed,
            "left": fc.left,
            "expired": fc.expired,
            "refused_full": fc.refused_full,
            "refused_cookie": fc.refused_cookie,
        });
        let v = json!({
            "session_id": format!("{session_id:016x}"),
            "frames_sent": frames_sent,
            "audio_seconds": frames_sent as f64 / a.rate as f64,
            "packet_frames": packet_frames,
            "late_cycles": late_cycles,
            "decoder_stalls": underflows,
            "lead_in": {
                "seconds": lead_in_s,
                "sync": traffic_json(lead_in_counts.tx_sync),
                "time_reply": traffic_json(lead_in_counts.tx_time_reply),
            },
            "latency": {
                "base_us": sl.base() / 1000,
                "max_us": sl.max() / 1000,
                "session_us": sl.current() / 1000,
                "changes": sl.changes(),
            },
            "tx": {
                "audio": traffic_json(c.tx_audio),
                "sync": traffic_json(c.tx_sync),
                "time_reply": traffic_json(c.tx_time_reply),
                "status": traffic_json(c.tx_status),
                "resend": traffic_json(c.tx_resend),
                "cookie": traffic_json(c.tx_cookie),
                "fanout": traffic_json(c.tx_fanout),
                "fec": traffic_json(c.tx_fec),
                "send_errors": link.send_errors,
            },
            "subscriptions": subscriptions,
            "repair": link.ep.resends().map(|r| serde_json::json!({
                "nacks": r.nacks,
                "bad_cookie": r.bad_cookie,
                "unknown": r.unknown,
                "stale": r.stale,
                "capped": r.capped,
                "queue_full": r.queue_full,
                "resent": r.resent,
                "resent_bytes": r.resent_bytes,
            })),
            "rx": {
                "time_request": traffic_json(c.rx_time_request),
                "nack": traffic_json(c.rx_nack),
                "hello": traffic_json(c.rx_hello),
                "subscribe": traffic_json(c.rx_subscribe),
                "other": traffic_json(sum(&[c.rx_audio, c.rx_time_reply, c.rx_status, c.rx_sync])),
                "malformed": c.malformed + link.truncated,
                "flood_dropped": c.flood_dropped,
            },
            "auth": link.auth.counters_json(link.ep.wire().auth()),
        });
        run.write(path, v)?;
    }
    decode_result
}

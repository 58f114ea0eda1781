//! `bark stream`: a headless sender. The input is decoded ahead in a thread
//! ([`crate::decode`]); this loop paces it in real time with a simulated
//! input clock (one quantum every `quantum / rate` seconds of the local
//! clock, on a fixed schedule, as a sink's graph cycle would), hands each
//! quantum to [`Sender::push`] stamped with its cycle time, answers the time
//! requests that came in meanwhile, and sends a status packet once a second.
//!
//! It wakes up once per cycle, not per request: a request's arrival (t2) is
//! the kernel's receive stamp and the reply's departure (t3) is read right
//! before it is sent, so the time a request waits for the next cycle is in
//! neither the forward nor the backward delay the receiver measures. That
//! keeps the sender's wake-ups (and most of its CPU) independent of the
//! number of receivers.

use crate::cli::StreamArgs;
use crate::clock::{self, monotonic_ns, TestClock};
use crate::decode;
use crate::keyed::{Auth, Received};
use crate::net::{self, SendOpts, MAX_DATAGRAM};
use crate::stamps::{Stamp, StampedWav};
use crate::util::{self, Traffic};
use anyhow::{anyhow, Context, Result};
use bark_core::format::AudioFormat;
use bark_core::protocol::{self, PacketType, MAX_STATUS_LEN};
use bark_core::{Sender, SenderConfig};
use serde_json::json;
use std::net::SocketAddrV4;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

/// Status packet period, ns.
const STATUS_PERIOD_NS: u64 = 1_000_000_000;
/// Most datagrams read per loop turn.
const MAX_RX_PER_TURN: usize = 256;
/// How long the first decoded audio may take to appear.
const FIRST_CHUNK_TIMEOUT: Duration = Duration::from_secs(10);

/// Traffic of the sender, by kind.
#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    tx_audio: Traffic,
    tx_sync: Traffic,
    tx_time_reply: Traffic,
    tx_status: Traffic,
    rx_time_request: Traffic,
    rx_other: Traffic,
    rx_malformed: u64,
    send_errors: u64,
}

/// Runs `bark stream`.
///
/// # Errors
/// Bad settings, an unreadable input, socket set-up, output file errors.
pub fn run(a: &StreamArgs) -> Result<()> {
    let stop = util::shutdown_flag()?;
    let format = AudioFormat {
        sample: a.format,
        rate: a.rate,
        channels: a.channels,
    };
    let node_id = util::random_nonzero_u64();
    let session_id = util::random_nonzero_u64();
    let mut auth = Auth::new(a.key.key_file.as_deref(), a.encrypt)?;
    let mut sender = Sender::new(SenderConfig {
        format,
        stream: a.stream.clone(),
        priority: a.priority,
        latency_ns: (a.latency_msec * 1e6).round() as u64,
        // Sealed datagrams must still fit --mtu: fewer frames per packet.
        mtu: a.net.mtu.saturating_sub(auth.overhead()),
        session_id,
        node_name: a.node_name.clone(),
        host: util::hostname(),
        sync_interval_ns: bark_core::sender::SYNC_INTERVAL_NS,
        // Cycle times follow a nominal schedule: smooth.
        input_step_ns: bark_core::sender::SMOOTH_INPUT_STEP_NS,
    })
    .map_err(|e| anyhow!("{e}"))?;
    let dest = SocketAddrV4::new(a.net.destination_ip, a.net.port);
    if dest.ip().is_unspecified() || dest.ip().is_broadcast() {
        anyhow::bail!("--destination-ip {} cannot be sent to", dest.ip());
    }
    let mut sock = net::sender_socket(&SendOpts {
        destination: dest,
        source_ip: a.net.source_ip,
        ifname: a.net.local_ifname.clone(),
        ttl: a.net.ttl,
        multicast_loop: a.net.multicast_loop,
    })?;
    let ch = a.channels as usize;
    let q = a.quantum.map_or(sender.packet_frames(), |q| q as usize);
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
        "streaming {} ({} {} Hz {} ch) to {dest} from port {} as {} {} Hz {} ch, {} frames/packet, latency {} ms, stream {:?} priority {}, session {session_id:016x}, {}",
        if a.input == "-" { "stdin" } else { &a.input },
        src.info.codec,
        src.info.rate,
        src.info.channels,
        sock.local_addr().map(|a| a.port()).unwrap_or(0),
        format.sample.name(),
        a.rate,
        a.channels,
        sender.packet_frames(),
        a.latency_msec,
        a.stream,
        a.priority,
        auth.describe()
    );

    // Wait for the decoder's first chunk before the clock starts, so that
    // a slow start (opening, probing) is not a gap in the stream.
    let mut next_chunk = match src.chunks.recv_timeout(FIRST_CHUNK_TIMEOUT) {
        Ok(c) => Some(c),
        Err(RecvTimeoutError::Timeout) => anyhow::bail!("the input produced no audio in 10 s"),
        Err(RecvTimeoutError::Disconnected) => return src.join(),
    };
    let start = monotonic_ns();
    let clk =
        TestClock::from_spec_or_env(a.test_clock.as_deref(), start).map_err(|e| anyhow!(e))?;
    let period_ns = q as f64 * 1e9 / a.rate as f64;
    let l0 = clk.map(start) as f64;
    let max_frames = a.seconds.map(|s| (s * a.rate as f64).round() as u64);
    let mut data = vec![0u8; MAX_DATAGRAM];
    let mut reply = vec![0u8; protocol::TIME_LEN];
    let mut status = vec![0u8; MAX_STATUS_LEN];
    let mut counts = Counts::default();
    let mut k: u64 = 0;
    let mut frames_sent: u64 = 0;
    let mut late_cycles = 0u64;
    let mut next_status = start;
    let mut underflows = 0u64;

    'run: loop {
        if util::stopping(&stop) {
            break;
        }
        let cycle_local = l0 + k as f64 * period_ns;
        let wake = clk.unmap(cycle_local as u64);
        // Sleep until the cycle is due (status packets on the way).
        loop {
            let now = monotonic_ns();
            if now >= next_status {
                next_status = (next_status + STATUS_PERIOD_NS).max(now);
                if let Some(n) = sender.write_status(node_id, &mut status) {
                    send(
                        &sock,
                        &mut auth,
                        &status[..n],
                        dest,
                        &mut counts.tx_status,
                        &mut counts.send_errors,
                    );
                }
            }
            if now >= wake || util::stopping(&stop) {
                break;
            }
            clock::sleep_until(wake.min(next_status).min(now + 100_000_000));
        }
        if monotonic_ns() > wake + period_ns as u64 {
            late_cycles += 1;
        }
        // The cycle's audio: decoded well ahead; a decoder that falls
        // behind is waited for (a gap the sender's timeline absorbs).
        let mut chunk = match next_chunk.take() {
            Some(c) => c,
            None => match src.chunks.recv_timeout(Duration::from_secs(1)) {
                Ok(c) => {
                    underflows += 1;
                    c
                }
                Err(RecvTimeoutError::Timeout) => {
                    underflows += 1;
                    k += 1;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break 'run,
            },
        };
        if let Some(m) = max_frames {
            let left = m.saturating_sub(frames_sent) as usize;
            chunk.truncate(left * ch);
            if chunk.is_empty() {
                break;
            }
        }
        {
            let Counts {
                tx_audio,
                tx_sync,
                send_errors,
                ..
            } = &mut counts;
            let sock = &sock;
            let auth = &mut auth;
            // The cycle's nominal time stamps the audio; the sync message
            // needs the time it actually leaves (the wake-up may be late,
            // the decoder may have been waited for).
            let send_ns = clk.map(monotonic_ns());
            sender.push_at(cycle_local as u64, send_ns, &chunk, &mut |pkt| {
                let sync = protocol::parse_header(pkt).is_ok_and(|h| h.ptype == PacketType::Sync);
                let t = if sync { &mut *tx_sync } else { &mut *tx_audio };
                send(sock, auth, pkt, dest, t, send_errors)
            });
        }
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
        serve(
            &mut sock,
            &mut auth,
            &mut sender,
            &clk,
            &mut data,
            &mut reply,
            &mut counts,
        );
        frames_sent += (chunk.len() / ch) as u64;
        k += 1;
        if max_frames.is_some_and(|m| frames_sent >= m) {
            break;
        }
        next_chunk = match src.chunks.try_recv() {
            Ok(c) => Some(c),
            Err(std::sync::mpsc::TryRecvError::Empty) => None,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
        };
    }
    // Receivers still need replies for the last packets' latency; a final
    // status tells `bark stats` the totals.
    if let Some(n) = sender.write_status(node_id, &mut status) {
        send(
            &sock,
            &mut auth,
            &status[..n],
            dest,
            &mut counts.tx_status,
            &mut counts.send_errors,
        );
    }
    let wall_s = (monotonic_ns() - start) as f64 * 1e-9;
    let cpu_s = util::cpu_seconds();
    if let Some(r) = record.take() {
        r.finish().context("finishing --record")?;
    }
    let decode_result = src.join();
    log::info!(
        "done: {:.1} s of audio in {wall_s:.1} s, {} audio packets ({:.1} kbit/s with IP/UDP headers), {} sync messages, {} time replies, {} status, {late_cycles} late cycles, {underflows} decoder stalls, CPU {:.1} %",
        frames_sent as f64 / a.rate as f64,
        counts.tx_audio.packets,
        counts.tx_audio.ip_bytes as f64 * 8.0 / 1e3 / wall_s.max(1e-9),
        counts.tx_sync.packets,
        counts.tx_time_reply.packets,
        counts.tx_status.packets,
        100.0 * cpu_s / wall_s.max(1e-9),
    );
    if let Some(path) = &a.summary {
        let v = json!({
            "role": "sender",
            "node_id": format!("{node_id:016x}"),
            "session_id": format!("{session_id:016x}"),
            "node_name": a.node_name,
            "wall_s": wall_s,
            "cpu_s": cpu_s,
            "cpu_percent": 100.0 * cpu_s / wall_s.max(1e-9),
            "frames_sent": frames_sent,
            "audio_seconds": frames_sent as f64 / a.rate as f64,
            "packet_frames": sender.packet_frames(),
            "late_cycles": late_cycles,
            "decoder_stalls": underflows,
            "tx": {
                "audio": counts.tx_audio,
                "sync": counts.tx_sync,
                "time_reply": counts.tx_time_reply,
                "status": counts.tx_status,
                "send_errors": counts.send_errors,
            },
            "rx": {
                "time_request": counts.rx_time_request,
                "other": counts.rx_other,
                "malformed": counts.rx_malformed,
            },
            "auth": auth.counters_json(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    decode_result
}

fn send(
    sock: &net::UdpSocket,
    auth: &mut Auth,
    data: &[u8],
    to: SocketAddrV4,
    t: &mut Traffic,
    errors: &mut u64,
) {
    let Some(data) = auth.seal(data) else {
        *errors += 1;
        return;
    };
    match sock.send_to(data, to) {
        Ok(()) => t.add(data.len()),
        Err(e) => {
            *errors += 1;
            // Once per thousand, so a dead route does not flood the log.
            if (*errors - 1).is_multiple_of(1000) {
                log::warn!("sending to {to}: {e} ({errors} errors so far)");
            }
        }
    }
}

/// Answers every queued time request.
fn serve(
    sock: &mut net::UdpSocket,
    auth: &mut Auth,
    sender: &mut Sender,
    clk: &TestClock,
    data: &mut [u8],
    reply: &mut [u8],
    counts: &mut Counts,
) {
    for _ in 0..MAX_RX_PER_TURN {
        let (d, n) = match auth.recv_open(sock, data, &mut counts.rx_malformed) {
            Received::Packet(d, n) => (d, n),
            Received::Dropped => continue,
            Received::Empty => return,
        };
        let bytes = &data[..n];
        match protocol::parse_header(bytes).map(|h| h.ptype) {
            Ok(PacketType::TimeRequest) => counts.rx_time_request.add(d.len),
            _ => counts.rx_other.add(d.len),
        }
        let t2 = clk.map(d.arrival_ns);
        let t3 = clk.map(monotonic_ns());
        match sender.handle_packet(t2, t3, bytes, reply) {
            Ok(Some(n)) => send(
                sock,
                auth,
                &reply[..n],
                d.from,
                &mut counts.tx_time_reply,
                &mut counts.send_errors,
            ),
            Ok(None) => {}
            Err(_) => counts.rx_malformed += 1,
        }
    }
}

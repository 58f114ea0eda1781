//! `bark receive`: the full receive path against a simulated output clock.
//!
//! One thread, one loop, as a PipeWire data loop would run it:
//! - datagrams from the group and control sockets go to
//!   [`Receiver::handle_packet`] with their kernel arrival stamps;
//! - [`Receiver::poll_transmit`] is called at every wake-up, and at least
//!   every 2 ms while the clock estimate is young (the core's fast exchange
//!   interval); what it returns (time requests) is sent;
//! - the simulated output device asks for one quantum every
//!   `quantum / rate` seconds of the local clock, exactly on schedule, as a
//!   sound card's clock would; each buffer is heard `--output-delay-msec`
//!   after its cycle starts, and [`Receiver::fill`] is told that instant;
//! - a status packet goes to the group once a second.
//!
//! The loop does not wake up for each datagram: sockets are drained at each
//! deadline (output cycle, request timer, status), which is early enough
//! because every datagram carries its kernel arrival stamp, so reading it a
//! few ms later changes nothing the core sees. Fewer wake-ups are what let
//! dozens of receivers share a small machine (a scale run's 32 receivers on
//! 2 cores) without the scheduling noise that would otherwise show up as
//! network jitter.
//!
//! The output clock's schedule is fixed in advance, so a late wake-up of this
//! process changes when a buffer is computed, never when it is heard: the
//! WAV and its timestamps are what a device with that clock would play. A
//! cycle computed after its own play time would have been an xrun on a real
//! device; those are counted (`late_cycles`).

use crate::cli::{OutputTarget, ReceiveArgs};
use crate::clock::{self, monotonic_ns, TestClock};
use crate::keyed::{Auth, Received};
use crate::net::{self, MAX_DATAGRAM};
use crate::stamps::{Stamp, StampedWav};
use crate::util::{self, Traffic};
use anyhow::{anyhow, Context, Result};
use bark_core::protocol::{self, PacketType, MAX_STATUS_LEN};
use bark_core::{Receiver, ReceiverConfig};
use serde_json::json;
use std::net::{SocketAddr, SocketAddrV4};

/// Longest gap between [`Receiver::poll_transmit`] calls while the clock
/// estimate is young, ns (the core's fast exchange interval). Afterwards
/// requests are 10 ms or more apart and the output cycle's wake-ups
/// (every 5.3 ms by default) are often enough.
const TX_POLL_NS: u64 = bark_core::receiver::FAST_INTERVAL_NS;
/// Status packet period, ns.
const STATUS_PERIOD_NS: u64 = 1_000_000_000;
/// Most datagrams read per socket per loop turn.
const MAX_RX_PER_TURN: usize = 256;
/// Most overdue cycles caught up in one loop turn.
const MAX_CATCH_UP: usize = 64;

/// Traffic of the receiver, by kind.
#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    rx_audio: Traffic,
    rx_time_reply: Traffic,
    rx_sync: Traffic,
    rx_status: Traffic,
    rx_other: Traffic,
    rx_malformed: u64,
    tx_time_request: Traffic,
    tx_status: Traffic,
    send_errors: u64,
}

/// Runs `bark receive`.
///
/// # Errors
/// Bad settings, socket set-up, output file errors.
pub fn run(a: &ReceiveArgs) -> Result<()> {
    let stop = util::shutdown_flag()?;
    let start = monotonic_ns();
    let clk =
        TestClock::from_spec_or_env(a.test_clock.as_deref(), start).map_err(|e| anyhow!(e))?;
    let group = SocketAddrV4::new(a.net.source_ip, a.net.port);
    let ifname = a.net.local_ifname.as_deref();
    let node_id = util::random_nonzero_u64();
    let mut auth = Auth::new(a.key.key_file.as_deref(), false)?;
    let mut rx = Receiver::new(ReceiverConfig {
        rate: a.rate,
        channels: a.channels,
        latency_ns: a.latency_msec.map(|ms| (ms * 1e6).round() as u64),
        delay_ns: (a.delay_msec * 1e6).round() as i64,
        stream: a.stream.clone(),
        node_id,
        node_name: a.node_name.clone(),
        host: util::hostname(),
    })
    .map_err(|e| anyhow!("{e}"))?;
    let mut gsock = net::group_socket(group, ifname)?;
    let mut csock = net::control_socket(group, ifname, a.ttl)?;
    let multicast = group.ip().is_multicast();

    let ch = a.channels as usize;
    let q = a.quantum as usize;
    let period_ns = q as f64 * 1e9 / a.rate as f64;
    let out_delay_ns = a.output_delay_msec.map_or(period_ns, |ms| ms * 1e6);
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
        "receiving on {group}{}, control port {}, output {} Hz {} ch, quantum {q} ({:.2} ms), output delay {:.2} ms, node {} ({node_id:016x}), {}{}",
        ifname.map(|i| format!(" via {i}")).unwrap_or_default(),
        csock.local_addr().map(|a| a.port()).unwrap_or(0),
        a.rate,
        a.channels,
        period_ns / 1e6,
        out_delay_ns / 1e6,
        a.node_name,
        auth.describe(),
        if clk.is_identity() { "" } else { " [test clock]" },
    );

    let mut buf = vec![0f32; q * ch];
    let mut data = vec![0u8; MAX_DATAGRAM];
    let mut tx = vec![0u8; MAX_STATUS_LEN.max(protocol::TIME_LEN)];
    let mut counts = Counts::default();
    // The first cycle starts one period from now on the local clock.
    let l0 = clk.map(start) as f64 + period_ns;
    let mut k: u64 = 0;
    let mut late_cycles: u64 = 0;
    let mut next_tx = start;
    let mut next_status = start;
    let mut was_playing = false;
    let mut clock_resets = 0u64;
    let mut abs_err_us: Vec<f32> = Vec::new();
    let mut playing_cycles = 0u64;

    loop {
        if util::stopping(&stop) || total_cycles.is_some_and(|t| k >= t) {
            break;
        }
        let wake = clk.unmap((l0 + k as f64 * period_ns) as u64);
        let now = monotonic_ns();
        let young = rx.session().is_some()
            && rx.clock().exchanges() < bark_core::receiver::FAST_SAMPLES as u64;
        let mut deadline = wake.min(next_status);
        if young {
            deadline = deadline.min(next_tx);
        }
        // Bounded so that a signal is noticed within 100 ms.
        clock::sleep_until(deadline.min(now + 100_000_000));
        for sock in [&mut gsock, &mut csock] {
            for _ in 0..MAX_RX_PER_TURN {
                let (d, n) = match auth.recv_open(sock, &mut data, &mut counts.rx_malformed) {
                    Received::Packet(d, n) => (d, n),
                    Received::Dropped => continue,
                    Received::Empty => break,
                };
                let bytes = &data[..n];
                let kind = protocol::parse_header(bytes).map(|h| h.ptype);
                match kind {
                    Ok(PacketType::Audio) => counts.rx_audio.add(n),
                    Ok(PacketType::TimeReply) => counts.rx_time_reply.add(n),
                    Ok(PacketType::Sync) => counts.rx_sync.add(n),
                    Ok(PacketType::Status) => counts.rx_status.add(n),
                    Ok(_) => counts.rx_other.add(n),
                    Err(_) => {}
                }
                if rx
                    .handle_packet(clk.map(d.arrival_ns), bytes, SocketAddr::V4(d.from))
                    .is_err()
                {
                    counts.rx_malformed += 1;
                }
            }
        }

        let now = monotonic_ns();
        for _ in 0..MAX_CATCH_UP {
            let cycle_local = l0 + k as f64 * period_ns;
            let wake = clk.unmap(cycle_local as u64);
            if now < wake || total_cycles.is_some_and(|t| k >= t) {
                break;
            }
            let play_local = (cycle_local + out_delay_ns) as u64;
            rx.fill(play_local, &mut buf);
            let play_true = clk.unmap(play_local);
            if now > play_true {
                late_cycles += 1;
            }
            if rx.playing() {
                playing_cycles += 1;
                abs_err_us.push((rx.sync_error_ns().abs() / 1e3) as f32);
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
        if rx.playing() != was_playing {
            was_playing = rx.playing();
            if was_playing {
                let f = rx.format();
                log::info!(
                    "playing session {:016x}{}",
                    rx.session().unwrap_or(0),
                    f.map(|f| format!(" ({} {} Hz {} ch)", f.sample.name(), f.rate, f.channels))
                        .unwrap_or_default()
                );
            } else {
                log::info!("stopped playing (no stream, or clock not yet known)");
            }
        }

        {
            next_tx = now + TX_POLL_NS;
            for _ in 0..16 {
                let t = clk.map(monotonic_ns());
                let Some((n, to)) = rx.poll_transmit(t, &mut tx) else {
                    break;
                };
                let SocketAddr::V4(to) = to else { continue };
                let Some(sealed) = auth.seal(&tx[..n]) else {
                    continue;
                };
                match csock.send_to(sealed, to) {
                    Ok(()) => counts.tx_time_request.add(n),
                    Err(e) => {
                        counts.send_errors += 1;
                        log::debug!("time request to {to}: {e}");
                    }
                }
            }
        }
        if now >= next_status {
            next_status += STATUS_PERIOD_NS;
            if next_status < now {
                next_status = now + STATUS_PERIOD_NS;
            }
            // Status goes to the group, where `bark stats` listens; with a
            // unicast address there is nobody to tell.
            if multicast {
                let sealed = rx.write_status(&mut tx).and_then(|n| auth.seal(&tx[..n]));
                if let Some(sealed) = sealed {
                    let n = sealed.len();
                    match csock.send_to(sealed, group) {
                        Ok(()) => counts.tx_status.add(n),
                        Err(e) => {
                            counts.send_errors += 1;
                            log::debug!("status to {group}: {e}");
                        }
                    }
                }
            }
            if rx.clock().resets() != clock_resets {
                clock_resets = rx.clock().resets();
                log::warn!(
                    "the sender's clock stepped: clock sync restarted ({clock_resets} so far)"
                );
            }
            let c = rx.counters();
            log::debug!(
                "sync error {:+.1} us, buffer {:.1} ms, offset {:.1} us, rate {:+.3} ppm, exchange jitter {:.1} us, packets {} lost {} late {} dup {} concealed {} underruns {}, late cycles {late_cycles}",
                c.sync_error_ns as f64 / 1e3,
                c.buffer_us as f64 / 1e3,
                c.clock_offset_ns as f64 / 1e3,
                c.rate_error_ppb as f64 / 1e3,
                rx.clock().jitter_ns() / 1e3,
                c.packets,
                c.lost,
                c.late,
                c.duplicated,
                c.concealed_frames,
                c.underruns
            );
        }
    }

    let wall_s = (monotonic_ns() - start) as f64 * 1e-9;
    let cpu_s = util::cpu_seconds();
    let written = wav.as_ref().map_or(0, StampedWav::frames);
    if let Some(w) = wav.take() {
        w.finish().context("finishing the output file")?;
    }
    let c = rx.counters();
    abs_err_us.sort_by(f32::total_cmp);
    let pct = |p: f64| -> Option<f32> {
        (!abs_err_us.is_empty())
            .then(|| abs_err_us[((abs_err_us.len() - 1) as f64 * p).round() as usize])
    };
    log::info!(
        "done after {wall_s:.1} s: {} cycles ({} playing, {late_cycles} late), {} audio packets in, lost {}, late {}, underruns {}, |sync error| p50 {:.1} us p99 {:.1} us, CPU {:.1} %, {} datagrams dropped by authentication",
        k,
        playing_cycles,
        counts.rx_audio.packets,
        c.lost,
        c.late,
        c.underruns,
        pct(0.5).unwrap_or(f32::NAN),
        pct(0.99).unwrap_or(f32::NAN),
        100.0 * cpu_s / wall_s.max(1e-9),
        auth.counters().total(),
    );
    if let Some(path) = &a.summary {
        let v = json!({
            "role": "receiver",
            "node_id": format!("{node_id:016x}"),
            "node_name": a.node_name,
            "wall_s": wall_s,
            "cpu_s": cpu_s,
            "cpu_percent": 100.0 * cpu_s / wall_s.max(1e-9),
            "cycles": k,
            "playing_cycles": playing_cycles,
            "late_cycles": late_cycles,
            "frames_written": written,
            "jumps": rx.jumps(),
            "clock_resets": rx.clock().resets(),
            "clock_jitter_ns": rx.clock().jitter_ns(),
            "abs_sync_error_us": {
                "p50": pct(0.5), "p99": pct(0.99), "max": abs_err_us.last(),
            },
            "rx": {
                "audio": counts.rx_audio,
                "time_reply": counts.rx_time_reply,
                "sync": counts.rx_sync,
                "status": counts.rx_status,
                "other": counts.rx_other,
                "malformed": counts.rx_malformed,
            },
            "auth": auth.counters_json(),
            "tx": {
                "time_request": counts.tx_time_request,
                "status": counts.tx_status,
                "send_errors": counts.send_errors,
            },
            "counters": {
                "rate_hz": c.rate,
                "latency_us": c.latency_us,
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
            },
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

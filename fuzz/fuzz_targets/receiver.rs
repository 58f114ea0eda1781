//! The receiver state machine fed an arbitrary sequence of events: raw
//! datagrams, audio packets with arbitrary header fields (built with the
//! core's writer so that they pass the parser and reach the jitter buffer,
//! the selector and the timeline), time replies to its own requests or to
//! none, sync messages in order or replayed, re-numbered and shifted,
//! status packets, output cycles and jumps of the clock; for repair,
//! audio packets lost on the way (kept to be resent), resends of kept
//! packets (marked with `mark_resent`, from their sender or elsewhere),
//! and Cookies answering its own Hellos or none. Invariants: nothing
//! panics, every output sample is finite, and what the receiver sends is
//! a time request, Hello or NACK to an address packets came from.
#![no_main]

use bark_core::format::{AudioFormat, SampleFormat};
use bark_core::protocol::{
    self, Announce, AudioHeader, CookiePacket, CookieTag, Packet, Role, StatusCounters,
    StatusPacket, SyncPacket, TimePacket, COOKIE_MAC_LEN,
};
use bark_core::{Receiver, ReceiverConfig};
use bark_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddr};

/// Events per input: bounds the time one input takes.
const MAX_EVENTS: usize = 2_000;
/// Largest output buffer asked for, frames (PipeWire quanta go to 8192).
const MAX_FILL: usize = 8_192;
/// Audio packets kept for resends.
const KEPT: usize = 16;

fuzz_target!(|d: &[u8]| {
    let mut b = Bytes::new(d);
    let cfg_byte = b.u8();
    let rate = [48_000, 44_100, 96_000, 8_000, 192_000][cfg_byte as usize % 5];
    let channels = 1 + (cfg_byte >> 3) % 8;
    let Ok(mut rx) = Receiver::new(ReceiverConfig {
        rate,
        channels,
        latency_ns: (cfg_byte & 0x80 != 0).then_some(20_000_000),
        stream: (cfg_byte & 0x40 != 0).then(|| "default".to_string()),
        node_id: 7,
        ..Default::default()
    }) else {
        return;
    };
    let addrs: [SocketAddr; 3] = [
        (Ipv4Addr::new(10, 0, 0, 1), 1530).into(),
        (Ipv4Addr::new(10, 0, 0, 2), 1530).into(),
        (Ipv4Addr::new(10, 0, 0, 3), 40000).into(),
    ];
    let sessions = [0x1111u64, 0x2222, 0x3333];
    // Local clock (ns) and the sender clock's offset from it.
    let mut now: u64 = 1_000_000_000;
    let offset: i64 = b.u32() as i64 * 1000 - (1 << 41);
    let mut seq = [0u64; 3];
    let mut sync_seq = [0u64; 3];
    let mut frame = [0u64; 3];
    let mut requests = [0u64; 8];
    let mut nreq = 0usize;
    // Nonces of its Hellos, newest last.
    let mut hellos = [0u64; 8];
    let mut nhello = 0usize;
    // Audio packets written (delivered or lost), with their sender's index.
    let mut kept: Vec<(Vec<u8>, usize)> = Vec::with_capacity(KEPT);
    let mut next_kept = 0usize;
    let mut pkt = vec![0u8; 70_000];
    let mut samples = vec![0f32; 4096 * 8];
    let mut out = vec![0f32; MAX_FILL * 8];
    for _ in 0..MAX_EVENTS {
        if b.is_empty() {
            break;
        }
        let op = b.u8();
        let from = addrs[(op >> 4) as usize % 3];
        match op % 8 {
            // Raw bytes.
            0 if op & 0x80 == 0 => {
                let n = b.u16() as usize % 1600;
                let raw = b.take(n);
                let _ = rx.handle_packet(now, raw, from);
            }
            // A Cookie: mostly the answer to one of its Hellos from the
            // address it came from, any field made up.
            0 if op & 0x40 == 0 => {
                let pick = b.u8();
                let s = (op >> 4) as usize % 3;
                let nonce = if pick & 1 == 0 && nhello > 0 {
                    hellos[nhello - 1 - (pick >> 5) as usize % nhello]
                } else {
                    b.u64()
                };
                let mut mac = [0u8; COOKIE_MAC_LEN];
                let t = b.take(COOKIE_MAC_LEN);
                mac[..t.len()].copy_from_slice(t);
                let c = CookiePacket {
                    stream_id: if pick & 2 == 0 { sessions[s] } else { b.u64() },
                    node_id: if pick & 4 == 0 { 7 } else { b.u64() },
                    nonce,
                    cookie: CookieTag { slot: b.u32(), mac },
                    offers: if pick & 8 == 0 {
                        protocol::OFFER_NACK
                    } else {
                        b.u32()
                    },
                };
                let mut buf = [0u8; protocol::COOKIE_LEN];
                if let Some(n) = protocol::write_cookie(&mut buf, &c) {
                    let _ = rx.handle_packet(now, &buf[..n], from);
                }
            }
            // A kept audio packet again, marked as a resend: from its
            // sender or elsewhere, with the session latency or another.
            0 => {
                let pick = b.u8();
                if kept.is_empty() {
                    continue;
                }
                let (d, s) = &kept[pick as usize % kept.len()];
                let len = d.len();
                pkt[..len].copy_from_slice(d);
                let latency_us = if pick & 0x80 == 0 { 40_000 } else { b.u32() };
                protocol::mark_resent(&mut pkt[..len], latency_us);
                let to = if pick & 0x40 == 0 { addrs[*s] } else { from };
                let _ = rx.handle_packet(now, &pkt[..len], to);
            }
            // An audio packet: mostly a plausible stream, any field absurd.
            // Kept for resends; op 2 with bit 3 is lost on the way.
            1 | 2 => {
                let s = (op >> 4) as usize % 3;
                let ctl = b.u8();
                let fmt_byte = b.u8();
                let sample = [SampleFormat::F32, SampleFormat::S24, SampleFormat::S16]
                    [fmt_byte as usize % 3];
                let frames = if ctl & 1 == 0 {
                    176
                } else {
                    1 + b.u16() % 4096
                };
                let format = AudioFormat {
                    sample,
                    rate: if ctl & 2 == 0 {
                        48_000
                    } else {
                        8_000 + b.u32() % 184_001
                    },
                    channels: if ctl & 4 == 0 { 2 } else { 1 + fmt_byte % 8 },
                };
                let (sq, fr) = if ctl & 8 == 0 {
                    (seq[s], frame[s])
                } else {
                    (b.u64(), b.u64())
                };
                let pts_at_sender =
                    ((now as i64).wrapping_add(offset) as u64).wrapping_sub(b.u16() as u64 * 1000);
                let pts = if ctl & 16 == 0 {
                    pts_at_sender as i64
                } else {
                    b.u64() as i64
                };
                let h = AudioHeader {
                    positions: Default::default(),
                    stream_id: if ctl & 32 == 0 {
                        sessions[s]
                    } else {
                        b.u64() | 1
                    },
                    seq: sq,
                    frame: fr,
                    pts,
                    format,
                    latency_us: if ctl & 64 == 0 { 40_000 } else { b.u32() },
                    name_hash: if ctl & 128 == 0 {
                        protocol::stream_hash("default")
                    } else {
                        b.u32()
                    },
                    priority: (fmt_byte >> 4) as i8 - 8,
                    frames,
                };
                let n = frames as usize * format.channels as usize;
                let level = b.u8();
                for (i, v) in samples[..n].iter_mut().enumerate() {
                    *v = match level {
                        // Full scale, beyond full scale, and the largest
                        // finite f32: a hostile sender's choices.
                        255 => f32::MAX,
                        254 => {
                            if i % 2 == 0 {
                                1e30
                            } else {
                                -1e30
                            }
                        }
                        _ => ((i as f32) * 0.05).sin() * level as f32 / 64.0,
                    };
                }
                if let Some(len) = protocol::write_audio(&mut pkt, &h, &samples[..n]) {
                    if kept.len() < KEPT {
                        kept.push((pkt[..len].to_vec(), s));
                    } else {
                        let k = &mut kept[next_kept];
                        k.0.clear();
                        k.0.extend_from_slice(&pkt[..len]);
                        k.1 = s;
                        next_kept = (next_kept + 1) % KEPT;
                    }
                    let lost = op % 8 == 2 && op & 8 != 0;
                    if !lost {
                        let _ = rx.handle_packet(now, &pkt[..len], from);
                    }
                }
                seq[s] = sq.wrapping_add(1);
                frame[s] = fr.wrapping_add(frames as u64);
            }
            // A time reply: to an outstanding request or made up.
            3 => {
                let pick = b.u8();
                let t1 = if pick & 1 == 0 && nreq > 0 {
                    requests[pick as usize / 2 % nreq]
                } else {
                    b.u64()
                };
                let delay = b.u16() as u64 * 100;
                let t2 = (t1.wrapping_add(delay) as i64).wrapping_add(offset) as u64;
                let t3 = if pick & 2 == 0 {
                    t2.wrapping_add(10_000)
                } else {
                    b.u64()
                };
                let t = TimePacket {
                    stream_id: if pick & 4 == 0 {
                        sessions[(pick >> 3) as usize % 3]
                    } else {
                        b.u64()
                    },
                    node_id: 7,
                    t1,
                    t2,
                    t3,
                };
                let mut buf = [0u8; protocol::TIME_LEN];
                if let Some(n) = protocol::write_time(&mut buf, pick & 8 == 0, &t) {
                    let _ = rx.handle_packet(now, &buf[..n], from);
                }
            }
            // A sync message: its session's next one, or a replay, a
            // re-numbered or a shifted one (from its address or another).
            4 if op & 32 != 0 => {
                let s = (op >> 4) as usize % 3;
                let pick = b.u8();
                let sq = if pick & 1 == 0 { sync_seq[s] } else { b.u64() };
                sync_seq[s] = sq.wrapping_add(1);
                let t3 =
                    ((now as i64).wrapping_add(offset) as u64).wrapping_sub(b.u16() as u64 * 1000);
                let y = SyncPacket {
                    stream_id: sessions[s],
                    seq: sq,
                    t3: if pick & 2 == 0 { t3 } else { b.u64() },
                    announce: (pick & 4 == 0).then(|| Announce {
                        name_hash: protocol::stream_hash("default"),
                        priority: (pick >> 4) as i8 - 8,
                        streaming: pick & 8 == 0,
                        latency_ms: b.u16(),
                    }),
                };
                let mut buf = [0u8; protocol::SYNC_LEN];
                if let Some(n) = protocol::write_sync(&mut buf, &y) {
                    let _ = rx.handle_packet(now, &buf[..n], from);
                }
            }
            // Status from anyone.
            4 => {
                let mut buf = [0u8; protocol::MAX_STATUS_LEN];
                let st = StatusPacket {
                    stream_id: b.u64(),
                    node_id: b.u64(),
                    role: if op & 16 == 0 {
                        Role::Sender
                    } else {
                        Role::Receiver
                    },
                    flags: b.u8(),
                    counters: StatusCounters {
                        rate: b.u32(),
                        ..Default::default()
                    },
                    name: "fuzz",
                    host: "fuzz",
                    stream: "default",
                    settings: None,
                };
                if let Some(n) = protocol::write_status(&mut buf, &st) {
                    let _ = rx.handle_packet(now, &buf[..n], from);
                }
            }
            // An output cycle at the instant it is heard.
            5 => {
                let frames = b.u16() as usize % MAX_FILL + 1;
                let ahead = b.u16() as u64 * 1000;
                let o = &mut out[..frames * channels as usize];
                rx.fill(now.wrapping_add(ahead), o);
                assert!(o.iter().all(|s| s.is_finite()), "non-finite output sample");
            }
            // Requests due: time requests, and for repair Hellos and
            // NACKs, to a sender's address.
            6 => {
                for _ in 0..8 {
                    let Some((n, to)) = rx.poll_transmit(now, &mut pkt) else {
                        break;
                    };
                    assert!(
                        addrs.contains(&to),
                        "request to {to}, where nothing came from"
                    );
                    match protocol::parse(&pkt[..n]) {
                        Ok(Packet::TimeRequest(_)) => {
                            requests[nreq % requests.len()] = now;
                            nreq = (nreq + 1).min(requests.len());
                        }
                        Ok(Packet::Hello(h)) => {
                            assert_eq!(h.node_id, 7);
                            if nhello == hellos.len() {
                                hellos.rotate_left(1);
                                nhello -= 1;
                            }
                            hellos[nhello] = h.nonce;
                            nhello += 1;
                        }
                        Ok(Packet::Nack(k)) => assert_eq!(k.node_id, 7),
                        other => panic!("the receiver sent {other:?}"),
                    }
                }
            }
            // Time passes (CLOCK_MONOTONIC never goes back): mostly a
            // cycle's worth, sometimes seconds, sometimes days.
            _ => {
                now = match op >> 5 {
                    0..=5 => now + b.u16() as u64 * 1000,
                    6 => now + b.u16() as u64 * 1_000_000,
                    _ => now + b.u32() as u64 * 1_000_000,
                };
            }
        }
        assert!(rx.sync_error_ns().is_finite(), "sync error is not finite");
    }
    // To see what an input reaches (seeds, a crash):
    // BARK_FUZZ_DEBUG=1 target/.../receiver INPUT
    if std::env::var_os("BARK_FUZZ_DEBUG").is_some() {
        eprintln!("counters: {:?}\nrepair: {:?}", rx.counters(), rx.repair());
    }
    // Whatever state it ended in, its own status report is well-formed.
    let mut st = [0u8; protocol::MAX_STATUS_LEN];
    if let Some(n) = rx.write_status(&mut st) {
        assert!(
            protocol::parse(&st[..n]).is_ok(),
            "own status does not parse"
        );
    }
});

//! Opus audio through a receiver (`audio.format = OPUS`): packets made by
//! the core's own encoder and writer, so that most pass the parser and the
//! TOC check and reach the decoder stage, then cut, extended, bit-flipped,
//! their TOC byte replaced, their frame count, frame index or sequence
//! number changed; lost, reordered, repeated; output cycles of any size in
//! between. Invariants: nothing panics, every output sample is finite,
//! and the stage's counts only grow.
#![no_main]

use bark_core::format::{AudioFormat, SampleFormat};
use bark_core::opus::{OpusConfig, OpusFrameEncoder};
use bark_core::protocol::{self, Announce, AudioHeader, SyncPacket};
use bark_core::{Receiver, ReceiverConfig};
use bark_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddr};

/// Events per input: bounds the time one input takes.
const MAX_EVENTS: usize = 600;
/// Largest output buffer asked for, frames.
const MAX_FILL: usize = 4_096;

fuzz_target!(|d: &[u8]| {
    let mut b = Bytes::new(d);
    let cfg = b.u8();
    let channels = 1 + cfg % 2;
    let frames = [120u16, 240, 480, 960][(cfg >> 1) as usize % 4];
    let opus = OpusConfig {
        bitrate_kbps: [6, 64, 160, 510][(cfg >> 3) as usize % 4],
        frames,
    };
    let Ok(mut enc) = OpusFrameEncoder::new(channels, &opus, 1275) else {
        return;
    };
    let Ok(mut rx) = Receiver::new(ReceiverConfig {
        rate: 48_000,
        channels: 1 + (cfg >> 5) % 2,
        node_id: 7,
        ..Default::default()
    }) else {
        return;
    };
    let from: SocketAddr = (Ipv4Addr::new(10, 0, 0, 1), 1530).into();
    let format = AudioFormat {
        sample: SampleFormat::Opus,
        rate: 48_000,
        channels,
    };
    let mut now: u64 = 1_000_000_000;
    let mut seq = 0u64;
    let mut sync_seq = 0u64;
    let mut frame = 0u64;
    let mut pkt = vec![0u8; 2_048];
    let mut payload = vec![0u8; 1_400];
    let mut input = vec![0f32; 960 * 2];
    let mut out = vec![0f32; MAX_FILL * 2];
    let mut last = rx.opus();
    for _ in 0..MAX_EVENTS {
        if b.is_empty() {
            break;
        }
        let op = b.u8();
        match op % 4 {
            // A packet, perhaps damaged.
            0 | 1 => {
                let n = frames as usize * channels as usize;
                let tone = b.u8() as f32 / 255.0;
                for (i, v) in input[..n].iter_mut().enumerate() {
                    *v = ((i as f32 * 0.05 * (1.0 + tone)).sin()) * tone;
                }
                let mut len = 0;
                enc.push(frame, 0.0, 1.0, &input[..n], &mut |e, x| {
                    len = x.len;
                    payload[..x.len].copy_from_slice(e.packet(&x));
                });
                if len == 0 {
                    continue;
                }
                let damage = b.u8();
                let mut plen = len;
                if damage & 1 != 0 {
                    plen = (b.u16() as usize) % 1_400;
                }
                if damage & 2 != 0 && plen > 0 {
                    let at = b.u16() as usize % plen;
                    payload[at] ^= b.u8() | 1;
                }
                if damage & 4 != 0 && plen > 0 {
                    payload[0] = b.u8();
                }
                let h_frames = if damage & 8 != 0 { b.u16() % 4_097 } else { frames };
                let h_seq = match damage >> 4 {
                    0 => seq.wrapping_add(b.u8() as u64),
                    1 => seq.wrapping_sub(b.u8() as u64),
                    2 => b.u64(),
                    _ => seq,
                };
                let h = AudioHeader {
                    positions: Default::default(),
                    stream_id: 0x5e55,
                    seq: h_seq,
                    frame: if damage & 0x40 != 0 { b.u64() } else { frame },
                    pts: (frame as f64 * 1e9 / 48e3) as i64 + 1_000_000_000,
                    format,
                    latency_us: 40_000,
                    name_hash: 0,
                    priority: 0,
                    frames: h_frames,
                };
                if let Some(l) = protocol::write_audio_payload(&mut pkt, &h, &payload[..plen]) {
                    // Lost on the way, or delivered (once or twice).
                    if op & 0x10 == 0 {
                        let _ = rx.handle_packet(now, &pkt[..l], from);
                        if op & 0x20 != 0 {
                            let _ = rx.handle_packet(now, &pkt[..l], from);
                        }
                    }
                }
                seq += 1;
                frame += frames as u64;
                now += frames as u64 * 20_833;
            }
            // An output cycle.
            2 => {
                let n = (b.u16() as usize % MAX_FILL + 1) * rx.config().channels as usize;
                rx.fill(now, &mut out[..n]);
                assert!(out[..n].iter().all(|v| v.is_finite()), "non-finite output");
                now += b.u16() as u64 * 1_000;
            }
            // Time passes; a sync message of the session (the receiver's
            // clock then comes from them, and it plays); a raw datagram.
            _ => {
                now += b.u32() as u64 % 3_000_000_000;
                if op & 0x40 != 0 {
                    let y = SyncPacket {
                        stream_id: 0x5e55,
                        seq: sync_seq,
                        t3: now,
                        announce: Some(Announce {
                            name_hash: 0,
                            priority: 0,
                            streaming: true,
                            latency_ms: 40,
                        }),
                    };
                    sync_seq += 1;
                    if let Some(l) = protocol::write_sync(&mut pkt, &y) {
                        let _ = rx.handle_packet(now + 100_000, &pkt[..l], from);
                    }
                }
                if op & 0x80 != 0 {
                    let n = b.u16() as usize % 1_600;
                    let raw = b.take(n);
                    let _ = rx.handle_packet(now, raw, from);
                }
            }
        }
        let c = rx.opus();
        assert!(c.decoded >= last.decoded && c.concealed >= last.concealed && c.invalid >= last.invalid);
        last = c;
    }
});

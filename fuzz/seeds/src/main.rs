//! Writes the seed corpus of the fuzz targets into `<dir>/parse/`,
//! `<dir>/receiver/` and `<dir>/auth/` (default `fuzz/corpus`): valid packets of every type,
//! written by bark-core's own writers, a few malformed ones, and receiver
//! programs (see fuzz_targets/receiver.rs for their encoding) that reach
//! playback, switch sessions and lose packets. Deterministic: re-running it
//! rewrites the same files.
//!
//!     cargo run --manifest-path fuzz/Cargo.toml -p bark-fuzz-seeds [-- DIR]

use bark_core::format::{AudioFormat, SampleFormat};
use bark_core::protocol::{self, AudioHeader, Role, StatusCounters, StatusPacket, TimePacket};
use std::path::{Path, PathBuf};

fn audio(sample: SampleFormat, channels: u8, frames: u16, seq: u64) -> Vec<u8> {
    let h = AudioHeader {
        stream_id: 0x1111,
        seq,
        frame: seq * frames as u64,
        pts: 5_000_000_000 + seq as i64 * 3_666_667,
        format: AudioFormat {
            sample,
            rate: 48_000,
            channels,
        },
        latency_us: 40_000,
        name_hash: protocol::stream_hash("default"),
        priority: 0,
        frames,
    };
    let samples: Vec<f32> = (0..frames as usize * channels as usize)
        .map(|i| (i as f32 * 0.01).sin() * 0.5)
        .collect();
    let mut out = vec![0u8; 70_000];
    let n = protocol::write_audio(&mut out, &h, &samples).expect("audio fits");
    out.truncate(n);
    out
}

fn time(reply: bool) -> Vec<u8> {
    let mut out = vec![0u8; protocol::TIME_LEN];
    let t = TimePacket {
        stream_id: 0x1111,
        node_id: 7,
        t1: 1_000_000_000,
        t2: if reply { 2_000_050_000 } else { 0 },
        t3: if reply { 2_000_060_000 } else { 0 },
    };
    protocol::write_time(&mut out, reply, &t).expect("time fits");
    out
}

fn status(role: Role) -> Vec<u8> {
    let mut out = vec![0u8; protocol::MAX_STATUS_LEN];
    let n = protocol::write_status(
        &mut out,
        &StatusPacket {
            stream_id: 0x1111,
            node_id: 42,
            role,
            flags: 1,
            counters: StatusCounters {
                rate: 48_000,
                channels: 2,
                latency_us: 40_000,
                packets: 1000,
                lost: 3,
                ..Default::default()
            },
            name: "bark_source",
            host: "h1",
            stream: "default",
        },
    )
    .expect("status fits");
    out.truncate(n);
    out
}

/// A receiver program: `cycles` rounds of audio packet, requests, a reply
/// to the newest request, a cycle of time and an output buffer.
fn program(cfg: u8, cycles: usize, switch_at: Option<usize>, lose_every: usize) -> Vec<u8> {
    let mut p = vec![cfg];
    p.extend_from_slice(&1_000_000u32.to_le_bytes()); // sender offset
    for c in 0..cycles {
        let s = if switch_at.is_some_and(|k| c >= k) {
            0x10
        } else {
            0
        };
        if lose_every == 0 || c % lose_every != lose_every - 1 {
            // op 1 (audio) from session s, ctl 0 (plausible), F32, level 32
            p.extend_from_slice(&[1 | s, 0, 0, 32]);
        }
        p.push(6); // requests due
        p.extend_from_slice(&[3, 0]); // reply to an outstanding request
        p.extend_from_slice(&200u16.to_le_bytes()); // 20 µs each way
        p.push(7); // 3667 µs pass
        p.extend_from_slice(&3667u16.to_le_bytes());
        p.push(5); // fill 176 frames heard 1 ms from now
        p.extend_from_slice(&176u16.to_le_bytes());
        p.extend_from_slice(&1000u16.to_le_bytes());
    }
    p
}

/// An auth program (see fuzz_targets/auth.rs): seal and open genuine
/// datagrams, replay and tamper with them, move the clocks, go stale.
fn auth_program(encrypt: bool) -> Vec<u8> {
    let mut p = vec![u8::from(encrypt)];
    for i in 0..8u8 {
        // op 1: a time request with these ids and t1.
        p.push(1);
        p.extend_from_slice(&0x1111u64.to_le_bytes());
        p.extend_from_slice(&7u64.to_le_bytes());
        p.extend_from_slice(&(1_000 + i as u64).to_le_bytes());
        // op 2: audio type with a 64-byte body.
        p.push(2);
        p.extend_from_slice(&64u16.to_le_bytes());
        p.extend(std::iter::repeat_n(i, 64));
        p.push(0); // type 1 (audio)
        p.extend_from_slice(&0x1111u64.to_le_bytes());
        // op 3: replay datagram i, flip byte 20.
        p.extend_from_slice(&[3, i, 20, 0, 0x40]);
        // op 4: 1 ms passes.
        p.push(4);
        p.extend_from_slice(&1000u32.to_le_bytes());
    }
    // op 4 with bit 7: a stale datagram.
    p.push(4 | 0x80);
    p.extend_from_slice(&5u32.to_le_bytes());
    // op 0: 48 random-looking bytes.
    p.push(0);
    p.extend_from_slice(&48u16.to_le_bytes());
    p.extend((0..48u8).map(|x| x.wrapping_mul(37)));
    p
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    std::fs::write(dir.join(name), data).unwrap_or_else(|e| panic!("{name}: {e}"));
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("fuzz/corpus"));
    let parse = root.join("parse");
    let recv = root.join("receiver");
    let auth = root.join("auth");
    for d in [&parse, &recv, &auth] {
        std::fs::create_dir_all(d).expect("corpus dir");
    }
    write(
        &parse,
        "audio-f32-stereo",
        &audio(SampleFormat::F32, 2, 176, 3),
    );
    write(
        &parse,
        "audio-s24-mono",
        &audio(SampleFormat::S24, 1, 48, 0),
    );
    write(&parse, "audio-s16-8ch", &audio(SampleFormat::S16, 8, 32, 9));
    write(&parse, "time-request", &time(false));
    write(&parse, "time-reply", &time(true));
    write(&parse, "status-sender", &status(Role::Sender));
    write(&parse, "status-receiver", &status(Role::Receiver));
    let a = audio(SampleFormat::F32, 2, 176, 3);
    write(&parse, "bad-truncated-audio", &a[..a.len() - 5]);
    let mut v = a.clone();
    v[4] = 2;
    write(&parse, "bad-version", &v);
    let mut m = a.clone();
    m[0] = b'b';
    write(&parse, "bad-magic", &m);
    let mut big = a.clone();
    big.extend_from_slice(&[0u8; 64]);
    write(&parse, "bad-oversized-audio", &big);
    let mut z = a;
    z[8..16].fill(0);
    write(&parse, "bad-stream-id-0", &z);
    write(&parse, "bad-short", b"BARK\x01");

    write(&recv, "play", &program(10, 400, None, 0));
    write(&recv, "play-mono-44k", &program(1, 300, None, 0));
    write(&recv, "switch-session", &program(10, 400, Some(250), 0));
    write(&recv, "loss-1-in-7", &program(0x4B, 400, None, 7));
    write(&auth, "seal-open-replay", &auth_program(false));
    write(&auth, "seal-open-replay-encrypted", &auth_program(true));
    println!("seed corpus written to {}", root.display());
}

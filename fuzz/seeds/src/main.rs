//! Writes the seed corpus of the fuzz targets into `<dir>/parse/`,
//! `<dir>/receiver/`, `<dir>/auth/` and `<dir>/sender/` (default
//! `fuzz/corpus`): valid packets of every type, written by bark-core's own
//! writers, a few malformed ones, receiver programs (see
//! fuzz_targets/receiver.rs for their encoding) that reach playback,
//! switch sessions, lose packets and have them resent, and sender programs
//! (fuzz_targets/sender.rs) that ask for cookies and resends, steal
//! cookies, storm and send junk. Deterministic: re-running it rewrites the
//! same files.
//!
//!     cargo run --manifest-path fuzz/Cargo.toml -p bark-fuzz-seeds [-- DIR]

use bark_core::format::{AudioFormat, SampleFormat};
use bark_core::protocol::{
    self, AudioHeader, CookiePacket, CookieTag, HelloPacket, NackPacket, Role, StatusCounters,
    StatusPacket, SyncPacket, TimePacket,
};
use std::path::{Path, PathBuf};

fn audio(sample: SampleFormat, channels: u8, frames: u16, seq: u64) -> Vec<u8> {
    let h = AudioHeader {
        positions: Default::default(),
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
            settings: None,
        },
    )
    .expect("status fits");
    out.truncate(n);
    out
}

fn nack() -> Vec<u8> {
    let mut out = vec![0u8; protocol::NACK_LEN];
    let n = NackPacket {
        stream_id: 0x1111,
        node_id: 7,
        cookie: CookieTag {
            slot: 0,
            mac: [0xa5; 16],
        },
        base: 1000,
        mask: 0b1011,
    };
    protocol::write_nack(&mut out, &n).expect("NACK fits");
    out
}

fn hello() -> Vec<u8> {
    let mut out = vec![0u8; protocol::HELLO_LEN];
    let h = HelloPacket {
        stream_id: 0x1111,
        node_id: 7,
        nonce: 0x0123_4567_89ab_cdef,
    };
    protocol::write_hello(&mut out, &h).expect("Hello fits");
    out
}

fn cookie() -> Vec<u8> {
    let mut out = vec![0u8; protocol::COOKIE_LEN];
    let c = CookiePacket {
        stream_id: 0x1111,
        node_id: 7,
        nonce: 0x0123_4567_89ab_cdef,
        cookie: CookieTag {
            slot: 14,
            mac: [0x5a; 16],
        },
        offers: protocol::OFFER_NACK,
    };
    protocol::write_cookie(&mut out, &c).expect("Cookie fits");
    out
}

fn sync() -> Vec<u8> {
    let mut out = vec![0u8; protocol::SYNC_LEN];
    let y = SyncPacket {
        stream_id: 0x1111,
        seq: 9,
        t3: 2_000_000_000,
        announce: Some(protocol::Announce {
            name_hash: protocol::stream_hash("default"),
            priority: 0,
            streaming: true,
            latency_ms: 40,
        }),
    };
    protocol::write_sync(&mut out, &y).expect("sync fits");
    out
}

/// An Opus audio packet (10 ms, stereo) made by the core's encoder.
fn opus_audio() -> Vec<u8> {
    let cfg = bark_core::opus::OpusConfig::default();
    let mut enc = bark_core::opus::OpusFrameEncoder::new(2, &cfg, 1275).expect("encoder");
    let pcm: Vec<f32> = (0..960).map(|i| (i as f32 * 0.03).sin() * 0.5).collect();
    let mut payload = Vec::new();
    enc.push(0, 0.0, 1.0, &pcm, &mut |e, x| payload = e.packet(&x).to_vec());
    let h = AudioHeader {
        positions: Default::default(),
        stream_id: 0x1111,
        seq: 5,
        frame: 2_400,
        pts: 1_000_000_000,
        format: AudioFormat {
            sample: SampleFormat::Opus,
            rate: 48_000,
            channels: 2,
        },
        latency_us: 40_000,
        name_hash: protocol::stream_hash("default"),
        priority: 0,
        frames: 480,
    };
    let mut out = vec![0u8; 2_048];
    let n = protocol::write_audio_payload(&mut out, &h, &payload).expect("fits");
    out.truncate(n);
    out
}

/// An `opus` target program: stereo 10 ms frames at 160 kbit/s into a
/// stereo receiver; per round a packet (lost when `lose_every` says),
/// with every second round a sync message and an output cycle of 960
/// frames; `damage`: every fifth packet flipped in one byte.
fn opus_program(rounds: usize, lose_every: usize, damage: bool) -> Vec<u8> {
    let mut p = vec![0x35];
    for r in 0..rounds {
        let lost = lose_every > 0 && r % lose_every == lose_every - 1;
        p.push(if lost { 0x10 } else { 0 });
        p.push(200); // tone
        if damage && r % 5 == 4 {
            p.push(0x32); // a flipped byte, sequence as sent
            p.extend_from_slice(&17u16.to_le_bytes());
            p.push(0x5a);
        } else {
            p.push(0x30); // as sent
        }
        if r % 2 == 1 {
            p.push(0x43); // time passes: 0 µs, a sync message
            p.extend_from_slice(&0u32.to_le_bytes());
            p.push(2); // an output cycle of 960 frames
            p.extend_from_slice(&959u16.to_le_bytes());
            p.extend_from_slice(&0u16.to_le_bytes());
        }
    }
    p
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
        // op 1 (audio) from session s, ctl 0 (plausible), F32, pts now,
        // level 32; op 2 with bit 3: lost on the way.
        let lost = lose_every != 0 && c % lose_every == lose_every - 1;
        let op = if lost { 2 | 8 } else { 1 };
        p.extend_from_slice(&[op | s, 0, 0, 0, 0, 32]);
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

/// A receiver program with repair: as [`program`], but every
/// `lose_every`th packet is lost on the way (op 2 with bit 3) and resent
/// two rounds later (op 0 with bits 6 and 7), and each Hello is
/// answered with a Cookie (op 0 with bit 7).
fn repair_program(cycles: usize, lose_every: usize) -> Vec<u8> {
    let mut p = vec![10u8];
    p.extend_from_slice(&1_000_000u32.to_le_bytes());
    for c in 0..cycles {
        if c % lose_every == lose_every - 1 {
            p.extend_from_slice(&[2 | 8, 0, 0, 0, 0, 32]); // lost
        } else {
            p.extend_from_slice(&[1, 0, 0, 0, 0, 32]);
        }
        p.push(6);
        p.extend_from_slice(&[3, 0]);
        p.extend_from_slice(&200u16.to_le_bytes());
        // A Cookie for its newest Hello, from session 0's address
        // (0x90 >> 4 = 9, 9 % 3 = 0).
        p.extend_from_slice(&[0x90, 0]);
        p.extend_from_slice(&[0xc3; 16]); // MAC
        p.extend_from_slice(&0u32.to_le_bytes()); // slot
        p.push(6); // NACKs
        if c % lose_every == 1 && c > lose_every {
            // The packet lost two rounds ago (kept ring index), resent.
            let k = (c - 2) % 16;
            p.extend_from_slice(&[0xc0, k as u8]);
        }
        p.push(7);
        p.extend_from_slice(&3667u16.to_le_bytes());
        p.push(5);
        p.extend_from_slice(&176u16.to_le_bytes());
        p.extend_from_slice(&1000u16.to_le_bytes());
    }
    p
}

/// Sender programs (see fuzz_targets/sender.rs): op byte is kind | peer << 4.
mod sender {
    /// Peer `p` says Hello, gets its Cookie and NACKs `back` packets
    /// before the newest and the 64 after.
    pub fn handshake(p: &mut Vec<u8>, peer: u8, nonce: u64, back: u8) {
        p.push(3 | peer << 4);
        p.extend_from_slice(&nonce.to_le_bytes());
        p.extend_from_slice(&[4, back]); // base = newest - back, mask all ones
    }

    /// A cycle: push, drain, wait.
    pub fn cycle(p: &mut Vec<u8>) {
        p.push(8);
    }

    /// A NACK from `peer` with its newest cookie for `back` and 3 after.
    pub fn nack(p: &mut Vec<u8>, peer: u8, back: u8) {
        p.push(4 | peer << 4);
        p.extend_from_slice(&[12, back, 0x07]); // mask 1 << 7
    }

    pub fn drain(p: &mut Vec<u8>) {
        p.push(9);
    }

    /// Receivers that lose a packet now and then and ask for it.
    pub fn repair() -> Vec<u8> {
        let mut p = vec![];
        handshake(&mut p, 1, 11, 2);
        drain(&mut p);
        handshake(&mut p, 2, 22, 1);
        drain(&mut p);
        for c in 0..60u8 {
            cycle(&mut p);
            if c % 5 == 0 {
                nack(&mut p, 1 + c % 2, 1);
                drain(&mut p);
            }
        }
        p
    }

    /// Peer 2 NACKs with peer 1's cookie, with a made-up one, for
    /// another node and another session; then peer 1 storms.
    pub fn thief() -> Vec<u8> {
        let mut p = vec![];
        handshake(&mut p, 1, 11, 3);
        drain(&mut p);
        for _ in 0..4 {
            cycle(&mut p);
            // Stolen: q = (2 + 1 + 6) % 8 = 1.
            p.extend_from_slice(&[6 | 2 << 4, 1 | 6 << 2, 4, 2]);
            // Made up.
            p.extend_from_slice(&[6 | 2 << 4, 0]);
            p.extend_from_slice(&[0x77; 16]);
            p.extend_from_slice(&[4, 2]);
            // Its own cookie, other node; other session.
            p.extend_from_slice(&[6 | 1 << 4, 2]);
            p.extend_from_slice(&5u64.to_le_bytes());
            p.extend_from_slice(&[4, 2]);
            p.extend_from_slice(&[6 | 1 << 4, 3]);
            p.extend_from_slice(&78u64.to_le_bytes());
            p.extend_from_slice(&[4, 2]);
            drain(&mut p);
        }
        // A storm of 32 NACKs from peer 1, draining and waiting.
        p.extend_from_slice(&[15 | 1 << 4, 31 | 32 | 64]);
        drain(&mut p);
        p
    }

    /// Junk from peers 5 and 6, time requests from 7, a receiver's status
    /// from 3, cookies expiring after 3 minutes.
    pub fn junk() -> Vec<u8> {
        let mut p = vec![];
        p.push(5 << 4); // raw
        p.extend_from_slice(&40u16.to_le_bytes());
        p.extend((0..40u8).map(|x| x.wrapping_mul(91)));
        p.extend_from_slice(&[1 | 6 << 4, 6 << 1]); // header of a NACK
        p.extend_from_slice(&48u16.to_le_bytes()); // and 48 bytes
        p.extend((0..48u8).map(|x| x ^ 0x3c));
        p.extend_from_slice(&[2 | 6 << 4, 4 | 5 << 4]); // Hello with padding set
        p.extend_from_slice(&99u64.to_le_bytes());
        p.extend_from_slice(&[13 | 7 << 4, 0]); // time request
        p.extend_from_slice(&1234u64.to_le_bytes());
        p.push(14 | 3 << 4); // status: needs 200 ms
        p.extend_from_slice(&3125u16.to_le_bytes());
        drain(&mut p);
        handshake(&mut p, 4, 44, 1);
        drain(&mut p);
        p.push(11 | 0xc0); // 200 s pass
        p.extend_from_slice(&200_000u32.to_le_bytes());
        cycle(&mut p);
        nack(&mut p, 4, 1);
        drain(&mut p);
        p
    }
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
    let send = root.join("sender");
    let opus = root.join("opus");
    for d in [&parse, &recv, &auth, &send, &opus] {
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
    write(&parse, "sync", &sync());
    write(&parse, "nack", &nack());
    write(&parse, "hello", &hello());
    write(&parse, "cookie", &cookie());
    let mut resent = audio(SampleFormat::F32, 2, 176, 4);
    protocol::mark_resent(&mut resent, 60_000);
    write(&parse, "audio-resent", &resent);
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
    write(&parse, "audio-opus", &opus_audio());

    write(&recv, "play", &program(10, 400, None, 0));
    write(&recv, "play-mono-44k", &program(1, 300, None, 0));
    write(&recv, "switch-session", &program(10, 400, Some(250), 0));
    write(&recv, "loss-1-in-7", &program(0x4B, 400, None, 7));
    write(&recv, "repair-1-in-9", &repair_program(400, 9));
    write(&send, "repair", &sender::repair());
    write(&send, "thief", &sender::thief());
    write(&send, "junk", &sender::junk());
    write(&opus, "play", &opus_program(300, 0, false));
    write(&opus, "loss-1-in-7", &opus_program(300, 7, false));
    write(&opus, "damaged", &opus_program(300, 0, true));
    write(&auth, "seal-open-replay", &auth_program(false));
    write(&auth, "seal-open-replay-encrypted", &auth_program(true));
    println!("seed corpus written to {}", root.display());
}

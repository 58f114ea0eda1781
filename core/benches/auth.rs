//! Cost of authenticating one datagram: `Sealer::seal` and `Opener::open`
//! (tag, replay window, and decryption where encrypted) on a full audio
//! packet of the default format at the default MTU (170 frames of stereo
//! F32, 1420 bytes plus the 48-byte trailer) and on a 48-byte time packet.
//!
//! Criterion's time per iteration is the CPU time per datagram; multiply by
//! about 273 audio packets per second for the cost per second of audio.
//! Run: `cargo bench -p bark-core --bench auth`.

use bark_core::auth::{Key, Opener, Sealer, OVERHEAD};
use bark_core::protocol::{self, AudioHeader, TimePacket, DEFAULT_MTU, IP_UDP_OVERHEAD};
use bark_core::AudioFormat;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

const WALL: u64 = 1_800_000_000_000_000_000;

fn audio_packet() -> Vec<u8> {
    let format = AudioFormat::default();
    let frames = protocol::frames_for_mtu(DEFAULT_MTU - OVERHEAD, &format);
    let h = AudioHeader {
        positions: Default::default(),
        stream_id: 1,
        seq: 0,
        frame: 0,
        pts: 0,
        format,
        latency_us: 40_000,
        name_hash: 0,
        priority: 0,
        frames: frames as u16,
    };
    let samples: Vec<f32> = (0..frames * 2).map(|i| (i as f32 * 0.01).sin()).collect();
    let mut buf = vec![0u8; DEFAULT_MTU];
    let n = protocol::write_audio(&mut buf, &h, &samples).unwrap();
    assert!(IP_UDP_OVERHEAD + n + OVERHEAD <= DEFAULT_MTU);
    buf.truncate(n);
    buf
}

fn time_packet() -> Vec<u8> {
    let mut buf = vec![0u8; protocol::TIME_LEN];
    let t = TimePacket {
        t2: 4,
        t3: 5,
        ..TimePacket::request(1, 2, 3)
    };
    protocol::write_time(&mut buf, true, &t).unwrap();
    buf
}

fn bench_packet(c: &mut Criterion, name: &str, plain: &[u8], encrypt: bool) {
    let key = Key::from_bytes([7; 32]);
    let mut sealer = Sealer::with_epoch(&key, [1; 16], encrypt);
    let mut opener = Opener::new(&key);
    let mut buf = vec![0u8; plain.len() + OVERHEAD];
    c.bench_function(&format!("seal {name}"), |b| {
        b.iter(|| {
            buf[..plain.len()].copy_from_slice(plain);
            black_box(sealer.seal(&mut buf, plain.len(), WALL))
        })
    });
    // Every open needs a fresh counter, so it is timed with its seal;
    // open alone is the difference of the two figures.
    c.bench_function(&format!("seal+open {name}"), |b| {
        b.iter(|| {
            buf[..plain.len()].copy_from_slice(plain);
            let n = sealer.seal(&mut buf, plain.len(), WALL).unwrap();
            black_box(opener.open(&mut buf[..n], WALL).unwrap())
        })
    });
}

fn auth(c: &mut Criterion) {
    let audio = audio_packet();
    bench_packet(c, "audio 1420 B", &audio, false);
    bench_packet(c, "audio 1420 B encrypted", &audio, true);
    bench_packet(c, "time 48 B", &time_packet(), false);
}

criterion_group!(benches, auth);
criterion_main!(benches);

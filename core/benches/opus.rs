//! Cost of Opus (`audio.format = OPUS`, core/src/opus.rs) per second of
//! 48 kHz stereo: the sender's encoding (the sink's 1024-frame buffers
//! into Opus frames, `bark.opus.bitrate` and `bark.opus.frame-msec` at
//! their defaults and at the extremes a user may pick) and a receiver's
//! decoding, through the decoder stage as the receiver runs it.
//!
//! Criterion's time per iteration is the CPU time for one second of audio
//! (the limits: encode ≤ 10 ms, decode ≤ 5 ms). The signal is a
//! music-like mix (three detuned partials per channel, with a little
//! noise), so the encoder's analysis does real work. Run:
//! `cargo bench -p bark-core --bench opus`.

use bark_core::opus::{OpusConfig, OpusDecoderStage, OpusFrameEncoder};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

const RATE: usize = 48_000;

fn signal() -> Vec<f32> {
    let mut seed = 0x2545_f491_u32;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed as f32 / u32::MAX as f32 - 0.5) * 0.02
    };
    (0..RATE)
        .flat_map(|i| {
            let t = i as f32 / RATE as f32;
            let w = 2.0 * std::f32::consts::PI * t;
            let l = 0.3 * (w * 220.0).sin() + 0.2 * (w * 331.0).sin() + 0.1 * (w * 1_870.0).sin();
            let r = 0.3 * (w * 221.5).sin() + 0.2 * (w * 442.0).sin() + 0.1 * (w * 2_960.0).sin();
            [l + noise(), r + noise()]
        })
        .collect()
}

/// One second of `pcm` through a fresh encoder; the packets.
fn encode(cfg: &OpusConfig, pcm: &[f32]) -> Vec<Vec<u8>> {
    let mut e = OpusFrameEncoder::new(2, cfg, 1412).unwrap();
    let mut out = Vec::new();
    for (k, buf) in pcm.chunks(1024 * 2).enumerate() {
        let f = (k * 1024) as u64;
        e.push(f, 0.0, 1.0, buf, &mut |e, x| {
            out.push(e.packet(&x).to_vec())
        });
    }
    out
}

fn bench(c: &mut Criterion) {
    let pcm = signal();
    for (kbps, ms) in [
        (160, "10"),
        (96, "10"),
        (256, "10"),
        (160, "2.5"),
        (160, "20"),
    ] {
        let cfg = OpusConfig::new(kbps, ms);
        let mut e = OpusFrameEncoder::new(2, &cfg, 1412).unwrap();
        c.bench_function(&format!("encode 1 s, {kbps} kbit/s, {ms} ms frames"), |b| {
            b.iter(|| {
                let mut bytes = 0;
                for (k, buf) in pcm.chunks(1024 * 2).enumerate() {
                    e.push((k * 1024) as u64, 0.0, 1.0, buf, &mut |_, x| bytes += x.len);
                }
                black_box(bytes)
            })
        });
        let packets = encode(&cfg, &pcm);
        let frames = cfg.frames;
        let mut st = OpusDecoderStage::new().unwrap();
        let mut seq = 0u64;
        st.reset(2);
        c.bench_function(&format!("decode 1 s, {kbps} kbit/s, {ms} ms frames"), |b| {
            b.iter(|| {
                let mut sum = 0.0f32;
                for p in &packets {
                    st.offer(seq, seq * u64::from(frames), frames, p);
                    seq += 1;
                    while let Some(blk) = st.pop(0) {
                        sum += st.pcm(&blk)[0];
                    }
                }
                black_box(sum)
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

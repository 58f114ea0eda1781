//! Cost of FEC (`bark.fec`, core/src/fec.rs): the sender's encoding of one
//! block (k audio datagrams of the default stream, 1468 bytes, into m
//! repair packets) and a receiver's rebuild of one lost packet of a block,
//! for each shape a sink offers.
//!
//! Criterion's time per iteration is the CPU time per block; divide by k
//! and multiply by about 273 packets per second for the cost per second of
//! audio. Run: `cargo bench -p bark-core --bench fec`.

use bark_core::fec::{parse_shape, FecDecoder, FecEncoder, FEC_CHOICES};
use bark_core::protocol::{self, AudioHeader, Packet};
use bark_core::AudioFormat;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

const FRAMES: u16 = 176;

fn audio(seq: u64) -> Vec<u8> {
    let h = AudioHeader {
        positions: Default::default(),
        stream_id: 7,
        seq,
        frame: seq * u64::from(FRAMES),
        pts: seq as i64 * 3_666_666,
        format: AudioFormat::default(),
        latency_us: 40_000,
        name_hash: 0,
        priority: 0,
        frames: FRAMES,
    };
    let samples: Vec<f32> = (0..usize::from(FRAMES) * 2)
        .map(|i| ((seq as f32 + i as f32) * 0.01).sin())
        .collect();
    let mut buf = vec![0u8; 2048];
    let n = protocol::write_audio(&mut buf, &h, &samples).unwrap();
    buf.truncate(n);
    buf
}

fn bench(c: &mut Criterion) {
    let len = audio(0).len();
    for choice in &FEC_CHOICES[1..] {
        let (k, m) = parse_shape(choice).unwrap();
        let blocks: Vec<Vec<Vec<u8>>> = (0..64u64)
            .map(|b| {
                (0..u64::from(k))
                    .map(|i| audio(b * u64::from(k) + i))
                    .collect()
            })
            .collect();
        let mut enc = FecEncoder::new(k, m, len, 7).unwrap();
        let mut out = vec![0u8; 2048];
        let mut b = 0usize;
        c.bench_function(&format!("fec {choice} encode a block"), |bn| {
            bn.iter(|| {
                b = (b + 1) % blocks.len();
                let base = b as u64 * u64::from(k);
                for (i, d) in blocks[b].iter().enumerate() {
                    enc.source(base + i as u64, black_box(d));
                }
                while let Some(n) = enc.next_repair(&mut out) {
                    black_box(&out[..n]);
                }
            })
        });
        // Repair packets of every block, for the rebuilds.
        let repairs: Vec<Vec<Vec<u8>>> = blocks
            .iter()
            .enumerate()
            .map(|(b, blk)| {
                let base = b as u64 * u64::from(k);
                for (i, d) in blk.iter().enumerate() {
                    enc.source(base + i as u64, d);
                }
                let mut r = vec![];
                while let Some(n) = enc.next_repair(&mut out) {
                    r.push(out[..n].to_vec());
                }
                r
            })
            .collect();
        let mut dec = FecDecoder::new();
        dec.reset(7);
        let mut now = 1_000_000_000u64;
        let mut b = 0usize;
        c.bench_function(&format!("fec {choice} rebuild one lost packet"), |bn| {
            bn.iter(|| {
                b = (b + 1) % (blocks.len() - 1);
                if b == 0 {
                    // Block numbers only go forwards within a session.
                    dec.reset(7);
                }
                now += 20_000_000;
                let base = b as u64 * u64::from(k);
                // The shape first, then the block less its packet 1, then
                // a packet of the next block (which lets the rebuild go).
                for r in &repairs[b] {
                    if let Ok(Packet::Fec(f)) = protocol::parse(r) {
                        dec.repair(now, &f);
                    }
                }
                for (i, d) in blocks[b].iter().enumerate().filter(|(i, _)| *i != 1) {
                    dec.source(now, base + i as u64, d);
                }
                let next = b + 1;
                dec.source(now, next as u64 * u64::from(k), &blocks[next][0]);
                while let Some(n) = dec.take_recovered(&mut out) {
                    black_box(&out[..n]);
                }
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

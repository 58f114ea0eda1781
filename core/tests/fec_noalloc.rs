//! FEC on the data thread allocates nothing: a counting allocator checks
//! that, after construction and one block of warm-up per shape, encoding
//! blocks and rebuilding lost packets (core/src/fec.rs, through
//! reed-solomon-simd's `reset`, which reuses its buffers) make no
//! allocation, for every shape a sink offers, switching between them.

use bark_core::fec::{parse_shape, FecDecoder, FecEncoder, FEC_CHOICES};
use bark_core::protocol::{self, AudioHeader, Packet};
use bark_core::AudioFormat;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to the system allocator with the caller's
// arguments unchanged; counting touches only atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
        }
        // SAFETY: our caller's contract, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from System with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
        }
        // SAFETY: our caller's contract, passed on.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn audio(seq: u64) -> Vec<u8> {
    let h = AudioHeader {
        positions: Default::default(),
        stream_id: 7,
        seq,
        frame: seq * 176,
        pts: seq as i64 * 3_666_666,
        format: AudioFormat::default(),
        latency_us: 40_000,
        name_hash: 0,
        priority: 0,
        frames: 176,
    };
    let samples: Vec<f32> = (0..352).map(|i| (i as f32 * 0.01).sin()).collect();
    let mut buf = vec![0u8; 2048];
    let n = protocol::write_audio(&mut buf, &h, &samples).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn encoding_and_rebuilding_do_not_allocate() {
    let len = audio(0).len();
    let packets: Vec<Vec<u8>> = (0..400u64).map(audio).collect();
    let mut out = vec![0u8; 2048];
    let mut rebuilt = vec![0u8; 2048];
    let mut dec = FecDecoder::new();
    let mut total = 0;
    for round in 0..2 {
        for choice in &FEC_CHOICES[1..] {
            let (k, m) = parse_shape(choice).unwrap();
            let mut enc = FecEncoder::new(k, m, len, 7).unwrap();
            dec.reset(7);
            let mut now = 1_000_000_000u64;
            let mut got = 0;
            // Warm-up in the first round; counted in the second.
            COUNTING.store(round == 1, Relaxed);
            for (seq, d) in packets.iter().enumerate() {
                let seq = seq as u64;
                now += 3_666_666;
                if seq % u64::from(k) != 1 {
                    dec.source(now, seq, d);
                }
                if enc.source(seq, d) {
                    while let Some(n) = enc.next_repair(&mut out) {
                        if let Ok(Packet::Fec(f)) = protocol::parse(&out[..n]) {
                            dec.repair(now, &f);
                        }
                    }
                }
                while dec.take_recovered(&mut rebuilt).is_some() {
                    got += 1;
                }
            }
            COUNTING.store(false, Relaxed);
            assert!(got > 300 / usize::from(k), "{choice}: rebuilt {got}");
            total += got;
        }
    }
    assert!(total > 0);
    assert_eq!(
        ALLOCS.load(Relaxed),
        0,
        "allocations while encoding and rebuilding"
    );
}

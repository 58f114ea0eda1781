//! CPU cost of Bark's audio paths per second of 48 kHz stereo F32 audio.
//!
//! - `send`: the sender's `push` for one second in 256-frame buffers (DLL,
//!   packetising, encoding).
//! - `receive`: everything a receiver does for one second of audio in
//!   steady state: parse and store ~270 packets, 40 time exchanges, and
//!   `fill` in 256-frame buffers (drift control, concealment scan,
//!   16-tap resampling).
//!
//! Criterion's time per iteration *is* the CPU time per second of audio.
//! Run: `cargo bench -p bark-core --bench paths`.

use bark_core::{Receiver, ReceiverConfig, Sender, SenderConfig};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const RATE: u64 = 48_000;
const Q: usize = 256;
const CYCLES_PER_S: usize = RATE as usize / Q; // 187 buffers ≈ 1 s

fn tone(frame: u64, out: &mut [f32]) {
    for (j, f) in out.chunks_exact_mut(2).enumerate() {
        let ph = (frame + j as u64) as f32 * 0.057;
        f[0] = ph.sin() * 0.5;
        f[1] = ph.cos() * 0.5;
    }
}

fn cycle_ns(c: u64) -> u64 {
    1_000_000_000 + c * Q as u64 * 1_000_000_000 / RATE
}

fn send(c: &mut Criterion) {
    let mut s = Sender::new(SenderConfig::default()).unwrap();
    // The signal is made once: its synthesis is not the sender's work.
    let mut buf = vec![0f32; Q * 2];
    tone(0, &mut buf);
    let mut n = 0u64;
    c.bench_function("send 1 s of 48 kHz stereo F32", |b| {
        b.iter(|| {
            for _ in 0..CYCLES_PER_S {
                s.push(cycle_ns(n), &buf, &mut |d| {
                    black_box(d);
                });
                n += 1;
            }
        })
    });
}

/// A sender and a receiver on a perfect network, stepped one buffer at a
/// time; only the receiver's work is timed.
struct Pair {
    s: Sender,
    rx: Receiver,
    cycle: u64,
    samples: Vec<f32>,
    out: Vec<f32>,
    packets: Vec<Vec<u8>>,
    from: SocketAddr,
}

impl Pair {
    fn new() -> Self {
        let mut p = Pair {
            s: Sender::new(SenderConfig::default()).unwrap(),
            rx: Receiver::new(ReceiverConfig::default()).unwrap(),
            cycle: 0,
            samples: vec![0.0; Q * 2],
            out: vec![0.0; Q * 2],
            packets: Vec::new(),
            from: "127.0.0.1:1530".parse().unwrap(),
        };
        // Warm up: converge and play.
        for _ in 0..5 * CYCLES_PER_S {
            p.step();
        }
        assert!(p.rx.playing());
        p
    }

    /// One buffer; returns the time spent inside the receiver.
    fn step(&mut self) -> Duration {
        let now = cycle_ns(self.cycle);
        tone(self.cycle * Q as u64, &mut self.samples);
        self.packets.clear();
        let packets = &mut self.packets;
        self.s
            .push(now, &self.samples, &mut |d| packets.push(d.to_vec()));
        let mut req = [0u8; 64];
        let mut reply = [0u8; 64];
        let started = Instant::now();
        for p in &self.packets {
            let _ = self
                .rx
                .handle_packet(now + 200_000, black_box(p), self.from);
        }
        let mut spent = started.elapsed();
        let t = Instant::now();
        let sent = self.rx.poll_transmit(now, &mut req);
        spent += t.elapsed();
        if let Some((n, _)) = sent {
            if let Ok(Some(m)) =
                self.s
                    .handle_packet(now + 100_000, now + 110_000, &req[..n], &mut reply)
            {
                let t = Instant::now();
                let _ = self.rx.handle_packet(now + 210_000, &reply[..m], self.from);
                spent += t.elapsed();
            }
        }
        let t = Instant::now();
        self.rx.fill(now + 6_000_000, &mut self.out);
        black_box(&self.out);
        spent += t.elapsed();
        self.cycle += 1;
        spent
    }
}

fn receive(c: &mut Criterion) {
    let mut p = Pair::new();
    c.bench_function("receive 1 s of 48 kHz stereo F32", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                for _ in 0..CYCLES_PER_S {
                    total += p.step();
                }
            }
            total
        })
    });
}

criterion_group! {
    name = paths;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(8));
    targets = send, receive
}
criterion_main!(paths);

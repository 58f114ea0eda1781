//! The data-thread paths never allocate: a sender and a receiver are wired
//! together over real loopback sockets and driven like graph cycles, and a
//! counting allocator checks that, once the receiver plays, a stretch of
//! cycles (send, serve, pump, fill) makes no allocation at all: open, and
//! with a key file and encrypted audio (sealing and opening every datagram).
//! A relay between them drops one audio packet in 20, so the receiver's
//! NACKs and the sender's resends run in the measured cycles too, and, in a
//! third run with `bark.fec = 4:1`, FEC's encoding and rebuilds; then the
//! same with an Opus stream (`audio.format = OPUS`), with and without FEC.
//!
//! Runs in plain `cargo test`; no PipeWire daemon needed.

use bark_pw_module::args::{SinkArgs, SourceArgs};
use bark_pw_module::clock::{monotonic_ns, ClockMap};
use bark_pw_module::stats::Counters;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to the system allocator with the caller's
// arguments unchanged, so its contract holds as System's does; counting
// touches only atomics (no allocation, no reentrancy).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
        }
        // SAFETY: our caller's GlobalAlloc::alloc contract, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from System through `alloc`/`realloc` above,
        // with layout `l` (our caller's contract).
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
        }
        // SAFETY: as in `dealloc`, with our caller's size contract for `n`.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn args(kv: &[(&str, String)]) -> HashMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

#[test]
fn cycles_do_not_allocate() {
    // On a thread with the 8 MiB stack that PipeWire's threads get from
    // glibc: a debug build's test thread (2 MiB) is too tight for the
    // unoptimised endpoints.
    std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(cycles)
        .unwrap()
        .join()
        .unwrap();
}

fn cycles() {
    // The counter sees allocations at all.
    COUNTING.store(true, Relaxed);
    drop(std::hint::black_box(Box::new(1u64)));
    COUNTING.store(false, Relaxed);
    assert!(ALLOCS.load(Relaxed) > 0);
    // One after the other: the counter is global.
    run(&[], &[]);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("bark.key");
    bark_io::keyfile::write_key_file(&key, &bark_core::auth::Key::generate().unwrap()).unwrap();
    let key = key.to_string_lossy().into_owned();
    // Keyed, with a listed unicast address besides the destination: each
    // sync message's copy is re-stamped and re-sealed on the data thread.
    let c = run(
        &[
            ("bark.key-file", key.clone()),
            ("bark.encrypt", "true".into()),
            ("destination.ip", "127.0.0.1 127.0.0.2".into()),
        ],
        &[("bark.key-file", key)],
    );
    // FEC 4:1: the relay's losses are rebuilt from repair packets on the
    // data thread too.
    run(
        &[("bark.fec", "4:1".into())],
        &[("bark.fec", "true".into())],
    );
    // Opus: the sender's encoder, the receiver's decoder stage (holes held
    // for the resends, concealed when due); then with FEC 4:1, whose
    // shards are the variable-length Opus datagrams. At 60 ms: a packet
    // leaves up to a frame and the lookahead (12.5 ms) after its first
    // frame, and this test's output adds 10 ms downstream, which leaves a
    // resend no room at 40 (docs/BENCHMARKS.md, "Opus").
    let opus = [
        ("audio.format", "OPUS".to_string()),
        ("sess.latency.msec", "60".to_string()),
    ];
    run(&opus, &[]);
    run(
        &[opus[0].clone(), opus[1].clone(), ("bark.fec", "4:1".into())],
        &[("bark.fec", "true".into())],
    );
    for (what, v) in [
        ("bad tag", &c.auth_bad_tag),
        ("replayed", &c.auth_replayed),
        ("unauthenticated", &c.auth_unauthenticated),
        ("stale", &c.auth_stale),
    ] {
        assert_eq!(v.load(Relaxed), 0, "{what}");
    }
}

/// Runs a sender and a receiver with extra arguments until the receiver
/// plays, then counts allocations over 300 cycles.
fn run(sink_extra: &[(&str, String)], source_extra: &[(&str, String)]) -> Counters {
    ALLOCS.store(0, Relaxed);

    // The sink sends to the relay; the relay passes the sink's datagrams
    // on to the source's port (but one audio packet in 20, never a
    // resend) and everything else back to the sink.
    let relay = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    relay.set_nonblocking(true).unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let to_source = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut sink = vec![
        ("destination.ip", "127.0.0.1".into()),
        (
            "destination.port",
            relay.local_addr().unwrap().port().to_string(),
        ),
    ];
    sink.extend_from_slice(sink_extra);
    let mut source = vec![
        ("source.ip", "127.0.0.1".into()),
        ("source.port", port.to_string()),
    ];
    source.extend_from_slice(source_extra);
    let sink = SinkArgs::parse(&args(&sink)).unwrap();
    let source = SourceArgs::parse(&args(&source)).unwrap();
    let (mut tx, _) = bark_pw_module::sink::setup(&sink, ClockMap::IDENTITY, "test").unwrap();
    let (mut rx, _) = bark_pw_module::source::setup(&source, ClockMap::IDENTITY, "test").unwrap();
    // The sink's and the source's own counters (both publish `repaired`).
    let (c, ct) = (Counters::default(), Counters::default());
    let mut relay_buf = vec![0u8; 65_536];
    let mut sink_addr = None;
    let mut audio_seen = 0u64;
    let mut dropped = 0u64;
    let mut relay_step = |relay_buf: &mut [u8]| {
        while let Ok((n, from)) = relay.recv_from(relay_buf) {
            let d = &relay_buf[..n];
            let from_sink = sink_addr.is_none_or(|s| s == from) && from.port() != port;
            if from_sink {
                sink_addr = Some(from);
                // Audio (type 1) that is not a resend (byte 55, bit 0).
                if n > 60 && d[5] == 1 && d[55] & 1 == 0 {
                    audio_seen += 1;
                    if audio_seen.is_multiple_of(20) {
                        dropped += 1;
                        continue;
                    }
                }
                let _ = relay.send_to(d, to_source);
            } else if let Some(s) = sink_addr {
                let _ = relay.send_to(d, s);
            }
        }
    };

    // 5 ms cycles of 240 frames, a 440 Hz tone; buffers made up front.
    const FRAMES: usize = 240;
    let mut input = vec![0f32; FRAMES * 2];
    let mut out = vec![0f32; FRAMES * 2];
    let start = monotonic_ns();
    let mut phase = 0f32;
    let mut measured_cycles = 0;
    for cycle in 0..1200u64 {
        let now = start + cycle * 5_000_000;
        // Keep to the wall clock so that kernel timestamps and cycles agree.
        let wall = monotonic_ns();
        if now > wall {
            std::thread::sleep(Duration::from_nanos(now - wall));
        }
        for f in input.chunks_exact_mut(2) {
            let v = (phase * std::f32::consts::TAU).sin() * 0.5;
            f[0] = v;
            f[1] = v;
            phase = (phase + 440.0 / 48_000.0).fract();
        }
        // An idle span inside the measured cycles: the sink sends only its
        // idle sync messages, the receiver plays the silence through and
        // then the next onset.
        if !(500..560).contains(&cycle) {
            tx.send_samples(now, &input, &ct);
        }
        relay_step(&mut relay_buf);
        rx.pump(&c);
        relay_step(&mut relay_buf);
        tx.serve(&ct);
        relay_step(&mut relay_buf);
        rx.pump(&c);
        // A resend asked for in this cycle: back within it, as on a LAN.
        std::thread::sleep(Duration::from_micros(300));
        relay_step(&mut relay_buf);
        tx.serve(&ct);
        relay_step(&mut relay_buf);
        rx.pump(&c);
        rx.fill(now + 10_000_000, 10_000_000, &mut out, &c);
        if !COUNTING.load(Relaxed) && c.playing.load(Relaxed) && cycle > 400 {
            // Steady state reached: count from here on.
            ALLOCS.store(0, Relaxed);
            COUNTING.store(true, Relaxed);
        }
        if COUNTING.load(Relaxed) {
            measured_cycles += 1;
            if measured_cycles == 300 {
                break;
            }
        }
    }
    COUNTING.store(false, Relaxed);
    assert!(c.playing.load(Relaxed), "the receiver never played");
    assert!(
        measured_cycles >= 300,
        "too few steady cycles measured: {measured_cycles}"
    );
    assert_eq!(
        ALLOCS.load(Relaxed),
        0,
        "allocations in {measured_cycles} steady cycles"
    );
    assert!(
        out.iter().any(|&v| v.abs() > 0.01),
        "receiver output is silent"
    );
    assert_eq!(c.send_errors.load(Relaxed), 0);
    assert_eq!(ct.send_errors.load(Relaxed), 0);
    assert_eq!(c.malformed.load(Relaxed), 0);
    // The repair paths ran: packets were dropped and resent in time.
    // (3.5 s of cycles: ~70 of PCM's 2 packets a cycle, ~17 of Opus's
    // one every other cycle.)
    assert!(dropped >= 10, "{dropped} dropped");
    // Published once a second: the last second's may not show yet.
    let repaired = c.repaired.load(Relaxed);
    assert!(
        repaired * 10 >= dropped * 7,
        "{repaired} of {dropped} repaired"
    );
    // None lost, the last packet of a buffer too (marked as such, so
    // that its loss shows before the next buffer, or the idle span).
    assert_eq!(c.lost.load(Relaxed), 0, "lost");
    c
}

//! The authenticated-datagram layer (core/src/auth.rs): arbitrary bytes and
//! tampered, replayed or stale sealed datagrams through `Opener::open`,
//! genuine ones sealed by a `Sealer` with the same key. Invariants: nothing
//! panics; bytes the sealer did not produce never open (no forgery); a
//! genuine datagram opens once, to exactly the plain datagram that was
//! sealed (encrypted or not); a replay, any flipped byte, or a wall clock
//! beyond the allowed skew is refused.
#![no_main]

use bark_core::auth::{Key, Opener, Sealer, MAX_CLOCK_SKEW_NS, OVERHEAD};
use bark_core::protocol::{self, TimePacket};
use bark_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;

/// Events per input.
const MAX_EVENTS: usize = 256;
/// Sender and receiver wall clock at the start, ns (a 2026 date).
const WALL0: u64 = 1_790_000_000_000_000_000;

fuzz_target!(|d: &[u8]| {
    let mut b = Bytes::new(d);
    let key = Key::from_bytes([0x42; 32]);
    let ctl = b.u8();
    let mut sealer = Sealer::with_epoch(&key, [ctl; 16], ctl & 1 != 0);
    let mut opener = Opener::new(&key);
    let mut wall = WALL0;
    let mut buf = vec![0u8; 2048];
    let mut plain = vec![0u8; 2048];
    let mut sealed: Vec<Vec<u8>> = Vec::new();
    for _ in 0..MAX_EVENTS {
        if b.is_empty() {
            break;
        }
        let op = b.u8();
        match op % 5 {
            // Arbitrary bytes: never genuine.
            0 => {
                let n = b.u16() as usize % 1600;
                let raw = b.take(n);
                buf[..raw.len()].copy_from_slice(raw);
                assert!(
                    opener.open(&mut buf[..raw.len()], wall).is_err(),
                    "arbitrary bytes opened"
                );
            }
            // A genuine datagram: arbitrary body after a valid header, or a
            // time request; sealed, kept for replays, opened once.
            1 | 2 => {
                let n = if op % 5 == 1 {
                    let t = TimePacket {
                        stream_id: b.u64(),
                        node_id: b.u64(),
                        t1: b.u64(),
                        t2: 0,
                        t3: 0,
                    };
                    protocol::write_time(&mut plain, false, &t).expect("room")
                } else {
                    let len = b.u16() as usize % 1400;
                    let body = b.take(len);
                    plain[..4].copy_from_slice(&protocol::MAGIC);
                    plain[4] = protocol::VERSION;
                    plain[5] = 1 + b.u8() % 4;
                    plain[6..8].fill(0);
                    plain[8..16].copy_from_slice(&b.u64().to_le_bytes());
                    plain[16..16 + body.len()].copy_from_slice(body);
                    16 + body.len()
                };
                buf[..n].copy_from_slice(&plain[..n]);
                let Some(m) = sealer.seal(&mut buf, n, wall) else {
                    continue;
                };
                assert!(m <= n + OVERHEAD);
                sealed.push(buf[..m].to_vec());
                if sealed.len() > 64 {
                    sealed.remove(0);
                }
                let mut copy = buf[..m].to_vec();
                match opener.open(&mut copy, wall) {
                    Ok(k) => assert_eq!(&copy[..k], &plain[..n], "opened to other bytes"),
                    Err(e) => panic!("a fresh genuine datagram was refused: {e:?}"),
                }
            }
            // A kept datagram again (a replay), possibly tampered with.
            3 => {
                if sealed.is_empty() {
                    continue;
                }
                let i = b.u8() as usize % sealed.len();
                let mut copy = sealed[i].clone();
                let at = b.u16() as usize % copy.len();
                copy[at] ^= b.u8() | 1;
                assert!(
                    opener.open(&mut copy, wall).is_err(),
                    "a tampered datagram opened"
                );
                let mut again = sealed[i].clone();
                assert!(opener.open(&mut again, wall).is_err(), "a replay opened");
            }
            // Clocks move: a little, or beyond the skew allowed (then a
            // fresh datagram sealed at the old time is stale).
            _ => {
                let step = b.u32() as u64 * 1000;
                if op & 0x80 != 0 {
                    let mut n = protocol::write_time(
                        &mut buf,
                        false,
                        &TimePacket {
                            stream_id: 1,
                            node_id: 2,
                            t1: 3,
                            t2: 0,
                            t3: 0,
                        },
                    )
                    .expect("room");
                    n = sealer.seal(&mut buf, n, wall).expect("sealable");
                    let late = wall + MAX_CLOCK_SKEW_NS + 1 + step;
                    assert!(
                        opener.open(&mut buf[..n], late).is_err(),
                        "a stale datagram opened"
                    );
                } else {
                    wall += step;
                }
            }
        }
    }
});

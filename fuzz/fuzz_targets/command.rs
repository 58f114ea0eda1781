//! The control plane's node end (core/src/command.rs): arbitrary bytes,
//! mutated genuine Commands and retries through `Responder::handle`, with
//! and without a key. Invariants: nothing panics; an ack is never longer
//! than the datagram that earned it (no amplifier); the settings always
//! stay in range; a retry (same controller and sequence) never changes
//! them; with a key, nothing the controller did not seal changes them.
#![no_main]

use bark_core::auth::Key;
use bark_core::command::{
    Controller, Handled, Label, Responder, Settings, ACK_BUF, MAX_DELAY_NS, MAX_VOLUME,
};
use bark_core::protocol::Role;
use bark_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;

/// Events per input.
const MAX_EVENTS: usize = 256;
/// Wall clock, ns (a 2026 date).
const WALL: u64 = 1_790_000_000_000_000_000;

/// A string of up to 69 bytes from the input (cut to 63 by `Label`).
fn label(b: &mut Bytes<'_>) -> Label {
    let n = b.u8() as usize % 70;
    Label::new(&String::from_utf8_lossy(b.take(n)))
}

fuzz_target!(|d: &[u8]| {
    let mut b = Bytes::new(d);
    let keyed = b.u8() & 1 == 1;
    let key = Key::from_bytes([0x5a; 32]);
    let key = keyed.then_some(&key);
    let mut r =
        Responder::new(9, Role::Receiver, Settings::default(), 4711, key, 0).expect("responder");
    let mut c = Controller::new(77, key).expect("controller");
    let mut ack = [0u8; ACK_BUF];
    let mut last: Vec<u8> = Vec::new();
    // Whether `last` got past the rate limit and the key check when it
    // was first sent (a retry of one that did not may be applied).
    let mut last_taken = false;
    let mut now = 0u64;
    for _ in 0..MAX_EVENTS {
        if b.is_empty() {
            break;
        }
        now += u64::from(b.u16()) * 1_000;
        let op = b.u8();
        let before = *r.settings();
        let mut data = match op % 4 {
            // Arbitrary bytes.
            0 => {
                let n = b.u16() as usize % 600;
                b.take(n).to_vec()
            }
            // A genuine command with fuzzed values.
            1 | 2 => {
                let s = Settings {
                    volume: f32::from(b.u16()) / 20_000.0,
                    mute: b.u8() & 1 == 1,
                    delay_ns: (b.u64() as i64) % (3 * MAX_DELAY_NS),
                    name: label(&mut b),
                    stream: label(&mut b),
                    enabled: b.u8() & 1 == 1,
                    priority: b.u8() as i8,
                    channels: bark_core::channels::Selection::from_wire(b.u16()),
                };
                let target = if b.u8() & 7 == 0 { 8 } else { 9 };
                let mut out = vec![0u8; ACK_BUF];
                let Some((n, _)) = c.command(target, b.u16(), &s, WALL, &mut out) else {
                    continue;
                };
                out.truncate(n);
                if op % 4 == 2 {
                    // One byte changed: with a key, never applied.
                    let i = b.u16() as usize % n;
                    out[i] ^= b.u8() | 1;
                }
                last.clone_from(&out);
                out
            }
            // The last genuine one again: a retry, or with a key a replay.
            _ => last.clone(),
        };
        let len = data.len();
        let mutated = op % 4 != 1;
        let (h, n) = r.handle(now, WALL, &mut data, &mut ack);
        if let Some(n) = n {
            assert!(n <= len, "ack of {n} bytes for a datagram of {len}");
        }
        let s = *r.settings();
        assert!(
            (0.0..=MAX_VOLUME).contains(&s.volume),
            "volume {}",
            s.volume
        );
        assert!(s.delay_ns.unsigned_abs() <= MAX_DELAY_NS as u64);
        if op % 4 == 3 && last_taken {
            assert_eq!(s, before, "a retry or replay changed the settings");
        }
        if op % 4 == 1 || op % 4 == 2 {
            last_taken = !matches!(h, Handled::Dropped(_));
        }
        if keyed && mutated {
            assert_eq!(
                s, before,
                "a datagram the controller did not seal changed the settings"
            );
            assert!(!matches!(h, Handled::Changed(_)));
        }
    }
});

//! Idle senders and the first frame after them: a receiver that has only
//! heard a sender's announcements (or heard it go quiet) plays the first
//! frame of the next run of audio exactly at its instant, from inside the
//! output buffer that reaches it, and a pause is neither an underrun nor a
//! concealment. And a receiver whose output needs more than the session
//! latency plays late, says so, and asks for more.

use bark_core::protocol::{self, Packet, STATUS_LATE};
use bark_core::{Receiver, ReceiverConfig, Sender, SenderConfig};
use std::net::SocketAddr;
use Feed::{Music, Nothing, Zeros};

const RATE: f64 = 48_000.0;
const Q: usize = 256;
/// Output heard this long after the cycle start, ns.
const HEARD_NS: u64 = 6_000_000;
const LATENCY_NS: u64 = 20_000_000;
const T0: u64 = 1_000_000_000;

fn from() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1530))
}

fn sine(f: u64) -> f32 {
    (f as f64 * 2.0 * std::f64::consts::PI * 440.0 / RATE).sin() as f32 * 0.5
}

/// What the sender's sink gets in a cycle.
#[derive(Clone, Copy, PartialEq)]
enum Feed {
    /// The sine, counted from the start of each run (so every onset starts
    /// at phase 0).
    Music,
    /// A buffer of exact zeros (a player that keeps its stream open).
    Zeros,
    /// No buffer at all (the sink idles).
    Nothing,
}

/// One sender and one receiver on a perfect network, cycle by cycle; the
/// sender's idle timer runs every cycle. `feed(c)` says what the sink gets
/// in cycle `c`. Returns the receiver's output (stereo), the sender, and
/// the audio packets sent while `feed` was not `Music`.
fn drive_with(
    rx: &mut Receiver,
    cycles: usize,
    feed: &dyn Fn(usize) -> Feed,
) -> (Vec<f32>, Sender, usize) {
    let mut s = Sender::new(SenderConfig {
        session_id: 9,
        latency_ns: LATENCY_NS,
        // PipeWire's cycle times: any step is a pause, however short.
        input_step_ns: bark_core::sender::SMOOTH_INPUT_STEP_NS,
        ..Default::default()
    })
    .unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0f32; Q * 2];
    let (mut req, mut reply) = ([0u8; 64], [0u8; 64]);
    let (mut run_frame, mut audio_outside_music) = (0u64, 0);
    for c in 0..cycles {
        let now = T0 + (c as f64 * Q as f64 * 1e9 / RATE) as u64;
        let mut packets = Vec::new();
        let f = feed(c);
        let samples: Vec<f32> = match f {
            Music => (0..Q as u64)
                .flat_map(|k| {
                    let v = sine(run_frame + k);
                    [v, v]
                })
                .collect(),
            Zeros => vec![0.0; Q * 2],
            Nothing => vec![],
        };
        run_frame = if f == Music { run_frame + Q as u64 } else { 0 };
        if !samples.is_empty() {
            s.push(now, &samples, &mut |d| packets.push(d.to_vec()));
        }
        s.poll_idle(now, &mut |d| packets.push(d.to_vec()));
        for p in packets {
            if f != Music && matches!(protocol::parse(&p), Ok(Packet::Audio(_))) {
                audio_outside_music += 1;
            }
            rx.handle_packet(now + 100_000, &p, from()).unwrap();
        }
        for k in 0..3 {
            let t = now + k * 2_000_000;
            while let Some((n, _)) = rx.poll_transmit(t, &mut req) {
                if let Ok(Some(m)) = s.handle_packet(t + 50_000, t + 60_000, &req[..n], &mut reply)
                {
                    rx.handle_packet(t + 110_000, &reply[..m], from()).unwrap();
                }
            }
        }
        rx.fill(now + HEARD_NS, &mut buf);
        out.extend_from_slice(&buf);
    }
    (out, s, audio_outside_music)
}

/// [`drive_with`] for a sink that either plays music or gets nothing.
fn drive(rx: &mut Receiver, cycles: usize, plays: &dyn Fn(usize) -> bool) -> (Vec<f32>, Sender) {
    let (out, s, _) = drive_with(rx, cycles, &|c| if plays(c) { Music } else { Nothing });
    (out, s)
}

/// Output frame index at which the run that starts at cycle `c` is heard.
fn onset_frame(c: usize) -> usize {
    c * Q + ((LATENCY_NS - HEARD_NS) as f64 * RATE / 1e9).round() as usize
}

/// The run starting at output frame `k0` plays sample for sample: silence
/// right before, then the sine from phase 0.
fn assert_onset(out: &[f32], k0: usize) {
    // Before: silence (the interpolator's pre-ringing of a phase-0 sine
    // onset stays far below this).
    for k in k0 - 64..k0 {
        assert!(
            out[2 * k].abs() < 1e-3,
            "frame {k} before the onset at {k0}: {}",
            out[2 * k]
        );
    }
    let mut worst = 0f32;
    for (i, k) in (k0..k0 + 2000).enumerate() {
        worst = worst.max((out[2 * k] - sine(i as u64)).abs());
    }
    assert!(worst < 2e-3, "onset at {k0}: worst sample error {worst}");
}

#[test]
fn the_first_frame_after_an_idle_start_is_heard_at_its_instant() {
    // The receiver starts while the sink is idle: it follows the sender on
    // its announcements alone and has the clock when the audio starts.
    let mut rx = Receiver::new(ReceiverConfig::default()).unwrap();
    let start = 400; // 2.1 s of idle
    let (out, _) = drive(&mut rx, start + 200, &|c| c >= start);
    assert!(rx.playing());
    assert_onset(&out, onset_frame(start));
    let c = rx.counters();
    assert_eq!((c.underruns, c.concealed_frames, c.lost), (0, 0, 0));
}

#[test]
fn pauses_long_and_short_are_silence_not_faults() {
    let mut rx = Receiver::new(ReceiverConfig::default()).unwrap();
    // Play, pause 2 s (the receiver stops), play, pause 60 ms (it plays
    // through: longer than the latency), play, pause 10 ms (shorter).
    let runs = [(300, 500), (875, 1000), (1011, 1100), (1102, 1300)];
    let plays = |c: usize| runs.iter().any(|&(a, b)| c >= a && c < b);
    let (out, s) = drive(&mut rx, 1300, &plays);
    for &(a, _) in &runs {
        assert_onset(&out, onset_frame(a));
    }
    let c = rx.counters();
    assert_eq!(
        (c.underruns, c.concealed_frames, c.lost),
        (0, 0, 0),
        "pauses counted as faults"
    );
    // The idle sender kept announcing itself.
    assert!(!s.idle(T0 + (1299.0 * Q as f64 * 1e9 / RATE) as u64));
}

#[test]
fn a_receiver_whose_output_needs_more_plays_late_and_says_so() {
    let mut rx = Receiver::new(ReceiverConfig::default()).unwrap();
    // 30 ms downstream + 5.3 ms quantum + 6 ms margin: 41.3 ms, over the
    // session's 20 ms: on the 5 ms grid, 45 ms.
    rx.set_downstream_ns(30_000_000);
    let (_, _) = drive(&mut rx, 400, &|c| c >= 100);
    assert!(rx.playing());
    assert!(rx.late());
    assert_eq!(rx.play_latency_ns(), 45_000_000);
    assert!(rx.need_ns() > 41_000_000 && rx.need_ns() < 42_000_000);
    let mut st = [0u8; protocol::MAX_STATUS_LEN];
    let n = rx.write_status(&mut st).unwrap();
    match protocol::parse(&st[..n]).unwrap() {
        Packet::Status(p) => {
            assert_ne!(p.flags & STATUS_LATE, 0);
            assert_eq!(p.counters.downstream_us, 30_000);
            assert_eq!(p.counters.play_latency_us, 45_000);
            assert_eq!(p.counters.latency_us, 20_000);
        }
        other => panic!("{other:?}"),
    }
    // The sender raises the session latency on that report, for everyone.
    let mut s = Sender::new(SenderConfig {
        session_id: rx.session().unwrap(),
        latency_ns: LATENCY_NS,
        ..Default::default()
    })
    .unwrap();
    let mut reply = [0u8; 64];
    assert_eq!(s.handle_packet(T0, T0, &st[..n], &mut reply), Ok(None));
    assert_eq!(s.latency_ns(), 45_000_000);
}

#[test]
fn the_output_quantum_shrinks_to_keep_the_session_latency_when_it_can() {
    use bark_core::receiver::plan_quantum;
    const MS: u64 = 1_000_000;
    // Nothing after the stream: the default 1024 frames (21.3 ms) fit 40 ms
    // with the 6 ms margin (27.3 ms), and so they do behind 10 ms (37.3).
    assert_eq!(plan_quantum(40 * MS, 0, 48_000, 1024), 1024);
    assert_eq!(plan_quantum(40 * MS, 10 * MS, 48_000, 1024), 1024);
    // A 20 ms DSP: 1024 would need 47.3 ms; 512 need 36.7.
    assert_eq!(plan_quantum(40 * MS, 20 * MS, 48_000, 1024), 512);
    // 25 ms: 256 frames (5.3 ms) still fit 40 ms (36.3), 512 do not (41.7).
    assert_eq!(plan_quantum(40 * MS, 25 * MS, 48_000, 1024), 256);
    // A Bluetooth speaker: nothing fits; the latency must rise instead.
    assert_eq!(plan_quantum(40 * MS, 150 * MS, 48_000, 1024), 1024);
    // Once it rose to cover the default quantum, the default stays.
    assert_eq!(plan_quantum(180 * MS, 150 * MS, 48_000, 1024), 1024);
    // Unknown latency: the default.
    assert_eq!(plan_quantum(0, 20 * MS, 48_000, 1024), 1024);
    // Other rates scale the floor: 512 frames at 96 kHz are 5.3 ms.
    assert_eq!(plan_quantum(40 * MS, 25 * MS, 96_000, 2048), 512);
}

/// A player that keeps its stream open playing zeros: after 250 ms of
/// digital silence nothing but idle syncs goes out, and the audio after it
/// starts at its instant, with no pause counted.
#[test]
fn digital_silence_is_not_sent_and_the_audio_after_it_starts_exactly() {
    let mut rx = Receiver::new(ReceiverConfig::default()).unwrap();
    // Music for cycles 0..300, zeros for 300..700 (2.1 s), music again.
    // 250 ms is 47 cycles of 5.3 ms: from cycle 347 on, nothing is sent.
    let feed = |c: usize| {
        if (300..700).contains(&c) {
            Zeros
        } else {
            Music
        }
    };
    let (out, _, audio_in_silence) = drive_with(&mut rx, 900, &feed);
    // The first 47 cycles of zeros still go out (short silences inside
    // music are audio): 47 buffers of 2 packets each.
    assert_eq!(audio_in_silence, 47 * 2);
    assert_onset(&out, onset_frame(700));
    let c = rx.counters();
    assert_eq!((c.underruns, c.concealed_frames, c.lost), (0, 0, 0));
}

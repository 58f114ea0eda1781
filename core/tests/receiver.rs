//! Receiver behaviour through a perfect loopback network: content, stream
//! selection, channel mapping and resistance to malformed input.

use bark_core::protocol::{self, MAGIC, VERSION};
use bark_core::{AudioFormat, Receiver, ReceiverConfig, Sender, SenderConfig};
use std::net::SocketAddr;

const RATE: f64 = 48_000.0;

/// Fills one frame's samples for a frame index.
type Gen<'a> = &'a dyn Fn(u64, &mut [f32]);
const Q: usize = 256;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, i], 1530))
}

/// Runs `cycles` buffers: each sender produces `Q` frames from `gen`
/// (frame index → interleaved samples), packets arrive 100 µs later, time
/// exchanges are immediate, and the receiver's output (heard 6 ms after the
/// cycle) is returned. `inject` may add datagrams before each fill.
fn run(
    senders: &mut [(Sender, Gen)],
    rx: &mut Receiver,
    cycles: usize,
    inject: &mut dyn FnMut(usize, &mut Receiver),
) -> Vec<f32> {
    let (out, refused) = run_counting(senders, rx, cycles, inject);
    assert_eq!(refused, 0, "the senders' own datagrams were refused");
    out
}

/// `run`, returning also how many of the senders' own audio datagrams the
/// receiver refused.
fn run_counting(
    senders: &mut [(Sender, Gen)],
    rx: &mut Receiver,
    cycles: usize,
    inject: &mut dyn FnMut(usize, &mut Receiver),
) -> (Vec<f32>, usize) {
    let mut refused = 0;
    let ch = rx.config().channels as usize;
    let mut out = Vec::new();
    let mut buf = vec![0f32; Q * ch];
    let mut reply = [0u8; 64];
    let mut req = [0u8; 64];
    for c in 0..cycles {
        let now = 1_000_000_000 + (c as f64 * Q as f64 * 1e9 / RATE) as u64;
        for (i, (s, gen)) in senders.iter_mut().enumerate() {
            let sch = s.config().format.channels as usize;
            // The sender's buffers span the same time as the receiver's.
            let srate = s.config().format.rate as usize;
            let sq = Q * srate / RATE as usize;
            let mut samples = vec![0f32; sq * sch];
            for f in 0..sq {
                gen((c * sq + f) as u64, &mut samples[f * sch..(f + 1) * sch]);
            }
            let mut packets = Vec::new();
            s.push(now, &samples, &mut |d| packets.push(d.to_vec()));
            for p in packets {
                if rx
                    .handle_packet(now + 100_000, &p, addr(i as u8 + 1))
                    .is_err()
                {
                    refused += 1;
                }
            }
        }
        // Time exchanges every 2 ms of this cycle, answered by whichever
        // sender the request is addressed to.
        for k in 0..3 {
            let t = now + k * 2_000_000;
            while let Some((n, to)) = rx.poll_transmit(t, &mut req) {
                let i = to
                    .ip()
                    .to_string()
                    .rsplit('.')
                    .next()
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
                    - 1;
                if let Ok(Some(m)) =
                    senders[i]
                        .0
                        .handle_packet(t + 50_000, t + 60_000, &req[..n], &mut reply)
                {
                    rx.handle_packet(t + 110_000, &reply[..m], to).unwrap();
                }
            }
        }
        inject(c, rx);
        rx.fill(now + 6_000_000, &mut buf);
        out.extend_from_slice(&buf);
    }
    (out, refused)
}

fn sender(name: &str, session: u64, channels: u8, priority: i8) -> Sender {
    sender_at(name, session, channels, priority, 48_000)
}

fn sender_at(name: &str, session: u64, channels: u8, priority: i8, rate: u32) -> Sender {
    Sender::new(SenderConfig {
        session_id: session,
        stream: name.into(),
        priority,
        latency_ns: 20_000_000,
        format: AudioFormat {
            channels,
            rate,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap()
}

fn sine(f: u64, s: &mut [f32]) {
    let v = (f as f64 * 2.0 * std::f64::consts::PI * 440.0 / RATE).sin() as f32;
    s.fill(v);
}

/// The largest error of output cycles `cycles` (left channel) against the
/// 440 Hz sine the sender played, 14 ms earlier in output frames (see
/// `plays_the_stream_after_the_latency`).
fn sine_error(out: &[f32], cycles: std::ops::Range<usize>) -> f32 {
    let mut worst = 0f32;
    for k in (cycles.start * Q)..(cycles.end * Q) {
        let want_frame = k as f64 - 0.014 * RATE;
        let want = (want_frame * 2.0 * std::f64::consts::PI * 440.0 / RATE).sin() as f32;
        worst = worst.max((out[2 * k] - want).abs());
    }
    worst
}

#[test]
fn plays_the_stream_after_the_latency() {
    let mut rx = Receiver::new(ReceiverConfig::default()).unwrap();
    let mut senders: [(Sender, Gen); 1] = [(sender("default", 1, 2, 0), &sine)];
    let out = run(&mut senders, &mut rx, 400, &mut |_, _| {});
    assert!(rx.playing());
    // Output frame k (cycle c, offset f) is heard at 1 s + c·Q/48k + 6 ms +
    // f/48k and should carry sender frame (heard − 1 s − 20 ms) · 48k.
    let worst = sine_error(&out, 200..400);
    assert!(worst < 2e-3, "worst sample error {worst}");
    assert!(rx.sync_error_ns().abs() < 2_000.0);
}

#[test]
fn malformed_datagrams_are_dropped_without_disturbing_playback() {
    let mk = || {
        (
            Receiver::new(ReceiverConfig::default()).unwrap(),
            [(
                sender("default", 1, 2, 0),
                &sine as &dyn Fn(u64, &mut [f32]),
            )],
        )
    };
    let (mut clean_rx, mut s1) = mk();
    let clean = run(&mut s1, &mut clean_rx, 300, &mut |_, _| {});
    let (mut rx, mut s2) = mk();
    let mut rejected = 0;
    let noisy = run(&mut s2, &mut rx, 300, &mut |c, rx| {
        let mut junk: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xff; 7],
            (0..200u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect(),
        ];
        // A valid-looking audio header with a lying payload length.
        let mut audio = vec![0u8; protocol::AUDIO_HEADER_LEN + 8];
        let h = protocol::AudioHeader {
            positions: Default::default(),
            stream_id: 1,
            seq: 0,
            frame: 0,
            pts: 0,
            format: AudioFormat::default(),
            latency_us: 0,
            name_hash: 0,
            priority: 0,
            frames: 1,
        };
        let n = protocol::write_audio(&mut audio, &h, &[0.0, 0.0]).unwrap();
        junk.push(audio[..n - 1].to_vec());
        let mut wrong_version = audio[..n].to_vec();
        wrong_version[4] = VERSION + 1;
        junk.push(wrong_version);
        let mut bad_type = audio[..n].to_vec();
        bad_type[5] = 99;
        junk.push(bad_type);
        let mut time = vec![0u8; protocol::TIME_LEN + 3];
        time[..4].copy_from_slice(&MAGIC);
        time[4] = VERSION;
        time[5] = 3;
        junk.push(time);
        for j in &junk {
            if rx.handle_packet(1_000 + c as u64, j, addr(9)).is_err() {
                rejected += 1;
            }
        }
    });
    assert_eq!(rejected, 300 * 7);
    assert!(rx.playing());
    assert_eq!(clean, noisy, "garbage changed the output");
}

#[test]
fn follows_the_named_stream_and_maps_channels() {
    let cfg = ReceiverConfig {
        stream: Some("kitchen".into()),
        ..Default::default()
    };
    let mut rx = Receiver::new(cfg).unwrap();
    let loud = |_f: u64, s: &mut [f32]| s.fill(0.5);
    let quiet = |_f: u64, s: &mut [f32]| s.fill(-0.25);
    // "living" has the higher priority, but the receiver was told otherwise.
    let mut senders: [(Sender, Gen); 2] = [
        (sender("living", 10, 2, 9), &loud),
        (sender("kitchen", 20, 1, 0), &quiet),
    ];
    let out = run(&mut senders, &mut rx, 200, &mut |_, _| {});
    assert_eq!(rx.session(), Some(20));
    let tail = &out[out.len() - 2 * Q..];
    // Mono upmixed to both channels.
    assert!(
        tail.iter().all(|v| (v + 0.25).abs() < 1e-4),
        "{:?}",
        &tail[..8]
    );
}

#[test]
fn highest_priority_wins_without_a_name() {
    let mut rx = Receiver::new(ReceiverConfig::default()).unwrap();
    let a = |_f: u64, s: &mut [f32]| s.fill(0.5);
    let b = |_f: u64, s: &mut [f32]| s.fill(-0.25);
    let mut senders: [(Sender, Gen); 2] =
        [(sender("a", 10, 2, 9), &a), (sender("b", 20, 2, 0), &b)];
    let out = run(&mut senders, &mut rx, 200, &mut |_, _| {});
    assert_eq!(rx.session(), Some(10));
    assert!(out[out.len() - 2 * Q..]
        .iter()
        .all(|v| (v - 0.5).abs() < 1e-4));
    let c = rx.counters();
    assert_eq!((c.lost, c.duplicated, c.underruns), (0, 0, 0));
}

#[test]
fn silent_until_a_sender_appears_and_rejects_bad_config() {
    let mut rx = Receiver::new(ReceiverConfig::default()).unwrap();
    let mut buf = vec![1f32; 512];
    rx.fill(123, &mut buf);
    assert!(buf.iter().all(|v| *v == 0.0));
    let mut req = [0u8; 64];
    assert!(rx.poll_transmit(0, &mut req).is_none());
    for cfg in [
        ReceiverConfig {
            rate: 0,
            ..Default::default()
        },
        ReceiverConfig {
            channels: 0,
            ..Default::default()
        },
        ReceiverConfig {
            latency_ns: Some(5_000_000_000),
            ..Default::default()
        },
        ReceiverConfig {
            node_id: 0,
            ..Default::default()
        },
    ] {
        assert!(Receiver::new(cfg).is_err());
    }
}

#[test]
fn converts_a_192k_eight_channel_stream_to_48k_stereo() {
    // A 192 kHz, 8-channel sender (1024 frames per 256-frame output
    // cycle), downmixed to stereo and resampled to 48 kHz.
    let mut rx = Receiver::new(ReceiverConfig::default()).unwrap();
    let f_hz = 1000.0;
    let hi = move |f: u64, s: &mut [f32]| {
        let v = (f as f64 * 2.0 * std::f64::consts::PI * f_hz / 192_000.0).sin() as f32;
        s.fill(v);
    };
    let mut senders: [(Sender, Gen); 1] = [(sender_at("default", 1, 8, 0, 192_000), &hi)];
    let out = run(&mut senders, &mut rx, 400, &mut |_, _| {});
    assert!(rx.playing());
    let mut worst = 0f32;
    for k in (200 * Q)..(400 * Q) {
        // Heard at k/48k + 6 ms after the first cycle; should carry the
        // signal of 20 ms earlier.
        let t = k as f64 / RATE - 0.014;
        let want = (t * 2.0 * std::f64::consts::PI * f_hz).sin() as f32;
        worst = worst
            .max((out[2 * k] - want).abs())
            .max((out[2 * k + 1] - want).abs());
    }
    assert!(worst < 5e-3, "worst sample error {worst}");
}

/// An output xrun: from cycle 300 on, every buffer is heard one quantum
/// later than before (the device played a quantum of silence). The
/// receiver jumps once to the new position and then stays on it: the
/// step must not leak into its rate estimate of the output (it did, as a
/// swing of ~0.3 % for about a second, when the output loop filtered the
/// step: sync error ramping to milliseconds).
#[test]
fn an_output_xrun_is_one_jump_not_an_excursion() {
    let mut rx = Receiver::new(ReceiverConfig::default()).unwrap();
    let mut s = sender("default", 1, 2, 0);
    let mut buf = vec![0f32; Q * 2];
    let mut samples = vec![0f32; Q * 2];
    let (mut req, mut reply) = ([0u8; 64], [0u8; 64]);
    let mut worst_after = 0f64;
    for c in 0..900usize {
        let now = 1_000_000_000 + (c as f64 * Q as f64 * 1e9 / RATE) as u64;
        for f in 0..Q {
            sine((c * Q + f) as u64, &mut samples[f * 2..f * 2 + 2]);
        }
        let mut packets = Vec::new();
        s.push(now, &samples, &mut |d| packets.push(d.to_vec()));
        for p in packets {
            rx.handle_packet(now + 100_000, &p, addr(1)).unwrap();
        }
        while let Some((n, to)) = rx.poll_transmit(now, &mut req) {
            if let Ok(Some(m)) = s.handle_packet(now + 50_000, now + 60_000, &req[..n], &mut reply)
            {
                rx.handle_packet(now + 110_000, &reply[..m], to).unwrap();
            }
        }
        let skipped = if c >= 300 { Q as f64 * 1e9 / RATE } else { 0.0 };
        rx.fill(now + 6_000_000 + skipped as u64, &mut buf);
        // A few cycles for the jump itself, then it must hold.
        if c >= 310 {
            worst_after = worst_after.max(rx.sync_error_ns().abs());
        }
    }
    assert!(rx.playing());
    assert!(
        worst_after < 20_000.0,
        "sync error after the xrun reached {worst_after} ns"
    );
}

/// Forged audio with the followed session's id (v1 is unauthenticated:
/// anyone on the LAN can send it) but a sequence number, frame or pts far
/// from the live stream's: refused as implausible, and playback goes on in
/// sync. Before the check, one such packet moved the playback position to
/// the forged frame and playback stopped for good (found by
/// lab/test-robust.sh hostile).
#[test]
fn forged_packets_of_the_live_session_are_refused() {
    let mut rx = Receiver::new(ReceiverConfig::default()).unwrap();
    let mut senders: [(Sender, Gen); 1] = [(sender("default", 1, 2, 0), &sine)];
    let mut refused = 0;
    let mut pkt = vec![0u8; 2048];
    let out = run(&mut senders, &mut rx, 400, &mut |c, rx| {
        if !(150..250).contains(&c) {
            return;
        }
        let now = 1_000_000_000 + (c as f64 * Q as f64 * 1e9 / RATE) as u64;
        let live_frame = (c * Q) as u64;
        // seq far ahead; frame far ahead with a matching pts; pts absurd.
        let (seq, frame, pts) = match c % 3 {
            0 => (1_000_000 + c as u64, live_frame, now as i64),
            1 => (
                c as u64,
                live_frame + 48_000 * 3600,
                now as i64 + 3_600_000_000_000,
            ),
            _ => (c as u64, live_frame, i64::MAX),
        };
        let h = protocol::AudioHeader {
            positions: Default::default(),
            stream_id: 1,
            seq,
            frame,
            pts,
            format: AudioFormat::default(),
            latency_us: 20_000,
            name_hash: protocol::stream_hash("default"),
            priority: 0,
            frames: 16,
        };
        let n = protocol::write_audio(&mut pkt, &h, &[0.9; 32]).unwrap();
        if rx.handle_packet(now, &pkt[..n], addr(9)).is_err() {
            refused += 1;
        }
    });
    assert_eq!(refused, 100, "every forged packet refused");
    assert!(rx.playing());
    let worst = sine_error(&out, 260..400);
    assert!(
        worst < 2e-3,
        "worst sample error {worst} after the forgeries"
    );
}

/// Datagrams with the live session's id from a host that copies the
/// group's traffic (open mode, docs/SECURITY.md): audio with the sequence
/// number bumped a little and the pts shifted by half a second, audio with
/// a flipped format, old sync messages; and old sync messages that even
/// spoof the sender's address, re-stamped. None of it may change a sample of what is
/// played.
/// A forgery of a new session's first packet, in another format and from
/// the sender's own address, arrives before the sender's audio: the
/// session's format is the forgery's, and the sender's audio is refused
/// while the session counts as live; then the sender's format is taken
/// and its stream plays.
#[test]
fn a_forged_first_format_gives_way_to_the_senders_own() {
    let mut rx = Receiver::new(ReceiverConfig::default()).unwrap();
    let mut pkt = vec![0u8; 2048];
    let h = protocol::AudioHeader {
        positions: Default::default(),
        stream_id: 1,
        seq: 0,
        frame: 0,
        pts: 999_000_000,
        format: AudioFormat {
            channels: 1,
            ..Default::default()
        },
        latency_us: 20_000,
        name_hash: protocol::stream_hash("default"),
        priority: 0,
        frames: 16,
    };
    let n = protocol::write_audio(&mut pkt, &h, &[0.9; 16]).unwrap();
    rx.handle_packet(999_000_000, &pkt[..n], addr(1)).unwrap();
    let mut senders: [(Sender, Gen); 1] = [(sender("default", 1, 2, 0), &sine)];
    let (out, refused) = run_counting(&mut senders, &mut rx, 800, &mut |_, _| {});
    // Refused for the 2 s after the forgery (375 cycles, 2 packets each).
    assert!((740..=760).contains(&refused), "{refused}");
    assert!(rx.playing());
    assert_eq!(rx.format().map(|f| f.channels), Some(2));
    let worst = sine_error(&out, 600..800);
    assert!(worst < 2e-3, "worst sample error {worst}");
}

#[test]
fn copies_of_the_live_session_change_nothing() {
    let clean = {
        let mut rx = Receiver::new(ReceiverConfig::default()).unwrap();
        let mut senders: [(Sender, Gen); 1] = [(sender("default", 1, 2, 0), &sine)];
        run(&mut senders, &mut rx, 400, &mut |_, _| {})
    };
    let mut rx = Receiver::new(ReceiverConfig::default()).unwrap();
    let mut senders: [(Sender, Gen); 1] = [(sender("default", 1, 2, 0), &sine)];
    let (mut refused, mut ignored) = (0, 0);
    let mut pkt = vec![0u8; 2048];
    let out = run(&mut senders, &mut rx, 400, &mut |c, rx| {
        if !(100..300).contains(&c) {
            return;
        }
        let now = 1_000_000_000 + (c as f64 * Q as f64 * 1e9 / RATE) as u64;
        let live_frame = (c * Q) as u64;
        let mut h = protocol::AudioHeader {
            positions: Default::default(),
            stream_id: 1,
            // The sender splits each 256-frame buffer into 2 packets.
            seq: 2 * c as u64 + 2,
            frame: live_frame + 256,
            pts: now as i64
                + if c % 2 == 0 {
                    500_000_000
                } else {
                    -500_000_000
                },
            format: AudioFormat::default(),
            latency_us: 20_000,
            name_hash: protocol::stream_hash("default"),
            priority: 0,
            frames: 16,
        };
        if c % 3 == 0 {
            h.format.channels = 1;
            h.pts = now as i64;
        }
        let ch = h.format.channels as usize;
        let n = protocol::write_audio(&mut pkt, &h, &vec![0.9; 16 * ch]).unwrap();
        if rx.handle_packet(now, &pkt[..n], addr(9)).is_err() {
            refused += 1;
        }
        let sync = protocol::SyncPacket {
            stream_id: 1,
            seq: (c % 7) as u64,
            t3: now - 300_000_000,
            announce: Some(protocol::Announce {
                name_hash: h.name_hash,
                priority: 0,
                streaming: c % 2 == 0,
                latency_ms: 500,
            }),
        };
        let n = protocol::write_sync(&mut pkt, &sync).unwrap();
        if rx.handle_packet(now, &pkt[..n], addr(9)).is_err() {
            refused += 1;
        }
        // Old syncs from the sender's own address, re-stamped 3 ms ahead
        // (a point below the clock's envelope): not news.
        let shifted = protocol::SyncPacket {
            t3: now + 3_000_000,
            ..sync
        };
        let n = protocol::write_sync(&mut pkt, &shifted).unwrap();
        if rx.handle_packet(now, &pkt[..n], addr(1)).is_ok() {
            ignored += 1;
        }
    });
    assert!(
        out == clean,
        "the copies changed what was played (worst error {})",
        sine_error(&out, 260..400)
    );
    assert_eq!(refused, 400, "every copy from another address refused");
    assert_eq!(ignored, 200);
    assert!(rx.playing());
}

#[test]
fn settings_from_a_controller_switch_stream_scale_volume_and_keep_a_negative_delay() {
    let cfg = ReceiverConfig {
        stream: Some("kitchen".into()),
        delay_ns: -20_000_000,
        ..Default::default()
    };
    let mut rx = Receiver::new(cfg).unwrap();
    // What every adapter does at load, before any session exists: the
    // configured negative delay must survive it (held to −latency only
    // where it is used).
    let initial = *rx.settings();
    rx.set_settings(&initial, 4711, true);
    assert_eq!(rx.config().delay_ns, -20_000_000);
    assert_eq!(rx.settings().delay_ns, -20_000_000);
    let loud = |_f: u64, s: &mut [f32]| s.fill(0.5);
    let quiet = |_f: u64, s: &mut [f32]| s.fill(-0.25);
    let mut senders: [(Sender, Gen); 2] = [
        (sender("living", 10, 2, 9), &loud),
        (sender("kitchen", 20, 1, 0), &quiet),
    ];
    // A controller: at cycle 200 follow "living" at half volume (gain
    // 0.5³), no delay offset; at 500 switch the room off.
    let s = bark_core::command::Settings {
        stream: bark_core::command::Label::new("living"),
        volume: 0.5,
        delay_ns: 0,
        ..initial
    };
    let mut sessions = Vec::new();
    let (out, _) = run_counting(&mut senders, &mut rx, 600, &mut |c, rx| {
        if c == 200 {
            sessions.push(rx.session());
            rx.set_settings(&s, 4711, true);
            assert!(rx.take_status_due(), "a change is reported at once");
        }
        if c == 500 {
            sessions.push(rx.session());
            rx.set_settings(
                &bark_core::command::Settings {
                    enabled: false,
                    ..s
                },
                4711,
                true,
            );
        }
    });
    // Time replies of the old session still in flight when it switched
    // are refused; nothing else is asserted about refusals here.
    assert_eq!(sessions, [Some(20), Some(10)]);
    let at = |c: usize| &out[c * 2 * Q..(c + 1) * 2 * Q];
    for c in 480..500 {
        assert!(
            at(c).iter().all(|v| (v - 0.5 * 0.125).abs() < 1e-4),
            "cycle {c}: {:?}",
            &at(c)[..4]
        );
    }
    for c in 502..600 {
        assert!(at(c).iter().all(|v| *v == 0.0), "cycle {c} not silent");
    }
    assert_eq!(rx.session(), Some(10), "switched off, the session is kept");
}

/// An Opus stream (`audio.format = OPUS`) with forged packets of its own
/// session: valid Opus payloads whose sequence numbers lie far ahead of
/// the stream's (each too far from the last to confirm it). Every one is
/// refused before anything of it is taken: the stream plays on with
/// nothing lost, late or concealed (a far sequence number once restarted
/// the decoder stage and left every genuine packet "late" for minutes).
#[test]
fn forged_far_sequence_numbers_do_not_move_an_opus_stream() {
    let mut rx = Receiver::new(ReceiverConfig::default()).unwrap();
    let opus = Sender::new(SenderConfig {
        session_id: 1,
        stream: "default".into(),
        latency_ns: 40_000_000,
        format: AudioFormat {
            sample: bark_core::SampleFormat::Opus,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let mut senders: [(Sender, Gen); 1] = [(opus, &sine)];
    // A payload the decoder takes: a real Opus packet of 480 frames.
    let cfg = bark_core::opus::OpusConfig::default();
    let mut enc = bark_core::opus::OpusFrameEncoder::new(2, &cfg, 1275).unwrap();
    let mut payload = Vec::new();
    enc.push(0, 0.0, 1.0, &[0.3; 960], &mut |e, x| {
        payload = e.packet(&x).to_vec()
    });
    let mut refused = 0;
    let mut pkt = vec![0u8; 2048];
    let mut decoded_at_150 = 0;
    let out = run(&mut senders, &mut rx, 400, &mut |c, rx| {
        if c == 150 {
            decoded_at_150 = rx.opus().decoded;
        }
        if !(150..250).contains(&c) {
            return;
        }
        let now = 1_000_000_000 + (c as f64 * Q as f64 * 1e9 / RATE) as u64;
        let h = protocol::AudioHeader {
            positions: Default::default(),
            stream_id: 1,
            seq: 5_000 + 100 * c as u64,
            frame: (c * Q) as u64,
            pts: now as i64 - 5_000_000,
            format: AudioFormat {
                sample: bark_core::SampleFormat::Opus,
                ..Default::default()
            },
            latency_us: 2_000_000,
            name_hash: protocol::stream_hash("default"),
            priority: 0,
            frames: 480,
        };
        let n = protocol::write_audio_payload(&mut pkt, &h, &payload).unwrap();
        if rx.handle_packet(now, &pkt[..n], addr(1)).is_err() {
            refused += 1;
        }
    });
    assert_eq!(refused, 100, "every forged packet refused");
    assert!(rx.playing());
    let c = rx.counters();
    assert_eq!((c.lost, c.late, c.latency_us), (0, 0, 40_000), "{c:?}");
    let o = rx.opus();
    assert_eq!(o.concealed, 0, "{o:?}");
    // Decoding went on through the forgeries and after: cycles 150..400
    // are 64 000 frames, 133 packets of 480.
    assert!(
        o.decoded >= decoded_at_150 + 120,
        "{o:?} (at cycle 150: {decoded_at_150})"
    );
    assert!(
        out[out.len() - 512..].iter().any(|v| v.abs() > 0.1),
        "silent at the end"
    );
}

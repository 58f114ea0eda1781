//! The deterministic simulation's acceptance criteria, per scenario, in
//! simulated time: exact and repeatable.

use bark_core::sender::{Sender, SenderConfig};
use bark_core::sim::{run, scenario, Report, RxReport, SCENARIOS};
use bark_core::AudioFormat;

fn check(name: &str) -> Report {
    let sc = scenario(name).expect("known scenario");
    let r = run(&sc);
    println!("{r}");
    for (i, rx) in r.receivers.iter().enumerate() {
        let c = rx.converge_ms.unwrap_or(f64::INFINITY);
        assert!(c <= 2000.0, "{name} rx{i}: converged after {c} ms");
        assert!(
            rx.p99_error_us <= 50.0,
            "{name} rx{i}: p99 |error| {} µs",
            rx.p99_error_us
        );
        assert!(
            rx.max_error_us <= 250.0,
            "{name} rx{i}: max |error| {} µs",
            rx.max_error_us
        );
        // Several seconds of measured audio per receiver, not a vacuous pass.
        assert!(
            rx.frames > 48_000 * 15,
            "{name} rx{i}: only {} frames measured",
            rx.frames
        );
    }
    r
}

/// [`check`], and no receiver underran or concealed a gap.
fn check_clean(name: &str) -> Report {
    let r = check(name);
    assert_eq!(r.underruns(), 0, "{name}: underruns");
    for (i, rx) in r.receivers.iter().enumerate() {
        assert_eq!(rx.concealed, 0, "{name} rx{i}: {rx:?}");
    }
    r
}

#[test]
fn wired() {
    let r = check_clean("wired");
    for rx in &r.receivers {
        assert_eq!(rx.jumps, 1, "one start-up jump, no resyncs");
    }
}

/// A busy network's p99 depends on where its queueing noise happens to
/// fall: over ten seeds the same code gives 40–120 µs, the clock estimate
/// wandering by up to ~100 µs for a few seconds in one or two of them
/// (docs/BENCHMARKS.md, "Simulation over seeds"). So it is judged over
/// eight seeds: the median p99 within 60 µs, every receiver's p99 within
/// 150 µs and max within 250 µs, and convergence within 3 s (2.1 s in the
/// worst of ten seeds, 1.9 s before idle announcements).
#[test]
fn busy() {
    let mut p99s = Vec::new();
    for seed in [0x6261_726b, 1, 3, 5, 7, 9, 11, 13] {
        let mut sc = scenario("busy").unwrap();
        sc.seed = seed;
        let r = run(&sc);
        println!("seed {seed}: {r}");
        for (i, rx) in r.receivers.iter().enumerate() {
            let c = rx.converge_ms.unwrap_or(f64::INFINITY);
            assert!(
                c <= 3000.0,
                "busy seed {seed} rx{i}: converged after {c} ms"
            );
            assert!(rx.p99_error_us <= 150.0, "busy seed {seed} rx{i}: {rx:?}");
            assert!(rx.max_error_us <= 250.0, "busy seed {seed} rx{i}: {rx:?}");
            assert!(rx.frames > 48_000 * 20, "busy seed {seed} rx{i}: {rx:?}");
            // Loss is concealed, duplicates are caught, and nothing resyncs.
            assert!(
                rx.concealed > 0 && rx.lost > 0 && rx.duplicated > 0,
                "{rx:?}"
            );
            assert!(rx.jumps <= 2, "resync storm: {} jumps", rx.jumps);
        }
        p99s.push(r.p99_error_us());
    }
    p99s.sort_by(f64::total_cmp);
    let median = (p99s[3] + p99s[4]) / 2.0;
    assert!(
        median <= 60.0,
        "busy: median p99 {median} µs over seeds {p99s:?}"
    );
}

#[test]
fn drift() {
    let r = check("drift");
    assert_eq!(r.underruns(), 0);
    assert!(r.skew_p99_us <= 50.0, "skew p99 {} µs", r.skew_p99_us);
}

#[test]
fn restart() {
    let r = check("restart");
    for rx in &r.receivers {
        assert_eq!(rx.jumps, 2, "start and the new session");
    }
}

/// The sink idles at first, then plays with long pauses (receivers stop),
/// a short one (they play through) and a 50 ms gap, and a receiver joins
/// while it is idle: every onset's first frame is heard at its instant on
/// every receiver, nothing is concealed and no pause counts as an underrun.
#[test]
fn idle() {
    let r = check_clean("idle");
    for (i, rx) in r.receivers.iter().enumerate() {
        let want = if i == 3 { 2 } else { 5 };
        assert_eq!(rx.onsets.len(), want, "rx{i}: {:?}", rx.onsets);
        for o in &rx.onsets {
            // The first audible frame is the onset's own, heard within
            // 50 µs of its instant (the simulated sender stamps the first
            // buffer after a pause with ±30 µs of scheduling jitter), so
            // nothing before it was lost: it came no later than its own
            // error and one frame (20.8 µs).
            let clipped = o.clipped_ms.expect("onset heard");
            assert!(o.error_us < 50.0, "rx{i} onset {o:?}");
            assert!(clipped * 1e3 <= o.error_us + 20.9, "rx{i} onset {o:?}");
        }
    }
    assert!(r.skew_p99_us <= 50.0, "skew p99 {} µs", r.skew_p99_us);
}

/// A receiver behind an output that adds 50 ms, then 150 ms, then nothing:
/// the session latency rises to cover it for every receiver, falls back
/// after it left, and nobody plays a gap.
#[test]
fn downstream() {
    let r = check_clean("downstream");
    let steps: Vec<u64> = r.latency.iter().map(|(_, l)| l / 1_000_000).collect();
    // 50 ms + two 512-frame quanta (the simulated device's lead and the
    // buffer) + 0.5 ms + the 6 ms margin: 77.8 ms, on the 5 ms grid 80;
    // the same with 150 ms: 180; back to the base 40 ms.
    assert_eq!(steps, [40, 80, 180, 40], "{:?}", r.latency);
    assert!(r.skew_p99_us <= 50.0, "skew p99 {} µs", r.skew_p99_us);
}

/// A receiver with `bark.profile = wifi` asks for 250 ms from the start:
/// the session latency goes there for every receiver, once, and they stay
/// in sync.
#[test]
fn floor() {
    let r = check_clean("floor");
    let steps: Vec<u64> = r.latency.iter().map(|(_, l)| l / 1_000_000).collect();
    assert_eq!(steps, [40, 250], "{:?}", r.latency);
    assert!(r.skew_p99_us <= 50.0, "skew p99 {} µs", r.skew_p99_us);
}

#[test]
fn join() {
    let r = check("join");
    assert_eq!(r.receivers.len(), 4);
    assert_eq!(r.underruns(), 0);
}

/// `bark.resampler = pipewire`: the core renders against the rate-match
/// loop's virtual clock and a model of PipeWire 0.3.65's adapter resampler
/// applies the loop's ratio (whole-Hz input rates, a phase the graph does
/// not report), with a sender restart. Held to the core path's bounds
/// (`check`), and to a skew p99 of 50 µs: the lab measured 39–52 µs on
/// this path (docs/BENCHMARKS.md, "Drift control"); the simulation gives
/// 35 µs.
#[test]
fn ratematch() {
    // The sender's device is 35 ppm fast, the receivers' 25, -45 and 80:
    // the loop's ratio takes up the rates' difference, give or take its
    // dither over the 20.8 ppm steps PipeWire can apply.
    let want = |device_ppm: f64| ((1.0 + 35e-6) / (1.0 + device_ppm * 1e-6) - 1.0) * 1e6;
    check_estimator("ratematch", 2, [want(25.0), want(-45.0), want(80.0)], 25.0);
}

/// One of the estimator scenarios: the core path's bounds (`check`), no
/// underrun, skew p99 within 50 µs, `jumps` jumps per receiver, nothing
/// concealed, the estimator never restarted, and its figure (ppm) within
/// `tol` of `want`, per receiver.
fn check_estimator(name: &str, jumps: u64, want: [f64; 3], tol: f64) {
    let r = check_clean(name);
    assert!(r.skew_p99_us <= 50.0, "skew p99 {} µs", r.skew_p99_us);
    for (i, (rx, want)) in r.receivers.iter().zip(want).enumerate() {
        assert_eq!(rx.jumps, jumps, "rx{i}: {rx:?}");
        assert_eq!(rx.estimator_restarts, 0, "rx{i}: the estimator restarted");
        let got = rx.estimator_ppm.expect("an estimator's receiver");
        assert!((got - want).abs() < tol, "rx{i}: {got} ppm, want {want}");
    }
}

/// bark-pulse's receivers: written ahead into a PulseAudio stream for the
/// play times their frame clocks estimate from timing reports that err
/// late (tens of µs, 2 % of them by up to 3 ms). Held to the core path's
/// bounds (`check`), and to a skew p99 of 50 µs: the lab measured 32 µs
/// between two bark-pulse receivers, 52 µs at most (docs/BENCHMARKS.md,
/// "bark-pulse", run B); the simulation gives 33 µs.
#[test]
fn pulse() {
    // The devices run 30 ppm fast, 25 ppm slow and exactly on their hosts'
    // clocks: the frame clock fits that drift (late frames positive), and
    // one start-up jump, no resync.
    check_estimator("pulse", 1, [-30.0, 25.0, 0.0], 1.0);
}

/// With sync messages, a receiver's time requests after its start-up fall
/// (2 a second quiet, 50 busy, against 40 and 100), so the sender's
/// clock-sync work grows far more slowly with the receivers (not at all
/// on a quiet network's scale); without them (an older sender) receivers
/// keep the full pace.
#[test]
fn sync_messages_make_time_requests_sparse() {
    for name in ["wired", "busy"] {
        let with = run(&scenario(name).unwrap());
        // receiver::SYNC_SLOW_INTERVAL_NS and SYNC_BUSY_INTERVAL_NS: 2 and
        // 50 per second.
        let bound = if name == "busy" { 50.5 } else { 2.5 };
        for (i, rx) in with.receivers.iter().enumerate() {
            assert!(
                rx.requests_per_s > 0.5 && rx.requests_per_s <= bound,
                "{name} rx{i}: {} requests/s with sync messages",
                rx.requests_per_s
            );
        }
        let mut sc = scenario(name).unwrap();
        sc.sync = false;
        let without = run(&sc);
        println!("{name}: with sync {with}\n{name}: without {without}");
        // 40 per second, up to 100 while the network counts as busy
        // (receiver::SLOW_INTERVAL_NS, BUSY_INTERVAL_NS).
        for (i, rx) in without.receivers.iter().enumerate() {
            assert!(
                rx.requests_per_s > 36.0 && rx.requests_per_s < 105.0,
                "{name} rx{i}: {} requests/s without sync messages",
                rx.requests_per_s
            );
            // A busy network's p99 depends on the seed (see `busy`): it is
            // held to the lab's sync bound there, to 60 µs on the quiet one.
            let bound = if name == "busy" { 100.0 } else { 60.0 };
            assert!(
                rx.p99_error_us <= bound,
                "{name} rx{i} without sync: {rx:?}"
            );
        }
    }
}

#[test]
fn summary_line_has_the_scripted_form() {
    let mut sc = scenario("wired").unwrap();
    sc.duration_s = 5.0;
    let line = run(&sc).to_string();
    let keys: Vec<&str> = line
        .strip_prefix("sim: ")
        .expect("prefix")
        .split(' ')
        .map(|kv| kv.split('=').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "scenario",
            "receivers",
            "converge_ms",
            "p99_error_us",
            "max_error_us",
            "skew_p99_us",
            "underruns",
            "requests_per_s"
        ]
    );
    assert!(SCENARIOS.iter().all(|n| scenario(n).is_some()));
    assert!(scenario("nope").is_none());
}

/// Runs `name` twice with its seed: the reports must be identical. Then
/// checks every receiver against its own path's truth: audio dropped by
/// its path within `dropped` (a share of the audio sent to it), and every
/// dropped packet resent in time: nothing lost or late, nothing concealed,
/// `repaired` the path's drops (give or take those before the receiver
/// followed the session, which it cannot know of). The receivers' losses
/// are their own (not all equal). At most `unrepairable` packets per
/// receiver may be lost or late, when the scenario's link can hide a gap
/// for longer than the latency.
fn check_repaired(name: &str, dropped: std::ops::Range<f64>, unrepairable: u64) -> Report {
    let sc = scenario(name).expect("known scenario");
    let r = run(&sc);
    println!("{r}");
    assert_eq!(r, run(&sc), "{name}: the same seed gave another report");
    for (i, rx) in r.receivers.iter().enumerate() {
        println!(
            "{name} rx{i}: {:?} {:?} {:?}",
            rx.status, rx.down, rx.repair
        );
        let share = rx.audio_dropped as f64 / rx.audio_sent as f64;
        assert!(
            dropped.contains(&share),
            "{name} rx{i}: {} of {} audio packets dropped",
            rx.audio_dropped,
            rx.audio_sent
        );
        let s = &rx.status;
        // Nothing concealed, nothing given up (but the unrepairable); a
        // packet dropped in the last milliseconds may still be on its way
        // back.
        assert!(
            s.late + rx.repair.expired <= unrepairable,
            "{name} rx{i}: {s:?} {:?}",
            rx.repair
        );
        assert!(s.lost <= 2 + unrepairable, "{name} rx{i}: {s:?}");
        if unrepairable == 0 {
            assert_eq!(s.concealed_frames, 0, "{name} rx{i}: {s:?}");
        }
        assert!(
            s.repaired <= rx.audio_dropped && s.repaired + 20 + unrepairable >= rx.audio_dropped,
            "{name} rx{i}: repaired {} of {} dropped",
            s.repaired,
            rx.audio_dropped
        );
        assert_eq!((rx.lost, rx.late), (s.lost, s.late));
        // A minute of audio at about 375 packets a second, minus the loss.
        assert!(s.packets > 20_000, "{name} rx{i}: {s:?}");
    }
    let repaired: Vec<u64> = r.receivers.iter().map(|rx| rx.status.repaired).collect();
    assert!(
        repaired.iter().any(|l| *l != repaired[0]),
        "{name}: same losses {repaired:?}"
    );
    r
}

/// 3 % random loss on every receiver's own link of the wired LAN, at the
/// default 40 ms: every lost packet is resent in time (issue 14's first
/// acceptance case), and sync holds. Another seed gives other losses, and
/// a receiver's run does not depend on the others: without the last one,
/// the first plays exactly as before.
#[test]
fn loss3() {
    let r = check_repaired("loss3", 0.025..0.035, 0);
    assert!(r.skew_p99_us <= 50.0, "{r}");
    let mut sc = scenario("loss3").unwrap();
    sc.seed += 2;
    assert_ne!(
        run(&sc).receivers[0].status.repaired,
        r.receivers[0].status.repaired
    );
    let mut sc = scenario("loss3").unwrap();
    sc.receivers.pop();
    assert_eq!(run(&sc).receivers[0], r.receivers[0]);
}

/// `loss3` over eight more seeds: no receiver loses a packet in any.
#[test]
fn loss3_over_seeds() {
    for seed in 1..=8 {
        let mut sc = scenario("loss3").unwrap();
        sc.seed = seed;
        let r = run(&sc);
        for (i, rx) in r.receivers.iter().enumerate() {
            let s = &rx.status;
            assert!(
                rx.audio_dropped > 500,
                "seed {seed} rx{i}: {}",
                rx.audio_dropped
            );
            assert_eq!(
                (s.lost, s.late, s.concealed_frames),
                (0, 0, 0),
                "seed {seed} rx{i}: {s:?} {:?}",
                rx.repair
            );
        }
    }
}

/// Every receiver on its own Wi-Fi link: Gilbert–Elliott 3 %/2.5, stalls,
/// a 150 ms outage every 5 s, at 250 ms. Dropped: 3 % of the time dark,
/// and 3 % of the rest lost (5.9 %, about 1300 packets a minute), all
/// repaired in time but where a stall follows an outage: the link is
/// then dark for longer than the latency less what the receiver's output
/// needs (about 225 ms), and nothing can cross it. With the default seed
/// that happens once to rx2 at 23.5 s (22 packets, and 4 more a stall
/// held past their time), and to rx1 for one packet; rx0 loses nothing.
#[test]
fn wifi() {
    let r = check_repaired("wifi", 0.05..0.068, 30);
    assert!(r.skew_p99_us <= 100.0, "{r}");
    for (i, rx) in r.receivers.iter().enumerate() {
        assert!(
            rx.down.held > 0 && rx.down.cut > 0,
            "wifi rx{i}: {:?}",
            rx.down
        );
        // Both directions of a link go dark together.
        assert!(rx.up.cut > 0, "wifi rx{i}: {:?}", rx.up);
    }
}

/// `loss3` with FEC 4:1 on the sender (`bark.fec`). Without NACKs, the
/// repair packets alone rebuild a lost packet unless its block of 4 lost
/// two of its 5 packets (about 1 % of blocks at 3 % loss): 85–95 % of the
/// losses come back. With NACKs too, nothing is lost, and a receiver with
/// a short output quantum (rx0, 256 frames) leaves nearly all to FEC: far
/// fewer NACKs than `loss3`'s ~700. The others (512 and 480 frames) have
/// less time left than a block takes, so they ask before it can be
/// rebuilt and get some packets twice.
/// Receiver `i` lost more than `min_dropped` audio packets on its link
/// and FEC rebuilt at least `share` of them (and no more than were lost).
/// Returns (dropped, rebuilt).
fn rebuilt_most(i: usize, rx: &RxReport, min_dropped: u64, share: f64) -> (u64, u64) {
    let (dropped, rebuilt) = (rx.audio_dropped, rx.fec.recovered);
    assert!(dropped > min_dropped, "rx{i}: {dropped}");
    assert!(
        rebuilt as f64 >= share * dropped as f64 && rebuilt <= dropped,
        "rx{i}: rebuilt {rebuilt} of {dropped}: {:?}",
        rx.fec
    );
    (dropped, rebuilt)
}

#[test]
fn fec() {
    let mut sc = scenario("fec").unwrap();
    sc.repair = false;
    let r = run(&sc);
    assert!(r.sender.tx_fec.packets >= 5000, "{:?}", r.sender);
    for (i, rx) in r.receivers.iter().enumerate() {
        rebuilt_most(i, rx, 500, 0.85);
        assert_eq!(rx.status.duplicated, 0, "rx{i}: nothing rebuilt that came");
    }
    let r = check_repaired("fec", 0.025..0.035, 0);
    let rx0 = &r.receivers[0];
    assert!(
        rx0.repair.nacks < 150,
        "rx0: {:?} {:?}",
        rx0.repair,
        rx0.fec
    );
    assert!(r.skew_p99_us <= 50.0, "{r}");
}

/// opus-loss3's links with FEC 4:1 and no resends: the repair packets
/// carry Opus datagrams of varying length (padded to the block's longest),
/// and most losses are rebuilt, in time at the latency
/// [`Sender::fec_advice`] asks for: 80 ms with 10 ms frames (a block is
/// whole 42.5 ms after its first pts; at 60 ms 17-35 % of the rebuilt
/// packets came too late), 60 ms with 5 ms frames. What FEC cannot
/// rebuild (two losses in a block) is concealed by the decoder, never
/// silence, and sync holds.
#[test]
fn opus_fec() {
    for (k, m, frames, latency_ms) in [(4u8, 1u8, 480u16, 80u64), (4, 1, 240, 60)] {
        let mut sc = scenario("opus-loss3").unwrap();
        sc.opus_config.frames = frames;
        sc.fec = Some((k, m));
        sc.repair = false;
        sc.latency_ns = latency_ms * 1_000_000;
        // The advice: this latency and no less.
        for (ms, advice) in [(latency_ms, false), (latency_ms - 10, true)] {
            let tx = Sender::new(SenderConfig {
                format: AudioFormat {
                    sample: bark_core::SampleFormat::Opus,
                    rate: 48_000,
                    channels: 2,
                },
                latency_ns: ms * 1_000_000,
                fec: sc.fec,
                opus: sc.opus_config,
                ..Default::default()
            })
            .unwrap();
            let said = tx.fec_advice();
            assert_eq!(said.is_some(), advice, "{k}:{m} at {ms} ms: {said:?}");
            println!("{k}:{m} of {frames} frames at {ms} ms: {said:?}");
        }
        let r = run(&sc);
        println!("{k}:{m} of {frames} frames at {latency_ms} ms: {r}");
        assert!(r.sender.tx_fec.packets >= 1000, "{:?}", r.sender);
        assert!(r.skew_p99_us <= 50.0, "{r}");
        for (i, rx) in r.receivers.iter().enumerate() {
            let (dropped, rebuilt) = rebuilt_most(i, rx, 100, 0.8);
            let s = &rx.status;
            println!(
                "  rx{i}: dropped {dropped}, rebuilt {rebuilt}, lost {}, late {}, concealed {} frames",
                s.lost, s.late, s.concealed_frames
            );
            assert_eq!(s.late, 0, "rx{i}: rebuilt in time: {s:?}");
            // Each packet FEC could not rebuild is one Opus frame the
            // decoder conceals.
            assert!(
                s.concealed_frames <= (dropped - rebuilt) * u64::from(frames),
                "rx{i}: {s:?} {:?}",
                rx.fec
            );
            assert!(rx.p99_error_us <= 50.0, "rx{i}: {rx:?}");
        }
    }
}

/// An Opus stream (160 kbit/s, 10 ms frames) on the wired LAN: the same
/// bounds as PCM, measured on what the receivers play after the real
/// encoder and decoder (a 1 kHz tone, `OPUS_TONE_HZ`), with nothing
/// concealed. Were the lookahead not taken out of the stamps, every
/// receiver would play 2.5 ms (120 frames) late: the bias of a quarter of
/// the tone's period would show as ±0.5 ms.
#[test]
fn opus() {
    let r = check_clean("opus");
    assert!(r.skew_p99_us <= 50.0, "{r}");
    for rx in &r.receivers {
        assert!(rx.status.packets > 5_000, "{:?}", rx.status);
        assert_eq!(rx.status.lost, 0, "{:?}", rx.status);
    }
}

/// loss3's 3 % loss with an Opus stream: the decoder stage waits for the
/// resends, so nothing is concealed and sync holds as for PCM.
#[test]
fn opus_loss3() {
    let sc = scenario("opus-loss3").unwrap();
    let r = run(&sc);
    println!("{r}");
    assert!(r.skew_p99_us <= 50.0, "{r}");
    for (i, rx) in r.receivers.iter().enumerate() {
        let share = rx.audio_dropped as f64 / rx.audio_sent as f64;
        assert!((0.02..0.04).contains(&share), "rx{i}: {share}");
        let s = &rx.status;
        assert!(s.repaired + 5 >= rx.audio_dropped, "rx{i}: {s:?}");
        assert_eq!(
            s.late + rx.repair.expired,
            0,
            "rx{i}: {s:?} {:?}",
            rx.repair
        );
        assert_eq!(s.concealed_frames, 0, "rx{i}: {s:?}");
        assert!(rx.p99_error_us <= 50.0, "rx{i}: {rx:?}");
    }
}

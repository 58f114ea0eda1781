//! End to end over the loopback interface (multicast on `lo`, TTL 0: no
//! packet leaves this host): `bark stream` from a file and from stdin,
//! two `bark receive`, and `bark stats` in all its machine-readable forms.

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::Duration;

const SECONDS: f64 = 6.0;

fn http_get(addr: &str, path: &str) -> String {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(c, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn stream_two_receivers_stats_and_metrics() {
    let (dir, net, src) = scratch_with_source("loopback-main", 48_000, SECONDS);

    // Receivers first, so they hear the stream from its first packet.
    let mut rx: Vec<Proc> = ["rx1", "rx2"]
        .map(|tag| {
            let node = NodeCmd::receive(&dir, tag, "9").named(tag);
            node.recorded().spawn(&net)
        })
        .into();
    let stats = ["stats", "--metrics-listen", "127.0.0.1:0", "--count", "200"];
    let mut metrics = NodeCmd::new(&dir, "metrics", &stats)
        .args(&["--interval-msec", "50"])
        .spawn(&net);
    std::thread::sleep(Duration::from_millis(300));
    let mut tx = NodeCmd::stream(&dir, "tx")
        .named("tx-test")
        .path("--input", &src)
        .path("--record", &dir.join("ref.wav"))
        .summary()
        .spawn(&net);

    // While it plays: one JSON snapshot with every node.
    std::thread::sleep(Duration::from_secs(2));
    let snap = stats_snapshot(&net, "2", &[]);
    assert_eq!(snap["senders"], 1, "{snap}");
    assert_eq!(snap["receivers"], 2, "{snap}");
    let nodes = snap["nodes"].as_array().unwrap();
    let tx_node = &nodes[0];
    assert_eq!(tx_node["role"], "sender");
    assert_eq!(tx_node["name"], "tx-test");
    assert_eq!(tx_node["playing"], true);
    assert!(tx_node["packets"].as_u64().unwrap() > 100, "{tx_node}");
    for (i, n) in nodes[1..].iter().enumerate() {
        assert_eq!(n["role"], "receiver");
        assert_eq!(n["name"], format!("rx{}", i + 1));
        assert_eq!(n["playing"], true, "{n}");
        assert_eq!(n["format"], "F32LE");
        assert_eq!(n["rate_hz"], 48_000);
        assert_eq!(n["latency_ms"], 40.0);
        assert_eq!(n["session"], tx_node["session"]);
        assert!(
            n["following"].as_str().unwrap().starts_with("tx-test@"),
            "{n}"
        );
        let packets = n["packets"].as_u64().unwrap();
        assert!(packets > 100, "{n}");
        // Loopback loses nothing that matters; allow a little for a
        // loaded machine.
        assert!(n["lost"].as_u64().unwrap() * 20 < packets, "{n}");
        assert!(n["sync_error_us"].as_f64().unwrap().abs() < 1000.0, "{n}");
        let buf = n["buffer_ms"].as_f64().unwrap();
        assert!((5.0..=45.0).contains(&buf), "buffer {buf} ms: {n}");
        assert!(n["last_heard_s"].as_f64().unwrap() < 1.6, "{n}");
        assert_eq!(n["state"], "active");
        // Its output's latency: one quantum (256 frames), the default
        // --output-delay-msec; the session's 40 ms cover it.
        let down = n["downstream_ms"].as_f64().unwrap();
        assert!((down - 5.333).abs() < 0.01, "{n}");
        assert_eq!(n["playing_late"], false, "{n}");
        assert_eq!(n["play_latency_ms"], 40.0, "{n}");
    }
    // A sender's need is its base latency, its play latency the most the
    // session latency may rise to.
    assert_eq!(tx_node["need_ms"], 40.0, "{tx_node}");
    assert_eq!(tx_node["play_latency_ms"], 1000.0, "{tx_node}");

    // The plain table shows the same nodes.
    let (st, table, _) = run_net(&["stats", "--once", "--wait-sec", "1.5"], &net);
    assert!(st.success());
    assert!(table.contains("1 sender, 2 receivers"), "{table}");
    for name in ["tx-test", "rx1", "rx2"] {
        assert!(table.lines().any(|l| l.starts_with(name)), "{table}");
    }

    // JSON lines: one snapshot per refresh.
    let a = ["stats", "--json", "--count", "3", "--interval-msec", "300"];
    let (st, lines, _) = run_net(&a, &net);
    assert!(st.success());
    let lines: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["nodes"].as_array().unwrap().len(), 3);

    // Prometheus metrics from the stats process started at the beginning.
    let log = std::fs::read_to_string(dir.join("metrics.log")).unwrap();
    let addr = log
        .split("http://")
        .nth(1)
        .and_then(|r| r.split("/metrics").next())
        .unwrap_or_else(|| panic!("no metrics address in: {log}"))
        .to_string();
    let body = http_get(&addr, "/metrics");
    assert!(
        body.starts_with("HTTP/1.") && body.contains(" 200 "),
        "{body}"
    );
    assert!(body.contains("text/plain; version=0.0.4"), "{body}");
    for name in ["tx-test", "rx1", "rx2"] {
        let up = body
            .lines()
            .find(|l| l.starts_with("bark_node_up{") && l.contains(&format!("name=\"{name}\"")))
            .unwrap_or_else(|| panic!("no bark_node_up for {name}: {body}"));
        assert!(up.ends_with(" 1"), "{up}");
    }
    let down = body
        .lines()
        .find(|l| {
            l.starts_with("bark_node_downstream_latency_seconds{") && l.contains("name=\"rx2\"")
        })
        .unwrap_or_else(|| panic!("no downstream latency for rx2: {body}"));
    assert!(down.ends_with(" 0.005333"), "{down}");
    let pk = body
        .lines()
        .find(|l| l.starts_with("bark_node_packets_total{") && l.contains("name=\"rx1\""))
        .unwrap();
    let v: f64 = pk.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(v > 100.0, "{pk}");
    assert!(http_get(&addr, "/nope").contains(" 404 "));
    metrics.terminate(Duration::from_secs(5));

    tx.wait_ok(Duration::from_secs(15));
    for r in &mut rx {
        r.wait_ok(Duration::from_secs(15));
    }

    // The sender sent every frame once, in full packets, paced in real time.
    let txs = read_json(&dir.join("tx.json"));
    let frames = txs["frames_sent"].as_u64().unwrap();
    assert_eq!(frames, (SECONDS * 48_000.0) as u64);
    let per = txs["packet_frames"].as_u64().unwrap();
    assert_eq!(per, 176);
    let sent = txs["tx"]["audio"]["packets"].as_u64().unwrap();
    assert_eq!(sent, frames.div_ceil(per));
    let wall = txs["wall_s"].as_f64().unwrap();
    assert!(
        (SECONDS - 0.2..SECONDS + 1.0).contains(&wall),
        "wall {wall} s"
    );
    assert!(txs["tx"]["time_reply"]["packets"].as_u64().unwrap() > 100);

    let reference = Rec::load(&dir.join("ref.wav"));
    let source = Rec::load(&src);
    // What was sent is the source, sample for sample (same rate: no
    // resampling; F32 on the wire is lossless).
    assert_eq!(reference.frames(), source.frames());
    for c in 0..2 {
        let diff = reference.chans[c]
            .iter()
            .zip(&source.chans[c])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "channel {c} differs by {diff}");
    }
    let mut lat = Vec::new();
    for i in 1..=2 {
        let sum = read_json(&dir.join(format!("rx{i}.json")));
        let got = sum["rx"]["audio"]["packets"].as_u64().unwrap();
        assert!(got * 100 >= sent * 98, "rx{i} got {got} of {sent} packets");
        assert!(sum["playing_cycles"].as_u64().unwrap() > 900, "{sum}");
        let r = Rec::load(&dir.join(format!("rx{i}.wav")));
        assert_eq!(r.rate, 48_000);
        // Each channel matches its own source channel 40 ms later, at two
        // points of the stream.
        for c in 0..2 {
            for at in [2.0, 4.5] {
                let (l, corr) = latency_ms(&reference, &r, c, at, 0.25, 40.0, 5.0);
                eprintln!("rx{i} ch{c} at {at}s: latency {l:.4} ms, correlation {corr:.5}");
                assert!(corr > 0.97, "rx{i} ch{c} at {at}s: correlation {corr}");
                assert!(
                    (l - 40.0).abs() < 1.0,
                    "rx{i} ch{c} at {at}s: latency {l} ms"
                );
                lat.push(l);
            }
        }
        // Audio where the stream played.
        let fr = |t: f64| (t * 48_000.0) as usize;
        assert!(r.rms(0, fr(2.0), fr(3.0)) > 0.05);
    }
    let skew_us = (lat[0] - lat[4]).abs() * 1e3;
    eprintln!("loopback latencies (ms): {lat:?}; skew rx1-rx2 {skew_us:.1} us");
}

#[test]
fn streams_from_stdin() {
    let (dir, net, src) = scratch_with_source("loopback-stdin", 44_100, 3.0);
    let mut rx = NodeCmd::receive(&dir, "rx", "5").recorded().spawn(&net);
    std::thread::sleep(Duration::from_millis(300));
    NodeCmd::stream(&dir, "tx")
        .args(&["--input", "-"])
        .summary()
        .stdin(std::fs::File::open(&src).unwrap())
        .spawn(&net)
        .wait_ok(Duration::from_secs(15));
    rx.wait_ok(Duration::from_secs(10));
    let txs = read_json(&dir.join("tx.json"));
    // 3 s at 44.1 kHz resampled to 48 kHz.
    assert_eq!(txs["frames_sent"].as_u64().unwrap(), 144_000);
    let rxs = read_json(&dir.join("rx.json"));
    assert!(rxs["playing_cycles"].as_u64().unwrap() > 400, "{rxs}");
    let r = Rec::load(&dir.join("rx.wav"));
    assert!(r.rms(1, 48_000, 96_000) > 0.05);
}

/// `seconds` of a 200 Hz cosine at half scale on both channels, 16-bit:
/// it starts at its peak, so the first frame is an unmistakable onset, a
/// step from silence. (Band-limited, as the receiver's interpolator plays
/// it, that step passes half its height half a frame before the first
/// frame's instant, midway between it and the silent frame before.)
fn write_onset_wav(path: &std::path::Path, rate: u32, seconds: f64) {
    write_wav16(path, rate, seconds, |i| {
        let v = 0.5 * (std::f64::consts::TAU * 200.0 * i as f64 / rate as f64).cos();
        [(v * 32_767.0).round() as i16; 2]
    });
}

/// A receiver that has never heard the sender plays its very first frame
/// at its instant: the stream's lead-in (idle sync messages) lets it lock
/// its clock before the audio starts, instead of joining 50-150 ms into it.
#[test]
fn the_first_frame_is_heard_at_its_instant_after_the_lead_in() {
    let dir = scratch("loopback-first-frame");
    let net = unique_net();
    let src = dir.join("onset.wav");
    write_onset_wav(&src, 48_000, 1.0);
    let mut rx = NodeCmd::receive(&dir, "rx", "3").recorded().spawn(&net);
    std::thread::sleep(Duration::from_millis(300));
    NodeCmd::stream(&dir, "tx")
        .path("--input", &src)
        .path("--record", &dir.join("ref.wav"))
        .summary()
        .spawn(&net)
        .wait_ok(Duration::from_secs(15));
    rx.wait_ok(Duration::from_secs(15));

    let txs = read_json(&dir.join("tx.json"));
    let lead = &txs["lead_in"];
    assert!(lead["seconds"].as_f64().unwrap() >= 0.5, "{txs}");
    // The receiver locked during the lead-in: it asked for the time then.
    assert!(
        lead["time_reply"]["packets"].as_u64().unwrap() > 32,
        "{txs}"
    );
    let latency_ms = txs["latency"]["session_us"].as_f64().unwrap() / 1e3;
    assert_eq!(latency_ms, 40.0, "{txs}");

    // The sender's first frame entered it at the reference's first stamp;
    // it is heard one session latency later.
    let reference = Rec::load(&dir.join("ref.wav"));
    let r = Rec::load(&dir.join("rx.wav"));
    let expected = reference.time_of(0.0) + latency_ms * 1e6;
    // The first frame heard: the first output frame past half the
    // onset's height (within half a frame of the instant when the timing
    // is exact).
    let onset = r.chans[0]
        .iter()
        .position(|v| v.abs() >= 0.25)
        .expect("the receiver played nothing");
    let frame_ns = 1e9 / 48_000.0;
    let err_ns = r.time_of(onset as f64) - expected;
    // Where the output crosses half the onset's height, between frames,
    // half a frame on: the onset's instant as heard, off the output's
    // frame grid (the timing error itself).
    let (v0, v1) = (r.chans[0][onset - 1], r.chans[0][onset]);
    let cross = onset as f64 - 0.5 + f64::from((0.25 - v0) / (v1 - v0));
    let cross_err_ns = r.time_of(cross) - expected;
    eprintln!(
        "first frame heard {:+.2} us ({:+.3} frames) from its instant; onset {:+.2} us",
        err_ns / 1e3,
        err_ns / frame_ns,
        cross_err_ns / 1e3,
    );
    assert!(
        err_ns.abs() <= frame_ns,
        "first frame heard {:.1} us from its instant",
        err_ns / 1e3
    );
    assert!(
        cross_err_ns.abs() <= frame_ns,
        "onset heard {:.1} us from its instant",
        cross_err_ns / 1e3
    );
    // Nothing before it but the interpolator's ringing into the onset
    // (a few % of it, within its taps).
    let before = r.chans[0][..onset.saturating_sub(1)]
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(before < 0.1, "audio {before} before the first frame");
    // And the stream went on from there: 0.5 s later it still plays the
    // cosine at full level.
    let fr = onset + 24_000;
    assert!(r.rms(0, fr, fr + 4_800) > 0.3);
    let rxs = read_json(&dir.join("rx.json"));
    assert_eq!(rxs["counters"]["playing_late"], false, "{rxs}");
    assert_eq!(rxs["counters"]["downstream_us"], 5_333, "{rxs}");
}

/// During its lead-in `bark stream` sends idle sync messages (announcing
/// the session, not streaming) and no audio; its summary counts them. With
/// `--lead-in-msec 0` the audio starts at once.
#[test]
fn stream_announces_the_session_during_its_lead_in() {
    use bark_core::protocol::{self, Packet};
    let dir = scratch("loopback-lead-in");
    for lead_ms in [300u64, 0] {
        let net = unique_net();
        let group: std::net::SocketAddrV4 = format!("{}:{}", net[1], net[3]).parse().unwrap();
        let mut sock = bark_cli::net::group_socket(group, Some("lo")).unwrap();
        let tag = format!("tx{lead_ms}");
        if lead_ms > 0 {
            write_test_wav(&dir.join("in.wav"), 48_000, 1.0);
        }
        let mut tx = NodeCmd::stream(&dir, &tag)
            .args(&["--seconds", "0.3", "--lead-in-msec", &lead_ms.to_string()])
            .path("--input", &dir.join("in.wav"))
            .summary()
            .spawn(&net);
        // (arrival ns, is audio, idle sync) of every datagram until the
        // stream has sent audio for a while.
        let mut seen: Vec<(u64, bool, bool)> = Vec::new();
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < end && seen.iter().filter(|d| d.1).count() < 20 {
            bark_cli::net::wait_readable(&[&sock], 50_000_000);
            let d = sock.drain(1024, |data, _, at| match protocol::parse(data) {
                Ok(Packet::Audio(_)) => seen.push((at.mono_ns, true, false)),
                Ok(Packet::Sync(y)) => {
                    let idle = y.announce.is_some_and(|a| !a.streaming);
                    seen.push((at.mono_ns, false, idle));
                }
                _ => {}
            });
            assert!(d.error.is_none(), "{d:?}");
        }
        tx.wait_ok(Duration::from_secs(15));
        let first_audio = seen.iter().position(|d| d.1).expect("no audio");
        let idle: Vec<u64> = seen[..first_audio]
            .iter()
            .filter(|d| d.2)
            .map(|d| d.0)
            .collect();
        let txs = read_json(&dir.join(format!("{tag}.json")));
        let counted = txs["lead_in"]["sync"]["packets"].as_u64().unwrap();
        assert_eq!(counted, idle.len() as u64, "{txs}");
        // Before the audio, nothing but those and the streaming sync that
        // leads the first audio packet.
        assert!(
            seen[..first_audio].iter().filter(|d| !d.2).count() <= 1,
            "{seen:?}"
        );
        if lead_ms == 0 {
            assert_eq!(counted, 0, "{txs}");
            continue;
        }
        // One every 100 ms from the start of the lead-in until the audio.
        assert!((3..=5).contains(&counted), "{counted} idle syncs in 300 ms");
        let span_ms = (seen[first_audio].0 - idle[0]) as f64 / 1e6;
        assert!(
            (290.0..600.0).contains(&span_ms),
            "audio {span_ms} ms after the first idle sync"
        );
        for w in idle.windows(2) {
            let gap_ms = (w[1] - w[0]) as f64 / 1e6;
            assert!(
                (90.0..=160.0).contains(&gap_ms),
                "idle syncs {gap_ms} ms apart"
            );
        }
        // The summary's sync total includes the lead-in's.
        assert!(txs["tx"]["sync"]["packets"].as_u64().unwrap() > counted);
    }
}

/// A receiver whose output needs more than the session latency (60 ms
/// downstream against 40 ms) tells its sender, which raises the session
/// latency to cover it (up to `--latency-max-msec`); with the latency
/// pinned, the receiver plays late instead and says so in its status, and
/// `bark stats` shows it.
#[test]
fn a_slow_output_raises_the_session_latency_or_plays_late() {
    let (dir, _, src) = scratch_with_source("loopback-slow-output", 48_000, 3.0);
    let mut runs = Vec::new();
    for (tag, max) in [("rise", "1000"), ("pinned", "40")] {
        let net = unique_net();
        let rx = NodeCmd::receive(&dir, &format!("rx-{tag}"), "4.5")
            .named(&format!("slow-{tag}"))
            .args(&["--output-delay-msec", "60"])
            .summary()
            .spawn(&net);
        std::thread::sleep(Duration::from_millis(300));
        let tx = NodeCmd::stream(&dir, &format!("tx-{tag}"))
            .args(&["--latency-max-msec", max])
            .path("--input", &src)
            .summary()
            .spawn(&net);
        runs.push((tag, net, rx, tx));
    }
    // While they play: the pinned receiver is flagged late.
    std::thread::sleep(Duration::from_millis(2000));
    let snap = stats_snapshot(&runs[1].1, "1.2", &[]);
    let n = named(&snap, "nodes", "slow-pinned");
    assert_eq!(n["playing_late"], true, "{n}");
    assert_eq!(n["downstream_ms"], 60.0, "{n}");
    // 60 ms downstream, a 5.3 ms quantum and a 6 ms margin: 71.3 ms,
    // played on the 5 ms grid.
    assert_eq!(n["play_latency_ms"], 75.0, "{n}");
    assert_eq!(n["latency_ms"], 40.0, "{n}");

    for (tag, _, mut rx, mut tx) in runs {
        tx.wait_ok(Duration::from_secs(15));
        rx.wait_ok(Duration::from_secs(15));
        let txs = read_json(&dir.join(format!("tx-{tag}.json")));
        let rxs = read_json(&dir.join(format!("rx-{tag}.json")));
        let c = &rxs["counters"];
        assert_eq!(c["downstream_us"], 60_000, "{tag}: {rxs}");
        assert_eq!(c["need_us"], 71_333, "{tag}: {rxs}");
        assert_eq!(c["play_latency_us"], 75_000, "{tag}: {rxs}");
        assert!(
            rxs["playing_cycles"].as_u64().unwrap() > 300,
            "{tag}: {rxs}"
        );
        if tag == "rise" {
            assert_eq!(txs["latency"]["session_us"], 75_000, "{txs}");
            assert_eq!(c["latency_us"], 75_000, "{rxs}");
            assert_eq!(c["playing_late"], false, "{rxs}");
        } else {
            assert_eq!(txs["latency"]["session_us"], 40_000, "{txs}");
            assert_eq!(txs["latency"]["changes"], 0, "{txs}");
            assert_eq!(c["playing_late"], true, "{rxs}");
            assert!(rxs["playing_late_cycles"].as_u64().unwrap() > 300, "{rxs}");
        }
    }
}

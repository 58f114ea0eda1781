//! End to end over the loopback interface (multicast on `lo`, TTL 0: no
//! packet leaves this host): `bark stream` from a file and from stdin,
//! two `bark receive`, and `bark stats` in all its machine-readable forms.

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::Duration;

const SECONDS: f64 = 6.0;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

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
    let dir = scratch("loopback-main");
    let net = unique_net();
    let src = dir.join("source.wav");
    write_test_wav(&src, 48_000, SECONDS);

    // Receivers first, so they hear the stream from its first packet.
    let mut rx = Vec::new();
    for i in 1..=2 {
        let mut a = s(&["receive", "--ttl", "0", "--seconds", "9", "--node-name"]);
        a.push(format!("rx{i}"));
        a.extend(s(&["-o", dir.join(format!("rx{i}.wav")).to_str().unwrap()]));
        a.extend(s(&[
            "--summary",
            dir.join(format!("rx{i}.json")).to_str().unwrap(),
        ]));
        a.extend(net.clone());
        rx.push(Proc::spawn(
            &format!("rx{i}"),
            &a,
            &dir.join(format!("rx{i}.log")),
        ));
    }
    let mut metrics = {
        let mut a = s(&[
            "stats",
            "--metrics-listen",
            "127.0.0.1:0",
            "--count",
            "200",
            "--interval-msec",
            "50",
        ]);
        a.extend(net.clone());
        Proc::spawn("metrics", &a, &dir.join("metrics.log"))
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut tx = {
        let mut a = s(&["stream", "--ttl", "0", "--node-name", "tx-test", "--input"]);
        a.push(src.to_str().unwrap().into());
        a.extend(s(&["--record", dir.join("ref.wav").to_str().unwrap()]));
        a.extend(s(&["--summary", dir.join("tx.json").to_str().unwrap()]));
        a.extend(net.clone());
        Proc::spawn("stream", &a, &dir.join("tx.log"))
    };

    // While it plays: one JSON snapshot with every node.
    std::thread::sleep(Duration::from_secs(2));
    let mut a = vec!["stats", "--once", "--json", "--wait-sec", "2"];
    a.extend(net.iter().map(String::as_str));
    let (st, out, err) = run(&a, Duration::from_secs(10));
    assert!(st.success(), "{err}");
    let snap: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(snap["senders"], 1, "{out}");
    assert_eq!(snap["receivers"], 2, "{out}");
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
    }

    // The plain table shows the same nodes.
    let mut a = vec!["stats", "--once", "--wait-sec", "1.5"];
    a.extend(net.iter().map(String::as_str));
    let (st, table, _) = run(&a, Duration::from_secs(10));
    assert!(st.success());
    assert!(table.contains("1 sender, 2 receivers"), "{table}");
    for name in ["tx-test", "rx1", "rx2"] {
        assert!(table.lines().any(|l| l.starts_with(name)), "{table}");
    }

    // JSON lines: one snapshot per refresh.
    let mut a = vec!["stats", "--json", "--count", "3", "--interval-msec", "300"];
    a.extend(net.iter().map(String::as_str));
    let (st, lines, _) = run(&a, Duration::from_secs(10));
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
    let pk = body
        .lines()
        .find(|l| l.starts_with("bark_node_packets_total{") && l.contains("name=\"rx1\""))
        .unwrap();
    let v: f64 = pk.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(v > 100.0, "{pk}");
    assert!(http_get(&addr, "/nope").contains(" 404 "));
    metrics.terminate(Duration::from_secs(5));

    let (st, _) = tx.wait(Duration::from_secs(15));
    assert!(
        st.success(),
        "stream failed: see {}",
        dir.join("tx.log").display()
    );
    for r in &mut rx {
        let (st, _) = r.wait(Duration::from_secs(15));
        assert!(st.success());
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
    let dir = scratch("loopback-stdin");
    let net = unique_net();
    let src = dir.join("source.wav");
    write_test_wav(&src, 44_100, 3.0);
    let mut a = s(&["receive", "--ttl", "0", "--seconds", "5", "-o"]);
    a.push(dir.join("rx.wav").to_str().unwrap().into());
    a.extend(s(&["--summary", dir.join("rx.json").to_str().unwrap()]));
    a.extend(net.clone());
    let mut rx = Proc::spawn("rx", &a, &dir.join("rx.log"));
    std::thread::sleep(Duration::from_millis(300));
    let mut cmd = std::process::Command::new(bark());
    cmd.args(["stream", "--ttl", "0", "--input", "-", "--summary"])
        .arg(dir.join("tx.json"))
        .args(&net)
        .stdin(std::fs::File::open(&src).unwrap());
    let err = std::fs::File::create(dir.join("tx.log")).unwrap();
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    let mut tx = Proc {
        child: None,
        name: "stream".into(),
    };
    // Bounded wait on the child, then hand it to the guard if it hangs.
    let end = std::time::Instant::now() + Duration::from_secs(15);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > end {
            tx.child = Some(child);
            panic!("stream from stdin did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        st.success(),
        "{}",
        std::fs::read_to_string(dir.join("tx.log")).unwrap()
    );
    rx.wait(Duration::from_secs(10));
    let txs = read_json(&dir.join("tx.json"));
    // 3 s at 44.1 kHz resampled to 48 kHz.
    assert_eq!(txs["frames_sent"].as_u64().unwrap(), 144_000);
    let rxs = read_json(&dir.join("rx.json"));
    assert!(rxs["playing_cycles"].as_u64().unwrap() > 400, "{rxs}");
    let r = Rec::load(&dir.join("rx.wav"));
    assert!(r.rms(1, 48_000, 96_000) > 0.05);
}
